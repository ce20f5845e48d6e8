"""Feature standardisation (z-scores), globally or per corpus.

The NICU SER paper (§4.1, last sentence) z-normalises "the features for each corpus ... at the corpus level":
:func:`fit_per_corpus` fits one :class:`Standardizer` per corpus and :func:`apply_per_corpus` applies each corpus's
own statistics to its rows. A fitted standardiser is saved as safetensors (never pickle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

# A feature whose standard deviation is at most this fraction of its |mean| (float32 carries ~6e-8 relative
# precision), or exactly 0, is constant in the fitting data. Its scale is set to 1 (as scikit-learn's StandardScaler
# does) rather than floored at a tiny value: a floor would multiply any later deviation of that feature by 1/floor.
CONSTANT_STD_RTOL = 1e-7
SAFETENSORS_FORMAT = "sermodels.Standardizer"
MAX_ROWS_NAMED = 10  # error messages list at most this many offending row numbers


class Standardizer(nn.Module):
    """``(x - mean) / std`` per feature for ``x (..., dim)``, with ``mean`` and ``std`` buffers of shape ``(dim,)``.

    Unfitted, both buffers are NaN and ``forward`` raises. ``std`` is the population standard deviation (ddof 0) of
    the fitting rows, with constant features given scale 1 (see :data:`CONSTANT_STD_RTOL`).
    """

    def __init__(self, dim: int):
        super().__init__()
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.register_buffer("mean", torch.full((self.dim,), float("nan")))
        self.register_buffer("std", torch.full((self.dim,), float("nan")))
        self._fitted = False
        self.register_load_state_dict_post_hook(_refresh_fitted)

    @property
    def fitted(self) -> bool:
        """Whether ``mean`` and ``std`` hold statistics (from :meth:`fit`, a state dict, or written in directly)."""
        if not self._fitted:  # buffers may have been filled in place (e.g. from a scikit-learn scaler)
            self._fitted = _buffers_finite(self)
        return self._fitted

    @torch.no_grad()
    def fit(self, x: Tensor) -> Standardizer:
        """Fit on ``x (N, dim)`` with ``N >= 2`` finite rows; returns ``self``."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"Standardizer.fit expects an (N, {self.dim}) tensor, got {shape}")
        if x.shape[0] < 2:
            raise ValueError(f"Standardizer.fit needs at least 2 rows to estimate a spread, got {x.shape[0]}")
        bad = _nonfinite_rows(x)
        if len(bad):
            raise ValueError(f"Standardizer.fit got NaN/Inf values (first rows: {bad[:MAX_ROWS_NAMED].tolist()})")
        data = x.double()
        mean = data.mean(dim=0)
        std = data.std(dim=0, correction=0)
        constant = std <= CONSTANT_STD_RTOL * mean.abs()
        std = torch.where(constant, torch.ones_like(std), std)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
        self._fitted = True
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., dim)`` -> standardised, same shape and dtype."""
        if not self.fitted:
            raise RuntimeError("Standardizer is not fitted: call fit(x) or load a fitted state first")
        if x.shape[-1] != self.dim:
            raise ValueError(f"Standardizer was fitted on {self.dim} features, got input of shape {tuple(x.shape)}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, z: Tensor) -> Tensor:
        """Undo :meth:`forward`: ``z * std + mean``."""
        if not self.fitted:
            raise RuntimeError("Standardizer is not fitted: call fit(x) or load a fitted state first")
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``mean`` and ``std`` to a safetensors file."""
        if not self.fitted:
            raise RuntimeError(f"{path}: refusing to save an unfitted Standardizer")
        tensors = {"mean": self.mean.detach().cpu().contiguous(), "std": self.std.detach().cpu().contiguous()}
        save_file(tensors, str(path), metadata={"format": SAFETENSORS_FORMAT, "dim": str(self.dim)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Standardizer:
        """Read a standardiser written by :meth:`save`."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such Standardizer file")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
        if set(tensors) != {"mean", "std"}:
            raise ValueError(f"{path}: expected tensors 'mean' and 'std', found {sorted(tensors)}")
        mean, std = tensors["mean"], tensors["std"]
        if mean.dim() != 1 or mean.shape != std.shape:
            raise ValueError(f"{path}: mean {tuple(mean.shape)} and std {tuple(std.shape)} must be equal 1-D shapes")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"{path}: mean/std must be finite and std positive")
        standardizer = cls(mean.shape[0])
        standardizer.load_state_dict({"mean": mean, "std": std})
        return standardizer

    def extra_repr(self) -> str:
        return f"dim={self.dim}, fitted={self.fitted}"


def _buffers_finite(module: Standardizer) -> bool:
    return bool(torch.isfinite(module.mean).all() and torch.isfinite(module.std).all())


def _refresh_fitted(module: Standardizer, incompatible_keys) -> None:
    module._fitted = _buffers_finite(module)


def fit_per_corpus(features: Tensor, corpus_ids: Sequence[str]) -> dict[str, Standardizer]:
    """One standardiser per corpus, fitted on that corpus's rows of ``features (N, D)``; keys sorted by corpus.

    A corpus that cannot be fitted (NaN/Inf values, fewer than 2 rows) is a ``ValueError`` naming the corpus, with
    row numbers counted in ``features`` (not within the corpus).
    """
    groups = _rows_by_corpus(features, corpus_ids)
    standardizers = {}
    for corpus, rows in groups.items():
        subset = features[rows]
        bad = rows[_nonfinite_rows(subset)]
        if len(bad):
            raise ValueError(
                f"corpus {corpus!r}: NaN/Inf feature values in {len(bad)} of its {len(rows)} rows "
                f"(first rows of features: {bad[:MAX_ROWS_NAMED].tolist()})"
            )
        try:
            standardizers[corpus] = Standardizer(features.shape[1]).fit(subset)
        except ValueError as err:
            raise ValueError(f"corpus {corpus!r} ({len(rows)} rows of features): {err}") from err
    return standardizers


def apply_per_corpus(features: Tensor, corpus_ids: Sequence[str], standardizers: Mapping[str, Standardizer]) -> Tensor:
    """Standardise each row of ``features (N, D)`` with its own corpus's standardiser; returns ``(N, D)``."""
    groups = _rows_by_corpus(features, corpus_ids)
    missing = sorted(set(groups) - set(standardizers))
    if missing:
        raise KeyError(f"no standardiser for corpora {missing}; fitted corpora are {sorted(standardizers)}")
    out = torch.empty_like(features)
    for corpus, rows in groups.items():
        out[rows] = standardizers[corpus](features[rows])
    return out


def _nonfinite_rows(x: Tensor) -> Tensor:
    """Indices of the rows of ``x (N, D)`` holding a NaN or an infinity, ``(K,)`` long."""
    return (~torch.isfinite(x)).any(dim=1).nonzero().flatten()


def _rows_by_corpus(features: Tensor, corpus_ids: Sequence[str]) -> dict[str, Tensor]:
    if not isinstance(features, Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be an (N, D) tensor, got {shape}")
    if isinstance(corpus_ids, str) or len(corpus_ids) != features.shape[0]:
        count = "a string" if isinstance(corpus_ids, str) else f"{len(corpus_ids)} ids"
        raise ValueError(f"need one corpus id per row: {features.shape[0]} rows, got {count}")
    rows: dict[str, list[int]] = {}
    for index, corpus in enumerate(corpus_ids):
        rows.setdefault(str(corpus), []).append(index)
    return {c: torch.tensor(rows[c], dtype=torch.long, device=features.device) for c in sorted(rows)}
