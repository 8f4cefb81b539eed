"""The typed config tree: YAML, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo_core.config import EchoConfig, load_config
from echo_core.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_shipped_configs_load() -> None:
    assert load_config() == EchoConfig()
    from echo_core.config import read_yaml
    from echo_lab.train.config import load_train_config
    from server.config import load_service_config

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name.endswith("_train.yaml"):
            load_train_config(path)
        elif "server" in read_yaml(path):  # a service config: core sections + server
            secrets = {"ECHO_API_KEY": "k" * 32, "ECHO_TOKEN_SECRET": "s" * 64}  # cluster.yaml's
            load_service_config(path, environ=secrets)
        else:
            load_config(path)


def test_overrides_parse_yaml_scalars(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("sieve:\n  keep: 0.2\n")
    cfg = load_config(cfg_file, ["sieve.keep=0.05", "model.dtype=bfloat16", "sieve.refiner_layers=2"])
    assert cfg.sieve.keep == 0.05 and cfg.model.dtype == "bfloat16" and cfg.sieve.refiner_layers == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sieve.kep=0.1"], "unknown keys \\['kep'\\]"),
        (["sieve.keep=lots"], "config.sieve.keep: expected float"),
        (["sieve.refiner_layers=true"], "expected int, got bool"),
        (["sieve"], "must look like section.key=value"),
        (["model=3"], "expected a mapping"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/echo.yaml")
