"""One typed config tree, loaded from configs/*.yaml and overridable from the command line.

Sections are frozen dataclasses; unknown keys and wrong types are errors that name the
key. Overrides are `section.key=value` strings parsed as YAML scalars.
"""

from __future__ import annotations

import dataclasses
import math
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

    method: str = "auto"  # cs2 with trained CS2 weights, else joint_salience (training-free)
    keep: float = 0.1
    rope: str = "sync"
    refiner_layers: int = 4
    scoring: str = "auto"
    fastv_layer: int = 2
    seed: int = 0


#: What an answer to a spoken question reads (StreamConfig.spoken_until).
SPOKEN_UNTIL = ("onset", "now")

#: Element types the LLM key/value store may hold (StreamConfig.kv_dtype).
KV_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class StreamConfig:
    """A live session: chunking, the bounded joint token cache, eviction, asking.

    `cache_budget` is B, the AV tokens (both modalities together) a session may hold;
    `keep` is the share of each 2-s chunk's AV tokens the query-agnostic ingest
    sieve keeps. At ask time the window's cached tokens are used as they are, or re-sieved
    with the question (query-aware CS2) down to `ask_keep` of them or `ask_budget` tokens.
    With `ask_tail` the answer also reads the tail: media newer than the cache (closed
    chunks still waiting for the encoders and the open chunk), encoded and ingest-sieved at
    ask time and placed after the cache at its real times, never cached.
    `tail_warm_s`: while the engine is idle it encodes the tail ahead of any question (again
    once the chunker takes a frame, at 2 fps, or more than `tail_warm_s` of audio came); an
    answer reads that tail when no frame came since and the audio newer than it spans at most
    `tail_warm_s`, and encodes the tail itself otherwise. null: always encoded at ask time.
    `spoken_until`: what an answer to a spoken question reads. "onset" (default): the stream
    up to where the speech began, as a typed question asked then would (what the camera saw and
    heard while the person spoke is cached for later questions, not read by this answer);
    "now": everything up to the ask, the words' own span included where the scene keeps it.
    `kv_dtype`: the element type of the cached LLM keys and values (null: the model's dtype).
    "bfloat16" under a float32 model halves the cache's KV bytes and runs attention over it in
    bfloat16 (matrix units on CPUs that have them); the model's own weights are unchanged.
    Eviction: see echo_core/stream/eviction.py; re-basing: echo_core/stream/session.py.
    """

    cache_budget: int = 2048
    max_cache_budget: int | None = None  # the most a client may ask for (None: cache_budget)
    keep: float = 0.1
    ask_keep: float | None = None
    ask_budget: int | None = None
    window_s: float | None = None  # default question window; None = all retained history
    bucket_s: float = 10.0  # eviction coverage buckets of stream time
    floor_share: float = 0.25  # share of the budget reserved as per-bucket floors
    age_weight: float = 0.1  # priority lost per bucket of age (scores are z-scored per chunk)
    rebase_horizon_s: float = 600.0  # positions span at most this much stream time
    kv_reuse: bool = True
    kv_dtype: str | None = None  # element type of the cached keys/values (None: the model's)
    ask_tail: bool = True  # answers also read media newer than the cache, encoded at ask time
    tail_keep: float | None = None  # share of the tail's AV tokens kept (None: keep)
    tail_warm_s: float | None = 0.5  # most audio an answer may miss to read a tail encoded ahead
    lateness_s: float = 0.5  # a chunk closes this long after its end has been seen
    max_pending_chunks: int = 8  # chunks waiting for the encoders; the oldest is dropped beyond
    video_queue: int = 8  # frames waiting for the chunker; latest-frame-wins beyond
    audio_queue: int = 200  # packets waiting for the chunker; oldest dropped beyond
    max_new_tokens: int = 16
    spoken_until: str = "onset"  # "onset" | "now": see above

    def __post_init__(self) -> None:
        if self.cache_budget < 1:
            raise ConfigError(f"stream.cache_budget must be ≥ 1, got {self.cache_budget}")
        if self.max_cache_budget is not None and self.max_cache_budget < self.cache_budget:
            raise ConfigError(
                f"stream.max_cache_budget {self.max_cache_budget} < stream.cache_budget {self.cache_budget}"
            )
        if not 0 < self.keep <= 1:
            raise ConfigError(f"stream.keep must be in (0, 1], got {self.keep}")
        if self.ask_keep is not None and self.ask_budget is not None:
            raise ConfigError("give at most one of stream.ask_keep and stream.ask_budget")
        if self.tail_keep is not None and not 0 < self.tail_keep <= 1:
            raise ConfigError(f"stream.tail_keep must be in (0, 1] or null, got {self.tail_keep}")
        if self.tail_warm_s is not None and self.tail_warm_s <= 0:
            raise ConfigError(f"stream.tail_warm_s must be > 0 or null, got {self.tail_warm_s}")
        if self.ask_keep is not None and not 0 < self.ask_keep <= 1:
            raise ConfigError(f"stream.ask_keep must be in (0, 1] or null, got {self.ask_keep}")
        if self.ask_budget is not None and self.ask_budget < 1:
            raise ConfigError(f"stream.ask_budget must be ≥ 1 or null, got {self.ask_budget}")
        if self.window_s is not None and self.window_s <= 0:
            raise ConfigError(f"stream.window_s must be > 0 or null, got {self.window_s}")
        if self.bucket_s <= 0 or not 0 <= self.floor_share < 1 or self.age_weight < 0:
            raise ConfigError(
                f"need bucket_s > 0, 0 ≤ floor_share < 1, age_weight ≥ 0; got "
                f"{self.bucket_s}, {self.floor_share}, {self.age_weight}"
            )
        if self.rebase_horizon_s < 4 * self.bucket_s:
            raise ConfigError(
                f"stream.rebase_horizon_s {self.rebase_horizon_s} must be ≥ 4 × bucket_s "
                f"({4 * self.bucket_s})"
            )
        if self.spoken_until not in SPOKEN_UNTIL:
            raise ConfigError(
                f"stream.spoken_until must be one of {', '.join(SPOKEN_UNTIL)}, got {self.spoken_until!r}"
            )
        if self.kv_dtype is not None and self.kv_dtype not in KV_DTYPES:
            raise ConfigError(
                f"stream.kv_dtype must be one of {', '.join(KV_DTYPES)} or null, got {self.kv_dtype!r}"
            )
        for name in ("max_pending_chunks", "video_queue", "audio_queue", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"stream.{name} must be ≥ 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class EchoConfig:
    """The root of the config tree."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)


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
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
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
