"""Output heads on a pooled embedding.

Provenance: EmoNet (Gerczuk et al., IEEE Trans. Affective Computing, §5.2): per domain "a fully connected layer,
batch normalisation, dropout and a softmax layer". The paper names no activation after the FC layer, nor its width or
dropout rate: EmoNet's own code (a fact recorded in ``../shared/papers/README.md``) uses ReLU, 128 units; we use
ReLU too (the width and rate are EmoNet's constructor arguments, documented there).

The same head regresses a dimensions output (its last layer is linear; the task reads it as values, not logits).
Module indices (``0`` FC, ``1`` BN, ``4`` output layer) are the parameter names of the released EmoNet checkpoints.
"""

from __future__ import annotations

from torch import nn


class DenseHead(nn.Sequential):
    """FC → BN → ReLU → dropout → linear: ``(B, in_features)`` -> ``(B, outputs)`` logits or values (§5.2)."""

    def __init__(self, in_features: int, hidden: int, outputs: int, dropout: float):
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )
