"""Pieces shared by the LightningModules of :mod:`sermodels.tasks`."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F


def gather_predictions(module: L.LightningModule, pred: torch.Tensor, true: torch.Tensor):
    """Every rank's dev predictions and targets ``(N,)``, in rank order, on every rank (as they are on one process).

    Under DDP each rank scores a disjoint, unpadded shard of the dev set (``UnrepeatedDistributedSampler``), so the
    shards differ in length: they are padded to a common length to gather, and the padding is dropped again."""
    if module.trainer.world_size <= 1:
        return pred, true
    count = torch.tensor([true.numel()], device=module.device)
    counts = module.all_gather(count).flatten().tolist()
    width = max(counts)
    pred = module.all_gather(F.pad(pred, (0, width - pred.numel()), value=-1)).reshape(len(counts), width)
    true = module.all_gather(F.pad(true, (0, width - true.numel()), value=-1)).reshape(len(counts), width)
    return torch.cat([pred[r, :n] for r, n in enumerate(counts)]), torch.cat(
        [true[r, :n] for r, n in enumerate(counts)]
    )
