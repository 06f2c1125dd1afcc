"""upstream/ is the lowest room but the leaves (issue 22): it knows nothing of WAMP, WebSocket or the rooms above."""

from __future__ import annotations

import ast
from pathlib import Path

import zmqwamp.upstream

ABOVE = ("autobahn", "zmqwamp.wamp", "zmqwamp.transport", "zmqwamp.auth", "zmqwamp.service", "zmqwamp.testing")


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_upstream_imports_neither_autobahn_nor_a_room_above():
    """No module of zmqwamp/upstream imports autobahn or zmqwamp.{wamp,transport,auth,service} (typing-only too)."""
    found = {
        f"{path.name}: {name}"
        for path in Path(zmqwamp.upstream.__file__).parent.glob("*.py")
        for name in imports(path)
        if name.startswith(ABOVE)
    }
    assert found == set()
