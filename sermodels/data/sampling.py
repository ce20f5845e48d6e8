"""Training order: a seeded per-epoch shuffle and the training batches of one or more corpora.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

MULTI_CORPUS_MODES = ("concat", "round_robin")


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


__all__ = ["MULTI_CORPUS_MODES", "EpochSampler", "TrainBatchSampler"]
