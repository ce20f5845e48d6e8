"""Cached utterance features and a Lightning data module over them, for models trained on fixed functionals (WDA).

- :func:`extract_functionals` runs a model's own front-end (e.g. ``WDAMLP.functionals``) over a list of files once,
  batched under ``torch.inference_mode``, and caches the ``(N, D)`` matrix as safetensors (never pickle) under a key
  that covers every file's path, size and mtime, the front-end's configuration and the sermodels version.
- :func:`zscore` standardises one corpus with its own statistics (NICU paper §4.1: "z-score normalized at the corpus
  level"); :func:`stratified_split` makes the seeded 85:15 source split of §4.2.3.
- :class:`FeatureDataModule` serves the tensors: source batches (stage 1) or source + target batches (stage 2,
  ``{"source": (x, y), "target": (z,)}``), and the evaluation sets (source dev, optional labelled target).

Loaders are plain ``TensorDataset``/``DataLoader`` with ``num_workers=0`` and seeded shuffling: the models are tiny
and the features sit in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from safetensors.torch import load_file, save

from sermodels._io import atomic_write_bytes
from sermodels._version import __version__
from sermodels.audio import load_audio
from sermodels.features import Standardizer

#: Files decoded and run through the front-end at once.
EXTRACT_BATCH = 32
#: §4.2.3: "each source corpus was randomly split into a training and test set in a ratio of 85:15".
SOURCE_DEV_FRACTION = 0.15
#: §4.2.3: "batch size of 256".
NICU_BATCH_SIZE = 256


def cache_key(files: Sequence[str | os.PathLike], frontend_config: dict[str, Any]) -> str:
    """A hash of the file list (absolute path, size, mtime of each, in order) and the front-end configuration."""
    digest = hashlib.sha256(json.dumps([frontend_config, __version__], sort_keys=True).encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def extract_functionals(
    files: Sequence[str | os.PathLike],
    frontend: torch.nn.Module,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = EXTRACT_BATCH,
    min_duration: float = 0.0,
) -> torch.Tensor:
    """Features ``(N, D)`` float32 of ``files`` through ``frontend`` (waveforms ``(B, T)`` + lengths -> ``(B, D)``,
    with ``sample_rate`` and ``config()``, e.g. :class:`~sermodels.features.LogMelFunctionals`); cached in
    ``cache_dir`` as ``functionals-<key>.safetensors`` when given."""
    if not files:
        raise ValueError("extract_functionals needs at least one file")
    config = frontend.config()
    cache = None if cache_dir is None else Path(cache_dir) / f"functionals-{cache_key(files, config)}.safetensors"
    if cache is not None and cache.is_file():
        return load_file(str(cache))["features"]
    rate = int(config["sample_rate"])
    was_training = frontend.training
    frontend.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            waves = [load_audio(p, rate, min_duration=min_duration) for p in files[start : start + batch_size]]
            lengths = torch.tensor([len(w) for w in waves])
            rows.append(frontend(torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths).float())
    frontend.train(was_training)
    features = torch.cat(rows).clone()  # out of inference mode, so that callers may use it in autograd
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "sermodels.features", "files": str(len(files)), "frontend": json.dumps(config)}
        atomic_write_bytes(cache, save({"features": features.contiguous()}, metadata=metadata))
    return features


def zscore(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One corpus's ``(N, D)`` features standardised with its own statistics (§4.1): ``(z, mean (D,), std (D,))``."""
    standardizer = Standardizer(features.shape[1]).fit(features)
    return standardizer(features), standardizer.mean.clone(), standardizer.std.clone()


def stratified_split(
    labels: Sequence[int] | torch.Tensor, fraction: float = SOURCE_DEV_FRACTION, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random split of item indices stratified by class: ``round(fraction * n_c)`` (at least one when a class has
    two items or more) of each class go to the second part. Returns ``(train_idx, dev_idx)``, sorted."""
    labels = torch.as_tensor(labels).long()
    rng = np.random.default_rng(seed)
    dev: list[int] = []
    for cls in torch.unique(labels).tolist():
        members = (labels == cls).nonzero().flatten().numpy()
        take = int(round(fraction * len(members)))
        take = max(take, 1) if len(members) >= 2 else 0
        dev += rng.permutation(members)[:take].tolist()
    dev_mask = torch.zeros(len(labels), dtype=torch.bool)
    dev_mask[dev] = True
    return (~dev_mask).nonzero().flatten(), dev_mask.nonzero().flatten()


def _loader(tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(*tensors)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    # A training batch of one item cannot be batch-normalised: drop a last batch of one.
    drop_last = shuffle and len(dataset) % batch_size == 1
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last, num_workers=0
    )


class FeatureDataModule(L.LightningDataModule):
    """Standardised features in memory.

    Args:
        source_x, source_y: the source training part ``(N, D)``, class indices ``(N,)``.
        dev_x, dev_y: the source dev part (evaluation loader 0).
        target_x: unlabelled target features ``(M, D)``; with them, a training batch is
            ``{"source": [x, y], "target": [z]}`` and an epoch runs over the **longer** side with the shorter one
            cycled (Lightning's ``max_size_cycle``), so that every source and every target item is seen each epoch.
        target_labelled_x, target_labelled_y: labelled target items (evaluation loader 1), for model selection only.
        batch_size: §4.2.3: 256. seed: shuffling order.
    """

    def __init__(
        self,
        source_x: torch.Tensor,
        source_y: torch.Tensor,
        dev_x: torch.Tensor,
        dev_y: torch.Tensor,
        target_x: torch.Tensor | None = None,
        target_labelled_x: torch.Tensor | None = None,
        target_labelled_y: torch.Tensor | None = None,
        batch_size: int = NICU_BATCH_SIZE,
        seed: int = 0,
    ):
        super().__init__()
        if (target_labelled_x is None) != (target_labelled_y is None):
            raise ValueError("give both target_labelled_x and target_labelled_y, or neither")
        for name, x, y in (("source", source_x, source_y), ("dev", dev_x, dev_y)):
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"{name}: {len(x)} feature rows and {len(y)} labels (need equal, non-zero)")
        self.source_x, self.source_y = source_x.float(), source_y.long()
        self.dev_x, self.dev_y = dev_x.float(), dev_y.long()
        self.target_x = None if target_x is None else target_x.float()
        self.target_labelled = (
            None if target_labelled_x is None else (target_labelled_x.float(), target_labelled_y.long())
        )
        self.batch_size, self.seed = batch_size, seed

    def source_only(self) -> FeatureDataModule:
        """The same source parts without target items (stage 1)."""
        return FeatureDataModule(
            self.source_x, self.source_y, self.dev_x, self.dev_y, batch_size=self.batch_size, seed=self.seed
        )

    def train_dataloader(self):
        source = _loader([self.source_x, self.source_y], self.batch_size, True, self.seed)
        if self.target_x is None:
            return source
        target = _loader([self.target_x], self.batch_size, True, self.seed + 1)
        return CombinedLoader({"source": source, "target": target}, mode="max_size_cycle")

    def val_dataloader(self):
        loaders = [_loader([self.dev_x, self.dev_y], 4096, False, 0)]
        if self.target_labelled is not None:
            loaders.append(_loader(list(self.target_labelled), 4096, False, 0))
        return loaders
