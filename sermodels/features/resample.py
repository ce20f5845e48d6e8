"""Band-limited resampling in native torch: a polyphase windowed-sinc filter that runs on any device.

Why: soxr (what :mod:`sermodels.audio` uses) runs on the host, one file at a time; at GPU prediction speeds the host
CPUs become the limit, so the batch engine can decode at a file's own rate and resample on the accelerator instead.
The signature and defaults are those of ``torchaudio.functional.resample`` (which sermodels does not depend on):
``lowpass_filter_width`` zero crossings of the sinc on each side, the cutoff at ``rolloff`` times the lower rate's
Nyquist frequency, a Hann or Kaiser window.

The math. With ``g = gcd(orig_freq, new_freq)`` the rates reduce to ``o = orig_freq / g`` input and ``n = new_freq /
g`` output samples per period, time measured in periods of ``1 / g`` s. Output sample ``m`` (at time ``m / n``) is

    y[m] = sum_k x[k] h(k / o - m / n),   h(t) = (c / o) sinc(c t) w(c t / W),

with ``c = rolloff * min(o, n)`` the cutoff (``sinc(x) = sin(pi x) / (pi x)``, so ``c/2`` is the band edge), ``W =
lowpass_filter_width`` and ``w`` the window on ``[-1, 1]`` (zero outside); the factor ``c / o`` makes the gain at
DC one. ``h`` is non-zero only for ``|k - m o / n| <= W o / c``, i.e. within ``width = ceil(W o / c)`` input samples.
Writing ``m = i + n q`` with the phase ``i`` in ``[0, n)``, output ``m`` reads ``x[q o + j]`` for ``j`` in ``[-width,
width + o)`` with tap ``h(j / o - i / n)``: every phase is one fixed filter applied at a stride of ``o`` input
samples, so all ``n`` phases are one ``conv1d`` with ``n`` output channels and stride ``o``, whose outputs are then
interleaved. The output holds ``ceil(n * samples / o)`` samples, the first at the time of the first input sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RESAMPLING_METHODS = ("sinc_interp_hann", "sinc_interp_kaiser")
# The largest gcd-reduced ``new * orig`` accepted: the filter bank holds about that many float64 taps (64 M: 512 MB;
# 44.1 kHz -> 16 kHz is 160 x 441, 16 kHz -> 12 345 Hz 2 469 x 3 200), while co-prime rates such as 44 101 -> 16 000
# (16 000 x 44 101) would need gigabytes.
MAX_PHASES_X_TAPS = 64_000_000
# torchaudio's default Kaiser beta (the value of its signature; Kaiser's formula for ~ 150 dB attenuation).
DEFAULT_KAISER_BETA = 14.769656459379492


def resample(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    resampling_method: str = "sinc_interp_hann",
    beta: float | None = None,
) -> torch.Tensor:
    """``waveform`` ``(..., samples)`` from ``orig_freq`` to ``new_freq`` Hz: ``(..., ceil(new * samples / orig))``
    with the rates reduced by their gcd, on the waveform's device and in its (floating) dtype; equal rates return
    the waveform itself. See the module docstring for the filter."""
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} and {new_freq}")
    if not waveform.is_floating_point():
        raise TypeError(f"resample needs a floating-point waveform, got {waveform.dtype}")
    if orig_freq == new_freq:
        return waveform
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    if new * orig > MAX_PHASES_X_TAPS:
        raise ValueError(
            f"resampling {orig_freq} -> {new_freq} Hz needs a {new} x {orig} polyphase filter bank (the rates share "
            f"only the factor {g}); resample such files with soxr (sermodels.audio.load_audio) instead"
        )
    kernel, width = sinc_kernel(orig, new, lowpass_filter_width, rolloff, resampling_method, beta)
    kernel = kernel.to(device=waveform.device, dtype=waveform.dtype)
    shape = waveform.shape
    samples = shape[-1]
    flat = waveform.reshape(-1, 1, samples)
    padded = F.pad(flat, (width, width + orig))
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):  # full fp32 on GPUs
        phases = F.conv1d(padded, kernel, stride=orig)  # (rows, new, frames): output i + new * q at [row, i, q]
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)
    length = -(-new * samples // orig)  # ceil
    return out[:, :length].reshape(*shape[:-1], length)


def sinc_kernel(
    orig: int,
    new: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
    resampling_method: str = "sinc_interp_hann",
    beta: float | None = None,
) -> tuple[torch.Tensor, int]:
    """The polyphase filter bank for gcd-reduced rates ``orig -> new``: ``(new, 1, 2 * width + orig)`` float64 taps
    (phase ``i``, tap ``j - width``: ``h(j / orig - i / new)``, module docstring) and ``width``."""
    if resampling_method not in RESAMPLING_METHODS:
        raise ValueError(f"unknown resampling_method {resampling_method!r}; choose one of {RESAMPLING_METHODS}")
    if lowpass_filter_width <= 0:
        raise ValueError(f"lowpass_filter_width must be positive, got {lowpass_filter_width}")
    if not 0 < rolloff <= 1:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    cutoff = rolloff * min(orig, new)
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    phases = torch.arange(new, dtype=torch.float64)[:, None] / new
    t = taps[None, :] - phases  # (new, taps), in periods of 1/g s
    x = (t * cutoff / lowpass_filter_width).clamp(-1.0, 1.0)  # the window's argument; |x| = 1 at its zeros
    if resampling_method == "sinc_interp_hann":
        window = torch.cos(x * math.pi / 2) ** 2
    else:
        b = torch.tensor(DEFAULT_KAISER_BETA if beta is None else float(beta), dtype=torch.float64)
        window = torch.i0(b * torch.sqrt(1 - x**2)) / torch.i0(b)
        window = torch.where(x.abs() >= 1, torch.zeros_like(window), window)
    kernel = torch.sinc(t * cutoff) * window * (cutoff / orig)
    return kernel[:, None, :], width
