"""What the README, docs/, bench/, examples/ and scripts/ name exists (issue 22 moved every module): each file path
(``zmqwamp/transport/site.py``, ``tests/unit/wamp/test_session.py``, with ``{a,b}`` and globs), each dotted name
(``zmqwamp.auth.throttle.LoginThrottle``), each ``python -m`` module and ``make`` target; and the log namespaces the
README lists are those the modules log under.  Flags against ``--help``: tests/e2e/test_operations.py."""

from __future__ import annotations

import importlib
import re
from glob import glob
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    {
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(p for p in (ROOT / "examples").rglob("*") if p.is_file()),
        *(p for p in (ROOT / "scripts").glob("*") if p.is_file()),
    }
)
# where the documents may name files: the source trees (bench/results and the Crossbar venv are made by runs)
PATH = re.compile(r"(?<![\w/.-])((?:zmqwamp|tests|examples|docs|scripts|twisted|js-client/src|bench(?!/results|/\.))/[\w/{},.*-]*\w)")
DOTTED = re.compile(r"(?<![\w./:-])(zmqwamp(?:\.\w+)+)")
NOT_MODULES = re.compile(r"^zmqwamp\.(error|close)\.|\.(toml|service|js|conf|ts|pstats|txt)$")  # URIs, file names
PYTHON_M = re.compile(r"python3? -m ([\w.]+)")
MAKE = re.compile(r"(?:^|`)make ([a-z][\w-]*)", re.M)  # a command, not the verb
FORMER_NAMESPACES = "| former namespace | now |"


def expand(path: str) -> list[str]:
    """``tests/{unit,e2e}/test_x.py`` -> both paths (one pair of braces at a time)."""
    m = re.search(r"\{([^{}]*)\}", path)
    if m is None:
        return [path]
    return [p for choice in m.group(1).split(",") for p in expand(path[: m.start()] + choice + path[m.end() :])]


def resolves(name: str) -> bool:
    """A module, or an attribute (chain) of the longest module prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attribute in parts[i:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def namespace_table(text: str) -> list[tuple[list[str], list[str]]]:
    """The README's former -> now log namespaces, a row at a time."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == FORMER_NAMESPACES)
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip().startswith("|"):
            break
        former, now = line.strip().strip("|").split("|")
        rows.append((DOTTED.findall(former), DOTTED.findall(now)))
    return rows


def mentions(pattern: re.Pattern) -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text(errors="replace")
        if document.name == "README.md" and FORMER_NAMESPACES in text:
            former = {name for row, _ in namespace_table(text) for name in row}
        else:
            former = set()
        found += [(str(document.relative_to(ROOT)), m) for m in pattern.findall(text) if m not in former]
    return found


def test_every_file_path_in_the_documents_exists():
    """Each path under zmqwamp/, tests/, examples/, docs/, scripts/, twisted/, bench/ named in a document exists."""
    missing = [(doc, path) for doc, found in mentions(PATH) for path in expand(found.rstrip(".")) if not glob(str(ROOT / path))]
    assert missing == []


def test_every_dotted_name_in_the_documents_resolves():
    """Each zmqwamp.x.y named in a document is a module or a module's attribute (not a WAMP URI or a file name)."""
    missing = [(doc, name) for doc, name in mentions(DOTTED) if not NOT_MODULES.search(name) and not resolves(name)]
    assert missing == []


def test_every_python_m_command_and_make_target_in_the_documents_exists():
    """``python -m X``: X is a module with a main block (or a package with __main__); ``make T``: a Makefile target."""
    modules = {name for _, name in mentions(PYTHON_M) if name.split(".")[0] == "zmqwamp"}
    assert modules >= {"zmqwamp", "zmqwamp.users", "zmqwamp.healthcheck"}
    for name in sorted(modules):
        spec = importlib.util.find_spec(name + ".__main__" if name == "zmqwamp" else name)
        assert spec is not None and spec.origin is not None, name
        assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), name
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {target for _, target in mentions(MAKE)} - targets == set()


@pytest.mark.parametrize("row", range(6))
def test_the_log_namespaces_in_the_readme_are_those_modules_log_under(row):
    """The README's former -> now namespace table: each new name is a module of the package with a Logger of its own
    (the namespace operators filter on)."""
    rows = namespace_table((ROOT / "README.md").read_text())
    assert len(rows) == 6
    former, now = rows[row]
    assert former and now
    for name in now:
        module = importlib.import_module(name)
        assert module.log.namespace == name
