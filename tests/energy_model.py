"""A small but real SERModel for the pipeline and evaluation tests: frame log-energy statistics and a fixed linear
layer per head, on real EMO-DB files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sermodels.models.base import SERModel, valid_lengths

EMOTIONS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]


class LogEnergyModel(SERModel):
    """Frame log-energy (25 ms / 10 ms at 16 kHz), mean and std over the valid frames, then a fixed linear layer.

    Tiny but honest: it respects ``lengths`` (padding does not change its output) and records the shape of every
    batch it is given, so the tests can check how the engine batches.
    """

    arch = "test_log_energy"
    min_duration = 0.1  # at least a few frames
    FRAME, HOP = 400, 160

    def __init__(self, seed: int = 0):
        super().__init__()
        self.sample_rate = 16_000
        self.heads = {"emotion": list(EMOTIONS), "arousal": ["low", "high"]}
        self.default_head = "emotion"
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.classifiers = nn.ModuleDict({name: nn.Linear(2, len(labels)) for name, labels in self.heads.items()})
        with torch.no_grad():
            for layer in self.classifiers.values():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
        self.batch_shapes: list[tuple[int, int]] = []

    def config(self):
        return {"seed": self.seed}

    def embed(self, waveforms, lengths=None):
        lengths = valid_lengths(waveforms, lengths)
        if waveforms.shape[-1] < self.FRAME:
            waveforms = nn.functional.pad(waveforms, (0, self.FRAME - waveforms.shape[-1]))
        frames = waveforms.unfold(-1, self.FRAME, self.HOP)  # (batch, frames, FRAME)
        energy = torch.log(frames.pow(2).mean(dim=-1) + 1e-8)
        count = ((lengths - self.FRAME) // self.HOP + 1).clamp(min=1)
        mask = (torch.arange(frames.shape[1], device=waveforms.device) < count[:, None]).to(energy.dtype)
        mean = (energy * mask).sum(dim=1) / count
        std = (((energy - mean[:, None]) ** 2 * mask).sum(dim=1) / count).sqrt()
        # Fixed standardisation (roughly EMO-DB's statistics), so that the random classifier's outputs vary.
        return torch.stack([(mean + 6.3) / 0.7, (std - 3.0) / 0.4], dim=-1)

    def forward(self, waveforms, lengths=None, head=None):
        self.batch_shapes.append(tuple(waveforms.shape))
        return self.classifiers[self.resolve_head(head)](self.embed(waveforms, lengths))


class SnapshotReadingModel(LogEnergyModel):
    """Records, at each call, how many predictions the snapshot file on disk holds (None: no file yet): what a
    reader of ``predict --out`` sees while the run goes on."""

    def __init__(self, snapshot: Path):
        super().__init__()
        self.snapshot = snapshot
        self.seen: list[int | None] = []

    def forward(self, waveforms, lengths=None, head=None):
        exists = self.snapshot.exists()
        self.seen.append(len(json.loads(self.snapshot.read_text())["predictions"]) if exists else None)
        return super().forward(waveforms, lengths, head)
