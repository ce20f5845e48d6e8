"""Utterance vectors from frame sequences of a padded batch: masked mean, last valid step, statistics pooling.

Frame-level encoders (a conv + BLSTM, a CNN + LSTM) give ``(B, T, C)`` sequences with ``lengths (B,)`` valid steps;
an utterance-level head needs one ``(B, C)`` vector per clip. Every function here reads only the valid steps, so a
clip pools the same alone as inside a batch.

:class:`StatisticsPooling` with ``attention_units`` scores each step as EmoNet's attention scores each position
(EmoNet, IEEE Trans. Affective Computing, §5.2, Eq. (1)–(3): ``e_t = uᵀ tanh(W x_t + b)``, ``α = softmax(λ e)``),
here over time only; without it every valid step weighs the same. With ``std`` the weighted standard deviation is
appended to the weighted mean (as MixedEmotions D4.2 §3.4.2 summarises enhanced frames by their mean and variance).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sermodels.layers.masks import sequence_mask

#: Variance floor before the square root of the pooled standard deviation (finite gradients for constant inputs).
STD_EPS = 1e-6


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the valid steps of each row: ``x (B, T, C)`` -> ``(B, C)``; a row with no valid step gives 0."""
    mask = sequence_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(dim=1) / lengths.to(x.device).clamp(min=1).to(x.dtype)[:, None]


def last_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """The last valid step of each row, ``x[b, lengths[b] - 1]``: ``(B, T, C)`` -> ``(B, C)`` (the final output of a
    forward LSTM; every row needs at least one valid step)."""
    index = (lengths.to(device=x.device, dtype=torch.long) - 1).clamp(min=0)
    return x[torch.arange(x.shape[0], device=x.device), index]


class StatisticsPooling(nn.Module):
    """``x (B, T, C)`` + ``lengths (B,)`` -> ``(B, C)`` weighted mean, or ``(B, 2C)`` mean ‖ std with ``std=True``.

    Weights are uniform over the valid steps, or with ``attention_units`` learnt: ``softmax(λ uᵀ tanh(W x + b))``
    over the valid steps (``smoothing`` = λ). Padded steps get weight 0; every row needs at least one valid step.
    """

    def __init__(self, channels: int, attention_units: int | None = None, std: bool = False, smoothing: float = 1.0):
        super().__init__()
        self.channels, self.std, self.smoothing = channels, std, smoothing
        self.project = nn.Linear(channels, attention_units) if attention_units else None
        self.context = nn.Linear(attention_units, 1, bias=False) if attention_units else None
        self.output_size = 2 * channels if std else channels

    def weights(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T)`` step weights: each row sums to 1 over its valid steps, 0 on its padding."""
        keep = sequence_mask(lengths.to(x.device), x.shape[1])
        if self.project is None:
            energy = torch.zeros(x.shape[:2], device=x.device, dtype=x.dtype)
        else:
            energy = self.context(self.project(x).tanh()).squeeze(-1) * self.smoothing
        return energy.masked_fill(~keep, float("-inf")).softmax(dim=-1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        keep = sequence_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
        x = x.masked_fill(~keep, 0.0)  # whatever the padding holds (even NaN), it cannot reach the output
        alpha = self.weights(x, lengths).unsqueeze(-1)  # (B, T, 1)
        mean = (alpha * x).sum(dim=1)
        if not self.std:
            return mean
        variance = (alpha * (x - mean[:, None]).square()).sum(dim=1)
        return torch.cat([mean, variance.clamp(min=STD_EPS).sqrt()], dim=-1)
