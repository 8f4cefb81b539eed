"""Typed errors of echo_core.

Every error states the invariant that broke, with the numbers involved, so that a
caller (the server, a benchmark, a test) can report it without a traceback from deep
inside torch.
"""

from __future__ import annotations


class EchoError(Exception):
    """Base class of every error raised on purpose by echo_core."""

    code = "echo_error"


class CheckpointError(EchoError):
    """A model directory is missing files or is not a Qwen2.5-Omni thinker."""

    code = "bad_checkpoint"


class ConfigError(EchoError):
    """A configuration value is missing, of the wrong type or out of range."""

    code = "bad_config"


class BudgetError(EchoError):
    """A keep ratio or token budget is outside its valid range."""

    code = "bad_budget"


class EmptyAVError(EchoError):
    """A sieve or model call got no audio and no video tokens."""

    code = "empty_av"


class PlaceholderMismatchError(EchoError):
    """The number of encoder features differs from the number of placeholder tokens."""

    code = "placeholder_mismatch"


class InvalidMediaError(EchoError):
    """Frames or audio samples that cannot be turned into model inputs."""

    code = "invalid_media"


class SpeechSynthesisError(EchoError):
    """espeak-ng is missing or failed."""

    code = "tts_failed"
