"""One typed config tree, loaded from configs/*.yaml and overridable from the command line.

Sections are frozen dataclasses; unknown keys and wrong types are errors that name the
key. Overrides are `section.key=value` strings parsed as YAML scalars.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
    """Which thinker to load and where; `directory` None means the bundled model."""

    directory: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_pixels: int = 448 * 448


@dataclass(frozen=True)
class SieveConfig:
    """Token reduction settings."""

    method: str = "cs2"
    keep: float = 0.1
    rope: str = "sync"
    refiner_layers: int = 4
    scoring: str = "auto"
    fastv_layer: int = 2
    seed: int = 0


@dataclass(frozen=True)
class EchoConfig:
    """The root of the config tree."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(hint, value, where)  # type: ignore[arg-type]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if isinstance(value, bool) and hint is not bool:
            raise ConfigError(f"{where}: expected {hint.__name__}, got bool {value!r}")
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return value
    return value


def build(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested mapping."""
    out = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.split(".")
        node = out
        for key in keys[:-1]:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        node[keys[-1]] = yaml.safe_load(raw)
    return out


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML file ({} for None), with clear errors for a missing file or a non-mapping."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    loaded = yaml.safe_load(p.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EchoConfig:
    """Load `path` (YAML) or the defaults, then apply overrides, then validate."""
    return build(EchoConfig, apply_overrides(read_yaml(path), overrides or []))
