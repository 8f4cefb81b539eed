"""Column-major projection weights: same values and outputs, stored for CPU matrix multiplies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from echo_core.config import SieveConfig
from echo_core.model.backend import OmniBackend
from echo_core.model.rope import RopeMode
from echo_core.model.weight_layout import is_column_major, store_column_major
from echo_core.sieve import CS2
from echo_core.stream.runtime import StreamModel

pytestmark = pytest.mark.unit


def _projections(backend: OmniBackend) -> list[nn.Linear]:
    return [m for layer in backend.lm.layers for m in layer.modules() if isinstance(m, nn.Linear)]


def test_column_major_keeps_every_weight_and_output(tiny_dir: Path) -> None:
    backend = OmniBackend.load(tiny_dir)  # its own copy: the layout is changed in place
    lm = backend.lm
    before = [m.weight.detach().clone() for m in _projections(backend)]
    assert not any(is_column_major(w) for w in before)
    torch.manual_seed(0)
    hidden = torch.randn(1, 9, lm.config.hidden_size)
    positions = torch.arange(9).expand(4, 9)
    split = lm.split(RopeMode.SYNC)
    with torch.no_grad():
        expected = lm.run_layers(hidden, positions, split)
    assert store_column_major(lm) == len(before) == 7 * len(lm.layers)
    after = _projections(backend)
    assert all(is_column_major(m.weight) for m in after)
    assert all(
        torch.equal(m.weight, w) and m.weight.shape == w.shape for m, w in zip(after, before, strict=True)
    )
    assert store_column_major(lm) == 0  # already in place
    with torch.no_grad():
        got = lm.run_layers(hidden, positions, split)
    assert float((got - expected).abs().max()) < 1e-5
    # training still runs through the moved weights: gradients reach them, in their shape
    lm.run_layers(hidden, positions, split).sum().backward()
    grad = after[0].weight.grad
    assert grad is not None and grad.shape == after[0].weight.shape


def test_a_cpu_stream_model_stores_its_projections_column_major(tiny_dir: Path) -> None:
    backend = OmniBackend.load(tiny_dir)
    StreamModel(backend, CS2(backend.lm, n_layers=2), SieveConfig(scoring="attention"))
    assert all(is_column_major(m.weight) for m in _projections(backend))
    assert not is_column_major(backend.lm.embed_tokens.weight)  # only the decoder projections move
