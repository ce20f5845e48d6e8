"""``SERDataModule``: waveforms from one or more corpora, speaker-independent splits, padded batches.

A batch is a dict::

    waveforms  (B, T) float32   zero-padded to the longest clip of the batch
    lengths    (B,)   long      valid samples per row
    labels     (B,)   long      index into label_names (per corpus for "categories", shared for arousal/valence)
    domains    (B,)   long      index into corpus_names
    corpus     list[str]        corpus name per row
    paths      list[str]

Training clips longer than ``max_duration`` are randomly cropped; the crop offset is a function of
``(seed, epoch, item index, cycle)`` only (``cycle``: how many times round-robin has already cycled the item's corpus
this epoch, 0 otherwise), so it is the same with any number of workers or ranks, and an item that a smaller corpus
repeats within one epoch gets a new window each time. Validation and test use whole clips.

Multi-corpus training (EmoNet §6.1/§6.2):

* ``"concat"`` pools the corpora's training items and shuffles them together (aggregated training; with
  ``balance=True`` and an arousal/valence label space this is EmoNet's §6.2 set-up). Under DDP Lightning injects a
  ``DistributedSampler`` into :class:`TrainBatchSampler` (it exposes the ``sampler`` argument Lightning looks for);
  the batches are cut from that sampler's per-rank shard. That sampler shuffles with Lightning's global seed
  (``seed_everything``, 0 when unset), not with ``SERDataModule.seed``, which then only seeds the crops and
  ``balance``: seed both for a reproducible run. Without DDP the order comes from ``SERDataModule.seed``.
* ``"round_robin"`` yields one batch of corpus 1, one of corpus 2, ..., in turn (multi-domain training, §6.1: every
  batch comes from a single corpus, ``batch["corpus"]`` names it). An epoch ends when the largest corpus has been
  seen once; smaller corpora are reshuffled and cycled. Under DDP every rank shuffles each corpus with the same
  seed, pads it by wrap-around to a multiple of the world size and keeps every ``world_size``-th item from its rank
  on: the shards are disjoint, equally long, and all ranks process the same corpus at the same step (so per-corpus
  adapters and heads receive gradients on every rank at once). Rank and world size come from the injected
  ``DistributedSampler`` (``Trainer(use_distributed_sampler=True)``, the default) or, without one, from
  ``torch.distributed``.

Validation/test: one DataLoader per corpus (a list, in ``corpus_names`` order, when there are several corpora), so
metrics are per corpus; Lightning shards them across ranks itself.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, Sampler

from sermodels import labels as label_maps
from sermodels.data.base import Corpus, CorpusError, Item, corpus_meta, load_corpus
from sermodels.data.cache import DEFAULT_MEMORY_MB, AudioCache
from sermodels.data.splits import PARTITIONS

MULTI_CORPUS_MODES = ("concat", "round_robin")
#: Environment variable naming the folder that holds EMODB/, RAVDESS/, ... when ``roots`` is not given.
DATA_ENV = "SERMODELS_DATA"
GENERIC_PREFIX = "folder:"


# ---------------------------------------------------------------------------------------------------------------------
# Dataset and collation.


class WaveformDataset(Dataset):
    """Items of one corpus partition as ``{"waveform", "label", "domain", "corpus", "path"}`` samples.

    ``dataset[i]`` is the whole clip; ``dataset[(i, epoch)]`` or ``dataset[(i, epoch, cycle)]`` (what
    :class:`TrainBatchSampler` yields) is a random crop of at most ``max_duration`` seconds, drawn from
    ``numpy.random.default_rng((seed, epoch, i))`` for cycle 0 and ``default_rng((seed, epoch, i, cycle))`` for a
    later round-robin cycle of the same epoch (so cycle 0 keeps the crops of the plain ``(i, epoch)`` key).
    """

    def __init__(
        self,
        items: Sequence[Item],
        label_indices: Sequence[int],
        domain: int,
        cache: AudioCache,
        *,
        max_duration: float | None = None,
        seed: int = 0,
    ):
        if len(items) != len(label_indices):
            raise ValueError("one label index per item is needed")
        self.items = list(items)
        self.label_indices = [int(i) for i in label_indices]
        self.domain = domain
        self.cache = cache
        self.max_samples = None if max_duration is None else int(round(max_duration * cache.sample_rate))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index, epoch, cycle = _split_key(key)
        item = self.items[index]
        waveform = self.cache.get(item.path)
        if epoch is not None and self.max_samples is not None and waveform.shape[0] > self.max_samples:
            rng = np.random.default_rng((self.seed, epoch, index, cycle) if cycle else (self.seed, epoch, index))
            start = int(rng.integers(0, waveform.shape[0] - self.max_samples + 1))
            waveform = waveform[start : start + self.max_samples]
        return {
            "waveform": waveform,
            "label": self.label_indices[index],
            "domain": self.domain,
            "corpus": item.corpus,
            "path": item.path,
        }


def _split_key(key: int | tuple[int, ...]) -> tuple[int, int | None, int]:
    """``i``, ``(i, epoch)`` or ``(i, epoch, cycle)`` -> ``(i, epoch or None, cycle or 0)``."""
    if not isinstance(key, tuple):
        return key, None, 0
    if len(key) not in (2, 3):
        raise KeyError(f"expected an index, (index, epoch) or (index, epoch, cycle), got {key!r}")
    return key[0], key[1], key[2] if len(key) == 3 else 0


class _TrainingConcat(ConcatDataset):
    """ConcatDataset whose keys may be ``(index, epoch[, cycle])`` tuples, forwarded with the local index."""

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        if index < 0:
            index += len(self)
        which = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        local = index - (self.cumulative_sizes[which - 1] if which else 0)
        return self.datasets[which][(local, *key[1:]) if isinstance(key, tuple) else local]


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch padded with zeros to the longest waveform (see the module docstring)."""
    lengths = torch.tensor([s["waveform"].shape[0] for s in samples], dtype=torch.long)
    waveforms = torch.zeros(len(samples), int(lengths.max()) if len(samples) else 0, dtype=torch.float32)
    for row, sample in enumerate(samples):
        waveforms[row, : sample["waveform"].shape[0]] = sample["waveform"]
    return {
        "waveforms": waveforms,
        "lengths": lengths,
        "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "domains": torch.tensor([s["domain"] for s in samples], dtype=torch.long),
        "corpus": [s["corpus"] for s in samples],
        "paths": [s["path"] for s in samples],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Training order.


class EpochSampler(Sampler[int]):
    """Seeded shuffle of ``range(size)`` that changes every epoch.

    Lightning calls :meth:`set_epoch` before each epoch; without it (a plain loop) each pass advances the epoch
    itself, so consecutive passes still differ.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def next_epoch(self) -> int:
        epoch = self.epoch
        self.epoch += 1
        return epoch

    def permutation(self, epoch: int) -> list[int]:
        return np.random.default_rng((self.seed, epoch)).permutation(self.size).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation(self.next_epoch()))

    def __len__(self) -> int:
        return self.size


class TrainBatchSampler(BatchSampler):
    """Training batches of ``(index, epoch)`` keys ("concat") or ``(index, epoch, cycle)`` keys ("round_robin",
    ``cycle`` counting how often the corpus has been reshuffled this epoch), in the order of the module docstring.

    ``groups`` lists each corpus's indices into the concatenated training set. ``sampler`` is an
    :class:`EpochSampler` over all indices, or the ``DistributedSampler`` that Lightning injects under DDP; in
    "round_robin" mode it only supplies rank, world size and epoch.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool,
        groups: Sequence[Sequence[int]],
        mode: str = "concat",
        seed: int = 0,
    ):
        super().__init__(sampler, batch_size, drop_last)
        if mode not in MULTI_CORPUS_MODES:
            raise ValueError(f"multi_corpus must be one of {MULTI_CORPUS_MODES}, got {mode!r}")
        self.groups = [list(group) for group in groups]
        self.mode = mode
        self.seed = seed
        if mode == "round_robin":
            for number, size in enumerate(self._shard_sizes()):
                if size == 0 or (drop_last and size < batch_size):
                    raise ValueError(
                        f"round-robin corpus #{number} has {size} training items per rank, "
                        f"not enough for a batch of {batch_size}"
                    )

    # ---- distribution ---------------------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        if hasattr(self.sampler, "num_replicas") and hasattr(self.sampler, "rank"):
            return int(self.sampler.rank), int(self.sampler.num_replicas)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _epoch(self) -> int:
        if isinstance(self.sampler, EpochSampler):
            return self.sampler.next_epoch()
        return int(getattr(self.sampler, "epoch", 0))

    def _shard_sizes(self) -> list[int]:
        _, replicas = self._rank()
        return [math.ceil(len(group) / replicas) for group in self.groups]

    def _batches_in(self, size: int) -> int:
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    # ---- iteration -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        epoch = self._epoch()
        if self.mode == "concat":
            order = self.sampler.permutation(epoch) if isinstance(self.sampler, EpochSampler) else list(self.sampler)
            for batch in self._chunks(order):
                yield [(index, epoch) for index in batch]
            return
        streams = [self._group_stream(g, epoch) for g in range(len(self.groups))]
        for _ in range(self._rounds()):
            for stream in streams:
                cycle, batch = next(stream)
                yield [(index, epoch, cycle) for index in batch]

    def _chunks(self, order: Sequence[int]) -> Iterator[list[int]]:
        for start in range(0, len(order), self.batch_size):
            batch = list(order[start : start + self.batch_size])
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def _group_stream(self, group: int, epoch: int) -> Iterator[tuple[int, list[int]]]:
        """This rank's ``(cycle, batch)`` pairs of one corpus, cycling through fresh shuffles while asked for."""
        rank, replicas = self._rank()
        indices = np.asarray(self.groups[group])
        cycle = 0
        while True:
            order = indices[np.random.default_rng((self.seed, epoch, group, cycle)).permutation(len(indices))]
            padded = np.resize(order, math.ceil(len(order) / replicas) * replicas)  # wrap-around padding
            for batch in self._chunks(padded[rank::replicas].tolist()):
                yield cycle, batch
            cycle += 1

    def _rounds(self) -> int:
        return max(self._batches_in(size) for size in self._shard_sizes())

    def __len__(self) -> int:
        if self.mode == "round_robin":
            return self._rounds() * len(self.groups)
        return self._batches_in(len(self.sampler))


# ---------------------------------------------------------------------------------------------------------------------
# The data module.


class SERDataModule(L.LightningDataModule):
    """Waveform batches from one or more emotion corpora (arguments are plain types for LightningCLI).

    Args:
        corpora: registered corpus names (``emodb``, ``ravdess``, ``emovo``, ``urdu``) or ``folder:<name>`` for a
            generic corpus (a class-folder tree or CSV/TSV given in ``roots``).
        roots: corpus entry -> folder (or table), or a list in the order of ``corpora``. ``None``: the folders
            ``EMODB``, ``RAVDESS``, ... under ``$SERMODELS_DATA``. A key naming no corpus of ``corpora`` is an
            error (a misspelt name would otherwise be ignored silently).
        label_space: ``categories`` (each corpus's own classes), ``arousal``, ``valence`` or ``binary_valence``
            (:mod:`sermodels.labels`, EmoNet Table 2).
        split: protocol name for every corpus (``fixed``, ``loso``, ``cv6``, ``cv5``) or a dict corpus -> name
            (corpora it leaves out use ``fixed``; a key naming no corpus of ``corpora`` is an error).
        fold: fold index (0-based) for cross-validation protocols; ignored by corpora using ``fixed``.
        max_duration: training crop length in seconds (``None``: whole clips).
        balance: cut every mapped class to the corpus's minority class, per corpus and partition (EmoNet §6.2:
            applied to training, development and test partitions alike).
        multi_corpus: ``concat`` or ``round_robin`` (module docstring).
        cache_dir: folder for the on-disk decoded-audio cache (``None``: memory only, ``memory_cache_mb`` per
            process).
        strict: require complete built-in corpora (``False`` accepts a partial copy).
        drop_last: drop incomplete training batches.
    """

    def __init__(
        self,
        corpora: list[str],
        roots: dict[str, str] | list[str] | None = None,
        label_space: Literal["categories", "arousal", "valence", "binary_valence"] = "categories",
        split: str | dict[str, str] = "fixed",
        fold: int | None = None,
        batch_size: int = 32,
        max_duration: float | None = 5.0,
        sample_rate: int = 16000,
        num_workers: int = 0,
        balance: bool = False,
        multi_corpus: Literal["concat", "round_robin"] = "concat",
        cache_dir: str | None = None,
        seed: int = 0,
        strict: bool = True,
        drop_last: bool = False,
        memory_cache_mb: float = DEFAULT_MEMORY_MB,
    ):
        super().__init__()
        if isinstance(corpora, str):
            corpora = [corpora]
        if not corpora:
            raise ValueError("give at least one corpus")
        if label_space not in label_maps.LABEL_SPACES:
            raise ValueError(f"label_space must be one of {sorted(label_maps.LABEL_SPACES)}, got {label_space!r}")
        if multi_corpus not in MULTI_CORPUS_MODES:
            raise ValueError(f"multi_corpus must be one of {MULTI_CORPUS_MODES}, got {multi_corpus!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration must be positive or None, got {max_duration}")
        self.save_hyperparameters()
        self.corpus_entries = list(corpora)
        self.corpus_names = [self._domain_name(entry) for entry in self.corpus_entries]
        if len(set(self.corpus_names)) != len(self.corpus_names):
            raise ValueError(f"corpora named twice: {self.corpus_names}")
        self.roots = self._resolve_roots(roots)
        self.label_space = label_space
        self.splits = {name: self._split_for(entry, split) for entry, name in zip(corpora, self.corpus_names)}
        self.fold = fold
        self.batch_size = batch_size
        self.max_duration = max_duration
        self.sample_rate = sample_rate
        self.num_workers = num_workers
        self.balance = balance
        self.multi_corpus = multi_corpus
        self.seed = seed
        self.strict = strict
        self.drop_last = drop_last
        self.cache = AudioCache(sample_rate, cache_dir, memory_cache_mb)
        self.corpora: dict[str, Corpus] = {}
        self.partitions: dict[str, dict[str, list[Item]]] = {}
        self.datasets: dict[str, dict[str, WaveformDataset]] = {}

    # ---- configuration helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _domain_name(entry: str) -> str:
        return entry[len(GENERIC_PREFIX) :] if entry.startswith(GENERIC_PREFIX) else entry.lower()

    def _resolve_roots(self, roots: dict[str, str] | list[str] | None) -> dict[str, str]:
        if isinstance(roots, (list, tuple)):
            if len(roots) != len(self.corpus_entries):
                raise ValueError(f"{len(roots)} roots for {len(self.corpus_entries)} corpora")
            return dict(zip(self.corpus_names, roots))
        unknown = self._unknown_keys(roots or {})
        resolved = {}
        for entry, name in zip(self.corpus_entries, self.corpus_names):
            if roots and (entry in roots or name in roots):
                resolved[name] = roots[entry] if entry in roots else roots[name]
                continue
            base = os.environ.get(DATA_ENV)
            folder = None if entry.startswith(GENERIC_PREFIX) else corpus_meta(name).folder
            if base is None or folder is None:
                hint = f"; roots names no corpus of this data module: {unknown}" if unknown else ""
                raise ValueError(
                    f"no root for corpus {entry!r}: pass roots={{{entry!r}: '<folder>'}} or set {DATA_ENV}{hint}"
                )
            resolved[name] = str(Path(base) / folder)
        if unknown:
            raise ValueError(f"roots names unknown corpora {unknown}; the corpora are {self._known_keys()}")
        return resolved

    def _split_for(self, entry: str, split: str | dict[str, str]) -> str:
        if isinstance(split, str):
            return split
        unknown = self._unknown_keys(split)
        if unknown:
            raise ValueError(f"split names unknown corpora {unknown}; the corpora are {self._known_keys()}")
        name = self._domain_name(entry)
        return split.get(entry, split.get(name, "fixed"))

    def _known_keys(self) -> list[str]:
        """What a ``roots``/``split`` dict may name: each corpus entry as given and its corpus name."""
        return list(dict.fromkeys(key for pair in zip(self.corpus_entries, self.corpus_names) for key in pair))

    def _unknown_keys(self, mapping: dict[str, Any]) -> list[str]:
        known = set(self._known_keys())
        return sorted(str(key) for key in mapping if key not in known)

    # ---- setup -----------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Nothing to download: corpora are read where they are (their licences forbid redistribution)."""

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for domain, (entry, name) in enumerate(zip(self.corpus_entries, self.corpus_names)):
            corpus = self._load(entry, name)
            fold_protocol = corpus.split_names().get(self.splits[name], 0) > 0
            partitions = corpus.split(self.splits[name], self.fold if fold_protocol else None)
            self._check_labels(corpus)
            if self.balance:
                partitions = {
                    part: label_maps.balanced_subsample(items, self._mapper(), seed=self.seed)
                    for part, items in partitions.items()
                }
            self.corpora[name] = corpus
            self.partitions[name] = partitions
            names = self._names_for(name)
            self.datasets[name] = {
                part: WaveformDataset(
                    items,
                    [names.index(self._mapper()(item)) for item in items],
                    domain,
                    self.cache,
                    max_duration=self.max_duration if part == "train" else None,
                    seed=self.seed,
                )
                for part, items in partitions.items()
            }

    def _load(self, entry: str, name: str) -> Corpus:
        if entry.startswith(GENERIC_PREFIX):
            return load_corpus("folder", self.roots[name], name=name, strict=self.strict)
        return load_corpus(name, self.roots[name], strict=self.strict)

    def _mapper(self):
        space = self.label_space
        return lambda item: label_maps.map_label(item.label, space)

    def _check_labels(self, corpus: Corpus) -> None:
        if self.label_space == "categories":
            return
        unknown = Counter()
        for item in corpus.items:
            try:
                label_maps.map_label(item.label, self.label_space)
            except label_maps.UnknownLabelError:
                unknown[item.label] += 1
        if unknown:
            raise CorpusError(
                f"{corpus.name}: labels without an arousal/valence placement",
                [f"label {label!r}: {n} items" for label, n in sorted(unknown.items())],
            )

    def _names_for(self, corpus: str) -> list[str]:
        if self.label_space == "categories":
            return list(self.corpora[corpus].classes)
        return label_maps.label_names(self.label_space)

    def _require_setup(self) -> None:
        if not self.datasets:
            self.setup()

    # ---- what a task needs to know ---------------------------------------------------------------------------------
    @property
    def label_names(self) -> dict[str, list[str]] | list[str]:
        """Per corpus (dict) for "categories"; one shared list for the arousal/valence spaces."""
        self._require_setup()
        if self.label_space == "categories":
            return {name: self._names_for(name) for name in self.corpus_names}
        return label_maps.label_names(self.label_space)

    @property
    def num_classes(self) -> dict[str, int] | int:
        names = self.label_names
        return {k: len(v) for k, v in names.items()} if isinstance(names, dict) else len(names)

    def class_weights(self, corpus: str | None = None) -> torch.Tensor:
        """Inverse class frequency of the training partition, ``w_c = N / (C · n_c)`` (shape ``(classes,)``).

        N is the number of training items, C the number of classes present and n_c the count of class c; the
        sample-weighted mean weight is 1, a balanced set gets all ones, an absent class gets 0. ``corpus`` picks one
        corpus (required for "categories" with several corpora); ``None`` pools all corpora for the shared
        arousal/valence spaces.
        """
        self._require_setup()
        if corpus is None:
            if self.label_space == "categories" and len(self.corpus_names) > 1:
                raise ValueError(f"categories are per corpus: name one of {self.corpus_names}")
            chosen = self.corpus_names
        elif corpus in self.corpus_names:
            chosen = [corpus]
        else:
            raise ValueError(f"unknown corpus {corpus!r}; this data module has {self.corpus_names}")
        num = len(self._names_for(chosen[0]))
        counts = torch.zeros(num, dtype=torch.float64)
        for name in chosen:
            for index in self.datasets[name]["train"].label_indices:
                counts[index] += 1
        present = counts > 0
        if not present.any():
            raise ValueError(f"no training items for {chosen}")
        weights = torch.zeros(num, dtype=torch.float64)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights.float()

    def info(self) -> dict[str, Any]:
        """Data facts for a model card: corpora (licence, citation, ...), split and version, partition sizes."""
        self._require_setup()
        out = []
        for name, corpus in self.corpora.items():
            protocol = corpus.protocol
            out.append(
                {
                    **corpus.info(),
                    "split": self.splits[name],
                    "fold": self.fold if corpus.split_names().get(self.splits[name], 0) else None,
                    "split_version": protocol.version if protocol else None,
                    "partition_sizes": {part: len(items) for part, items in self.partitions[name].items()},
                }
            )
        return {
            "corpora": out,
            "label_space": self.label_space,
            "label_names": self.label_names,
            "balance": self.balance,
            "multi_corpus": self.multi_corpus,
            "sample_rate": self.sample_rate,
            "max_duration": self.max_duration,
        }

    # ---- loaders ---------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        parts = [self.datasets[name]["train"] for name in self.corpus_names]
        dataset = _TrainingConcat(parts)
        groups, start = [], 0
        for part in parts:
            groups.append(list(range(start, start + len(part))))
            start += len(part)
        batches = TrainBatchSampler(
            EpochSampler(len(dataset), self.seed),
            self.batch_size,
            self.drop_last,
            groups,
            self.multi_corpus,
            self.seed,
        )
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=pad_collate,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("dev")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("test")

    def _eval_loaders(self, part: str) -> DataLoader | list[DataLoader]:
        self._require_setup()
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        loaders = [
            DataLoader(
                self.datasets[name][part],
                batch_size=self.batch_size,
                shuffle=False,
                # Under DDP each rank scores a disjoint, unpadded shard: Lightning's default sampler would repeat clips
                # to even out the shards and count them twice in a gathered dev UAR.
                sampler=UnrepeatedDistributedSampler(self.datasets[name][part], shuffle=False) if distributed else None,
                num_workers=self.num_workers,
                collate_fn=pad_collate,
                persistent_workers=self.num_workers > 0,  # keeps each worker's in-memory cache across epochs
            )
            for name in self.corpus_names
        ]
        return loaders[0] if len(loaders) == 1 else loaders


__all__ = [
    "EpochSampler",
    "PARTITIONS",
    "SERDataModule",
    "TrainBatchSampler",
    "WaveformDataset",
    "pad_collate",
]
