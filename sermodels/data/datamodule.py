"""``SERDataModule``: waveforms from one or more corpora, speaker-independent splits, padded batches.

The pieces it puts together, one module each: :mod:`~sermodels.data.datasets` (samples, training crops),
:mod:`~sermodels.data.sampling` (training order: ``concat`` and ``round_robin`` multi-corpus training, DDP shards),
:mod:`~sermodels.data.collate` (the batch dict and its keys), :mod:`~sermodels.data.targets` (numeric targets) and
:mod:`~sermodels.data.cache` (decoded audio).

Label spaces (what ``batch["labels"]`` / ``batch["targets"]`` / ``batch["traces"]`` hold):

* class indices: ``categories`` (each corpus's own classes), ``arousal``, ``valence``, ``binary_valence`` (EmoNet
  Table 2, :mod:`sermodels.labels`), ``basic4``, ``basic6`` (emotion sets shared by the corpora, Marczewski et al.
  2017, §4.1: every corpus is restricted to the set's classes, so items of other categories are dropped from every
  partition before balancing; :data:`sermodels.labels.SHARED_SETS`);
* numbers: ``av_values`` (categories placed on arousal/valence in [-1, 1]: a coarse placement of the category
  groups, see :mod:`sermodels.labels`), ``dimensions`` (a generic corpus's own numeric columns, ``Item.values``),
  ``trace`` (a generic corpus's frame-level traces, ``Item.trace``, at ``frame_rate`` frames per second).
  ``batch["labels"]`` then holds the item's category index in its corpus's classes, -1 for an item without one.

Validation/test: one DataLoader per corpus (a list, in ``corpus_names`` order, when there are several corpora), so
metrics are per corpus; Lightning shards them across ranks itself.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from sermodels import labels as label_maps
from sermodels import outputs
from sermodels.data import targets
from sermodels.data.base import Corpus, CorpusError, Item, corpus_meta, load_corpus
from sermodels.data.cache import DEFAULT_MEMORY_MB, AudioCache
from sermodels.data.collate import pad_collate
from sermodels.data.datasets import TrainingConcat, WaveformDataset
from sermodels.data.sampling import MULTI_CORPUS_MODES, EpochSampler, TrainBatchSampler
from sermodels.data.splits import PARTITIONS
from sermodels.losses import inverse_frequency

#: Environment variable naming the folder that holds EMODB/, RAVDESS/, ... when ``roots`` is not given.
DATA_ENV = "SERMODELS_DATA"
GENERIC_PREFIX = "folder:"
#: Every ``label_space`` a data module accepts: class spaces first, then numeric ones.
ALL_LABEL_SPACES = (*label_maps.LABEL_SPACES, *targets.NUMERIC_SPACES)
#: Range of the "av_values" targets (every placed value lies in it).
AV_VALUES_RANGE = (-1.0, 1.0)


class SERDataModule(L.LightningDataModule):
    """Waveform batches from one or more emotion corpora (arguments are plain types for LightningCLI).

    Args:
        corpora: registered corpus names (``emodb``, ``ravdess``, ``emovo``, ``urdu``) or ``folder:<name>`` for a
            generic corpus (a class-folder tree or CSV/TSV given in ``roots``).
        roots: corpus entry -> folder (or table), or a list in the order of ``corpora``. ``None``: the folders
            ``EMODB``, ``RAVDESS``, ... under ``$SERMODELS_DATA``. A key naming no corpus of ``corpora`` is an
            error (a misspelt name would otherwise be ignored silently).
        label_space: ``categories`` (each corpus's own classes), ``arousal``, ``valence`` or ``binary_valence``
            (:mod:`sermodels.labels`, EmoNet Table 2); ``basic4`` or ``basic6`` (a shared emotion set: items outside
            it are dropped, and a corpus must keep at least two of its classes); ``av_values``, ``dimensions`` or
            ``trace`` for numeric targets (module docstring).
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
        frame_rate: frames per second of the ``trace`` targets (the frame-level head's rate); only for ``trace``.
    """

    def __init__(
        self,
        corpora: list[str],
        roots: dict[str, str] | list[str] | None = None,
        label_space: Literal[
            "categories",
            "arousal",
            "valence",
            "binary_valence",
            "basic4",
            "basic6",
            "av_values",
            "dimensions",
            "trace",
        ] = "categories",
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
        frame_rate: float | None = None,
    ):
        super().__init__()
        if isinstance(corpora, str):
            corpora = [corpora]
        if not corpora:
            raise ValueError("give at least one corpus")
        if label_space not in ALL_LABEL_SPACES:
            raise ValueError(f"label_space must be one of {list(ALL_LABEL_SPACES)}, got {label_space!r}")
        if (label_space == "trace") != (frame_rate is not None) or (frame_rate is not None and frame_rate <= 0):
            raise ValueError(f"frame_rate (positive) is needed by, and only by, label_space='trace'; got {frame_rate}")
        if balance and label_space in ("dimensions", "trace"):
            raise ValueError(f"balance cuts classes to the minority class; label_space={label_space!r} has none")
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
        self.frame_rate = frame_rate
        self.cache = AudioCache(sample_rate, cache_dir, memory_cache_mb)
        self.target_names: list[str] | None = None  # dimension names of a numeric label space, set by setup()
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
        for entry, name in zip(self.corpus_entries, self.corpus_names):
            self.corpora[name] = self._load(entry, name)
        if self.numeric:
            own = "trace_dimensions" if self.label_space == "trace" else "dimensions"
            self.target_names = targets.numeric_names(
                self.label_space, [(name, getattr(corpus, own)) for name, corpus in self.corpora.items()]
            )
        for domain, (name, corpus) in enumerate(self.corpora.items()):
            fold_protocol = corpus.split_names().get(self.splits[name], 0) > 0
            partitions = corpus.split(self.splits[name], self.fold if fold_protocol else None)
            self._check_labels(corpus)
            if self.shared_set:  # the corpus restricted to the set's classes (Marczewski et al. 2017, §4.1)
                partitions = {part: self._inside_set(items) for part, items in partitions.items()}
            if self.balance:
                partitions = {
                    part: label_maps.balanced_subsample(items, self._balance_key(), seed=self.seed)
                    for part, items in partitions.items()
                }
            self.partitions[name] = partitions
            self.datasets[name] = {part: self._dataset(name, items, domain, part) for part, items in partitions.items()}

    def _dataset(self, corpus: str, items: list[Item], domain: int, part: str) -> WaveformDataset:
        values = None
        if self.numeric:
            classes = self.corpora[corpus].classes
            indices = [classes.index(item.label) if item.label in classes else -1 for item in items]
            if self.label_space != "trace":
                values = [targets.item_values(item, self.label_space, self.target_names) for item in items]
        else:
            names = self._names_for(corpus)
            indices = [names.index(self._mapper()(item)) for item in items]
        return WaveformDataset(
            items,
            indices,
            domain,
            self.cache,
            max_duration=self.max_duration if part == "train" else None,
            seed=self.seed,
            values=values,
            trace_rate=self.frame_rate,
        )

    def _load(self, entry: str, name: str) -> Corpus:
        if entry.startswith(GENERIC_PREFIX):
            return load_corpus("folder", self.roots[name], name=name, strict=self.strict)
        return load_corpus(name, self.roots[name], strict=self.strict)

    @property
    def numeric(self) -> bool:
        """Whether the label space's targets are numbers (``batch["targets"]`` or ``batch["traces"]``)."""
        return self.label_space in targets.NUMERIC_SPACES

    @property
    def shared_set(self) -> bool:
        """Whether the label space is a shared emotion set (``basic4``, ``basic6``): items outside it are dropped."""
        return self.label_space in label_maps.SHARED_SETS

    def _inside_set(self, items: list[Item]) -> list[Item]:
        return [item for item in items if label_maps.in_label_set(item.label, self.label_space)]

    def _outside_set(self, corpus: Corpus) -> dict[str, int]:
        """Labels of ``corpus`` that the shared set drops -> number of items (empty for other label spaces)."""
        if not self.shared_set:
            return {}
        space = self.label_space
        dropped = Counter(item.label for item in corpus.items if not label_maps.in_label_set(item.label, space))
        return dict(sorted(dropped.items()))

    def _mapper(self):
        space = self.label_space
        return lambda item: label_maps.map_label(item.label, space)

    def _balance_key(self):
        if self.label_space in label_maps.VALUE_SPACES:
            return lambda item: label_maps.placement(item.label)  # the (arousal, valence) cell: 6 classes
        return self._mapper()

    def _check_labels(self, corpus: Corpus) -> None:
        if self.label_space == "categories":
            return
        if self.numeric:
            problems = targets.item_problems(corpus.items, self.label_space, self.target_names, self.frame_rate)
            if problems:
                raise CorpusError(f"{corpus.name}: items without a {self.label_space} target", problems)
            return
        unknown = Counter()
        for item in corpus.items:
            try:
                label_maps.in_label_set(item.label, self.label_space)
            except label_maps.UnknownLabelError:
                unknown[item.label] += 1
        if unknown:
            raise CorpusError(
                f"{corpus.name}: labels without an arousal/valence placement",
                [f"label {label!r}: {n} items" for label, n in sorted(unknown.items())],
            )
        if self.shared_set:
            self._check_set_classes(corpus)

    def _check_set_classes(self, corpus: Corpus) -> None:
        """A corpus restricted to a shared set must keep at least two of its classes (one class is no task)."""
        kept = Counter(label_maps.map_label(item.label, self.label_space) for item in self._inside_set(corpus.items))
        if len(kept) >= 2:
            return
        has = ", ".join(f"{label!r} ({n})" for label, n in sorted(Counter(it.label for it in corpus.items).items()))
        raise CorpusError(
            f"{corpus.name}: {len(kept)} of the {self.label_space} classes "
            f"{list(label_maps.SHARED_SETS[self.label_space])} left after dropping the labels outside the set "
            f"({sorted(kept)}); at least two are needed",
            [f"the corpus has {has or 'no items'}"],
        )

    def _names_for(self, corpus: str) -> list[str]:
        if self.label_space == "categories":
            return list(self.corpora[corpus].classes)
        if self.numeric:
            return list(self.target_names)
        return label_maps.label_names(self.label_space)

    def _require_setup(self) -> None:
        if not self.datasets:
            self.setup()

    # ---- what a task needs to know ---------------------------------------------------------------------------------
    @property
    def label_names(self) -> dict[str, list[str]] | list[str]:
        """Per corpus (dict) for "categories"; one shared list for the arousal/valence spaces, the shared sets (their
        classes, :data:`sermodels.labels.SHARED_SETS`) and for the dimension names of a numeric space."""
        self._require_setup()
        if self.label_space == "categories":
            return {name: self._names_for(name) for name in self.corpus_names}
        return self._names_for(self.corpus_names[0])

    def target_spec(self, corpus: str | None = None) -> outputs.OutputSpec:
        """The output spec a head needs to learn these targets (``corpus``: whose classes, for "categories").

        Class spaces give a categories spec; ``av_values`` utterance-level dimensions in [-1, 1]; ``dimensions``
        unbounded utterance-level dimensions; ``trace`` unbounded frame-level dimensions at ``frame_rate``.
        """
        self._require_setup()
        if self.label_space == "categories" and corpus is None and len(self.corpus_names) > 1:
            raise ValueError(f"categories are per corpus: name one of {self.corpus_names}")
        names = self._names_for(corpus or self.corpus_names[0])
        if not self.numeric:
            return outputs.categories(names)
        if self.label_space == "trace":
            return outputs.dimensions(names, range=None, level="frame", frame_rate=self.frame_rate)
        return outputs.dimensions(names, range=AV_VALUES_RANGE if self.label_space == "av_values" else None)

    @property
    def num_classes(self) -> dict[str, int] | int:
        names = self.label_names
        return {k: len(v) for k, v in names.items()} if isinstance(names, dict) else len(names)

    def class_weights(self, corpus: str | None = None) -> torch.Tensor:
        """Inverse class frequency of the training partition, ``w_c = N / (C · n_c)`` (shape ``(classes,)``).

        N is the number of training items, C the number of classes present and n_c the count of class c; the
        sample-weighted mean weight is 1, a balanced set gets all ones, an absent class gets 0. ``corpus`` picks one
        corpus (required for "categories" with several corpora); ``None`` pools all corpora for the shared
        arousal/valence spaces and shared sets.
        """
        self._require_setup()
        if self.numeric:
            raise ValueError(f"class weights are for class label spaces, not {self.label_space!r}")
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
        if not (counts > 0).any():
            raise ValueError(f"no training items for {chosen}")
        return inverse_frequency(counts)

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
                    **({"outside_label_set": self._outside_set(corpus)} if self.shared_set else {}),
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
            **({"frame_rate": self.frame_rate} if self.frame_rate is not None else {}),
        }

    # ---- loaders ---------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        parts = [self.datasets[name]["train"] for name in self.corpus_names]
        dataset = TrainingConcat(parts)
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
    "ALL_LABEL_SPACES",
    "DATA_ENV",
    "EpochSampler",
    "PARTITIONS",
    "SERDataModule",
    "TrainBatchSampler",
    "WaveformDataset",
    "pad_collate",
]
