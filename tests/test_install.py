"""Echo works installed, outside the checkout: one wheel of the project, two fresh venvs.

The client venv (`[client]`) runs `echo-client` without torch; the server venv (`[server]`,
torch from scripts/constraints.txt) serves the browser page and /healthz from a packaged config
named on the command line, from a working directory that is not the checkout and with no
PYTHONPATH, then stops on SIGTERM. Each step's time is printed (`pytest -s`).

Speed, on 2 cores: the project is built once into a wheel that both venvs install, and pip
skips byte-compiling the dependencies (`--no-compile`: Python compiles what it imports), which
halves the server install (torch and transformers are most of it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "scripts" / "constraints.txt"
#: What the wheel is built from: the files docker/Dockerfile copies (server/configs links to configs/).
SOURCES = ("pyproject.toml", "README.md", "configs", "echo_core", "echo_lab", "server", "client")
#: The environment of every child: no PYTHONPATH (it would put the checkout back on the path).
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def timed(label: str, cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `cmd` (failing the test with its output when it fails) and print how long it took."""
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    print(f"\n[install] {label}: {time.monotonic() - started:.1f} s", flush=True)
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{label} failed ({done.returncode}):\n{output}"
    return done


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A scratch directory outside the checkout, removed afterwards (the venvs take ~1.5 GB)."""
    path = Path(tempfile.mkdtemp(prefix="echo-install-"))
    assert not path.is_relative_to(ROOT)
    yield path
    started = time.monotonic()
    shutil.rmtree(path, ignore_errors=True)
    print(f"\n[install] remove {path}: {time.monotonic() - started:.1f} s", flush=True)


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    """One wheel of the project, built from a copy of its sources (the checkout stays clean),
    shared by both venvs so that the project is built once."""
    src = workdir / "src"
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(origin, src / name, symlinks=True, ignore=ignore)
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(origin, src / name)
    out = workdir / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(src)]
    timed("build the wheel", cmd, workdir, timeout=300)
    (built,) = out.glob("echo_av-*.whl")
    return built


def make_venv(workdir: Path, name: str, requirement: str, *pip_args: str) -> Path:
    """A fresh venv in `workdir` with `requirement` installed; its bin directory."""
    venv = workdir / name
    timed(f"{name}: create the venv", [sys.executable, "-m", "venv", str(venv)], workdir, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    pip.append("--disable-pip-version-check")
    timed(f"{name}: pip install {requirement}", [*pip, *pip_args, requirement], workdir, timeout=900)
    return venv / "bin"


def installed_from(bin_dir: Path, module: str, cwd: Path) -> Path:
    """Where `module` is imported from by the venv's Python."""
    code = f"import {module}; print({module}.__file__)"
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def run_in(bin_dir: Path, cwd: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """`cmd` (a program of the venv first) in `cwd`; never fails by itself."""
    argv = [str(bin_dir / cmd[0]), *cmd[1:]]
    return subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60)


def test_client_extra_runs_the_client_without_torch(workdir: Path, wheel: Path) -> None:
    bin_dir = make_venv(workdir, "client-venv", f"{wheel}[client]")
    assert installed_from(bin_dir, "client", workdir).is_relative_to(bin_dir.parent)
    done = run_in(bin_dir, workdir, "echo-client", "--help")
    assert done.returncode == 0, done.stderr
    assert "echo-client stream" in done.stdout and "accuracy" not in done.stdout
    done = run_in(bin_dir, workdir, "python", "-c", "import client.cli, client.microphone; import torch")
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr, done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_server_extra_serves_the_page_from_a_packaged_config(workdir: Path, wheel: Path) -> None:
    bin_dir = make_venv(workdir, "server-venv", f"{wheel}[server]", "-c", str(CONSTRAINTS))
    assert installed_from(bin_dir, "server", workdir).is_relative_to(bin_dir.parent)
    model_dir = installed_from(bin_dir, "echo_core.models", workdir).parent / "echo-tiny"
    shipped = {p.name for p in model_dir.iterdir()}
    assert {"model.safetensors", "cs2.safetensors", "config.json"} <= shipped, shipped
    assert not shipped & {"train_log.jsonl", "train_curve.png"}, "the training log ships with the weights"
    port = free_port()
    cmd = [str(bin_dir / "echo-server"), "--config", "demo", f"server.port={port}", "server.host=127.0.0.1"]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"echo-server exited with {proc.returncode}:\n{proc.communicate()[0]}"
            assert time.monotonic() < deadline, "echo-server did not become healthy within 180 s"
            try:
                status, _ = get(f"{url}/healthz")
            except OSError:
                time.sleep(0.5)
                continue
            if status == 200:
                break
        print(f"\n[install] server-venv: echo-server healthy after {time.monotonic() - started:.1f} s")
        status, page = get(f"{url}/")
        assert status == 200 and "<html" in page.lower() and "/static/" in page, page[:300]
        status, script = get(f"{url}/static/app.js")
        assert status == 200 and "import" in script
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
    assert proc.returncode == 0, f"echo-server stopped with {proc.returncode}:\n{output}"
    assert "echo-server: shutting down" in output, output
