"""Several aggregated label spaces at once: EmoNet's "A+V" setting (Gerczuk et al., IEEE TAC, §6.2, Fig. 7b).

The corpora are mapped to arousal and to valence (Table 2), each space pooled over the corpora with per-corpus
class-balanced subsampling, and the two spaces are two domains of one shared network: a training step takes one
batch of each space (Lightning's ``CombinedLoader`` in ``max_size_cycle`` mode: the smaller space is cycled), and
every batch carries ``batch["domain"]``, the space (= head) it belongs to. Validation and test give one loader per
space and corpus, in ``streams`` order.

Each space is served by its own :class:`SERDataModule` (``label_space=space``, ``multi_corpus="concat"``), so crops,
caching, balancing, class weights and DDP sharding (Lightning injects a distributed sampler into every loader of a
``CombinedLoader``) are exactly those of the single-space case.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader

from sermodels import labels as label_maps
from sermodels.data.datamodule import SERDataModule


class TaggedCollate:
    """Wraps a loader's collate function and adds ``batch["domain"]`` (one name per row)."""

    def __init__(self, collate, domain: str):
        self.collate = collate
        self.domain = domain

    def __call__(self, samples):
        batch = self.collate(samples)
        batch["domain"] = [self.domain] * len(batch["labels"])
        return batch


def _tagged(loader: DataLoader, domain: str) -> DataLoader:
    """The same loader with its batches tagged by ``domain`` (sampler or batch sampler and workers unchanged)."""
    common = {
        "num_workers": loader.num_workers,
        "collate_fn": TaggedCollate(loader.collate_fn, domain),
        "persistent_workers": loader.persistent_workers,
    }
    if loader.batch_size is None:  # built from a batch sampler (SERDataModule's training batches)
        return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler, **common)


class SpacesDataModule(L.LightningDataModule):
    """Arousal + valence (or any aggregated spaces) as domains of one model; arguments as :class:`SERDataModule`.

    Args:
        spaces: aggregated label spaces (``arousal``, ``valence``, ``binary_valence``), each one domain.
        balance: per-corpus class-balanced subsampling in every space (§6.2; default on).
        **kwargs: every other :class:`SERDataModule` argument (corpora, roots, split, batch_size, ...).
    """

    def __init__(self, corpora: list[str], spaces: list[str] | None = None, balance: bool = True, **kwargs: Any):
        super().__init__()
        spaces = list(spaces or ["arousal", "valence"])
        if len(set(spaces)) != len(spaces) or len(spaces) < 2:
            raise ValueError(f"give at least two different label spaces, got {spaces}")
        for space in spaces:
            # A shared set (basic4, basic6) restricts the corpora to some categories instead of mapping all of them
            # onto coarser classes: it is no view of the same items as arousal and valence are.
            if space == "categories" or space in label_maps.SHARED_SETS or space not in label_maps.LABEL_SPACES:
                raise ValueError(f"{space!r} is not an aggregated label space; choose from arousal, valence, ...")
        if kwargs.get("multi_corpus", "concat") != "concat" or "label_space" in kwargs:
            raise ValueError("each space pools its corpora (multi_corpus='concat'); label_space is given by spaces")
        self.save_hyperparameters()
        self.spaces = spaces
        self.parts = {space: SERDataModule(corpora, label_space=space, balance=balance, **kwargs) for space in spaces}
        first = self.parts[spaces[0]]
        self.corpus_names = list(first.corpus_names)
        self.batch_size = first.batch_size
        self.sample_rate = first.sample_rate
        self.multi_corpus = "spaces"
        self.label_space = "+".join(spaces)
        self.streams = [(space, corpus) for space in spaces for corpus in self.corpus_names]

    def setup(self, stage: str | None = None) -> None:
        for part in self.parts.values():
            part.setup(stage)

    @property
    def label_names(self) -> dict[str, list[str]]:
        """Space (= domain) -> class names."""
        return {space: label_maps.label_names(space) for space in self.spaces}

    def class_weights(self, space: str):
        return self.parts[space].class_weights(None)

    def info(self) -> dict[str, Any]:
        infos = {space: part.info() for space, part in self.parts.items()}
        first = infos[self.spaces[0]]
        return {
            **first,
            "label_space": self.label_space,
            "label_names": self.label_names,
            "multi_corpus": "one batch of each space per step",
            "partition_sizes_by_space": {
                space: {c["name"]: c["partition_sizes"] for c in info["corpora"]} for space, info in infos.items()
            },
        }

    def train_dataloader(self) -> CombinedLoader:
        loaders = {space: _tagged(part.train_dataloader(), space) for space, part in self.parts.items()}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval("val_dataloader")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval("test_dataloader")

    def _eval(self, method: str) -> list[DataLoader]:
        out = []
        for space, part in self.parts.items():
            loaders = getattr(part, method)()
            loaders = loaders if isinstance(loaders, list) else [loaders]
            out += [_tagged(loader, space) for loader in loaders]
        return out


__all__ = ["SpacesDataModule", "TaggedCollate"]
