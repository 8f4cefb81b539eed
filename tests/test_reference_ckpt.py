"""Checkpoints in the EchoingPixels reference layout load and serve with feed "refined".

The test writes such a checkpoint itself: a tiny random thinker whose weight file also holds
a CS2 under the reference names (`model.bidir_encoder.layers.{i}.*`, `model.compressor.*`),
with `av_refiner_layers` / `compression_ratio` in the text config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from echo_core.errors import CheckpointError
from echo_core.model.backend import OmniBackend
from echo_core.model.checkpoint import build_random_checkpoint
from echo_core.model.generate import prefill
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import TokenSequence
from echo_core.sieve import CS2, CS2Sieve
from echo_core.sieve.reference_ckpt import reference_name

pytestmark = pytest.mark.integration

HEAD_NAMES = {
    "head.norm.weight": "model.compressor.ln.weight",
    "head.fc1.weight": "model.compressor.score_head.0.weight",
    "head.fc1.bias": "model.compressor.score_head.0.bias",
    "head.fc2.weight": "model.compressor.score_head.2.weight",
    "head.fc2.bias": "model.compressor.score_head.2.bias",
}


def _reference_key(name: str, prefix: str) -> str:
    if name.startswith("refiner.layers."):
        return prefix + "model.bidir_encoder.layers." + name[len("refiner.layers.") :]
    return prefix + HEAD_NAMES[name]


def add_reference_cs2(directory: Path, cs2: CS2) -> None:
    """Store `cs2` in the thinker checkpoint at `directory` under the reference names."""
    weights = load_file(str(directory / "model.safetensors"))
    cfg = json.loads((directory / "config.json").read_text())
    full_release = cfg["model_type"] == "qwen2_5_omni"  # thinker weights under `thinker.`
    prefix = "thinker." if full_release else ""
    for name, tensor in cs2.state_dict().items():
        weights[_reference_key(name, prefix)] = tensor.detach().clone().contiguous()
    save_file(weights, str(directory / "model.safetensors"))
    text = (cfg["thinker_config"] if full_release else cfg)["text_config"]
    text.update(av_refiner_layers=cs2.n_layers, compression_ratio=0.2)
    (directory / "config.json").write_text(json.dumps(cfg))


def test_reference_names_map_to_cs2_keys() -> None:
    assert reference_name("thinker.model.bidir_encoder.layers.3.self_attn.q_proj.weight") == (
        "refiner.layers.3.self_attn.q_proj.weight"
    )
    assert reference_name("model.compressor.score_head.2.bias") == "head.fc2.bias"
    assert reference_name("thinker.model.compressor.ln.weight") == "head.norm.weight"
    assert reference_name("model.layers.0.self_attn.q_proj.weight") is None
    assert reference_name("model.compressor.score_head.1.weight") is None  # SiLU has no weights


@pytest.mark.parametrize("full_release", [False, True])
@torch.no_grad()
def test_reference_checkpoint_loads_and_serves_refined(
    tiny_dir: Path, sequence: TokenSequence, tmp_path: Path, full_release: bool
) -> None:
    directory = tmp_path / "ref"
    if full_release:
        build_random_checkpoint(directory, "tiny", seed=0, full_omni=True)
    else:
        shutil.copytree(tiny_dir, directory)
    backend = OmniBackend.load(directory)  # before the CS2 weights are added
    torch.manual_seed(7)
    mine = CS2(backend.lm, n_layers=2, trained=True, feed="refined")
    for p in mine.head.parameters():
        p.normal_(0.0, 0.02)
    add_reference_cs2(directory, mine)

    loaded_backend = OmniBackend.load(directory)  # the extra weights do not disturb the thinker
    assert torch.equal(loaded_backend.model.lm_head.weight, backend.model.lm_head.weight)
    loaded = CS2.load_or_init(loaded_backend.lm, directory)
    assert loaded.trained and loaded.feed == "refined" and loaded.n_layers == 2
    assert loaded.reference_keep == pytest.approx(0.2)
    for name, tensor in mine.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    # The forward: the same tokens kept, the same refined states fed, the same answer logits.
    a = CS2Sieve(backend.lm, mine, scoring="head").select(sequence, keep=0.1)
    b = CS2Sieve(loaded_backend.lm, loaded, scoring="head").select(sequence, keep=0.1)
    assert torch.equal(a.kept, b.kept) and b.inputs is not None
    la = prefill(backend.lm, sequence, RopeMode.SYNC, a).logits
    lb = prefill(loaded_backend.lm, sequence, RopeMode.SYNC, b).logits
    assert torch.allclose(la, lb, atol=1e-5)


def test_inconsistent_reference_checkpoint_is_refused(
    tiny_dir: Path, backend: OmniBackend, tmp_path: Path
) -> None:
    directory = tmp_path / "bad"
    shutil.copytree(tiny_dir, directory)
    add_reference_cs2(directory, CS2(backend.lm, n_layers=2, trained=True))
    cfg = json.loads((directory / "config.json").read_text())
    cfg["text_config"]["av_refiner_layers"] = 3
    (directory / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="av_refiner_layers 3"):
        CS2.load_or_init(backend.lm, directory)
