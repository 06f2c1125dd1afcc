"""tests/lowest-versions.txt, the versions `make test-unit-lowest` runs tests/unit on, against pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def lower_bounds() -> dict[str, str]:
    """Each dependency of pyproject.toml and its one ``>=`` bound."""
    bounds = {}
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        lowest = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lowest) == 1, f"{line}: every dependency has one lower bound (>=)"
        bounds[canonicalize_name(requirement.name)] = lowest[0]
    return bounds


def pins() -> dict[str, str]:
    """Each ``name==version`` line of tests/lowest-versions.txt."""
    pinned = {}
    for line in (ROOT / "tests" / "lowest-versions.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==" and not requirement.extras, f"{line}: name==version (constraints: no extras)"
            pinned[canonicalize_name(requirement.name)] = spec.version
    return pinned


def test_the_lowest_versions_are_pyprojects_lower_bounds():
    """Every dependency is pinned at exactly its lower bound, and nothing else is pinned: the two cannot drift."""
    assert pins() == lower_bounds()
