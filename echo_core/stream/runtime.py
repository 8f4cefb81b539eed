"""The model side of streaming, shared by every session of a worker.

`StreamModel.prepare` takes closed 2-s chunks of any number of sessions and returns,
for each, the tokens its ingest sieve keeps: both encoders run once over all chunks
(sizes and lengths may differ), and each sieve takes all its chunks in one `select_batch`
call (CS2 scores same-shaped chunks in one refiner call).
The ingest sieve sees one chunk's AV tokens without any question, positioned with
time ids relative to the chunk start, which is the regime CS2 was trained in (the
chunk branch of stage 2) and makes equal-shaped chunks share one layout.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, replace

import torch

from ..config import ModelConfig, SieveConfig
from ..errors import ConfigError
from ..model import media
from ..model.backend import OmniBackend
from ..model.rope import RopeMode
from ..model.tokens import AudioTokens, Modality, TokenLayout, TokenSequence, VideoTokens, seconds_to_time_ids
from ..model.weight_layout import store_column_major
from ..models import default_model_dir
from ..sieve import CS2, METHODS, Sieve, SieveResult, make_sieve
from .cache import CachedTokens
from .frames import MediaChunk

log = logging.getLogger(__name__)

#: `sieve.method` that picks CS2 when trained CS2 weights are loaded, else TRAINING_FREE_METHOD.
AUTO_METHOD = "auto"
TRAINING_FREE_METHOD = "joint_salience"

#: Sieves that cannot run over a chunk before the question exists.
_NOT_STREAMABLE = {"fastv": "FastV prunes inside the LLM at question time; it keeps nothing to cache"}


@dataclass(frozen=True)
class IngestRequest:
    """One closed chunk of one session, with that session's ingest settings."""

    chunk: MediaChunk
    method: str
    keep: float


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk's AV tokens in interleave order, with absolute and chunk-relative time ids."""

    absolute: TokenSequence
    relative: TokenSequence


@dataclass(frozen=True)
class PreparedChunk:
    """What the ingest sieve kept of a chunk, and how much it saw."""

    chunk: MediaChunk
    kept: CachedTokens
    seen_audio: int
    seen_video: int
    video_grid: tuple[int, int] | None = None  # merged (rows, cols) of the chunk's frames


def time_id(seconds: float) -> int:
    """Stream seconds → integer time id (25 per second)."""
    return int(seconds_to_time_ids(torch.tensor([seconds]))[0])


def zscore(scores: torch.Tensor) -> torch.Tensor:
    """Scores on a common scale across chunks: (s − mean) / std, 0 where undefined."""
    s = torch.nan_to_num(scores.float(), nan=0.0)
    if s.numel() < 2:
        return torch.zeros_like(s)
    std = s.std()
    return (s - s.mean()) / std if float(std) > 0 else torch.zeros_like(s)


class StreamModel:
    """Backend, CS2 and the sieves, for any number of sessions.

    On a CPU the thinker's decoder projections are stored column-major (weight_layout.py):
    the same weights, in the layout CPU matrix multiplies run fastest for a question's rows.
    """

    def __init__(self, backend: OmniBackend, cs2: CS2, sieve: SieveConfig) -> None:
        self.rope = RopeMode.parse(sieve.rope)
        if self.rope is RopeMode.COMPACT:
            raise ConfigError(
                "rope 'compact' re-ranks time over a whole block; a stream positions tokens chunk by "
                "chunk, so use 'sync' or 'tmrope'"
            )
        if sieve.method == AUTO_METHOD:  # CS2 where a trained head exists, else the training-free sieve
            sieve = replace(sieve, method="cs2" if cs2.trained else TRAINING_FREE_METHOD)
        self.backend = backend
        self.lm = backend.lm
        if self.lm.device.type == "cpu":
            store_column_major(self.lm)
        self.cs2 = cs2
        self.sieve_config = sieve
        self._sieves: dict[str, Sieve] = {}
        self.check_method(sieve.method)

    @classmethod
    def load(cls, model: ModelConfig, sieve: SieveConfig) -> StreamModel:
        """Load the configured thinker (the bundled echo-tiny by default) and its CS2 weights."""
        directory = default_model_dir(model.directory)
        backend = OmniBackend.load(
            directory, device=model.device, dtype=model.dtype, max_pixels=model.max_pixels
        )
        cs2 = CS2.load_or_init(backend.lm, directory, n_layers=sieve.refiner_layers)
        return cls(backend, cs2, sieve)

    def check_method(self, method: str) -> None:
        """Raise ConfigError unless `method` can sieve a live stream."""
        if method not in METHODS:
            raise ConfigError(f"unknown sieve method {method!r}; expected one of: {', '.join(METHODS)}")
        if method in _NOT_STREAMABLE:
            raise ConfigError(f"sieve {method!r} cannot stream: {_NOT_STREAMABLE[method]}")

    def sieve(self, method: str) -> Sieve:
        """The sieve called `method` (built once, shared by sessions)."""
        if method not in self._sieves:
            self.check_method(method)
            s = self.sieve_config
            self._sieves[method] = make_sieve(
                method,
                self.lm,
                self.cs2,
                rope=self.rope,
                scoring=s.scoring,
                seed=s.seed,
                fastv_layer=s.fastv_layer,
            )
        return self._sieves[method]

    # --------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode(self, chunks: list[MediaChunk]) -> list[tuple[VideoTokens | None, AudioTokens | None]]:
        """Both encoders over every chunk, one call per modality."""
        with_video = [i for i, c in enumerate(chunks) if c.frames is not None]
        # A stream's last chunk may hold a few ms of audio: less than one STFT window has no tokens.
        with_audio = [i for i, c in enumerate(chunks) if c.audio is not None and len(c.audio) >= media.N_FFT]
        videos: dict[int, VideoTokens] = {}
        audios: dict[int, AudioTokens] = {}
        if with_video:
            outs = self.backend.encode_videos(
                [chunks[i].frames for i in with_video],  # type: ignore[misc]
                [chunks[i].frame_times for i in with_video],
            )
            videos = dict(zip(with_video, outs, strict=True))
        if with_audio:
            outs_a = self.backend.encode_audios(
                [chunks[i].audio for i in with_audio],  # type: ignore[misc]
                [16000] * len(with_audio),
                [chunks[i].start_s for i in with_audio],
            )
            audios = dict(zip(with_audio, outs_a, strict=True))
        return [(videos.get(i), audios.get(i)) for i in range(len(chunks))]

    def chunk_sequence(
        self, chunk: MediaChunk, video: VideoTokens | None, audio: AudioTokens | None
    ) -> tuple[TokenSequence, TokenSequence]:
        """(sequence with absolute time ids, the same with time ids relative to the chunk start)."""
        ids = torch.tensor(self.backend.av_body_ids(video, audio), dtype=torch.long)
        seq = self.backend.sequence_from_ids(ids, video, audio)
        lay = seq.layout
        rel = TokenLayout(
            lay.input_ids,
            lay.modality,
            lay.time_ids - time_id(chunk.start_s),
            lay.grid_h,
            lay.grid_w,
            lay.shares_prev,
        )
        return seq, TokenSequence(seq.embeds, rel)

    # --------------------------------------------------------------- ingest
    @torch.no_grad()
    def encode_chunks(self, chunks: list[MediaChunk]) -> list[EncodedChunk]:
        """Both encoders over `chunks`, as (absolute, chunk-relative) token sequences."""
        encoded = self.encode(chunks)
        return [
            EncodedChunk(*self.chunk_sequence(c, v, a)) for c, (v, a) in zip(chunks, encoded, strict=True)
        ]

    def prepare(self, requests: list[IngestRequest]) -> list[PreparedChunk]:
        """Encode and ingest-sieve chunks of any sessions; one result per request, in order."""
        return self.sieve_chunks(requests, self.encode_chunks([r.chunk for r in requests]))

    @torch.no_grad()
    def sieve_chunks(self, requests: list[IngestRequest], encoded: list[EncodedChunk]) -> list[PreparedChunk]:
        """Run each request's ingest sieve over its encoded chunk: one `select_batch` per sieve."""
        if not requests:
            return []
        results: list[SieveResult | None] = [None] * len(requests)  # None: a chunk with no tokens
        by_method: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            if len(encoded[i].relative) > 0:
                by_method[r.method].append(i)
        for method, members in by_method.items():
            batch = self.sieve(method).select_batch(
                [encoded[i].relative for i in members], keep=[requests[i].keep for i in members]
            )
            for i, sieved in zip(members, batch, strict=True):
                results[i] = sieved
        out: list[PreparedChunk] = []
        for r, chunk, result in zip(requests, encoded, results, strict=True):
            seq = chunk.absolute
            if result is None:
                kept_idx = torch.zeros(0, dtype=torch.long)
                chunk_scores = torch.zeros(0)
                states = None
            else:
                kept_idx, chunk_scores, states = result.kept, result.scores, result.inputs
            z = zscore(chunk_scores)
            lay = seq.layout
            # With CS2's feed "refined" the cache holds (and its KV is computed from) the ingest
            # refiner's output states of the kept tokens.
            source = seq.embeds if states is None else states
            kept = CachedTokens(
                embeds=source[kept_idx.to(source.device)],
                input_ids=lay.input_ids[kept_idx],
                time_ids=lay.time_ids[kept_idx],
                modality=lay.modality[kept_idx],
                grid_h=lay.grid_h[kept_idx],
                grid_w=lay.grid_w[kept_idx],
                scores=z[kept_idx] if z.numel() else torch.zeros(0),
            )
            video = lay.modality == Modality.VIDEO
            grid = None
            if video.any():
                grid = (int(lay.grid_h[video].max()) + 1, int(lay.grid_w[video].max()) + 1)
            out.append(
                PreparedChunk(r.chunk, kept, lay.count(Modality.AUDIO), lay.count(Modality.VIDEO), grid)
            )
        return out
