"""Masks of zero-padded batches: which steps of each clip are real, and how strided layers change that count.

A padded batch holds clips of different lengths, each followed by padding up to the longest one. Layers that must
give a clip the same output alone as inside such a batch (EmoNet's masked attention, the masked recurrent block,
the CCC losses over valid frames) read the valid length of each row, ``lengths (B,)``, and build their masks here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sequence_mask(lengths: Tensor, width: int) -> Tensor:
    """``(B, width)`` bool: True on the first ``lengths[b]`` steps of row ``b``, False on its padding."""
    steps = torch.arange(width, device=lengths.device)
    return steps[None, :] < lengths[:, None]


def time_mask(valid: Tensor, width: int) -> Tensor:
    """``(B, 1, 1, width)`` float32 mask for ``(B, C, F, width)`` feature maps: 1 on the first ``valid[b]`` time
    steps of row ``b``, 0 beyond (multiplied in to zero the padding of a 2D feature map)."""
    return sequence_mask(valid, width).to(torch.float32)[:, None, None, :]


def halve(valid: Tensor) -> Tensor:
    """Valid time steps after a stride-2 layer with padding 1 (kernel 3) or 0 (kernel 1): ``ceil(n / 2)``."""
    return torch.div(valid + 1, 2, rounding_mode="floor")


def conv_lengths(lengths: Tensor, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> Tensor:
    """Valid output steps of a 1-D convolution or pooling over inputs of ``lengths`` steps (PyTorch's output-size
    rule, ``floor((n + 2 padding - dilation (kernel - 1) - 1) / stride) + 1``), at least 0."""
    span = dilation * (kernel - 1) + 1
    out = torch.div(lengths + 2 * padding - span, stride, rounding_mode="floor") + 1
    return out.clamp(min=0)
