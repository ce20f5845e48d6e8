"""Toy architectures for tests only: a frame-level and an utterance-level dimensional head on a tiny front-end.

They are registered when this module is imported (``import toy_models``) and are not part of the zoo. Both compute
their outputs from the log energy of 10 ms frames, so their outputs follow the audio (loud frames score high).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sermodels import outputs
from sermodels._registry import _MODELS, register_model
from sermodels.models.base import SERModel, valid_lengths

FRAME_RATE = 100.0  # 10 ms frames


def _frame_energy(waveforms: torch.Tensor, lengths: torch.Tensor | None, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, frames, 1)`` log energy of hop-long frames (the last one partial) and the valid frame counts."""
    lengths = valid_lengths(waveforms, lengths)
    width = -(-waveforms.shape[-1] // hop) * hop
    padded = torch.nn.functional.pad(waveforms.float(), (0, width - waveforms.shape[-1]))
    energy = padded.view(waveforms.shape[0], -1, hop).square().mean(-1, keepdim=True)
    return torch.log(energy + 1e-6), torch.div(lengths + hop - 1, hop, rounding_mode="floor")


class _Toy(SERModel):
    def __init__(self, names: list[str] | None = None, sample_rate: int = 16000, head: str = "av"):
        super().__init__()
        self.sample_rate = sample_rate
        self.names = list(names or ["arousal", "valence"])
        self.hop = int(sample_rate / FRAME_RATE)
        self.proj = nn.Linear(1, len(self.names))
        self.heads = {head: list(self.names)}
        self.default_head = head

    def config(self) -> dict[str, Any]:
        return {"names": self.names, "sample_rate": self.sample_rate, "head": self.default_head}

    @classmethod
    def from_specs(cls, heads, sample_rate: int = 16000, **kwargs):
        ((head, spec),) = heads.items()
        return cls(list(spec.names), sample_rate, head)

    def frames(self, waveforms, lengths=None):
        energy, valid = _frame_energy(waveforms, lengths, self.hop)
        return torch.tanh(self.proj(energy) / 10.0), valid

    def embed(self, waveforms, lengths=None):
        values, valid = self.frames(waveforms, lengths)
        mask = (torch.arange(values.shape[1], device=values.device)[None] < valid[:, None]).unsqueeze(-1)
        return (values * mask).sum(1) / valid[:, None].clamp(min=1)


class ToyFrameModel(_Toy):
    """Frame-level arousal/valence in [-1, 1] at 100 frames per second: ``(B, frames, 2)``."""

    def __init__(self, names: list[str] | None = None, sample_rate: int = 16000, head: str = "av"):
        super().__init__(names, sample_rate, head)
        self.head_specs = {head: outputs.dimensions(self.names, level="frame", frame_rate=FRAME_RATE)}

    def forward(self, waveforms, lengths=None, head=None):
        self.resolve_head(head)
        return self.frames(waveforms, lengths)[0]


class ToyUtteranceModel(_Toy):
    """Utterance-level arousal/valence in [-1, 1]: the mean of the frame values, ``(B, 2)``."""

    def __init__(self, names: list[str] | None = None, sample_rate: int = 16000, head: str = "av"):
        super().__init__(names, sample_rate, head)
        self.head_specs = {head: outputs.dimensions(self.names)}

    def forward(self, waveforms, lengths=None, head=None):
        self.resolve_head(head)
        return self.embed(waveforms, lengths)


for _name, _cls in (("toy_frame", ToyFrameModel), ("toy_utterance", ToyUtteranceModel)):
    if _MODELS.get(_name) is not _cls:
        register_model(_name)(_cls)
