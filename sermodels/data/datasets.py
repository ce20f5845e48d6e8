"""The samples of one corpus partition: whole clips for evaluation, seeded random crops for training.

Training clips longer than ``max_duration`` are randomly cropped; the crop offset is a function of
``(seed, epoch, item index, cycle)`` only (``cycle``: how many times round-robin has already cycled the item's corpus
this epoch, 0 otherwise), so it is the same with any number of workers or ranks, and an item that a smaller corpus
repeats within one epoch gets a new window each time. A frame-level trace is cut to the same window
(:meth:`sermodels.data.targets.Trace.frames`). Validation and test use whole clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from sermodels.data.base import Item
from sermodels.data.cache import AudioCache


class WaveformDataset(Dataset):
    """Items of one corpus partition as ``{"waveform", "label", "domain", "corpus", "path"}`` samples.

    ``dataset[i]`` is the whole clip; ``dataset[(i, epoch)]`` or ``dataset[(i, epoch, cycle)]`` (what
    :class:`~sermodels.data.sampling.TrainBatchSampler` yields) is a random crop of at most ``max_duration``
    seconds, drawn from ``numpy.random.default_rng((seed, epoch, i))`` for cycle 0 and
    ``default_rng((seed, epoch, i, cycle))`` for a later round-robin cycle of the same epoch (so cycle 0 keeps the
    crops of the plain ``(i, epoch)`` key).

    Numeric targets: with ``values`` (one vector per item) a sample also has ``"values"`` ``(D,)`` float32; with
    ``trace_rate`` (frames per second) it has ``"trace"`` ``(frames, D)`` float32, the item's trace at that rate
    over the sample's window of audio.
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
        values: Sequence[Sequence[float]] | None = None,
        trace_rate: float | None = None,
    ):
        if len(items) != len(label_indices):
            raise ValueError("one label index per item is needed")
        if values is not None and len(values) != len(items):
            raise ValueError("one vector of values per item is needed")
        if trace_rate is not None and any(item.trace is None for item in items):
            raise ValueError("trace_rate needs a trace on every item")
        self.items = list(items)
        self.label_indices = [int(i) for i in label_indices]
        self.values = None if values is None else torch.tensor(values, dtype=torch.float32)
        self.trace_rate = trace_rate
        self.domain = domain
        self.cache = cache
        self.max_samples = None if max_duration is None else int(round(max_duration * cache.sample_rate))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index, epoch, cycle = split_key(key)
        item = self.items[index]
        waveform = self.cache.get(item.path)
        start = 0
        if epoch is not None and self.max_samples is not None and waveform.shape[0] > self.max_samples:
            rng = np.random.default_rng((self.seed, epoch, index, cycle) if cycle else (self.seed, epoch, index))
            start = int(rng.integers(0, waveform.shape[0] - self.max_samples + 1))
            waveform = waveform[start : start + self.max_samples]
        sample = {
            "waveform": waveform,
            "label": self.label_indices[index],
            "domain": self.domain,
            "corpus": item.corpus,
            "path": item.path,
            "speaker": item.speaker,
        }
        if self.values is not None:
            sample["values"] = self.values[index]
        if self.trace_rate is not None:
            rate = self.cache.sample_rate
            frames = item.trace.frames(self.trace_rate, start / rate, (start + waveform.shape[0]) / rate)
            sample["trace"] = torch.from_numpy(frames)
        return sample


def split_key(key: int | tuple[int, ...]) -> tuple[int, int | None, int]:
    """``i``, ``(i, epoch)`` or ``(i, epoch, cycle)`` -> ``(i, epoch or None, cycle or 0)``."""
    if not isinstance(key, tuple):
        return key, None, 0
    if len(key) not in (2, 3):
        raise KeyError(f"expected an index, (index, epoch) or (index, epoch, cycle), got {key!r}")
    return key[0], key[1], key[2] if len(key) == 3 else 0


class TrainingConcat(ConcatDataset):
    """ConcatDataset whose keys may be ``(index, epoch[, cycle])`` tuples, forwarded with the local index."""

    def __getitem__(self, key: int | tuple[int, ...]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        if index < 0:
            index += len(self)
        which = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        local = index - (self.cumulative_sizes[which - 1] if which else 0)
        return self.datasets[which][(local, *key[1:]) if isinstance(key, tuple) else local]


__all__ = ["TrainingConcat", "WaveformDataset", "split_key"]
