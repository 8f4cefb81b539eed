"""Models that ship inside the package."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

#: The bundled echo-tiny checkpoint (thinker + tokenizer + trained CS2), committed to the repo.
ECHO_TINY_DIR = Path(__file__).resolve().parent / "echo-tiny"


def default_model_dir(directory: str | Path | None = None) -> Path:
    """`directory` if given, else the bundled echo-tiny checkpoint."""
    if directory is not None:
        return Path(directory)
    if not (ECHO_TINY_DIR / "config.json").is_file():
        raise CheckpointError(
            f"the bundled echo-tiny checkpoint is missing at {ECHO_TINY_DIR}; train it with "
            "`echo-train --config configs/echo_tiny_train.yaml` or pass a model directory"
        )
    return ECHO_TINY_DIR
