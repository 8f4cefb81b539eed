"""echo_core: media → tokens → sieve → cache → answers, on the Qwen2.5-Omni thinker.

The core is pure: it takes numpy arrays and torch tensors in and gives tokens and text
out. It never imports network or storage libraries. The folders follow the pipeline:
`model/` (media → tokens → text), `sieve/` (which tokens to keep), `stream/` (all of it
live, for many sessions).

The public API, importable from `echo_core` itself:

- configuration: `EchoConfig`, `ModelConfig`, `SieveConfig`, `StreamConfig`, `load_config`
- the model: `OmniBackend` (a thinker checkpoint, its encoders and language model),
  `RopeMode`, `default_model_dir` (the bundled echo-tiny unless a directory is given)
- live streams: `StreamModel` (the model side shared by sessions), `StreamSession`,
  `Scheduler`, the input frames `VideoFrame` and `AudioPacket`, the streamed `Answer`
- questions: `Question` (text or a `SpokenQuestion`)
- sieves: `METHODS`, `make_sieve`, `Sieve`, `SieveResult`, `CS2`
- errors: `EchoError` and its kinds `ConfigError`, `CheckpointError`, `InvalidMediaError`

The names load on first use (PEP 562), so `import echo_core` and the torch-free modules
(`echo_core.config`, `echo_core.errors`, `echo_core.speech`) never import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Each public name, by the module (relative to this package) that defines it.
_EXPORTS = {
    "EchoConfig": ".config",
    "ModelConfig": ".config",
    "SieveConfig": ".config",
    "StreamConfig": ".config",
    "load_config": ".config",
    "EchoError": ".errors",
    "ConfigError": ".errors",
    "CheckpointError": ".errors",
    "InvalidMediaError": ".errors",
    "Question": ".speech",
    "SpokenQuestion": ".speech",
    "OmniBackend": ".model.backend",
    "RopeMode": ".model.rope",
    "default_model_dir": ".models",
    "METHODS": ".sieve",
    "CS2": ".sieve",
    "Sieve": ".sieve",
    "SieveResult": ".sieve",
    "make_sieve": ".sieve",
    "StreamModel": ".stream.runtime",
    "StreamSession": ".stream.session",
    "Scheduler": ".stream.scheduler",
    "VideoFrame": ".stream.frames",
    "AudioPacket": ".stream.frames",
    "Answer": ".stream.answer",
}

if TYPE_CHECKING:
    from .config import EchoConfig, ModelConfig, SieveConfig, StreamConfig, load_config
    from .errors import CheckpointError, ConfigError, EchoError, InvalidMediaError
    from .model.backend import OmniBackend
    from .model.rope import RopeMode
    from .models import default_model_dir
    from .sieve import CS2, METHODS, Sieve, SieveResult, make_sieve
    from .speech import Question, SpokenQuestion
    from .stream.answer import Answer
    from .stream.frames import AudioPacket, VideoFrame
    from .stream.runtime import StreamModel
    from .stream.scheduler import Scheduler
    from .stream.session import StreamSession

__all__ = [
    "CS2",
    "METHODS",
    "Answer",
    "AudioPacket",
    "CheckpointError",
    "ConfigError",
    "EchoConfig",
    "EchoError",
    "InvalidMediaError",
    "ModelConfig",
    "OmniBackend",
    "Question",
    "RopeMode",
    "Scheduler",
    "Sieve",
    "SieveConfig",
    "SieveResult",
    "SpokenQuestion",
    "StreamConfig",
    "StreamModel",
    "StreamSession",
    "VideoFrame",
    "default_model_dir",
    "load_config",
    "make_sieve",
]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (PEP 562) and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
