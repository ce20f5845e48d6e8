"""Classification regimes: class-weighted cross-entropy on categories heads, one corpus or many.

- :class:`ClassificationTask`: one head per stream (a corpus, or a pooled label space such as EmoNet's aggregated
  arousal or valence, §6.2); a batch trains the head of its stream. With a model whose front-end is frozen
  (``frozen_features`` / ``classify_features``, e.g. Deep Spectrum), the features of unchanged clips are computed
  once and reused across epochs, and a model that standardises its features (``fit_feature_statistics``) has them
  fitted on the training partition before the first step.
- :class:`MultiDomainTask`: the same loss on round-robin batches of several corpora, one head per corpus, through a
  multi-domain model (EmoNet §6.1: shared convolutions and attention, adapters + BN + head per corpus). It talks to
  the model through ``add_domain`` / ``domain_parameters`` / ``shared_parameters`` only.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from sermodels import losses
from sermodels.tasks.base import SERTask

MULTI_DOMAIN_METHODS = ("add_domain", "domain_parameters", "shared_parameters")


def has_trainable_batchnorm(net: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters())
        for m in net.modules()
    )


class ClassificationTask(SERTask):
    """Categories heads trained with (class-weighted) cross-entropy.

    Args:
        model / optimizer / schedule / restore_best: see :class:`~sermodels.tasks.base.SERTask`.
        class_weighted: weight the cross-entropy by inverse class frequency of each stream's training partition.
        cache_features: reuse the frozen features of a clip across epochs (models with ``frozen_features``; only
            when the data module does not crop clips at random).
    """

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        restore_best: bool = True,
        class_weighted: bool = True,
        cache_features: bool = True,
    ):
        super().__init__(model, optimizer, schedule, restore_best)
        self.class_weighted = class_weighted
        self.cache_features = cache_features
        self.class_weights: dict[str, torch.Tensor] = {}
        self._features: dict[str, torch.Tensor] = {}
        self._reuse_features = False
        self._skip_single = False
        self._train_sets: list = []

    def after_net(self, data) -> None:
        spaces = getattr(data, "spaces", None)
        if self.class_weighted:
            if spaces:
                self.class_weights = {space: data.class_weights(space) for space in spaces}
            else:
                for corpus in self.streams:
                    head = self.stream_head[corpus]
                    if head not in self.class_weights:
                        self.class_weights[head] = data.class_weights(corpus if head == corpus else None)
        frozen = hasattr(self.net, "frozen_features")
        self._reuse_features = frozen and self.cache_features and getattr(data, "max_duration", 1) is None
        # A BatchNorm layer in training mode cannot normalise one clip: such batches are skipped.
        self._skip_single = has_trainable_batchnorm(self.net)
        datasets = getattr(data, "datasets", {})
        self._train_sets = [datasets[c]["train"] for c in self.streams if c in datasets]

    # ---- frozen features (Deep Spectrum) ---------------------------------------------------------------------------
    def head_output(self, batch: dict[str, Any], head: str) -> torch.Tensor:
        if not hasattr(self.net, "frozen_features"):
            return self.net(batch["waveforms"], batch["lengths"], head)
        return self.net.classify_features(self.frozen_features(batch), head)

    def frozen_features(self, batch: dict[str, Any]) -> torch.Tensor:
        paths = batch["paths"]
        if self._reuse_features and all(p in self._features for p in paths):
            return torch.stack([self._features[p] for p in paths]).to(self.device)
        # The trainer's precision context also outside the steps (on_fit_start): the same features in every use.
        context = self.trainer.precision_plugin.forward_context() if self._trainer is not None else nullcontext()
        with torch.no_grad(), context:
            feats = self.net.frozen_features(batch["waveforms"], batch["lengths"]).float()
        if self._reuse_features:
            for path, row in zip(paths, feats.cpu()):
                self._features[path] = row
        return feats

    def on_fit_start(self) -> None:
        """Fit the model's feature statistics (z-score) on the training partition's whole clips."""
        if not hasattr(self.net, "fit_feature_statistics"):
            return
        from torch.utils.data import DataLoader

        from sermodels.data.datamodule import pad_collate

        rows = []
        for dataset in self._train_sets:
            loader = DataLoader(dataset, batch_size=self.trainer.datamodule.batch_size, collate_fn=pad_collate)
            for batch in loader:
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                rows.append(self.frozen_features(batch).cpu())
        self.net.fit_feature_statistics(torch.cat(rows))

    # ---- steps -----------------------------------------------------------------------------------------------------
    def batch_loss(self, batch: dict[str, Any]) -> torch.Tensor | None:
        if self._skip_single and len(batch["waveforms"]) < 2:
            return None
        head = self.head_of(batch)
        logits = self.head_output(batch, head)
        loss = losses.weighted_cross_entropy(logits, batch["labels"], self.class_weights.get(head))
        self.log(f"train/{head}/loss", loss, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if not hasattr(self.net, "frozen_features"):
            return super().validation_step(batch, batch_idx, dataloader_idx)
        head = self.head_of(batch)
        pred = self.head_output(batch, head).argmax(-1)
        self._val.setdefault(self.stream_of(batch), []).append((pred.detach(), batch["labels"].detach(), None))

    def on_train_epoch_start(self) -> None:
        # BatchNorm layers whose parameters are frozen keep their running statistics (transfer of a frozen base).
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()

    def training_summary(self) -> dict[str, Any]:
        return {**super().training_summary(), "class_weighted": self.class_weighted}


class MultiDomainTask(ClassificationTask):
    """Round-robin multi-corpus training of a multi-domain model (EmoNet §6.1): one head per corpus."""

    def after_net(self, data) -> None:
        missing = [m for m in MULTI_DOMAIN_METHODS if not hasattr(self.net, m)]
        if missing:
            raise TypeError(f"{type(self.net).__name__} is not a multi-domain model: it lacks {missing}")
        if len(self.streams) > 1 and not (self.round_robin or getattr(data, "spaces", None)):
            raise ValueError("multi-domain training needs SERDataModule(multi_corpus='round_robin') or several spaces")
        super().after_net(data)
