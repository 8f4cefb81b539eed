"""echo_core's public API: every name resolves, lazily, and `import echo_core` needs no torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import echo_core

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def type_checking_names() -> set[str]:
    """The names echo_core/__init__.py imports under `if TYPE_CHECKING:`."""
    tree = ast.parse((ROOT / "echo_core" / "__init__.py").read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.dump(stmt)
                names |= {a.asname or a.name for a in stmt.names}
    return names


def test_every_public_name_resolves_to_its_module() -> None:
    assert len(set(echo_core.__all__)) == len(echo_core.__all__), "duplicates in __all__"
    assert set(echo_core.__all__) == set(echo_core._EXPORTS) == type_checking_names()
    for name in echo_core.__all__:
        module = importlib.import_module(echo_core._EXPORTS[name], "echo_core")
        assert getattr(echo_core, name) is getattr(module, name), name
    assert set(echo_core.__all__) <= set(dir(echo_core))
    assert echo_core.StreamModel.__module__ == "echo_core.stream.runtime"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        echo_core.nothing_here  # noqa: B018


# In a fresh interpreter: importing the package, its torch-free modules and their public
# names loads no torch; the first model-side name does.
FRESH = """
import sys
import echo_core, echo_core.config, echo_core.errors, echo_core.speech
from echo_core import ConfigError, EchoError, SieveConfig, SpokenQuestion, StreamConfig, load_config
assert "torch" not in sys.modules, "torch imported without need"
from echo_core import StreamModel
assert "torch" in sys.modules
"""


def test_importing_echo_core_does_not_import_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FRESH], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
