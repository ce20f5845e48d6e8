"""eGeMAPS / GeMAPS utterance functionals through audEERING's openSMILE (optional extra ``sermodels[smile]``).

LICENCE: openSMILE is free for research and education only (audEERING's non-commercial licence; commercial use
needs a licence from audEERING). sermodels itself is Apache-2.0, but installing the ``smile`` extra and using this
module binds that use of eGeMAPS/GeMAPS features to openSMILE's terms.

Feature sets (Eyben et al., "The Geneva Minimalistic Acoustic Parameter Set (GeMAPS) for voice research and
affective computing", IEEE Trans. Affective Computing 2016): ``"eGeMAPSv02"`` gives 88 functionals, ``"GeMAPSv01b"``
62. They are the hand-crafted baselines of the NICU paper (§4.1: "The 62- and 88-dimensional GeMAPS and eGeMAPS
features were extracted using the openSMILE toolkit") and of EmoNet (§4). Unlike the log-mel front-ends these run on
the CPU through openSMILE's C++ library, one utterance at a time, and return numpy arrays.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..audio import load_audio

FEATURE_SET_DIMS = {"eGeMAPSv02": 88, "GeMAPSv01b": 62}
DEFAULT_FEATURE_SET = "eGeMAPSv02"
DEFAULT_SAMPLE_RATE = 16_000

_MISSING_MESSAGE = (
    "eGeMAPS/GeMAPS features need the 'opensmile' package, which is not installed (or failed to import). "
    "Install it with `pip install 'sermodels[smile]'` (or `pip install opensmile`). Note: openSMILE is free for "
    "research and education only (audEERING's non-commercial licence); commercial use needs a licence from audEERING."
)


def _import_opensmile() -> Any:
    try:
        import opensmile
    except ImportError as err:
        raise ImportError(_MISSING_MESSAGE) from err
    return opensmile


class OpenSmileFunctionals:
    """One waveform -> its openSMILE functionals: ``(88,)`` for eGeMAPSv02, ``(62,)`` for GeMAPSv01b, float32.

    ``sample_rate`` is the rate of the waveforms passed to ``__call__`` and the rate :meth:`extract_files` decodes
    files to (resampling them as needed).
    """

    def __init__(self, feature_set: str = DEFAULT_FEATURE_SET, sample_rate: int = DEFAULT_SAMPLE_RATE):
        if feature_set not in FEATURE_SET_DIMS:
            raise ValueError(f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SET_DIMS)}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        opensmile = _import_opensmile()
        self.feature_set = feature_set
        self.sample_rate = int(sample_rate)
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.feature_names: list[str] = list(self._smile.feature_names)
        if len(self.feature_names) != FEATURE_SET_DIMS[feature_set]:
            raise RuntimeError(
                f"openSMILE {feature_set} returned {len(self.feature_names)} features, "
                f"expected {FEATURE_SET_DIMS[feature_set]}"
            )

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this extractor."""
        return {"feature_set": self.feature_set, "sample_rate": self.sample_rate}

    def __call__(self, waveform: torch.Tensor | np.ndarray, name: str = "waveform") -> np.ndarray:
        """``waveform (T,)`` float in [-1, 1] at ``self.sample_rate`` -> functionals ``(dim,)`` float32.

        ``name`` labels error messages (e.g. the file the waveform came from).
        """
        if isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().cpu().numpy()
        signal = np.asarray(waveform)
        if signal.ndim != 1 or signal.size == 0:
            raise ValueError(f"{name}: expected a non-empty mono waveform of shape (T,), got shape {signal.shape}")
        if not np.issubdtype(signal.dtype, np.floating):
            raise TypeError(f"{name}: expected a floating-point waveform in [-1, 1], got dtype {signal.dtype}")
        if not np.isfinite(signal).all():
            raise ValueError(f"{name}: waveform contains NaN/Inf samples")
        with warnings.catch_warnings():  # openSMILE warns "Segment too short" and returns NaN; we raise instead
            warnings.simplefilter("ignore", UserWarning)
            frame = self._smile.process_signal(np.ascontiguousarray(signal, dtype=np.float32), self.sample_rate)
        values = frame.to_numpy(dtype=np.float32)
        if values.shape != (1, self.dim):
            raise RuntimeError(f"{name}: openSMILE returned shape {values.shape}, expected (1, {self.dim})")
        missing = int(np.isnan(values).sum())
        if missing:
            seconds = signal.size / self.sample_rate
            raise ValueError(
                f"{name}: openSMILE {self.feature_set} gave NaN for {missing} of {self.dim} features from "
                f"{seconds:.3f} s of audio (too short for its analysis windows)"
            )
        return values[0]

    def extract_files(self, paths: Iterable[str | os.PathLike]) -> np.ndarray:
        """Decode each file (``sermodels.audio.load_audio`` at ``self.sample_rate``) -> ``(N, dim)`` float32."""
        rows = []
        for path in paths:
            rows.append(self(load_audio(path, self.sample_rate), name=str(path)))
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def extract_files(
    paths: Iterable[str | os.PathLike],
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    feature_set: str = DEFAULT_FEATURE_SET,
) -> np.ndarray:
    """Functionals of each audio file, ``(N, 88)`` for eGeMAPSv02 (``(N, 62)`` for GeMAPSv01b), float32."""
    return OpenSmileFunctionals(feature_set, sample_rate).extract_files(paths)
