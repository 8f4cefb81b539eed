"""Column-major storage for the language model's projection weights, for CPU inference.

`nn.Linear` keeps its weight row-major, [out, in], and computes x @ weightᵀ. On a CPU, for
the few rows of a question over cached KV (a dozen tokens), the matrix multiply runs 1.3–1.7×
faster when that weight is stored column-major, so that weightᵀ is contiguous; for a
chunk's hundreds of tokens about as fast (0.96–1.17×, docs/results-latency.md).
`store_column_major` moves each decoder projection's weight into that layout in place: the
same values and the same shape, only the strides change, so every caller (the library's
modules, `decoder_layer_forward`, `save_pretrained`) sees the same tensor. It holds one extra
matrix at a time while it moves.
"""

from __future__ import annotations

import torch
from torch import nn

from .lm import LanguageModel


def is_column_major(weight: torch.Tensor) -> bool:
    """Whether a 2-D weight [out, in] is stored with its transpose contiguous."""
    return weight.dim() == 2 and weight.t().is_contiguous()


def store_column_major(lm: LanguageModel) -> int:
    """Store every `nn.Linear` weight of the decoder layers column-major; returns how many moved."""
    moved = 0
    with torch.no_grad():
        for layer in lm.layers:
            for module in layer.modules():
                if isinstance(module, nn.Linear) and not is_column_major(module.weight):
                    module.weight.data = module.weight.data.t().contiguous().t()
                    moved += 1
    return moved
