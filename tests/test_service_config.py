"""Service configs load, validate and name the key that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo_core.errors import ConfigError
from server.config import load_service_config

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_demo_config_loads() -> None:
    config = load_service_config(CONFIGS / "demo.yaml", ["server.port=0"])
    assert config.server.port == 0 and config.server.redis_url is None
    assert config.model.directory is None and config.stream.cache_budget == 1024


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("server.port=70000", "server.port"),
        ("server.api_keys=key", "expected a list"),
        ("server.api_keys=[1]", r"api_keys\[0\]"),
        ("server.tls_cert=a.pem", "together"),
        ("server.questions_per_minute=0", "questions_per_minute"),
        ("server.ice_servers=[{urls: 1}]", "urls"),
        ("server.colour=red", "unknown keys"),
        ("stream.keep=0", "stream.keep must be in"),
    ],
)
def test_bad_values_name_the_key(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_service_config(CONFIGS / "demo.yaml", [override])


@pytest.mark.parametrize("name", ["qwen2_5_omni_3b.yaml", "qwen2_5_omni_7b.yaml"])
def test_gpu_configs_validate(name: str) -> None:
    config = load_service_config(CONFIGS / name)
    assert config.model.device == "cuda" and config.model.dtype == "bfloat16"
    assert config.server.redis_url and config.server.ice_servers[0].urls.startswith("stun:")
