"""Checkpoint directories: validation, size presets, and tiny random checkpoints.

Real Qwen2.5-Omni weights are loaded from a local directory only. Tests and
benchmarks build random checkpoints with the same transformers classes and save them
with `save_pretrained`, so they go through exactly the loading path real weights use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2_5OmniThinkerConfig

from ..errors import CheckpointError

log = logging.getLogger(__name__)

THINKER_TYPES = ("qwen2_5_omni_thinker", "qwen2_5_omni")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")

#: Qwen2.5-Omni special tokens, in the order the tiny tokenizers give them ids.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|unk|>",
)
#: Ids of the vision markers in the public Qwen2.5-Omni vocabulary; thinker configs omit them.
QWEN_VISION_START_ID = 151652
QWEN_VISION_END_ID = 151653

DEFAULT_WORDS: tuple[str, ...] = tuple(
    (
        "user assistant system what which who how many is was the a an of in on at to and or did "
        "you see hear first last seconds color colour shape tone sound high low red green blue "
        "yellow circle square triangle noise silence came before after one two three four five "
        "none yes no"
    ).split()
)


@dataclass(frozen=True)
class ModelPreset:
    """Dimensions of a thinker (text model, vision and audio encoders)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vision_intermediate: int
    vision_fullatt: tuple[int, ...]
    audio_d_model: int
    audio_layers: int
    audio_heads: int
    audio_ffn: int
    max_positions: int = 32768


PRESETS: dict[str, ModelPreset] = {
    # unit tests: a few hundred thousand parameters, runs in milliseconds
    "tiny": ModelPreset(64, 3, 2, 1, 32, 128, 2, 32, 2, 64, (1,), 32, 2, 2, 64),
    # the bundled model, trained on the synthetic world (see echo_lab/train)
    "echo-tiny": ModelPreset(128, 4, 4, 2, 32, 384, 2, 96, 2, 192, (1,), 96, 2, 2, 192),
    # CPU benchmarks: scaled-down thinker
    "cpu-small": ModelPreset(256, 6, 4, 2, 64, 768, 4, 128, 4, 256, (1, 3), 128, 4, 4, 256),
    # real dimensions (random weights) for GPU efficiency benchmarks
    "qwen2.5-omni-3b": ModelPreset(
        2048, 36, 16, 2, 128, 11008, 32, 1280, 16, 3420, (7, 15, 23, 31), 1280, 32, 20, 5120
    ),
    "qwen2.5-omni-7b": ModelPreset(
        3584, 28, 28, 4, 128, 18944, 32, 1280, 16, 3420, (7, 15, 23, 31), 1280, 32, 20, 5120
    ),
}


def preset(name: str) -> ModelPreset:
    """Look up a size preset by name."""
    if name not in PRESETS:
        raise CheckpointError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def build_word_tokenizer(words: list[str] | tuple[str, ...]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` that carries the Qwen special tokens."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *words):
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<|unk|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    return tok


def thinker_config(spec: ModelPreset, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5OmniThinkerConfig:
    """A thinker config of the given dimensions whose token ids match `tokenizer`."""
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}  # type: ignore[arg-type]
    pairs = spec.head_dim // 2
    from .rope import TMROPE_SPLIT, scale_split

    cfg = Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            num_mel_bins=128,
            encoder_layers=spec.audio_layers,
            encoder_attention_heads=spec.audio_heads,
            encoder_ffn_dim=spec.audio_ffn,
            d_model=spec.audio_d_model,
            output_dim=spec.hidden,
            n_window=100,
            max_source_positions=1500,
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_intermediate,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden,
            fullatt_block_indexes=list(spec.vision_fullatt),
            window_size=112,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            head_dim=spec.head_dim,
            max_position_embeddings=spec.max_positions,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": list(scale_split(TMROPE_SPLIT, pairs)),
            },
            pad_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
        ),
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        user_token_id=ids["<|im_start|>"],
    )
    # Thinker configs do not define the vision markers; we store them explicitly.
    cfg.vision_start_token_id = ids["<|vision_bos|>"]
    cfg.vision_end_token_id = ids["<|vision_eos|>"]
    return cfg


def build_random_checkpoint(
    directory: str | Path,
    preset_name: str = "tiny",
    seed: int = 0,
    words: list[str] | tuple[str, ...] = DEFAULT_WORDS,
    *,
    full_omni: bool = False,
) -> Path:
    """Write a randomly initialised thinker checkpoint (config, safetensors, tokenizer).

    The model is built with `Qwen2_5OmniThinkerForConditionalGeneration` and saved
    with `save_pretrained`, so loading it exercises the real checkpoint path. With
    `full_omni` it is wrapped in `Qwen2_5OmniForConditionalGeneration` (no talker), the
    layout of public Qwen2.5-Omni releases (model_type `qwen2_5_omni`, `thinker.` keys).
    """
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniThinkerForConditionalGeneration,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_word_tokenizer(words)
    cfg = thinker_config(preset(preset_name), tokenizer)
    torch.manual_seed(seed)
    model: torch.nn.Module
    if full_omni:
        full_cfg = Qwen2_5OmniConfig(thinker_config=cfg.to_dict(), enable_audio_output=False)
        model = Qwen2_5OmniForConditionalGeneration(full_cfg)
    else:
        model = Qwen2_5OmniThinkerForConditionalGeneration(cfg)
    model.save_pretrained(out, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(out)
    log.info(
        "wrote random %s checkpoint (%d parameters) to %s",
        preset_name,
        sum(p.numel() for p in model.parameters()),
        out,
    )
    return out


def validate_checkpoint_dir(directory: str | Path) -> dict[str, object]:
    """Check that `directory` holds a Qwen2.5-Omni thinker checkpoint; return its config dict.

    Raises CheckpointError naming what is missing or wrong.
    """
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"model directory {str(path)!r} does not exist or is not a directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"model directory {str(path)!r} has no config.json")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {exc}") from None
    model_type = cfg.get("model_type")
    if model_type not in THINKER_TYPES:
        raise CheckpointError(
            f"{cfg_file} has model_type {model_type!r}; expected one of {', '.join(THINKER_TYPES)}"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise CheckpointError(
            f"model directory {str(path)!r} has none of the weight files {', '.join(WEIGHT_FILES)}"
        )
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(
            f"model directory {str(path)!r} has no tokenizer ({' or '.join(TOKENIZER_FILES)})"
        )
    return dict(cfg)
