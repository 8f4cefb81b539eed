"""The packages point one way: echo_core never imports the rest; client needs no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
#: What each package may not import (top-level names, or dotted prefixes).
FORBIDDEN = {
    "echo_core": ("echo_lab", "server", "client", "aiortc", "aiohttp", "redis"),
    "server": ("echo_lab", "client"),
    "client": ("echo_lab", "echo_core", "torch", "transformers", "scipy"),
}
#: The server modules the client may use, all torch-free: the wire protocol, and the WebRTC
#: receive setting and the full-level audio frames both ends of a session share.
CLIENT_MAY_IMPORT = ("server.protocol", "server.rtc_latency", "server.full_level")


def imports(path: Path, package: str) -> set[str]:
    """The absolute module names `path` imports (relative imports resolved inside `package`)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    base = module.split(".")
    if path.name == "__init__.py":
        base = base[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + (path.name == "__init__.py")]
                names.add(".".join([*parent, node.module] if node.module else parent))
            else:
                names.add(node.module or "")
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports(path, package):
            if name.startswith(CLIENT_MAY_IMPORT) and package == "client":
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            elif package == "client" and name.split(".")[0] == "server":
                bad.append(f"{path.relative_to(ROOT)} imports {name} (only {CLIENT_MAY_IMPORT} is allowed)")
    assert not bad, "\n".join(bad)


def test_imports_resolve_relative_names() -> None:
    core = ROOT / "echo_core"
    assert "echo_core.model" in imports(core / "model" / "backend.py", "echo_core")  # from . import
    assert "echo_core.model.media" in imports(core / "stream" / "chunker.py", "echo_core")  # from ..model…
    demo = imports(ROOT / "echo_lab" / "live" / "demo.py", "echo_lab")
    assert {"echo_lab.launch.local_server", "client.echo_client"} <= demo, demo


# With torch and the model stack made unimportable, the whole client still imports.
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "scipy", "echo_lab", "silero_vad"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import client, client.cli, client.echo_client, client.errors, client.microphone, client.playback
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"echo_core", "server"})
print(",".join(heavy))
"""


def test_client_imports_without_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = {m for m in done.stdout.strip().split(",") if m}
    allowed = {
        "server",
        "server.protocol",
        "server.full_level",
        "echo_core",
        "echo_core.config",
        "echo_core.errors",
    }
    assert loaded <= allowed, sorted(loaded - allowed)
