"""The model backend: a Qwen2.5-Omni thinker loaded from a local directory.

`OmniBackend` exposes the pieces Echo composes: the vision and audio encoders
(frames / PCM → timestamped tokens), text embedding, the assembly of a joint token
sequence with the thinker's placeholder layout, and the language model (see lm.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2_5OmniThinkerForConditionalGeneration

from ..errors import CheckpointError, ConfigError, PlaceholderMismatchError
from . import media
from .checkpoint import QWEN_VISION_END_ID, QWEN_VISION_START_ID, validate_checkpoint_dir
from .lm import LanguageModel
from .tokens import (
    AudioTokens,
    Modality,
    TokenLayout,
    TokenSequence,
    VideoTokens,
    interleave_order,
    seconds_to_time_ids,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids of the thinker's placeholders and markers."""

    audio: int
    video: int
    audio_bos: int
    audio_eos: int
    vision_bos: int
    vision_eos: int
    im_start: int
    im_end: int
    eos_ids: tuple[int, ...]


def resolve_special_tokens(config: object, tokenizer: PreTrainedTokenizerBase) -> SpecialTokens:
    """Read placeholder ids from the config, filling the vision markers that thinker configs lack.

    Order of precedence for `vision_start/end_token_id`: the config, then the tokenizer's
    `<|vision_bos|>`/`<|vision_eos|>`, then the public Qwen ids when the vocabulary has them.
    """

    def vision_marker(attr: str, token: str, qwen_id: int) -> int:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            log.info("config lacks %s; using tokenizer id %d of %s", attr, tid, token)
            return tid
        vocab = int(config.text_config.vocab_size)  # type: ignore[attr-defined]
        if qwen_id < vocab:
            log.info("config lacks %s; using the Qwen default %d", attr, qwen_id)
            return qwen_id
        raise CheckpointError(f"config lacks {attr} and the tokenizer has no {token} (vocab {vocab})")

    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not isinstance(im_start, int) or not isinstance(im_end, int):
        raise CheckpointError("tokenizer lacks the chat markers <|im_start|>/<|im_end|>")
    eos = {im_end}
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    return SpecialTokens(
        audio=int(config.audio_token_index),  # type: ignore[attr-defined]
        video=int(config.video_token_index),  # type: ignore[attr-defined]
        audio_bos=int(config.audio_start_token_id),  # type: ignore[attr-defined]
        audio_eos=int(config.audio_end_token_id),  # type: ignore[attr-defined]
        vision_bos=vision_marker("vision_start_token_id", "<|vision_bos|>", QWEN_VISION_START_ID),
        vision_eos=vision_marker("vision_end_token_id", "<|vision_eos|>", QWEN_VISION_END_ID),
        im_start=im_start,
        im_end=im_end,
        eos_ids=tuple(sorted(eos)),
    )


class OmniBackend:
    """A loaded thinker with the encoders, tokenizer and language model Echo composes."""

    def __init__(
        self,
        model: Qwen2_5OmniThinkerForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_pixels: int = 448 * 448,
        directory: Path | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.directory = directory
        self.max_pixels = max_pixels
        self.special = resolve_special_tokens(model.config, tokenizer)
        self.lm = LanguageModel(model.model.language_model, model.lm_head)
        for p in self.encoder_parameters():
            p.requires_grad_(False)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_pixels: int = 448 * 448,
    ) -> OmniBackend:
        """Load a thinker checkpoint from a local directory (never downloads)."""
        path = Path(directory)
        cfg = validate_checkpoint_dir(path)
        torch_dtype = parse_dtype(dtype)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        try:
            if cfg["model_type"] == "qwen2_5_omni":
                # A full Omni release: load only its thinker, mapping the `thinker.` weight prefix.
                from transformers import Qwen2_5OmniConfig

                full_cfg = Qwen2_5OmniConfig.from_pretrained(path, local_files_only=True)
                thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                    path,
                    config=full_cfg.thinker_config,  # type: ignore[arg-type]
                    local_files_only=True,
                    dtype=torch_dtype,
                    key_mapping={r"^thinker\.": ""},
                )
            else:
                thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
                    path, local_files_only=True, dtype=torch_dtype
                )
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot load thinker from {str(path)!r}: {exc}") from exc
        thinker.to(device)  # type: ignore[arg-type]
        log.info("loaded thinker from %s on %s (%s)", path, device, dtype)
        return cls(thinker, tokenizer, max_pixels=max_pixels, directory=path)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.lm.config.hidden_size)

    def encoder_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.model.model.visual.parameters(), *self.model.model.audio_tower.parameters()]

    # ------------------------------------------------------------------- encoders
    def encode_video(self, frames: np.ndarray, times_s: np.ndarray | None = None) -> VideoTokens:
        """Frames [T, H, W, 3] uint8 sampled at 2 fps → merged video tokens with time ids.

        Each token's time id is that of the first frame of its temporal patch.
        """
        return self.encode_videos([frames], [times_s])[0]

    def encode_videos(
        self,
        clips: list[np.ndarray],
        times: list[np.ndarray | None] | None = None,
        *,
        grad: bool = False,
    ) -> list[VideoTokens]:
        """Several clips through the vision encoder in one call (sizes may differ).

        `grad` keeps the autograd graph (stage-1 training of the encoder).
        """
        times = times if times is not None else [None] * len(clips)
        patches = [
            media.patchify_video(f, t, max_pixels=self.max_pixels) for f, t in zip(clips, times, strict=True)
        ]
        grid = torch.tensor([p.grid_thw for p in patches], device=self.device)
        pixels = torch.cat([p.pixel_values for p in patches]).to(self.device, self.dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            outs = self.model.model.get_video_features(pixels, grid, return_dict=True).pooler_output
        result = []
        for p, embeds in zip(patches, outs, strict=True):
            gt, gh, gw = p.grid_thw
            mh, mw = gh // 2, gw // 2
            t_ids = seconds_to_time_ids(torch.from_numpy(np.asarray(p.patch_times_s)))
            result.append(
                VideoTokens(
                    embeds=embeds,
                    time_ids=t_ids.repeat_interleave(mh * mw),
                    grid_h=torch.arange(mh).repeat_interleave(mw).repeat(gt),
                    grid_w=torch.arange(mw).repeat(mh * gt),
                    grid_thw=(gt, mh, mw),
                )
            )
        return result

    def encode_audio(self, pcm: np.ndarray, sample_rate: int, start_s: float = 0.0) -> AudioTokens:
        """PCM [N] or [N, C] at any rate → audio tokens (25/s) with time ids from `start_s`."""
        return self.encode_audios([pcm], [sample_rate], [start_s])[0]

    def encode_audios(
        self,
        pcms: list[np.ndarray],
        sample_rates: list[int],
        starts_s: list[float] | None = None,
        *,
        grad: bool = False,
    ) -> list[AudioTokens]:
        """Several audio clips through the audio encoder in one call (lengths may differ)."""
        starts = starts_s if starts_s is not None else [0.0] * len(pcms)
        mels = [media.log_mel(media.to_mono_16k(p, r)) for p, r in zip(pcms, sample_rates, strict=True)]
        lengths = torch.tensor([m.shape[1] for m in mels])
        width = int(lengths.max())
        feats = torch.zeros(len(mels), media.MEL_BINS, width)
        for i, m in enumerate(mels):
            feats[i, :, : m.shape[1]] = m
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            out = self.model.model.get_audio_features(
                feats.to(self.device, self.dtype), mask.to(self.device), return_dict=True
            ).last_hidden_state
        _, out_lengths = self.model.model.audio_tower._get_feat_extract_output_lengths(lengths)
        result = []
        for embeds, start in zip(torch.split(out, out_lengths.tolist()), starts, strict=True):
            first = int(seconds_to_time_ids(torch.tensor([start]))[0])
            result.append(AudioTokens(embeds=embeds, time_ids=first + torch.arange(embeds.shape[0])))
        return result

    # ----------------------------------------------------------------------- text
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_ids(self, question: str | None) -> tuple[list[int], list[int]]:
        """(prefix, suffix) ids around the AV block for a one-turn chat."""
        return self.tokenize("<|im_start|>user\n"), self.question_ids(question)

    def question_ids(self, question: str | None) -> list[int]:
        """The ids after the AV block: the question, the end of the user turn, the assistant header."""
        return self.tokenize(f"{question or ''}<|im_end|>\n<|im_start|>assistant\n")

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """[L] long → [L, D] input embeddings."""
        return self.lm.embed_tokens(ids.to(self.device))

    # ------------------------------------------------------------------- sequences
    def av_body_ids(self, video: VideoTokens | None, audio: AudioTokens | None) -> list[int]:
        """Placeholders of one AV block, interleaved per 2-s chunk (no markers)."""
        modality, _ = interleave_order(video, audio)
        return [self.special.video if m == Modality.VIDEO else self.special.audio for m in modality.tolist()]

    def av_block_ids(self, video: VideoTokens | None, audio: AudioTokens | None) -> list[int]:
        """Markers and placeholders of one AV block, interleaved per 2-s chunk."""
        sp = self.special
        body = self.av_body_ids(video, audio)
        has_v, has_a = video is not None and len(video) > 0, audio is not None and len(audio) > 0
        opening = ([sp.vision_bos] if has_v else []) + ([sp.audio_bos] if has_a else [])
        closing = ([sp.audio_eos] if has_a else []) + ([sp.vision_eos] if has_v else [])
        return opening + body + closing

    def build_sequence(
        self,
        prefix_ids: list[int],
        video: VideoTokens | None,
        audio: AudioTokens | None,
        suffix_ids: list[int],
        *,
        requires_grad: bool = False,
    ) -> TokenSequence:
        """prefix text + one interleaved AV block + suffix text, as a TokenSequence.

        With `requires_grad` the text embeddings keep their autograd graph (training).
        """
        ids = torch.tensor(prefix_ids + self.av_block_ids(video, audio) + suffix_ids, dtype=torch.long)
        return self.sequence_from_ids(ids, video, audio, requires_grad=requires_grad)

    def sequence_from_ids(
        self,
        input_ids: torch.Tensor,
        video: VideoTokens | None,
        audio: AudioTokens | None,
        *,
        requires_grad: bool = False,
    ) -> TokenSequence:
        """Scatter encoder tokens into the placeholder slots of `input_ids` ([L] long).

        Raises PlaceholderMismatchError when a modality's token count differs from its
        placeholder count.
        """
        sp = self.special
        ids = input_ids.reshape(-1).cpu()
        with torch.set_grad_enabled(requires_grad and torch.is_grad_enabled()):
            embeds = self.embed_ids(ids).clone()
        n = ids.shape[0]
        modality = torch.zeros(n, dtype=torch.long)
        time_ids = torch.full((n,), -1, dtype=torch.long)
        grid_h = torch.zeros(n, dtype=torch.long)
        grid_w = torch.zeros(n, dtype=torch.long)
        for name, tokens, pid, mod in (
            ("video", video, sp.video, Modality.VIDEO),
            ("audio", audio, sp.audio, Modality.AUDIO),
        ):
            slots = torch.nonzero(ids == pid).flatten()
            have = 0 if tokens is None else len(tokens)
            if have != int(slots.shape[0]):
                raise PlaceholderMismatchError(f"{name} tokens {have} ≠ placeholders {int(slots.shape[0])}")
            if tokens is None or have == 0:
                continue
            embeds[slots.to(embeds.device)] = tokens.embeds.to(embeds.dtype)
            modality[slots] = int(mod)
            time_ids[slots] = tokens.time_ids.cpu()
            if isinstance(tokens, VideoTokens):
                grid_h[slots] = tokens.grid_h.cpu()
                grid_w[slots] = tokens.grid_w.cpu()
        prev = torch.cat([torch.tensor([-1]), ids[:-1]])
        shares = ((ids == sp.audio_bos) & (prev == sp.vision_bos)) | (
            (ids == sp.vision_eos) & (prev == sp.audio_eos)
        )
        layout = TokenLayout(ids, modality, time_ids, grid_h, grid_w, shares)
        return TokenSequence(embeds, layout)
