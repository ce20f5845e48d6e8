"""Utterance-level log-mel functionals: the 600-dimensional representation of the NICU SER paper.

Paper: the NICU paper (Vaaras et al., Interspeech 2021: SER for daylong child-centred NICU recordings; our copy,
../shared/papers/nicu_ser_cross_corpus_wda_active_learning.txt, has no title page),
§4.1 Features: 40 mel filters, Hann window of 30 ms, 10 ms shift;
seven functionals (the first four moments, min, max, range) of each log-mel band, and the first four moments of the
first- and second-order delta of each band: 7 x 40 + 4 x 40 x 2 = 600 dimensions.

Choices the paper leaves open, made here and kept as named constants:

* FFT size 512 (the next power of two above the 480-sample window at 16 kHz), mel bands on the HTK scale from 0 Hz
  to the Nyquist frequency without area normalisation, power (|X|^2) spectrum, centred frames with reflect padding
  (torchaudio's defaults).
* ``log(mel + LOG_EPS)`` with the natural log; see :data:`LOG_EPS`.
* Deltas over a 5-frame regression window with the edge frames repeated (torchaudio's ``compute_deltas`` default).
* "The first four moments" are the mean, the population standard deviation, the skewness ``m3 / m2^1.5`` and the
  **excess** kurtosis ``m4 / m2^2 - 3`` (Fisher's definition, ``scipy.stats.kurtosis`` with ``bias=True``), all with
  population (biased) central moments ``m_k = mean((x - mean)^k)``. Excess kurtosis makes a Gaussian series 0.
* A constant series (standard deviation below :data:`CONSTANT_STD_TOL`, e.g. a single frame, or a band stuck at the
  log floor) has skewness 0 and kurtosis 0 instead of 0/0.

Padded batches: with ``lengths`` given, every statistic uses only the frames that the utterance would yield on its
own. Each utterance is reflect-padded at its own end (not at the end of the batch), its deltas repeat its own last
frame, and padded frames are masked out of every moment, min and max, so a padded batch gives the per-utterance
values (up to float rounding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sermodels._tracing import checking

from .spectrogram import MelSpectrogram, compute_deltas, num_frames

# Defaults from the NICU paper, §4.1 (16 kHz audio).
NICU_SAMPLE_RATE = 16_000
NICU_N_MELS = 40  # §4.1: "40 mel filters"
NICU_WIN_LENGTH = 480  # §4.1: "Hann window using a 30-ms window size" at 16 kHz
NICU_HOP_LENGTH = 160  # §4.1: "10-ms shifts" at 16 kHz
NICU_WINDOW = "hann"  # §4.1
# Not stated in the paper:
NICU_N_FFT = 512  # next power of two above the 480-sample window
NICU_F_MIN = 0.0
NICU_DELTA_WIN_LENGTH = 5  # torchaudio's compute_deltas default (2 frames each side)
# Added to the mel power before the natural log. Digital silence (exact zeros, e.g. in gaps between concatenated
# clips or in zero-padded recordings) has mel power 0, whose log is -inf; the floor bounds it at log(1e-6) = -13.8.
# 1e-6 is the value of the shared torchaudio reference (``deltas_w5``) and of EmoNet's official log-mel layer, and it
# lies about 60 dB below the mel power of speech at normal level in [-1, 1] audio, so it only touches near-silence.
LOG_EPS = 1e-6
# A series whose standard deviation is below this (in natural-log units, i.e. a 1e-8 relative change of the mel
# power) is treated as constant: its skewness and kurtosis are defined as 0 rather than computed as 0/0 noise.
CONSTANT_STD_TOL = 1e-8

# Device types whose kernels support float64: moments are accumulated in float64 there. Elsewhere (Apple MPS has no
# float64) they are accumulated in float32 after subtracting each band's mean; on CPU the two agree to ~2e-6 (see
# tests/features/test_functionals.py). Tests empty this to run the float32 path on the CPU.
FLOAT64_DEVICE_TYPES = frozenset({"cpu", "cuda"})
# In float32 (about 7 significant digits) a log-mel series of levels around 10 carries rounding noise of ~1e-6, so a
# smaller standard deviation is treated as constant there (skewness and kurtosis 0) rather than as 0/0 noise.
CONSTANT_STD_TOL_FLOAT32 = 1e-5

LOGMEL_FUNCTIONALS = ("mean", "std", "skew", "kurt", "min", "max", "range")
DELTA_FUNCTIONALS = ("mean", "std", "skew", "kurt")
FEATURE_GROUPS = ("logmel", "d1", "d2")


class LogMelFunctionals(nn.Module):
    """Waveforms ``(B, T)`` (or ``(T,)``) at ``sample_rate`` -> 600 log-mel functionals ``(B, 600)`` (or ``(600,)``).

    The output is laid out group by group (``logmel``, ``d1``, ``d2``), then functional by functional, then band by
    band; :meth:`feature_names` names every column. Moments are accumulated in float64 on devices that have it
    (:data:`FLOAT64_DEVICE_TYPES`) and returned in float32; elsewhere (Apple MPS) see :func:`moment_dtype`.
    """

    def __init__(
        self,
        sample_rate: int = NICU_SAMPLE_RATE,
        n_mels: int = NICU_N_MELS,
        win_length: int = NICU_WIN_LENGTH,
        hop_length: int = NICU_HOP_LENGTH,
        n_fft: int = NICU_N_FFT,
        window: str = NICU_WINDOW,
        f_min: float = NICU_F_MIN,
        f_max: float | None = None,
        delta_win_length: int = NICU_DELTA_WIN_LENGTH,
        log_eps: float = LOG_EPS,
    ):
        super().__init__()
        if log_eps <= 0:
            raise ValueError(f"log_eps must be positive, got {log_eps}")
        self.delta_win_length = int(delta_win_length)
        self.log_eps = float(log_eps)
        # Frames are taken without torch.stft's centring: forward() reflect-pads each utterance at its own length.
        self.mel = MelSpectrogram(
            sample_rate, n_fft, win_length, hop_length, f_min, f_max, n_mels=n_mels, window=window, center=False
        )
        self.edge = n_fft // 2

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    @property
    def dim(self) -> int:
        """Output size: ``(7 + 4 + 4) * n_mels`` (600 for the paper's 40 bands)."""
        return (len(LOGMEL_FUNCTIONALS) + 2 * len(DELTA_FUNCTIONALS)) * self.n_mels

    def feature_names(self) -> list[str]:
        """Column names of the output, e.g. ``"logmel_b00_mean"``, ``"d1_b00_std"``, ``"d2_b39_kurt"``."""
        names = []
        for group in FEATURE_GROUPS:
            functionals = LOGMEL_FUNCTIONALS if group == "logmel" else DELTA_FUNCTIONALS
            for functional in functionals:
                names.extend(f"{group}_b{band:02d}_{functional}" for band in range(self.n_mels))
        return names

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this module: ``LogMelFunctionals(**f.config())``."""
        mel = self.mel.config()
        return {
            "sample_rate": mel["sample_rate"],
            "n_mels": mel["n_mels"],
            "win_length": mel["win_length"],
            "hop_length": mel["hop_length"],
            "n_fft": mel["n_fft"],
            "window": mel["window"],
            "f_min": mel["f_min"],
            "f_max": mel["f_max"],
            "delta_win_length": self.delta_win_length,
            "log_eps": self.log_eps,
        }

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames each utterance yields on its own (centred framing: ``n_fft // 2`` reflected samples each side)."""
        return num_frames(lengths, self.mel.hop_length, center=True, n_fft=self.mel.n_fft)

    def log_mel(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, T)`` -> log-mel ``(B, n_mels, frames)`` and the valid-frame mask ``(B, frames)``.

        Frames beyond an utterance's own frame count hold garbage and are ``False`` in the mask.
        """
        waveforms, lengths = self._check_inputs(waveforms, lengths)
        padded = _reflect_pad_each(waveforms, lengths, self.edge)
        mel = self.mel(padded)
        frames = self.num_frames(lengths)
        mask = torch.arange(mel.shape[-1], device=mel.device).unsqueeze(0) < frames.unsqueeze(1)
        return torch.log(mel + self.log_eps), mask

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``waveforms (B, T)`` float, ``lengths (B,)`` valid samples (all ``T`` if None) -> ``(B, 600)`` float32."""
        single = waveforms.dim() == 1
        if single:
            waveforms = waveforms.unsqueeze(0)
        logmel, mask = self.log_mel(waveforms, lengths)
        if moment_dtype(logmel.device) == torch.float64:
            offset = torch.zeros(logmel.shape[:-1], dtype=torch.float64, device=logmel.device)
            series = logmel.double()
        else:  # no float64 here: centre each band first, so float32 sums hold deviations, not the -14..+5 levels
            offset = _masked_moments(logmel, mask)[0]  # (B, n_mels)
            series = logmel - offset.unsqueeze(-1)
        # Deltas are differences, so the subtracted band means do not change them.
        delta1 = compute_deltas(_repeat_last_valid(series, mask), self.delta_win_length)
        delta2 = compute_deltas(_repeat_last_valid(delta1, mask), self.delta_win_length)
        mean, std, skew, kurt = _masked_moments(series, mask)
        low, high = _masked_min_max(series, mask)
        parts = [mean + offset, std, skew, kurt, low + offset, high + offset, high - low]
        parts += [*_masked_moments(delta1, mask), *_masked_moments(delta2, mask)]
        features = torch.cat(parts, dim=-1).float()
        return features[0] if single else features

    def _check_inputs(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        if not isinstance(waveforms, Tensor) or waveforms.dim() != 2:
            shape = tuple(waveforms.shape) if isinstance(waveforms, Tensor) else type(waveforms).__name__
            raise ValueError(f"waveforms must be a (batch, time) tensor, got {shape}")
        if not waveforms.is_floating_point():
            raise TypeError(f"waveforms must be floating point, got {waveforms.dtype}")
        batch, total = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long, device=waveforms.device)
        lengths = torch.as_tensor(lengths, device=waveforms.device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(f"lengths must be an integer tensor of shape ({batch},), got {lengths.dtype} "
                             f"{tuple(lengths.shape)}")  # fmt: skip
        lengths = lengths.long()
        too_short = (lengths <= self.edge) | (lengths > total)
        if checking() and too_short.any():
            bad = too_short.nonzero().flatten().tolist()
            raise ValueError(
                f"lengths of items {bad} are {lengths[bad].tolist()}: each must be in [{self.edge + 1}, {total}] "
                f"samples (more than n_fft // 2 for reflect padding, at most the padded length)"
            )
        return waveforms, lengths


def moment_dtype(device: torch.device | str) -> torch.dtype:
    """float64 where ``device``'s type is in :data:`FLOAT64_DEVICE_TYPES`, float32 otherwise (e.g. ``"mps"``).

    On the float32 path :meth:`LogMelFunctionals.forward` subtracts each band's mean before the moments, so that
    the sums of powers are of deviations (small numbers) and the float32 rounding stays small.
    """
    return torch.float64 if torch.device(device).type in FLOAT64_DEVICE_TYPES else torch.float32


def _reflect_pad_each(waveforms: Tensor, lengths: Tensor, edge: int) -> Tensor:
    """Reflect-pad each row by ``edge`` on both sides at its own length: ``(B, T)`` -> ``(B, T + 2 edge)``.

    Row ``b`` becomes ``reflect_pad(waveforms[b, :lengths[b]], edge)`` followed by junk (the caller masks it), so
    centred frames of a padded batch see exactly what they see for the utterance alone.
    """
    total = waveforms.shape[-1]
    position = torch.arange(-edge, total + edge, device=waveforms.device).unsqueeze(0)  # (1, T + 2 edge)
    last = (lengths - 1).unsqueeze(1)  # (B, 1)
    source = position.abs()  # reflect at the start: -k -> k
    source = torch.where(source > last, 2 * last - source, source)  # reflect at the end: L-1+k -> L-1-k
    source = source.clamp(0, total - 1)  # beyond the reflected edge: junk, masked later
    return torch.gather(waveforms, 1, source)


def _repeat_last_valid(series: Tensor, mask: Tensor) -> Tensor:
    """Replace each row's invalid frames ``(B, C, F)`` by its last valid frame (replicate padding at its own end)."""
    last = mask.sum(dim=1) - 1  # (B,)
    frame = torch.arange(series.shape[-1], device=series.device).unsqueeze(0)  # (1, F)
    index = torch.minimum(frame, last.unsqueeze(1))  # (B, F)
    return torch.gather(series, 2, index.unsqueeze(1).expand_as(series))


def _masked_moments(series: Tensor, mask: Tensor) -> list[Tensor]:
    """Mean, std, skewness, excess kurtosis over the valid frames of ``series (B, C, F)``; four ``(B, C)``."""
    valid = mask.unsqueeze(1)  # (B, 1, F)
    count = valid.sum(dim=-1).to(series.dtype)  # (B, 1)
    mean = torch.where(valid, series, 0.0).sum(dim=-1) / count
    centred = torch.where(valid, series - mean.unsqueeze(-1), 0.0)
    m2 = centred.pow(2).sum(dim=-1) / count
    m3 = centred.pow(3).sum(dim=-1) / count
    m4 = centred.pow(4).sum(dim=-1) / count
    std = m2.sqrt()
    constant = std < (CONSTANT_STD_TOL if series.dtype == torch.float64 else CONSTANT_STD_TOL_FLOAT32)
    safe_m2 = torch.where(constant, torch.ones_like(m2), m2)
    skew = torch.where(constant, torch.zeros_like(m3), m3 / safe_m2.pow(1.5))
    kurt = torch.where(constant, torch.zeros_like(m4), m4 / safe_m2.pow(2) - 3.0)
    return [mean, std, skew, kurt]


def _masked_min_max(series: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum and maximum over the valid frames of ``series (B, C, F)``; two ``(B, C)``."""
    valid = mask.unsqueeze(1)
    low = series.masked_fill(~valid, float("inf")).amin(dim=-1)
    high = series.masked_fill(~valid, float("-inf")).amax(dim=-1)
    return low, high
