"""Every test module names its tier, so `pytest -m unit|integration|e2e|quality` selects it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent
TIERS = {"unit", "integration", "e2e", "quality"}


def module_tiers(path: Path) -> set[str]:
    """The `pytest.mark.<name>` names in the module-level `pytestmark = ...` assignment."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return {
                n.attr
                for n in ast.walk(node.value)
                if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Attribute)
                and n.value.attr == "mark"
            }
    return set()


def test_every_test_module_has_a_tier_marker() -> None:
    modules = sorted(TESTS.glob("test_*.py"))
    assert len(modules) > 10, modules
    missing = [p.name for p in modules if not module_tiers(p) & TIERS]
    assert not missing, f"test modules without a module-level pytestmark tier {sorted(TIERS)}: {missing}"


def test_tiers_are_registered_and_strict() -> None:
    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":", 1)[0] for line in options["markers"]}
    assert registered >= TIERS, registered
    assert "--strict-markers" in options["addopts"]
