"""Classification regimes: class-weighted cross-entropy on categories heads, one corpus or many.

- :class:`ClassificationTask`: one head per stream (a corpus, or a pooled label space such as EmoNet's aggregated
  arousal or valence, §6.2); a batch trains the head of its stream. With a model whose front-end is frozen
  (``frozen_features`` / ``classify_features``, e.g. Deep Spectrum), the features of unchanged clips are computed
  once and reused across epochs, and a fresh model that standardises its features (``fit_feature_statistics``) has
  them fitted on the training partition before the first step.
- :class:`MultiDomainTask`: the same loss on round-robin batches of several corpora, one head per corpus, through a
  multi-domain model (EmoNet §6.1: shared convolutions and attention, adapters + BN + head per corpus). It talks to
  the model through ``add_domain`` / ``domain_parameters`` / ``shared_parameters`` only.

Dimensional heads among the streams (a numeric label space) are trained with the regime's regression loss
(:meth:`~sermodels.tasks.base.SERTask.loss_for`), so the transfer and multitask regimes built on this one handle both.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from sermodels.tasks.base import SERTask

MULTI_DOMAIN_METHODS = ("add_domain", "domain_parameters", "shared_parameters")


class ClassificationTask(SERTask):
    """Categories heads trained with (class-weighted) cross-entropy.

    Args:
        model / optimizer / schedule / restore_best: see :class:`~sermodels.tasks.base.SERTask`.
        class_weighted: weight the cross-entropy by inverse class frequency of each stream's training partition.
        cache_features: reuse the frozen features of a clip across epochs (models with ``frozen_features``; only
            when the data module does not crop clips at random and no waveform augmentation is on).
        augment / ema: see :class:`~sermodels.tasks.base.SERTask`.
    """

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        restore_best: bool = True,
        class_weighted: bool = True,
        cache_features: bool = True,
        augment: dict[str, Any] | None = None,
        ema: float | None = None,
    ):
        super().__init__(model, optimizer, schedule, restore_best, augment=augment, ema=ema)
        self.class_weighted = class_weighted
        self.cache_features = cache_features
        self.class_weights: dict[str, torch.Tensor] = {}
        self._features: dict[str, torch.Tensor] = {}
        self._reuse_features = False
        self._train_sets: list = []

    def after_net(self, data) -> None:
        if self.class_weighted:
            self.class_weights = self._class_weights(data)
        frozen = hasattr(self.net, "frozen_features")
        fixed_clips = getattr(data, "max_duration", 1) is None and not self.waveform_augmented
        self._reuse_features = frozen and self.cache_features and fixed_clips
        datasets = getattr(data, "datasets", {})
        self._train_sets = [datasets[c]["train"] for c in self.streams if c in datasets]

    def _class_weights(self, data) -> dict[str, torch.Tensor]:
        """Inverse class frequencies of each categories head's training data (dimensional heads have none)."""
        weights: dict[str, torch.Tensor] = {}
        if getattr(data, "spaces", None):
            for space in data.spaces:
                if self.net.output_spec(space).kind == "categories":
                    weights[space] = data.class_weights(space)
            return weights
        for corpus in self.streams:
            head = self.stream_head[corpus]
            if head not in weights and self.net.output_spec(head).kind == "categories":
                weights[head] = data.class_weights(corpus if head == corpus else None)
        return weights

    def class_weights_of(self, head: str) -> torch.Tensor | None:
        return self.class_weights.get(head)

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
        """Fit a fresh model's statistics on the training partition's whole clips: the z-score of frozen features
        (``fit_feature_statistics``, Deep Spectrum) or of the model's input spectrogram (``fit_input_statistics``,
        AV-SpNET); a pretrained model keeps its own."""
        if hasattr(self.net, "fit_input_statistics") and not bool(getattr(self.net, "statistics_fitted", True)):
            self.net.fit_input_statistics((b["waveforms"], b["lengths"]) for b in self._whole_training_clips())
        if not hasattr(self.net, "fit_feature_statistics") or getattr(self.net, "feature_statistics_fitted", False):
            return
        rows = [self.frozen_features(batch).cpu() for batch in self._whole_training_clips()]
        self.net.fit_feature_statistics(torch.cat(rows))

    def _whole_training_clips(self):
        """Batches of the training partitions' whole clips (uncropped, in order), on the task's device."""
        from torch.utils.data import DataLoader

        from sermodels.data.collate import pad_collate

        for dataset in self._train_sets:
            loader = DataLoader(dataset, batch_size=self.trainer.datamodule.batch_size, collate_fn=pad_collate)
            for batch in loader:
                yield {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

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
