"""Mel-frequency cepstral coefficients: the DCT-II of a log mel spectrogram, as torchaudio's ``MFCC``.

:func:`create_dct` and :class:`MFCC` keep torchaudio's argument names, order and defaults
(``torchaudio.functional.create_dct``, ``torchaudio.transforms.MFCC``) without depending on torchaudio, like the
rest of :mod:`sermodels.features`. ``tests/features/test_mfcc.py`` checks the DCT against ``scipy.fft.dct`` on the
torchaudio reference dB mel spectrograms of ``../shared/reference/torchaudio_frontend.npz`` and the whole module on
the real EMO-DB clip those were made from.

The DCT-II of ``x_0 .. x_{N-1}`` (N mel bands) is ``y_k = 2 sum_n x_n cos(pi k (2 n + 1) / (2 N))``.
``norm=None`` gives exactly this (torchaudio's factor 2, scipy's ``norm=None``); ``norm="ortho"`` scales ``y_0`` by
``sqrt(1 / (4 N))`` and the other ``y_k`` by ``sqrt(1 / (2 N))``, an orthonormal transform.

Where this differs from torchaudio:

* ``top_db``: torchaudio's ``MFCC`` (``log_mels=False``) applies ``AmplitudeToDB("power", top_db=80)`` to the whole
  ``(..., n_mels, frames)`` tensor, and torchaudio's ``amplitude_to_db`` floors a 3-D ``(batch, n_mels, frames)``
  input against the maximum over the whole batch (it reads it as channels), so an utterance's MFCCs depend on the
  other utterances of its batch. Ours uses :class:`~sermodels.features.AmplitudeToDB`, which floors each
  spectrogram (the last two dimensions) at its own maximum minus 80 dB: a batched call equals per-item calls. For a
  single 2-D spectrogram, or a batch of one, both agree. ``log_mels=True`` has no floor and no such difference.
* Only ``dct_type=2`` exists in torchaudio's implementation too; other types are a ``ValueError`` here up front.
* The DCT matrix is a non-persistent buffer (torchaudio keeps it in the state dict): a derived constant, as the
  windows and filterbanks of :mod:`sermodels.features.spectrogram`.
* ``config()`` returns JSON-able keyword arguments (the window as a string), for ``config.json`` of released models.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from sermodels.features.spectrogram import AmplitudeToDB, MelSpectrogram

MFCC_TOP_DB = 80.0  # torchaudio MFCC: AmplitudeToDB("power", top_db=80.0) when log_mels is False
LOG_MEL_OFFSET = 1e-6  # torchaudio MFCC: log(mel + 1e-6) when log_mels is True
DCT_NORMS = (None, "ortho")


def create_dct(n_mfcc: int, n_mels: int, norm: str | None) -> Tensor:
    """DCT-II matrix ``(n_mels, n_mfcc)``: ``log_mel (..., frames, n_mels) @ dct`` gives ``(..., frames, n_mfcc)``.

    Column ``k`` is ``2 cos(pi k (n + 0.5) / n_mels)`` over bands ``n`` (``norm=None``: scipy's unnormalised DCT-II),
    or that times ``sqrt(1 / (2 n_mels))`` and, for ``k = 0``, another ``1 / sqrt(2)`` (``norm="ortho"``).
    """
    if norm not in DCT_NORMS:
        raise ValueError(f'norm must be either "ortho" or None, got {norm!r}')
    if n_mfcc < 1 or n_mels < 1:
        raise ValueError(f"need n_mfcc >= 1 and n_mels >= 1, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    bands = torch.arange(float(n_mels))
    orders = torch.arange(float(n_mfcc)).unsqueeze(1)
    dct = torch.cos(math.pi / float(n_mels) * (bands + 0.5) * orders)  # (n_mfcc, n_mels)
    if norm is None:
        dct *= 2.0
    else:  # 2 sqrt(1 / (2 n_mels)) = sqrt(2 / n_mels), in torchaudio's order of operations
        dct[0] *= 1.0 / math.sqrt(2.0)
        dct *= math.sqrt(2.0 / float(n_mels))
    return dct.t()


class MFCC(nn.Module):
    """``waveform (..., time)`` -> MFCCs ``(..., n_mfcc, frames)``, as torchaudio's ``MFCC``.

    Mel power spectrogram (:class:`~sermodels.features.MelSpectrogram` built from ``melkwargs`` and ``sample_rate``)
    -> ``log(mel + 1e-6)`` if ``log_mels`` else decibels floored 80 dB under each spectrogram's peak -> DCT-II
    (:func:`create_dct`) keeping coefficients ``0 .. n_mfcc - 1``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mfcc: int = 40,
        dct_type: int = 2,
        norm: str | None = "ortho",
        log_mels: bool = False,
        melkwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        if dct_type != 2:
            raise ValueError(f"only the DCT-II is supported (dct_type=2), got dct_type={dct_type}")
        melkwargs = dict(melkwargs or {})
        if "sample_rate" in melkwargs:
            raise ValueError("give the sample rate as MFCC(sample_rate=...), not inside melkwargs")
        self.sample_rate = int(sample_rate)
        self.n_mfcc = int(n_mfcc)
        self.dct_type = dct_type
        self.norm = norm
        self.log_mels = bool(log_mels)
        self.top_db = MFCC_TOP_DB
        self.mel_spectrogram = MelSpectrogram(sample_rate=self.sample_rate, **melkwargs)
        if self.n_mfcc > self.mel_spectrogram.n_mels:
            raise ValueError(
                f"cannot select more MFCC coefficients than mel bands: n_mfcc={self.n_mfcc} > "
                f"n_mels={self.mel_spectrogram.n_mels}"
            )
        self.amplitude_to_db = AmplitudeToDB("power", top_db=self.top_db)
        self.register_buffer("dct_mat", create_dct(self.n_mfcc, self.mel_spectrogram.n_mels, norm), persistent=False)

    @property
    def hop_length(self) -> int:
        return self.mel_spectrogram.hop_length

    @property
    def frame_rate(self) -> float:
        """Frames per second: ``sample_rate / hop_length``."""
        return self.sample_rate / self.hop_length

    def log_mel(self, mel: Tensor) -> Tensor:
        """Mel power ``(..., n_mels, frames)`` -> its log (natural, ``log_mels``) or decibels, same shape."""
        if self.log_mels:
            return torch.log(mel + LOG_MEL_OFFSET)
        return self.amplitude_to_db(mel)

    def cepstra(self, log_mel: Tensor) -> Tensor:
        """Log mel ``(..., n_mels, frames)`` -> ``(..., n_mfcc, frames)``."""
        dct = self.dct_mat.to(dtype=log_mel.dtype)
        return torch.matmul(log_mel.transpose(-1, -2), dct).transpose(-1, -2)

    def forward(self, waveform: Tensor) -> Tensor:
        """``waveform (..., time)`` -> ``(..., n_mfcc, frames)``."""
        return self.cepstra(self.log_mel(self.mel_spectrogram(waveform)))

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Valid frames per sample length ``(B,)`` (see :func:`sermodels.features.num_frames`)."""
        return self.mel_spectrogram.num_frames(lengths)

    def frame_count(self, length: int) -> int:
        """Frames of a waveform ``length`` samples long (see :func:`sermodels.features.spectrogram.frame_count`)."""
        return self.mel_spectrogram.frame_count(length)

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this module: ``MFCC(**mfcc.config())``."""
        melkwargs = self.mel_spectrogram.config()
        del melkwargs["sample_rate"]
        return {
            "sample_rate": self.sample_rate,
            "n_mfcc": self.n_mfcc,
            "dct_type": self.dct_type,
            "norm": self.norm,
            "log_mels": self.log_mels,
            "melkwargs": melkwargs,
        }
