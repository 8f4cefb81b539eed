"""Models that ship inside the package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import CheckpointError

#: The bundled echo-tiny checkpoint (thinker + tokenizer + trained CS2): package data of this package.
ECHO_TINY_DIR = Path(str(files(__name__).joinpath("echo-tiny")))


def default_model_dir(directory: str | Path | None = None) -> Path:
    """`directory` if given, else the bundled echo-tiny checkpoint."""
    if directory is not None:
        return Path(directory)
    if not (ECHO_TINY_DIR / "config.json").is_file():
        raise CheckpointError(
            f"the bundled echo-tiny checkpoint is missing at {ECHO_TINY_DIR}; train it with "
            "`echo-train` (echo_lab) or pass a model directory"
        )
    return ECHO_TINY_DIR
