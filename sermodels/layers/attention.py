"""EmoNet's 2D self-attention pooling over the (frequency × time) positions of a feature map.

Provenance: Gerczuk et al., EmoNet, IEEE Trans. Affective Computing, §5.2, Eq. (1)–(4): for each position ``i`` of
the last feature map, ``e_i = uᵀ tanh(W x_i + b)``; ``α = softmax(λ e)`` over all positions with the smoothing
factor λ = 0.3; the output is ``Σ_i α_i x_i``. The paper sizes ``W`` as 256 units (as many as the feature map has
channels).

Departure: positions in the padding of a zero-padded batch get no weight (the softmax runs over each clip's valid
time steps only), so that a clip is pooled the same alone as inside a batch; the paper pads without masking.
Parameter names (``project``, ``context``) are those of the released EmoNet checkpoints.
"""

from __future__ import annotations

from torch import Tensor, nn

from sermodels.layers.masks import sequence_mask

#: §5.2: the attention's projection has as many units as the last feature map has channels (256), λ = 0.3.
EMONET_ATTENTION_UNITS = 256
EMONET_SMOOTHING = 0.3


class AttentionPooling(nn.Module):
    """EmoNet Eq. (1)–(4): ``α = softmax(λ uᵀ tanh(W x + b))`` over positions, output ``Σ α x``; padding masked."""

    def __init__(self, channels: int, units: int = EMONET_ATTENTION_UNITS, smoothing: float = EMONET_SMOOTHING):
        super().__init__()
        self.smoothing = smoothing
        self.project = nn.Linear(channels, units)
        self.context = nn.Linear(units, 1, bias=False)

    def forward(self, features: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``features (B, C, F, T)`` with ``valid (B,)`` time steps -> pooled ``(B, C)`` and the weights
        ``(B, F, T)`` (zero on padded steps; they sum to 1 per clip)."""
        batch, channels, freq, steps = features.shape
        x = features.flatten(2).transpose(1, 2)  # (B, F*T, C), frequency-major
        energy = self.context(self.project(x).tanh()).squeeze(-1) * self.smoothing
        keep = sequence_mask(valid, steps).repeat(1, freq)
        energy = energy.masked_fill(~keep, float("-inf"))
        weights = energy.softmax(dim=-1)
        pooled = weights.unsqueeze(1).bmm(x).squeeze(1)
        return pooled, weights.view(batch, freq, steps)
