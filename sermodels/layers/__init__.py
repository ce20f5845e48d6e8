"""Shared blocks that model files assemble: masks of padded batches, EmoNet's residual adapters, attention and heads,
pooling of frame sequences, a masked (B)LSTM, and the timm backbone cut at a named layer.

Every block that reads a padded batch takes the valid lengths and gives a clip the output it gets alone."""

from .adapters import AdaptedConv, ResidualBlock
from .attention import AttentionPooling
from .backbone import BackboneFeatures, create_backbone, default_layer, load_backbone_weights
from .heads import DenseHead
from .masks import conv_lengths, halve, sequence_mask, time_mask
from .pooling import StatisticsPooling, last_valid, masked_mean
from .recurrent import MaskedLSTM

__all__ = [
    "AdaptedConv",
    "AttentionPooling",
    "BackboneFeatures",
    "DenseHead",
    "MaskedLSTM",
    "ResidualBlock",
    "StatisticsPooling",
    "conv_lengths",
    "create_backbone",
    "default_layer",
    "halve",
    "last_valid",
    "load_backbone_weights",
    "masked_mean",
    "sequence_mask",
    "time_mask",
]
