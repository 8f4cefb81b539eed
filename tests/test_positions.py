"""Position rows by hand for a small known layout, in all three rope modes."""

from __future__ import annotations

import pytest
import torch

from echo_core.model.positions import build_positions
from echo_core.model.rope import RopeMode
from echo_core.model.tokens import Modality, TokenLayout

pytestmark = pytest.mark.unit

T, A, V = Modality.TEXT, Modality.AUDIO, Modality.VIDEO
# (modality, time id, h, w, shares_prev)
TOKENS = [
    (T, -1, 0, 0, False),  # 0 text
    (T, -1, 0, 0, False),  # 1 text
    (T, -1, 0, 0, False),  # 2 <|vision_bos|>
    (T, -1, 0, 0, True),  # 3 <|audio_bos|> shares the position of 2
    (V, 0, 0, 0, False),  # 4 video t=0 s
    (V, 0, 0, 1, False),
    (V, 0, 1, 0, False),
    (V, 0, 1, 1, False),
    (A, 0, 0, 0, False),  # 8 audio 0 ms
    (A, 1, 0, 0, False),  # 9 audio 40 ms
    (A, 2, 0, 0, False),  # 10 audio 80 ms
    (V, 50, 0, 0, False),  # 11 video t=2 s
    (V, 50, 1, 1, False),
    (A, 50, 0, 0, False),  # 13 audio 2 s
    (T, -1, 0, 0, False),  # 14 <|audio_eos|>
    (T, -1, 0, 0, True),  # 15 <|vision_eos|> shares
    (T, -1, 0, 0, False),  # 16 question text
]


def layout() -> TokenLayout:
    n = len(TOKENS)
    return TokenLayout(
        input_ids=torch.arange(n),
        modality=torch.tensor([int(m) for m, *_ in TOKENS]),
        time_ids=torch.tensor([t for _, t, *_ in TOKENS]),
        grid_h=torch.tensor([h for _, _, h, _, _ in TOKENS]),
        grid_w=torch.tensor([w for *_, w, _ in TOKENS]),
        shares_prev=torch.tensor([s for *_, s in TOKENS]),
    )


TMROPE = [
    [0, 1, 2, 2, 3, 3, 3, 3, 3, 4, 5, 53, 53, 53, 54, 54, 55],
    [0, 1, 2, 2, 3, 3, 4, 4, 3, 4, 5, 3, 4, 53, 54, 54, 55],
    [0, 1, 2, 2, 3, 4, 3, 4, 3, 4, 5, 3, 4, 53, 54, 54, 55],
]
COMPACT = [
    [0, 1, 2, 2, 3, 3, 3, 3, 3, 4, 5, 6, 6, 6, 7, 7, 8],
    [0, 1, 2, 2, 3, 3, 4, 4, 3, 4, 5, 3, 4, 6, 7, 7, 8],
    [0, 1, 2, 2, 3, 4, 3, 4, 3, 4, 5, 3, 4, 6, 7, 7, 8],
]


def test_tmrope_rows_by_hand() -> None:
    assert build_positions(layout(), RopeMode.TMROPE).tolist() == TMROPE


def test_sync_rows_repeat_time_in_fourth_row() -> None:
    assert build_positions(layout(), RopeMode.SYNC).tolist() == [*TMROPE, TMROPE[0]]


def test_compact_rows_squeeze_time_gaps() -> None:
    assert build_positions(layout(), RopeMode.COMPACT).tolist() == COMPACT


def test_kept_tokens_keep_original_positions_and_text_continues_after_max() -> None:
    kept = torch.tensor([0, 1, 2, 3, 4, 8, 11, 14, 15, 16])  # drop audio 40/80 ms, some video
    rows = build_positions(layout().select(kept), RopeMode.TMROPE).tolist()
    full = torch.tensor(TMROPE)[:, kept].tolist()
    assert rows == full  # nothing moved
    sync = build_positions(layout().select(kept), RopeMode.SYNC)
    assert sync[:, -1].tolist() == [55, 55, 55, 55]


def test_text_after_a_sieved_block_keeps_its_full_sequence_position() -> None:
    # Drop every token at t=2 s: the kept block now ends at T=5, but the reference rule
    # (EchoingPixels) keeps the text where the whole block put it (54, 54, 55), not at 6.
    kept = torch.tensor([0, 1, 2, 3, 4, 8, 9, 14, 15, 16])
    full = torch.tensor(TMROPE)[:, kept].tolist()
    assert build_positions(layout().select(kept), RopeMode.TMROPE).tolist() == full
    assert build_positions(layout().select(kept), RopeMode.SYNC)[:, -3:].tolist() == [[54, 54, 55]] * 4
    # Block extents are computed once, on the full layout, and travel with `select`.
    assert layout().select(kept).extents.tolist() == [-1, -1, -1, -1, 50, 50, 50, -1, -1, -1]


def test_compact_on_kept_subset() -> None:
    kept = torch.tensor([0, 1, 2, 3, 4, 11, 14, 15, 16])  # time ids {0, 50} → ranks {0, 1}
    rows = build_positions(layout().select(kept), RopeMode.COMPACT).tolist()
    assert rows[0] == [0, 1, 2, 2, 3, 4, 5, 5, 6]
    assert rows[1] == [0, 1, 2, 2, 3, 3, 5, 5, 6]


def test_start_offset_and_pure_text() -> None:
    text = TokenLayout.text([5, 6, 7])
    assert build_positions(text, RopeMode.SYNC, start=10).tolist() == [[10, 11, 12]] * 4
