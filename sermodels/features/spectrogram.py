"""Native-torch spectral front-ends: STFT magnitude, mel filterbank, decibels and deltas.

These reproduce torchaudio's ``Spectrogram``, ``MelSpectrogram``, ``melscale_fbanks``, ``AmplitudeToDB`` and
``compute_deltas`` (same argument names, order and defaults) without depending on torchaudio, so that a model's
front-end is a plain module inside the model and runs on any device. ``tests/features/test_spectrogram.py`` checks
them against torchaudio 2.11 outputs stored in ``../shared/reference/torchaudio_frontend.npz``.

Two additions for the model zoo:

* ``window="hann" | "hamming" | "blackman" | "rect"`` may be given instead of ``window_fn``, and every module has a
  ``config()`` returning JSON-able keyword arguments (the window as a string), because released models store their
  front-end configuration in ``config.json``.
* :func:`num_frames` gives the number of valid frames for each sample length, to mask padded batches.

One deliberate departure: ``AmplitudeToDB(top_db=...)`` clips each spectrogram (the last two dimensions) against its
own maximum. torchaudio treats a 3-D input as ``(channel, freq, time)`` and clips against the maximum over all
channels, which for a ``(batch, freq, time)`` input would make an utterance's features depend on the other
utterances in its batch. For a 2-D spectrogram both agree. And a stricter check: ``melscale_fbanks`` (so
``MelSpectrogram``) rejects ``f_max`` above the Nyquist frequency, which torchaudio accepts and turns into filters
that cover no bin.

Windows and filterbanks are non-persistent buffers: ``state_dict()`` stays free of derived constants and
``.to(device)`` moves them with the module.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels._tracing import checking

WindowFn = Callable[..., Tensor]

DB_AMIN = 1e-10  # torchaudio AmplitudeToDB: smallest amplitude/power before the log (-100 dB for power)
DB_REF = 1.0  # torchaudio AmplitudeToDB: reference value, 0 dB
SLANEY_LINEAR_STEP_HZ = 200.0 / 3.0  # Slaney mel scale: linear below 1 kHz with this many Hz per mel
SLANEY_BREAK_HZ = 1000.0  # Slaney mel scale: logarithmic above this frequency
SLANEY_LOG_STEP = math.log(6.4) / 27.0  # Slaney mel scale: log-spaced step above the break


def rect_window(window_length: int, *, dtype: torch.dtype | None = None, device: Any = None) -> Tensor:
    """A rectangular (all-ones) window, with the signature of ``torch.hann_window``."""
    return torch.ones(window_length, dtype=dtype, device=device)


WINDOWS: dict[str, WindowFn] = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "rect": rect_window,
}


def resolve_window(window: str | None, window_fn: WindowFn) -> tuple[str | None, WindowFn]:
    """The window's name (``None`` for a custom callable) and its function, from either way of giving it."""
    if window is not None:
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {sorted(WINDOWS)}")
        if window_fn is not torch.hann_window and window_fn is not WINDOWS[window]:
            raise ValueError(f"give either window={window!r} or window_fn={window_fn!r}, not both")
        return window, WINDOWS[window]
    for name, fn in WINDOWS.items():
        if window_fn is fn:
            return name, fn
    return None, window_fn


def _window_name_for_config(name: str | None, window_fn: WindowFn) -> str:
    if name is None:
        raise ValueError(
            f"window_fn={window_fn!r} is a custom callable and cannot be written to JSON; "
            f"use window= one of {sorted(WINDOWS)} for a serialisable front-end"
        )
    return name


def _check_waveform(waveform: Tensor, name: str = "waveform") -> None:
    if not isinstance(waveform, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(waveform).__name__}")
    if not waveform.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (e.g. float32 in [-1, 1]), got {waveform.dtype}")
    if waveform.dim() < 1 or waveform.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., time) with time > 0, got {tuple(waveform.shape)}")


def spectrogram(
    waveform: Tensor,
    pad: int,
    window: Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    power: float | None,
    normalized: bool | str,
    center: bool = True,
    pad_mode: str = "reflect",
    onesided: bool = True,
) -> Tensor:
    """STFT of ``waveform (..., time)`` -> ``(..., n_fft // 2 + 1, frames)``: magnitude ** power, complex if None.

    ``normalized=True`` or ``"window"`` divides by the window's L2 norm; ``"frame_length"`` asks ``torch.stft`` to
    normalise by ``sqrt(n_fft)`` (torchaudio's two conventions).
    """
    _check_waveform(waveform)
    if normalized not in (True, False, "window", "frame_length"):
        raise ValueError(f"normalized must be a bool, 'window' or 'frame_length', got {normalized!r}")
    if pad > 0:
        waveform = F.pad(waveform, (pad, pad), mode="constant")
    batch_shape = waveform.shape[:-1]
    flat = waveform.reshape(-1, waveform.shape[-1])
    window = window.to(device=flat.device, dtype=flat.dtype)
    if center and pad_mode == "reflect" and flat.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"waveform of {flat.shape[-1]} samples is too short for reflect padding of n_fft // 2 = {n_fft // 2}; "
            "it needs more samples than that"
        )
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode,
        normalized=normalized == "frame_length",
        onesided=onesided,
        return_complex=True,
    )
    spec = spec.reshape(batch_shape + spec.shape[-2:])
    if normalized is True or normalized == "window":
        spec = spec / window.pow(2.0).sum().sqrt()
    if power is None:
        return spec
    magnitude = spec.abs()
    return magnitude if power == 1.0 else magnitude.pow(power)


def reflect_tails(waveforms: Tensor, lengths: Tensor, extra: int) -> Tensor:
    """``(B, T + extra)``: each row of a padded batch continued past its own length by reflection, as a centred,
    reflect-padded STFT pads a clip that is alone. Computing the STFT of the result and keeping each row's valid
    frames gives every clip the spectrogram it has alone; with the batch's zero padding instead, its last frames
    would differ. Rows need more than ``extra`` samples."""
    width = waveforms.shape[-1]
    positions = torch.arange(width + extra, device=waveforms.device)[None, :]
    ends = lengths.to(device=waveforms.device, dtype=torch.long)[:, None]
    source = torch.where(positions < ends, positions, 2 * (ends - 1) - positions).clamp(0, width - 1)
    return waveforms.gather(1, source)


def num_frames(lengths: Tensor, hop_length: int, center: bool = True, n_fft: int | None = None, pad: int = 0) -> Tensor:
    """Number of STFT frames that a waveform of each length in ``lengths (B,)`` yields on its own, ``(B,)`` long.

    A signal of ``L`` samples, zero-padded by ``pad`` on each side (``Spectrogram(pad=...)``), is ``N = L + 2 pad``
    samples long. Without centring it gives ``1 + (N - n_fft) // hop_length`` frames (0 when ``N < n_fft``); with
    ``center=True``, ``torch.stft`` first pads ``n_fft // 2`` on each side, so it gives
    ``1 + (N + 2 (n_fft // 2) - n_fft) // hop_length``: ``1 + N // hop_length`` for an even ``n_fft`` but
    ``1 + (N - 1) // hop_length`` for an odd one. Frames ``>=`` this count in a padded batch are padding and must be
    masked. ``n_fft`` is therefore always needed.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if checking() and (lengths < 0).any():
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    if hop_length <= 0:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    if n_fft is None:
        raise ValueError(f"num_frames(center={center}) needs n_fft: the frame count depends on it")
    if n_fft <= 0:
        raise ValueError(f"n_fft must be positive, got {n_fft}")
    total = lengths.long() + 2 * pad
    if center:
        total = total + 2 * (n_fft // 2)
    frames = 1 + torch.div(total - n_fft, hop_length, rounding_mode="floor")
    return frames.clamp(min=0)


def frame_count(length: int, hop_length: int, center: bool, n_fft: int, pad: int = 0) -> int:
    """:func:`num_frames` of one length given as a Python (or symbolic) integer, e.g. a batch's width
    ``waveforms.shape[-1]``: the same count without a tensor, so that a traced graph keeps it symbolic."""
    total = length + 2 * pad + (2 * (n_fft // 2) if center else 0)
    return torch.sym_max(1 + (total - n_fft) // hop_length, 0)


class Spectrogram(nn.Module):
    """Power (or magnitude) spectrogram ``(..., time) -> (..., n_fft // 2 + 1, frames)``, as torchaudio's.

    ``win_length`` defaults to ``n_fft`` and ``hop_length`` to ``win_length // 2``. The output has the input's
    floating dtype (float64 in, float64 out).
    """

    def __init__(
        self,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        pad: int = 0,
        window_fn: WindowFn = torch.hann_window,
        power: float | None = 2.0,
        normalized: bool | str = False,
        wkwargs: dict | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool = True,
        *,
        window: str | None = None,
    ):
        super().__init__()
        self.n_fft = int(n_fft)
        self.win_length = int(win_length) if win_length is not None else self.n_fft
        self.hop_length = int(hop_length) if hop_length is not None else self.win_length // 2
        if self.win_length > self.n_fft or self.win_length <= 0:
            raise ValueError(f"win_length must be in [1, n_fft={self.n_fft}], got {self.win_length}")
        if self.hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {self.hop_length}")
        self.pad = int(pad)
        self.power = power
        self.normalized = normalized
        self.wkwargs = dict(wkwargs) if wkwargs else None
        self.center = bool(center)
        self.pad_mode = pad_mode
        self.onesided = bool(onesided)
        self.window_name, self.window_fn = resolve_window(window, window_fn)
        self.register_buffer("window", self.window_fn(self.win_length, **(self.wkwargs or {})), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        """``waveform (..., time)`` -> ``(..., n_fft // 2 + 1, frames)``."""
        return spectrogram(
            waveform,
            self.pad,
            self.window,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.power,
            self.normalized,
            self.center,
            self.pad_mode,
            self.onesided,
        )

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Valid frames per sample length ``(B,)`` for this configuration (see :func:`num_frames`)."""
        return num_frames(lengths, self.hop_length, self.center, self.n_fft, self.pad)

    def frame_count(self, length: int) -> int:
        """Frames of a waveform ``length`` samples long (see :func:`frame_count`)."""
        return frame_count(length, self.hop_length, self.center, self.n_fft, self.pad)

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this module: ``Spectrogram(**spec.config())``."""
        return {
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "pad": self.pad,
            "window": _window_name_for_config(self.window_name, self.window_fn),
            "power": self.power,
            "normalized": self.normalized,
            "wkwargs": self.wkwargs,
            "center": self.center,
            "pad_mode": self.pad_mode,
            "onesided": self.onesided,
        }


def _hz_to_mel(freq: float, mel_scale: str) -> float:
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    if freq < SLANEY_BREAK_HZ:
        return freq / SLANEY_LINEAR_STEP_HZ
    return SLANEY_BREAK_HZ / SLANEY_LINEAR_STEP_HZ + math.log(freq / SLANEY_BREAK_HZ) / SLANEY_LOG_STEP


def _mel_to_hz(mels: Tensor, mel_scale: str) -> Tensor:
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    break_mel = SLANEY_BREAK_HZ / SLANEY_LINEAR_STEP_HZ
    linear = mels * SLANEY_LINEAR_STEP_HZ
    logarithmic = SLANEY_BREAK_HZ * torch.exp(SLANEY_LOG_STEP * (mels - break_mel))
    return torch.where(mels >= break_mel, logarithmic, linear)


def melscale_fbanks(
    n_freqs: int,
    f_min: float,
    f_max: float,
    n_mels: int,
    sample_rate: int,
    norm: str | None = None,
    mel_scale: str = "htk",
) -> Tensor:
    """Triangular mel filterbank ``(n_freqs, n_mels)``; ``spec (..., n_freqs, t)`` maps to mels by ``fb.T @ spec``.

    Filter centres are equally spaced on the mel scale (``"htk"`` or ``"slaney"``) between ``f_min`` and ``f_max``;
    ``norm="slaney"`` divides each triangle by its width in Hz (constant energy per band). Bins lie at
    ``linspace(0, sample_rate // 2, n_freqs)`` as in torchaudio.

    ``f_max`` above the Nyquist frequency ``sample_rate / 2`` is an error (torchaudio accepts it silently, and the
    upper filters then cover no bin). A filter too narrow to contain any bin is all zero, so its band is always
    silent; as in torchaudio, that gives a ``UserWarning`` (with how many filters) instead of an error.
    """
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    if mel_scale not in ("htk", "slaney"):
        raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
    if not 0.0 <= f_min <= f_max:
        raise ValueError(f"need 0 <= f_min <= f_max, got f_min={f_min}, f_max={f_max}")
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"need n_freqs >= 2 and n_mels >= 1, got n_freqs={n_freqs}, n_mels={n_mels}")
    if f_max > sample_rate / 2:
        raise ValueError(
            f"f_max={f_max} Hz is above the Nyquist frequency sample_rate / 2 = {sample_rate / 2} Hz "
            f"(sample_rate={sample_rate}); the spectrogram has no bins there"
        )
    bin_hz = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(_hz_to_mel(f_min, mel_scale), _hz_to_mel(f_max, mel_scale), n_mels + 2)
    edges_hz = _mel_to_hz(mel_points, mel_scale)  # (n_mels + 2,): lower edge, centre, upper edge of each band
    widths = edges_hz[1:] - edges_hz[:-1]  # (n_mels + 1,)
    offsets = edges_hz.unsqueeze(0) - bin_hz.unsqueeze(1)  # (n_freqs, n_mels + 2): edge minus bin frequency
    rising = -offsets[:, :-2] / widths[:-1]  # 0 at the lower edge, 1 at the centre
    falling = offsets[:, 2:] / widths[1:]  # 1 at the centre, 0 at the upper edge
    fbank = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        fbank = fbank * (2.0 / (edges_hz[2:] - edges_hz[:-2])).unsqueeze(0)
    empty = int((fbank.amax(dim=0) == 0.0).sum())
    if empty:
        warnings.warn(
            f"{empty} of {n_mels} mel filters are all zero (narrower than the spacing of the {n_freqs} frequency "
            f"bins between {f_min} and {f_max} Hz): use fewer mels (n_mels < {n_mels}) or a larger n_fft",
            UserWarning,
            stacklevel=2,
        )
    return fbank


class MelSpectrogram(nn.Module):
    """Mel power spectrogram ``(..., time) -> (..., n_mels, frames)``, as torchaudio's ``MelSpectrogram``.

    ``f_max`` defaults to ``sample_rate // 2``. ``onesided`` is accepted for signature compatibility (torchaudio
    deprecated it); a mel spectrogram is always computed from the one-sided STFT.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        pad: int = 0,
        n_mels: int = 128,
        window_fn: WindowFn = torch.hann_window,
        power: float = 2.0,
        normalized: bool | str = False,
        wkwargs: dict | None = None,
        center: bool = True,
        pad_mode: str = "reflect",
        onesided: bool | None = None,
        norm: str | None = None,
        mel_scale: str = "htk",
        *,
        window: str | None = None,
    ):
        super().__init__()
        if onesided is False:
            raise ValueError("MelSpectrogram needs the one-sided STFT; onesided=False is not supported")
        if power is None:
            raise ValueError("MelSpectrogram needs a real power (e.g. 2.0 for power, 1.0 for magnitude), got None")
        self.sample_rate = int(sample_rate)
        self.f_min = float(f_min)
        self.f_max = float(f_max) if f_max is not None else float(self.sample_rate // 2)
        self.n_mels = int(n_mels)
        self.norm = norm
        self.mel_scale = mel_scale
        self.spectrogram = Spectrogram(
            n_fft, win_length, hop_length, pad, window_fn, power, normalized, wkwargs, center, pad_mode, True,
            window=window,
        )  # fmt: skip
        fbank = melscale_fbanks(
            self.n_fft // 2 + 1, self.f_min, self.f_max, self.n_mels, self.sample_rate, norm, mel_scale
        )
        self.register_buffer("fbank", fbank, persistent=False)

    @property
    def n_fft(self) -> int:
        return self.spectrogram.n_fft

    @property
    def win_length(self) -> int:
        return self.spectrogram.win_length

    @property
    def hop_length(self) -> int:
        return self.spectrogram.hop_length

    def forward(self, waveform: Tensor) -> Tensor:
        """``waveform (..., time)`` -> ``(..., n_mels, frames)``."""
        spec = self.spectrogram(waveform)  # (..., n_freqs, frames)
        fbank = self.fbank.to(dtype=spec.dtype)
        return torch.matmul(spec.transpose(-1, -2), fbank).transpose(-1, -2)

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Valid frames per sample length ``(B,)`` for this configuration (see :func:`num_frames`)."""
        return self.spectrogram.num_frames(lengths)

    def frame_count(self, length: int) -> int:
        """Frames of a waveform ``length`` samples long (see :func:`frame_count`)."""
        return self.spectrogram.frame_count(length)

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this module: ``MelSpectrogram(**mel.config())``."""
        spec = self.spectrogram.config()
        return {
            "sample_rate": self.sample_rate,
            "n_fft": spec["n_fft"],
            "win_length": spec["win_length"],
            "hop_length": spec["hop_length"],
            "f_min": self.f_min,
            "f_max": self.f_max,
            "pad": spec["pad"],
            "n_mels": self.n_mels,
            "window": spec["window"],
            "power": spec["power"],
            "normalized": spec["normalized"],
            "wkwargs": spec["wkwargs"],
            "center": spec["center"],
            "pad_mode": spec["pad_mode"],
            "norm": self.norm,
            "mel_scale": self.mel_scale,
        }


def amplitude_to_db(
    x: Tensor, multiplier: float, amin: float, db_multiplier: float, top_db: float | None = None
) -> Tensor:
    """``multiplier * log10(max(x, amin)) - multiplier * db_multiplier``, optionally floored at ``max - top_db``.

    ``x`` is ``(..., freq, time)``; the ``top_db`` floor is taken per spectrogram (over the last two dimensions),
    so a batched call equals per-item calls (see the module docstring for how this differs from torchaudio).
    """
    x_db = multiplier * torch.log10(torch.clamp(x, min=amin))
    x_db = x_db - multiplier * db_multiplier
    if top_db is not None:
        if x_db.dim() < 2:
            raise ValueError(f"top_db needs a spectrogram (..., freq, time), got shape {tuple(x_db.shape)}")
        peak = x_db.amax(dim=(-2, -1), keepdim=True)
        x_db = torch.maximum(x_db, peak - top_db)
    return x_db


class AmplitudeToDB(nn.Module):
    """Power (``stype="power"``, 10 log10) or magnitude (``"magnitude"``, 20 log10) to decibels, re 1.0.

    ``top_db`` (if given) floors each spectrogram at its maximum minus ``top_db`` dB.
    """

    def __init__(self, stype: str = "power", top_db: float | None = None):
        super().__init__()
        if stype not in ("power", "magnitude"):
            raise ValueError(f"stype must be 'power' or 'magnitude', got {stype!r}")
        if top_db is not None and top_db < 0:
            raise ValueError(f"top_db must be >= 0, got {top_db}")
        self.stype = stype
        self.top_db = top_db
        self.multiplier = 10.0 if stype == "power" else 20.0
        self.amin = DB_AMIN
        self.ref_value = DB_REF
        self.db_multiplier = math.log10(max(self.amin, self.ref_value))

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., freq, time)`` -> same shape in dB."""
        return amplitude_to_db(x, self.multiplier, self.amin, self.db_multiplier, self.top_db)

    def config(self) -> dict[str, Any]:
        """JSON-able keyword arguments that rebuild this module."""
        return {"stype": self.stype, "top_db": self.top_db}


def compute_deltas(specgram: Tensor, win_length: int = 5, mode: str = "replicate") -> Tensor:
    """Regression deltas along time of ``specgram (..., freq, time)``, same shape.

    ``d[t] = sum_{k=1..N} k (c[t+k] - c[t-k]) / (2 sum_{k=1..N} k^2)`` with ``N = (win_length - 1) // 2``; the
    edges are extended by ``mode`` padding (``"replicate"`` repeats the first/last frame).
    """
    if win_length < 3:
        raise ValueError(f"win_length must be >= 3, got {win_length}")
    if specgram.dim() < 1 or specgram.shape[-1] == 0:
        raise ValueError(f"specgram must have shape (..., time) with time > 0, got {tuple(specgram.shape)}")
    half = (win_length - 1) // 2
    denominator = half * (half + 1) * (2 * half + 1) / 3  # = 2 * sum_{k=1..N} k^2
    shape = specgram.shape
    rows = specgram.reshape(1, -1, shape[-1])
    padded = F.pad(rows, (half, half), mode=mode)
    steps = shape[-1]
    # The sum over k of shifted differences, not a grouped convolution: any dtype (float64 too) on any backend, and
    # no group count that depends on the batch (ONNX takes it as a fixed attribute).
    deltas = sum(k * (padded[..., half + k : half + k + steps] - padded[..., half - k : half - k + steps])
                 for k in range(1, half + 1)) / denominator  # fmt: skip
    return deltas.reshape(shape)
