"""Source + target batches for domain adaptation (:class:`sermodels.tasks.adaptation.AdaptationTask`).

A training step takes one batch of the labelled source corpus (or corpora) and one batch of the target corpus
(Lightning's ``CombinedLoader`` in ``max_size_cycle`` mode: the shorter side is cycled); validation is the source's
dev partition. The target's labels, if its corpus has any, are never put in a batch: adaptation is unsupervised.
Both sides are :class:`~sermodels.data.SERDataModule` s, so crops, caching and DDP sharding are the usual ones.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader

from sermodels.data.datamodule import SERDataModule


class _Unlabelled:
    """A collate wrapper that drops the labels of the target side (classes and numeric targets alike)."""

    TARGET_KEYS = ("labels", "targets", "traces", "trace_lengths", "trace_mask")

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, samples):
        batch = self.collate(samples)
        for key in self.TARGET_KEYS:
            batch.pop(key, None)
        return batch


class AdaptationDataModule(L.LightningDataModule):
    """Labelled source corpora and an unlabelled target corpus.

    Args:
        source: :class:`SERDataModule` arguments of the source side (corpora, roots, label_space, ...).
        target: :class:`SERDataModule` arguments of the target side; its ``train`` partition is adapted to.
    """

    def __init__(self, source: dict[str, Any], target: dict[str, Any]):
        super().__init__()
        self.source = SERDataModule(**source)
        shared = {k: source[k] for k in ("sample_rate", "batch_size", "max_duration", "seed") if k in source}
        self.target = SERDataModule(**(shared | dict(target)))
        if self.target.sample_rate != self.source.sample_rate:
            raise ValueError("the source and target sides must share one sample rate")

    def setup(self, stage: str | None = None) -> None:
        self.source.setup(stage)
        self.target.setup(stage)

    # The task reads the source side's heads, streams and class weights.
    def __getattr__(self, name: str) -> Any:
        if name in (
            "label_names",
            "corpus_names",
            "label_space",
            "multi_corpus",
            "sample_rate",
            "class_weights",
            "datasets",
            "batch_size",
            "max_duration",
            "corpora",
            "splits",
            "fold",
            "target_spec",
        ):
            return getattr(self.__dict__["source"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def train_dataloader(self) -> CombinedLoader:
        target = self.target.train_dataloader()
        target.collate_fn = _Unlabelled(target.collate_fn)
        return CombinedLoader({"source": self.source.train_dataloader(), "target": target}, "max_size_cycle")

    def val_dataloader(self):
        return self.source.val_dataloader()

    def test_dataloader(self):
        return self.source.test_dataloader()

    def info(self) -> dict[str, Any]:
        return {**self.source.info(), "adaptation_target": self.target.info()}
