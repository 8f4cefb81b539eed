"""CS2 weights stored the way the EchoingPixels reference code stores them.

A checkpoint trained with the reference code keeps the refiner and the score head inside
the thinker's own weight files, next to the LLM:

    [thinker.]model.bidir_encoder.layers.{i}.<decoder layer param>  → refiner.layers.{i}.<param>
    [thinker.]model.compressor.ln.weight                            → head.norm.weight
    [thinker.]model.compressor.score_head.0.{weight,bias}            → head.fc1.{weight,bias}
    [thinker.]model.compressor.score_head.2.{weight,bias}            → head.fc2.{weight,bias}

and names the refiner depth and the training keep ratio in the thinker's text config
(`av_refiner_layers`, `compression_ratio`; under `thinker_config` in a full release). The
reference LLM reads the refiner's output states, so such a checkpoint serves with feed
"refined".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import CheckpointError

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:thinker\.)?model\.bidir_encoder\.layers\.(\d+)\.(.+)$"), r"refiner.layers.\1.\2"),
    (re.compile(r"^(?:thinker\.)?model\.compressor\.ln\.weight$"), "head.norm.weight"),
    (re.compile(r"^(?:thinker\.)?model\.compressor\.score_head\.0\.(weight|bias)$"), r"head.fc1.\1"),
    (re.compile(r"^(?:thinker\.)?model\.compressor\.score_head\.2\.(weight|bias)$"), r"head.fc2.\1"),
)


@dataclass(frozen=True)
class ReferenceCS2:
    """Reference-layout CS2 weights found in a thinker directory, renamed to Echo's CS2 keys."""

    n_layers: int
    keep: float | None  # the reference's compression_ratio, when the config names it
    state: dict[str, torch.Tensor]


def reference_name(key: str) -> str | None:
    """Echo's CS2 state-dict name for a reference checkpoint key, or None if it is not CS2's."""
    for pattern, target in _RULES:
        if pattern.match(key):
            return pattern.sub(target, key)
    return None


def _text_config(directory: Path) -> dict[str, object]:
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        return {}
    cfg = json.loads(cfg_file.read_text())
    thinker = cfg.get("thinker_config", cfg)
    text = thinker.get("text_config", {})
    return text if isinstance(text, dict) else {}


def find_reference_cs2(directory: str | Path) -> ReferenceCS2 | None:
    """Read reference-layout CS2 weights from the `*.safetensors` files of `directory`, if any.

    Raises CheckpointError when refiner weights are present but inconsistent with the
    config's `av_refiner_layers`, or when the score head is incomplete.
    """
    path = Path(directory)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                name = reference_name(key)
                if name is not None:
                    state[name] = handle.get_tensor(key)
    if not state:
        return None
    layers = {int(k.split(".")[2]) for k in state if k.startswith("refiner.layers.")}
    text = _text_config(path)
    n_layers = int(str(text.get("av_refiner_layers", len(layers))))
    if layers != set(range(n_layers)):
        raise CheckpointError(
            f"{path}: reference refiner layers {sorted(layers)} ≠ av_refiner_layers {n_layers} "
            f"(0..{n_layers - 1})"
        )
    head = {"head.norm.weight", "head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"}
    if not head <= set(state):
        raise CheckpointError(f"{path}: reference score head incomplete, missing {sorted(head - set(state))}")
    ratio = text.get("compression_ratio")
    return ReferenceCS2(n_layers, None if ratio is None else float(str(ratio)), state)
