"""Pieces shared by the LightningModules of :mod:`sermodels.tasks`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

RECIPE_REQUIRED = ("id", "corpus", "root", "output")


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


def merge_recipe(
    path: str | Path,
    defaults: Mapping[str, Any],
    overrides: Sequence[str] = (),
    required: Sequence[str] = RECIPE_REQUIRED,
) -> dict[str, Any]:
    """A recipe YAML merged over ``defaults``, then ``key=value`` overrides from the command line; the keys in
    ``required`` must be present."""
    cfg = OmegaConf.merge(
        OmegaConf.create(dict(defaults)), OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides))
    )
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"{path}: recipe lacks {missing}")
    return OmegaConf.to_container(cfg, resolve=True)


def save_release(
    model, recipe: Mapping[str, Any], corpus, split: Mapping[str, list], fit: Sequence[str], **training: Any
) -> Path:
    """Save a model fitted by a one-corpus recipe to ``recipe["output"]`` with its provenance: recipe, corpus facts
    (without the local root), split and partition sizes, the partitions it was fitted on (selection on dev), and
    ``training`` (classifier, selection scores, ...)."""
    from sermodels._registry import save_pretrained

    info = {k: v for k, v in corpus.info().items() if k != "root"}  # a path on the training machine
    return save_pretrained(
        model,
        Path(recipe["output"]),
        extra={
            "id": recipe["id"],
            "training": {
                "recipe": recipe.get("recipe_path"),
                "corpora": [info],
                "split": recipe["split"],
                "partitions": {"select": "dev", "fit": list(fit)},
                "files": {name: len(split[name]) for name in ("train", "dev", "test")},
                **training,
            },
        },
    )
