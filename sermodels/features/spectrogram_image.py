"""Spectrogram images as the Deep Spectrum toolkit plots them, rendered in torch: batched, on any device.

Provenance
- Amiriparian et al., "Snore sound classification using image-based deep spectrum features", Interspeech 2017, and
  the EmoNet paper's Deep Spectrum baseline (Gerczuk et al., IEEE Trans. Affective Computing, §2.3, §4.2): a
  (mel-)spectrogram is plotted with a colour map and the plot is resized to the CNN's input size (224 x 224).
- §4.2 settings: 128 mel filters, the magma colour map, whole files (no windowing). The rest follows the Deep
  Spectrum toolkit's plotting defaults (its behaviour, as documented by its source): a Hann-windowed STFT of the
  next power of two above 25 ms (512 points at 16 kHz, also §5.1) with a hop of half that, not centred (no padding
  at the ends); librosa's default mel filterbank (Slaney mel scale, Slaney area normalisation); power in dB
  relative to the image's peak with no floor; the viridis colour map by default.

What "plotting" means here
The original draws the dB spectrogram with matplotlib, saves the figure and reads the image back. The picture is a
function of the data alone, so :class:`SpectrogramImage` computes it directly:

1. power spectrogram (mel with ``n_mels`` filters, or linear STFT bins), optionally re-sampled on a logarithmic
   frequency axis (``scale="log"``: the rows a log-scaled y axis would show);
2. decibels relative to the image's peak (``top_db`` floors them that far below it; None, the toolkit's
   choice, keeps the full range);
3. the plot's colour normalisation: each image scaled to its own minimum .. maximum (matplotlib's autoscaled
   ``Normalize``), computed over the clip's valid frames only;
4. nearest-neighbour resampling to ``size`` (what an axes-filling ``imshow(..., interpolation="nearest",
   origin="lower")`` of that many pixels shows; ``resize="bilinear"`` antialiases instead), low frequencies at the
   bottom;
5. the colour map as a 256-entry lookup table taken from matplotlib (8-bit values, as a saved PNG holds them).

The backbone's input normalisation (step 6) belongs to the CNN (:class:`sermodels.layers.backbone.BackboneFeatures`).
:func:`matplotlib_image` is the plotting round trip itself (figure -> PNG in memory -> decoded pixels); the parity
test and ``benchmarks/deep_spectrum.py`` compare the two.

Departure: in a padded batch each clip's spectrogram is computed as if it were alone (only frames inside the clip;
with ``center=True`` its tail is reflected as the centred STFT pads a lone clip), so a clip's image does not depend
on its batch.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels._tracing import checking
from sermodels.features.spectrogram import AmplitudeToDB, MelSpectrogram, Spectrogram, reflect_tails

# EmoNet paper §4.2 (Deep Spectrum baseline) and §5.1 (STFT at 16 kHz).
DS_N_MELS = 128
DS_N_FFT = 512
DS_HOP = 256
DS_COLORMAP_EMONET = "magma"
DS_COLORMAP_DEFAULT = "viridis"  # the Deep Spectrum toolkit's default colour map
DS_IMAGE_SIZE = (224, 224)  # §4.2: "resized to 224x224 to conform with the training images of the ImageNet database"
DS_TOP_DB = None  # the toolkit plots the full dB range (no floor below the peak)
DS_MEL_SCALE = "slaney"  # librosa's default mel filterbank, which the toolkit uses
DS_MEL_NORM = "slaney"
KINDS = ("mel", "linear")
SCALES = ("linear", "log")
RESIZES = ("nearest", "bilinear")


def colormap_lut(name: str) -> Tensor:
    """``(256, 3)`` uint8 RGB lookup table of a matplotlib colour map (any registered name, e.g. "magma")."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map {name!r}; see matplotlib.colormaps for the names") from None
    table = cmap(np.arange(cmap.N), bytes=True)[:, :3]
    return torch.from_numpy(np.ascontiguousarray(table))


def lut_index(normalised: Tensor, entries: int) -> Tensor:
    """Lookup-table rows of values in [0, 1]: ``floor(v * entries)``, 1.0 in the last row, outside values clipped
    (how a matplotlib colour map indexes its table; NaN is not expected here)."""
    return (normalised * entries).floor().clamp(0, entries - 1).long()


class SpectrogramImage(nn.Module):
    """Waveforms ``(B, T)`` + lengths ``(B,)`` -> RGB spectrogram images ``(B, 3, H, W)`` in [0, 1]."""

    def __init__(
        self,
        sample_rate: int = 16000,
        kind: str = "mel",
        n_mels: int = DS_N_MELS,
        n_fft: int = DS_N_FFT,
        win_length: int | None = None,
        hop_length: int = DS_HOP,
        f_min: float = 0.0,
        f_max: float | None = None,
        scale: str = "linear",
        colormap: str = DS_COLORMAP_DEFAULT,
        top_db: float | None = DS_TOP_DB,
        size: tuple[int, int] | list[int] = DS_IMAGE_SIZE,
        resize: str = "nearest",
        center: bool = False,
        mel_scale: str = DS_MEL_SCALE,
        mel_norm: str | None = DS_MEL_NORM,
    ):
        super().__init__()
        for value, allowed, what in ((kind, KINDS, "kind"), (scale, SCALES, "scale"), (resize, RESIZES, "resize")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; choose one of {list(allowed)}")
        if kind == "mel" and scale != "linear":
            raise ValueError("scale applies to linear spectrograms; a mel spectrogram already has a mel frequency axis")
        height, width = (int(v) for v in size)
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {tuple(size)}")
        self.sample_rate, self.kind, self.scale, self.colormap = int(sample_rate), kind, scale, colormap
        self.size, self.resize, self.top_db = (height, width), resize, top_db
        self.f_min, self.f_max = float(f_min), float(f_max) if f_max is not None else None
        nyquist = self.sample_rate / 2
        if not 0 <= self.f_min < (nyquist if self.f_max is None else self.f_max) <= nyquist:
            raise ValueError(f"need 0 <= f_min < f_max <= {nyquist:g} Hz, got f_min={f_min}, f_max={f_max}")
        self.center, self.mel_scale, self.mel_norm = bool(center), mel_scale, mel_norm
        if kind == "mel":
            with warnings.catch_warnings():
                # Many HTK-scale filters over few bins leave the lowest filters empty: on an image that is a constant
                # row, harmless here (a model front-end would be told so by MelSpectrogram).
                warnings.filterwarnings("ignore", message=r".*mel filters are all zero", category=UserWarning)
                self.spec = MelSpectrogram(
                    sample_rate, n_fft, win_length, hop_length, f_min=f_min, f_max=f_max, n_mels=n_mels,
                    window="hann", center=self.center, norm=mel_norm, mel_scale=mel_scale,
                )  # fmt: skip
            self.n_mels = int(n_mels)
        else:
            self.spec = Spectrogram(n_fft, win_length, hop_length, window="hann", power=2.0, center=self.center)
            self.n_mels = None
        self.to_db = AmplitudeToDB("power", top_db=None)
        self.register_buffer("lut", colormap_lut(colormap).float() / 255.0, persistent=False)
        rows = self._frequency_rows()
        self.register_buffer("rows", rows, persistent=False)

    @property
    def stft(self) -> Spectrogram:
        return self.spec.spectrogram if self.kind == "mel" else self.spec

    def _frequency_rows(self) -> Tensor:
        """Spectrogram rows shown on the image's frequency axis, bottom to top (all of them but for ``scale="log"``)."""
        n_bins = self.stft.n_fft // 2 + 1
        if self.kind == "mel":
            return torch.arange(self.n_mels)
        bin_hz = self.sample_rate / self.stft.n_fft
        top = self.sample_rate / 2 if self.f_max is None else min(self.f_max, self.sample_rate / 2)
        if self.scale == "linear":
            low = int(math.ceil(self.f_min / bin_hz - 1e-9))
            high = int(math.floor(top / bin_hz + 1e-9))
            return torch.arange(low, high + 1)
        # A log axis from f_min (at least one bin above DC) to the top, sampled as finely as the highest bins are.
        low_hz = max(self.f_min, bin_hz)
        count = max(2, int(math.ceil(math.log(top / low_hz) / math.log1p(1.0 / max(top / bin_hz - 1, 1.0)))))
        count = min(count, 4 * n_bins)
        freqs = low_hz * (top / low_hz) ** torch.linspace(0.0, 1.0, count, dtype=torch.float64)
        return (freqs / bin_hz).round().long().clamp(0, n_bins - 1)

    def config(self) -> dict[str, Any]:
        stft = self.stft
        return {
            "sample_rate": self.sample_rate,
            "kind": self.kind,
            "n_mels": self.n_mels if self.kind == "mel" else DS_N_MELS,
            "n_fft": stft.n_fft,
            "win_length": stft.win_length,
            "hop_length": stft.hop_length,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "scale": self.scale,
            "colormap": self.colormap,
            "top_db": self.top_db,
            "size": list(self.size),
            "resize": self.resize,
            "center": self.center,
            "mel_scale": self.mel_scale,
            "mel_norm": self.mel_norm,
        }

    def min_samples(self) -> int:
        """Shortest clip (samples): one full STFT frame, or more than n_fft // 2 for the reflected ends of a centred
        STFT."""
        return self.stft.n_fft // 2 + 1 if self.center else self.stft.n_fft

    def decibels(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """dB spectrograms ``(B, rows, frames)`` (rows bottom to top, floored ``top_db`` under each clip's peak over
        its valid frames) and the valid frame counts ``(B,)``."""
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
        lengths = _lengths(waveforms, lengths)
        short = (lengths < self.min_samples()).nonzero().flatten().tolist() if checking() else []
        if short:
            raise ValueError(
                f"rows {short} of the batch have {lengths[short].tolist()} samples; a spectrogram image needs at "
                f"least {self.min_samples()} ({self.min_samples() / self.sample_rate:.3f} s)"
            )
        frames = self.stft.frame_count(waveforms.shape[-1])
        waves = waveforms.float()
        if self.center:
            waves = reflect_tails(waves, lengths, self.stft.n_fft // 2)
        power = self.spec(waves)[..., :frames]
        db = self.to_db(power.index_select(1, self.rows.to(power.device)))
        valid = self.stft.num_frames(lengths).clamp(min=1, max=frames).to(db.device)
        mask = torch.arange(frames, device=db.device)[None, None, :] < valid[:, None, None]
        if self.top_db is not None:
            peak = db.masked_fill(~mask, -math.inf).amax(dim=(1, 2), keepdim=True)
            db = torch.maximum(db, peak - self.top_db)
        return db, valid

    def value_range(self, db: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Each clip's minimum and maximum ``(B, 1, 1)`` over its valid frames (the plot's colour limits)."""
        mask = torch.arange(db.shape[-1], device=db.device)[None, None, :] < valid[:, None, None]
        low = db.masked_fill(~mask, math.inf).amin(dim=(1, 2), keepdim=True)
        high = db.masked_fill(~mask, -math.inf).amax(dim=(1, 2), keepdim=True)
        return low, high

    @staticmethod
    def rescale(values: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """``(values - low) / (high - low)``, 0 where a clip is constant (matplotlib's ``Normalize``)."""
        span = high - low
        safe = span.clamp(min=torch.finfo(values.dtype).tiny)
        return torch.where(span > 0, (values - low) / safe, torch.zeros_like(values))

    def normalise(self, db: Tensor, valid: Tensor) -> Tensor:
        """Each clip scaled to [0, 1] by its own min .. max over valid frames (0 where the clip is constant)."""
        return self.rescale(db, *self.value_range(db, valid))

    def resample(self, values: Tensor, valid: Tensor) -> Tensor:
        """``(B, rows, frames)`` -> ``(B, H, W)``, image row 0 at the top (highest frequency), each clip's valid
        frames stretched over the full width."""
        height, width = self.size
        batch, n_rows, _ = values.shape
        if self.resize == "nearest":
            # Pixel centres in data coordinates as exact fractions (integer arithmetic: in float64 some ties land a
            # hair off), sampled as matplotlib's nearest-neighbour resampling does: column x is centred at
            # (2x + 1) frames / 2W and rounds ties down; image row y is centred at (2 (H - y) - 1) rows / 2H from
            # the bottom and rounds ties up.
            odd_x = 2 * torch.arange(width, device=values.device) + 1
            cols = (odd_x[None, :] * valid[:, None] + 2 * width - 1) // (2 * width) - 1  # ceil(centre) - 1
            cols = torch.minimum(cols.clamp(min=0), (valid - 1)[:, None])  # (B, W)
            odd_y = 2 * (height - torch.arange(height, device=values.device)) - 1
            rows = (odd_y * n_rows // (2 * height)).clamp(0, n_rows - 1)  # image row 0 = highest frequency
            picked = values.index_select(1, rows)  # (B, H, frames)
            return picked.gather(2, cols[:, None, :].expand(batch, height, width))
        out = values.new_empty(batch, height, width)
        for i in range(batch):  # clips differ in length: each is interpolated over its own valid frames
            clip = values[i : i + 1, :, : int(valid[i])].flip(1)[:, None]
            out[i] = F.interpolate(clip, size=(height, width), mode="bilinear", antialias=True)[0, 0]
        return out

    def colour(self, normalised: Tensor) -> Tensor:
        """``(B, H, W)`` in [0, 1] -> ``(B, 3, H, W)`` RGB in [0, 1] through the colour map's table."""
        index = lut_index(normalised, self.lut.shape[0])
        return self.lut[index].permute(0, 3, 1, 2)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        # The picture is 8-bit and a power spectrogram overflows float16: rendered in float32 even under autocast.
        with torch.autocast(waveforms.device.type, enabled=False):
            db, valid = self.decibels(waveforms, lengths)
            # Scaling is affine per clip, so it commutes with resampling: scale the H x W pixels, not every bin.
            low, high = self.value_range(db, valid)
            return self.colour(self.rescale(self.resample(db, valid), low, high))


def matplotlib_image(
    db: np.ndarray, colormap: str = DS_COLORMAP_DEFAULT, size: tuple[int, int] = DS_IMAGE_SIZE, dpi: int = 100
) -> np.ndarray:
    """The plotting round trip: draw ``db (rows, frames)`` (row 0 = lowest frequency) with matplotlib on an
    axes-filling, axis-free figure of ``size`` pixels, save it as PNG in memory, decode it. ``(H, W, 3)`` uint8."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from PIL import Image

    height, width = size
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.imshow(db, cmap=colormap, aspect="auto", origin="lower", interpolation="nearest")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as image:
        pixels = np.asarray(image.convert("RGB"))
    if pixels.shape[:2] != (height, width):
        raise RuntimeError(f"matplotlib rendered {pixels.shape[:2]} pixels instead of {(height, width)}")
    return pixels


def _lengths(waveforms: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return torch.full((waveforms.shape[0],), waveforms.shape[-1], dtype=torch.long, device=waveforms.device)
    lengths = lengths.to(device=waveforms.device, dtype=torch.long)
    if lengths.shape != waveforms.shape[:1] or (
        checking() and ((lengths > waveforms.shape[-1]).any() or (lengths < 1).any())
    ):
        raise ValueError(
            f"lengths must give one length per row, each in 1 .. {waveforms.shape[-1]}, got {lengths.tolist()}"
        )
    return lengths
