"""Dense per-token labels from the world spec, for auxiliary encoder losses in stage 1.

An answer is one token per question, a weak signal for encoders trained from scratch.
Stage 1 therefore also asks small linear probes on the encoder outputs what is under
each token: for a merged video token, the colour and shape of the object covering its
28×28 cell at that time; for an audio token, tone pitch, noise or nothing. The probes
are training aids only and are not saved.
"""

from __future__ import annotations

import torch
from torch import nn

from echo_core.model.tokens import AudioTokens, VideoTokens

from ..world import COLOURS, PITCHES, SHAPES, ClipSpec

CELL = 28  # pixels per merged video token side
VIDEO_COLOUR_CLASSES = 1 + len(COLOURS)  # 0 = nothing
VIDEO_SHAPE_CLASSES = 1 + len(SHAPES)
AUDIO_CLASSES = 2 + len(PITCHES)  # 0 = nothing, pitches, last = noise
_MIN_COVER = 0.2  # share of a cell an object must cover to label it


def video_labels(spec: ClipSpec, video: VideoTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour [Nv], shape [Nv]) class ids of each merged video token."""
    colour = torch.zeros(len(video), dtype=torch.long)
    shape = torch.zeros(len(video), dtype=torch.long)
    times = video.time_ids.double() / 25.0
    for i in range(len(video)):
        t = float(times[i])
        y0, x0 = int(video.grid_h[i]) * CELL, int(video.grid_w[i]) * CELL
        best = 0.0
        for ev in spec.shapes:
            if not ev.visible(t):
                continue
            cx, cy = ev.centre(t)
            half = ev.size / 2
            ox = max(0.0, min(x0 + CELL, cx + half) - max(x0, cx - half))
            oy = max(0.0, min(y0 + CELL, cy + half) - max(y0, cy - half))
            cover = ox * oy / (CELL * CELL)
            if cover >= _MIN_COVER and cover > best:
                best = cover
                colour[i] = 1 + COLOURS.index(ev.colour)
                shape[i] = 1 + SHAPES.index(ev.kind)
    return colour, shape


def audio_labels(spec: ClipSpec, audio: AudioTokens) -> torch.Tensor:
    """Class id of each audio token (40 ms): 0 nothing, 1..3 pitch, 4 noise."""
    centres = (audio.time_ids.double() + 0.5) / 25.0
    labels = torch.zeros(len(audio), dtype=torch.long)
    pitches = list(PITCHES)
    for ev in spec.sounds:
        inside = (centres >= ev.t_on) & (centres < ev.t_off)
        labels[inside] = 1 + pitches.index(ev.pitch) if ev.kind == "tone" and ev.pitch else AUDIO_CLASSES - 1
    return labels


class AuxProbes(nn.Module):
    """Linear probes on encoder outputs: video colour, video shape, audio event."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.video_colour = nn.Linear(hidden, VIDEO_COLOUR_CLASSES)
        self.video_shape = nn.Linear(hidden, VIDEO_SHAPE_CLASSES)
        self.audio = nn.Linear(hidden, AUDIO_CLASSES)

    def loss(
        self, specs: list[ClipSpec], videos: list[VideoTokens], audios: list[AudioTokens]
    ) -> torch.Tensor:
        """Mean cross-entropy of the three probes over every token of the batch."""
        ce = nn.functional.cross_entropy
        v_emb = torch.cat([v.embeds for v in videos]).float()
        a_emb = torch.cat([a.embeds for a in audios]).float()
        colours, shapes = zip(*(video_labels(s, v) for s, v in zip(specs, videos, strict=True)), strict=True)
        a_lab = torch.cat([audio_labels(s, a) for s, a in zip(specs, audios, strict=True)])
        dev = v_emb.device
        return (
            ce(self.video_colour(v_emb), torch.cat(colours).to(dev))
            + ce(self.video_shape(v_emb), torch.cat(shapes).to(dev))
            + ce(self.audio(a_emb), a_lab.to(dev))
        )
