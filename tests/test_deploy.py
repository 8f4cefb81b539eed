"""docker/: the image and the compose deployment stay consistent with the code and configs.

No Docker needed: docker/compose.yaml and docker/Dockerfile are parsed here, every
`echo-server` command line goes through the real CLI parser and `load_service_config`, and
the commented GPU worker example is uncommented and checked like the others. When the
`docker compose` CLI is installed, it validates the file too.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import server.cli
from server.config import ServiceConfig, check_exposure, load_service_config
from server.resources import config_file, configs_dir

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSTRAINTS = ROOT / "scripts" / "constraints.txt"

#: The variables compose.yaml must require, and sample values for them. The second and
#: third sets are values YAML would not read back as the same string unless the overrides
#: quote them (digits only, `null`, a hex literal, `: `, `#`, flow characters).
REQUIRED_VARS = {"ECHO_TOKEN_SECRET", "ECHO_API_KEY"}
SAMPLES = [
    {"ECHO_TOKEN_SECRET": "a-shared-secret-of-32-characters", "ECHO_API_KEY": "key-0123"},
    {"ECHO_TOKEN_SECRET": "12345678901234567890", "ECHO_API_KEY": "null"},
    {"ECHO_TOKEN_SECRET": "yes: a secret # with, [flow] {chars}", "ECHO_API_KEY": "0x1F"},
]
GPU_BEGIN, GPU_END = "# >>> gpu worker", "# <<< gpu worker"


# ------------------------------------------------------------------ compose helpers
_VAR = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(text: str, env: dict[str, str], used: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}`, `${VAR:?msg}`, `${VAR:-default}` and `$$`; an unset variable fails."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m["name"] or m["bare"]
        op = m["op"] or ""
        if used is not None:
            used[name] = op
        value = env.get(name)
        unset = value is None or (op.startswith(":") and not value)
        if op.endswith("-"):
            return m["arg"] if unset else str(value)
        if op.endswith("+"):
            return "" if unset else m["arg"]
        if op.endswith("?") and unset:
            raise AssertionError(f"${{{name}}} is required: {m['arg']}")
        if value is None:
            raise AssertionError(f"${{{name}}} is not set and has no default")
        return value

    return _VAR.sub(sub, text)


def uncomment_gpu_example(text: str) -> str:
    """The compose file with the lines between the GPU markers uncommented (one `# ` each)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == GPU_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == GPU_END]
    assert len(starts) == 1 and len(ends) == 1 and starts[0] + 1 < ends[0], "GPU example markers"
    for i in range(starts[0] + 1, ends[0]):
        assert re.match(r"^\s*#", lines[i]), f"line {i + 1} inside the GPU example is not commented"
        lines[i] = re.sub(r"^(\s*)# ?", r"\1", lines[i], count=1)
    return "\n".join(lines) + "\n"


def compose_doc(with_gpu: bool) -> dict[str, Any]:
    text = COMPOSE.read_text()
    doc = yaml.safe_load(uncomment_gpu_example(text) if with_gpu else text)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return list(value)


# ------------------------------------------------------------------ Dockerfile helpers
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of docker/Dockerfile; continuation lines joined."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        keyword, _, rest = (buf + s).partition(" ")
        buf = ""
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, rest
            stages.append(Stage(m[1], m[2], []))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    assert stages, "no FROM in docker/Dockerfile"
    return global_args, stages


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], text)


def stage_chain(stages: list[Stage], args: dict[str, str], target: Stage) -> list[Stage]:
    """`target` and the stages it builds on, the first base first."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [target]
    while (base := expand(chain[0].base, args)) in by_name:
        chain.insert(0, by_name[base])
        assert len(chain) <= len(stages), "FROM cycle"
    return chain


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip().lstrip("/")
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not handled here"
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def cli_parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str | None, list[str]]:
    """What the real `echo-server` argument parser makes of `argv` (the server is not started)."""
    seen: list[tuple[str | None, list[str]]] = []

    async def fake_serve(config_path: str | None, overrides: list[str]) -> int:
        seen.append((config_path, list(overrides)))
        return 0

    monkeypatch.setattr(server.cli, "serve", fake_serve)
    assert server.cli.main(argv) == 0
    assert len(seen) == 1
    return seen[0]


# ------------------------------------------------------------------ the compose services
@dataclass
class EchoService:
    name: str
    spec: dict[str, Any]
    config_path: str
    overrides: list[str]  # as written, before interpolation


def echo_services(doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[EchoService]:
    _, stages = dockerfile()
    image_entrypoint = exec_form(dict(stages[-1].instructions)["ENTRYPOINT"])
    out = []
    for name, spec in doc["services"].items():
        if "build" not in spec:
            continue
        argv = (as_argv(spec.get("entrypoint")) or image_entrypoint) + as_argv(spec.get("command"))
        program = argv[0]
        assert program == "echo-server", f"{name}: runs {program!r}, not echo-server"
        assert program in PYPROJECT["project"]["scripts"], f"{program} is not a [project.scripts] entry"
        config_path, overrides = cli_parse(argv[1:], monkeypatch)
        assert config_path is not None, f"{name}: no --config"
        out.append(EchoService(name, spec, config_path, overrides))
    return out


def redis_address(doc: dict[str, Any]) -> tuple[str, int]:
    redis = doc["services"]["redis"]
    argv = as_argv(redis.get("command"))
    assert argv[0] == "redis-server", argv

    def option(flag: str, default: str) -> str:
        return argv[argv.index(flag) + 1] if flag in argv else default

    return option("--bind", "*").split()[0], int(option("--port", "6379"))


def packaged(config: str) -> bool:
    """Whether `config` names a config that ships with the server (the image has no checkout)."""
    return "/" not in config and config_file(config).parent == configs_dir()


def load(service: EchoService, env: dict[str, str]) -> ServiceConfig:
    overrides = [interpolate(o, env) for o in service.overrides]
    return load_service_config(service.config_path, overrides)


def expected_mode(name: str) -> str:
    if name == "gateway":
        return "gateway"
    assert name.startswith("worker"), f"service {name!r}: name it gateway or worker*"
    return "worker"


def healthcheck_urls(spec: dict[str, Any]) -> list[str]:
    check = spec.get("healthcheck")
    assert isinstance(check, dict) and not check.get("disable"), "no healthcheck"
    test = check.get("test")
    text = " ".join(test) if isinstance(test, list) else str(test)
    return re.findall(r"https?://[^\s'\"]+", text)


@pytest.fixture(params=[False, True], ids=["compose", "compose+gpu-example"])
def doc(request: pytest.FixtureRequest) -> dict[str, Any]:
    return compose_doc(with_gpu=request.param)


def test_echo_services_run_echo_server_with_a_config_that_loads(
    doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = echo_services(doc, monkeypatch)
    assert {s.name for s in services} >= {"gateway", "worker1", "worker2"}
    module, _, attr = PYPROJECT["project"]["scripts"]["echo-server"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    redis_host, redis_port = redis_address(doc)
    for service in services:
        assert packaged(service.config_path), f"{service.name}: {service.config_path} is not packaged"
        for env in SAMPLES:
            config = load(service, env)
            s = config.server
            assert s.mode == expected_mode(service.name), service.name
            assert s.token_secret == env["ECHO_TOKEN_SECRET"], service.name
            assert s.api_keys == [env["ECHO_API_KEY"]], service.name
            assert s.host == "0.0.0.0", f"{service.name}: must listen on every interface"
            assert s.redis_url is not None
            url = urlsplit(s.redis_url)
            assert url.scheme == "redis" and (url.hostname, url.port or 6379) == (redis_host, redis_port)
            if s.mode == "worker":
                assert s.worker_id, f"{service.name}: a worker needs a fixed server.worker_id"
        # with secrets as the compose comment makes them, every process starts off loopback
        check_exposure(load(service, {"ECHO_TOKEN_SECRET": "f" * 64, "ECHO_API_KEY": "e" * 32}).server)


def test_ids_and_ports_are_unique(doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    configs = {s.name: load(s, SAMPLES[0]).server for s in echo_services(doc, monkeypatch)}
    assert configs["gateway"].port == 8080
    assert (configs["worker1"].worker_id, configs["worker1"].port) == ("w1", 8081)
    assert (configs["worker2"].worker_id, configs["worker2"].port) == ("w2", 8082)
    workers = [c.worker_id for c in configs.values() if c.mode == "worker"]
    assert len(workers) == len(set(workers)), workers
    # host networking: every process needs a port of its own, Redis's included
    ports = [c.port for c in configs.values()] + [redis_address(doc)[1]]
    assert len(ports) == len(set(ports)), ports
    assert 0 not in ports, "a fixed port is needed for the healthcheck and the clients"


def test_secrets_are_required_compose_variables(doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for service in echo_services(doc, monkeypatch):
        used: dict[str, str] = {}
        for override in service.overrides:
            interpolate(override, SAMPLES[0], used)
        assert set(used) == REQUIRED_VARS, f"{service.name}: uses {sorted(used)}"
        assert all(op == ":?" for op in used.values()), f"{service.name}: use ${{VAR:?message}}"
        with pytest.raises(AssertionError, match="ECHO_API_KEY"):
            load(service, {"ECHO_TOKEN_SECRET": SAMPLES[0]["ECHO_TOKEN_SECRET"]})


def test_healthchecks_use_each_service_port(doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for service in echo_services(doc, monkeypatch):
        port = load(service, SAMPLES[0]).server.port
        urls = healthcheck_urls(service.spec)
        assert urls, f"{service.name}: the healthcheck names no URL"
        for url in map(urlsplit, urls):
            assert url.hostname in ("127.0.0.1", "localhost"), f"{service.name}: {url.geturl()}"
            assert url.port == port, f"{service.name}: healthcheck on {url.port}, server on {port}"
            assert url.path == "/healthz", f"{service.name}: {url.geturl()}"


def test_echo_services_share_host_network_and_wait_for_redis(
    doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    global_args, stages = dockerfile()
    stage_names = {s.name for s in stages}
    for service in echo_services(doc, monkeypatch):
        spec = service.spec
        assert spec.get("network_mode") == "host", service.name
        assert spec.get("restart") == "unless-stopped", service.name
        assert spec["depends_on"]["redis"]["condition"] == "service_healthy", service.name
        build = spec["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT, service.name
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
        variant = (build.get("args") or {}).get("VARIANT", global_args["VARIANT"])
        base = expand(stages[-1].base, {**global_args, "VARIANT": variant})
        assert base in stage_names, f"{service.name}: VARIANT={variant} names no stage ({base})"


def test_redis_service(doc: dict[str, Any]) -> None:
    redis = doc["services"]["redis"]
    assert redis["image"] == "redis:7"
    argv = as_argv(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert redis_address(doc)[0] == "127.0.0.1", "Redis must not listen on public interfaces"
    assert redis.get("network_mode") == "host"
    test = " ".join(as_argv(redis["healthcheck"]["test"]))
    assert "redis-cli" in test and "ping" in test
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), "the AOF needs a volume"


def test_gpu_example_uses_the_cuda_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose_doc(with_gpu=True)
    plain = compose_doc(with_gpu=False)
    added = [s for s in echo_services(doc, monkeypatch) if s.name not in plain["services"]]
    assert len(added) == 1, [s.name for s in added]
    (gpu,) = added
    assert gpu.spec["build"]["args"]["VARIANT"] == "cuda"
    config = load(gpu, SAMPLES[0])
    assert (config.model.device, config.model.dtype) == ("cuda", "bfloat16")
    assert config.server.mode == "worker"
    devices = gpu.spec["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu.spec["image"] != plain["services"]["worker1"]["image"], "the CPU and CUDA images need two tags"


# ------------------------------------------------------------------ the Dockerfile
def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    _, stages = dockerfile()
    sources = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword not in ("COPY", "ADD") or "--from" in rest:
                continue
            words = exec_form(rest) if rest.startswith("[") else shlex.split(rest)
            args = [a for a in words if not a.startswith("--")]
            assert keyword == "COPY" and len(args) >= 2, rest
            sources += args[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
        assert not dockerignored(src), f"COPY {src}: excluded by .dockerignore"
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in sources, f"the image lacks the {package} package"


def _runs(chain: list[Stage]) -> Iterator[str]:
    for stage in chain:
        for keyword, rest in stage.instructions:
            if keyword == "RUN":
                yield rest


@pytest.mark.parametrize(("variant", "index"), [("cpu", "/whl/cpu"), ("cuda", "/whl/cu12")])
def test_dockerfile_installs_pinned_torch_before_the_project(variant: str, index: str) -> None:
    pins = [line for line in CONSTRAINTS.read_text().splitlines() if re.match(r"torch\s*==", line)]
    assert len(pins) == 1, pins
    assert not [d for d in PYPROJECT["project"]["optional-dependencies"]["server"] if "==" in d]
    global_args, stages = dockerfile()
    chain = stage_chain(stages, {**global_args, "VARIANT": variant}, stages[-1])
    copies = {
        PurePosixPath(args[-1]): args[:-1]
        for stage in chain
        for keyword, rest in stage.instructions
        if keyword == "COPY"
        for args in [shlex.split(rest)]
    }
    constraints = [dest for dest, src in copies.items() if src == ["scripts/constraints.txt"]]
    assert len(constraints) == 1, f"{variant}: scripts/constraints.txt is copied {len(constraints)} times"
    pinned = rf"pip install -c {re.escape(str(constraints[0]))}\s"
    runs = list(_runs(chain))
    torch_at = [i for i, r in enumerate(runs) if re.search(rf"{pinned}(.*\s)?torch(\s|$)", r)]
    project_at = [i for i, r in enumerate(runs) if re.search(r"pip install\b.*\s\"?/src\[server\]", r)]
    assert torch_at, f"{variant}: no `pip install -c {constraints[0]} torch`"
    assert len(project_at) == 1, f"{variant}: the project is installed {len(project_at)} times with [server]"
    assert re.search(pinned, runs[project_at[0]]), f"{variant}: the project ignores the constraints"
    assert torch_at[0] < project_at[0], f"{variant}: torch must be installed before the project"
    assert index in runs[torch_at[0]], f"{variant}: torch from the wrong index: {runs[torch_at[0]]}"


def test_dockerfile_variants_and_user() -> None:
    global_args, stages = dockerfile()
    assert global_args["VARIANT"] == "cpu"
    cpu = stage_chain(stages, {**global_args, "VARIANT": "cpu"}, stages[-1])
    cuda = stage_chain(stages, {**global_args, "VARIANT": "cuda"}, stages[-1])
    assert expand(cpu[0].base, global_args) == "python:3.11-slim-bookworm"
    cuda_base = expand(cuda[0].base, global_args)
    assert re.fullmatch(r"nvidia/cuda:12\.\d+(\.\d+)?-\w+(-\w+)*-ubuntu\d\d\.04", cuda_base), cuda_base
    assert any("python3.11" in r for r in _runs(cuda)), "the CUDA image needs Python 3.11"
    users = [rest for keyword, rest in stages[-1].instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"


def test_dockerfile_entrypoint_cmd_and_healthcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    _, stages = dockerfile()
    final = dict(stages[-1].instructions)  # the last of each keyword
    assert exec_form(final["ENTRYPOINT"]) == ["echo-server"]
    config_path, overrides = cli_parse(exec_form(final["CMD"]), monkeypatch)
    assert config_path is not None
    assert packaged(config_path), f"the image runs --config {config_path}, not a packaged config"
    monkeypatch.setenv("ECHO_API_KEY", "k" * 32)  # the image takes its key from the environment
    server_config = load_service_config(config_path, overrides).server
    assert server_config.host == "0.0.0.0", "a container must listen on every interface"
    assert server_config.api_keys == ["k" * 32]
    check_exposure(server_config)  # it starts: no published key, plain HTTP allowed explicitly
    exposed = [int(p.split("/")[0]) for p in final["EXPOSE"].split()]
    assert exposed == [8080] and server_config.port in exposed, exposed
    check = final["HEALTHCHECK"]
    m = re.search(r"http://127\.0\.0\.1:\$\{ECHO_PORT:-(\d+)\}/healthz", check)
    assert m and int(m[1]) == server_config.port, check
    assert "curl" not in check and "python" in check


# ------------------------------------------------------------------ docs and docker itself
def test_readme_matches_the_compose_file(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "docker" / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml up --build" in readme
    for service in echo_services(compose_doc(with_gpu=False), monkeypatch):
        port = load(service, SAMPLES[0]).server.port
        assert str(port) in readme, f"docker/README.md does not mention port {port} ({service.name})"
    assert str(redis_address(compose_doc(with_gpu=False))[1]) in readme


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"the docker compose plugin is not installed ({reason})")
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED_VARS}
    for text in (COMPOSE.read_text(), uncomment_gpu_example(COMPOSE.read_text())):
        done = subprocess.run(
            [docker, "compose", "-f", "-", "--project-directory", str(COMPOSE.parent), "config", "-q"],
            input=text,
            env={**base, **SAMPLES[0]},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        env={**base, "ECHO_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "set ECHO_TOKEN_SECRET" in missing.stderr
