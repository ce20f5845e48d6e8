"""Spectrogram images rendered in torch against matplotlib's own plot: parity on real files of the four corpora, tie
conventions, the colour table, the frequency axes, batching, and rendering in float32 under autocast.

Parity with matplotlib (the original toolkit plots the dB spectrogram with matplotlib and reads the picture back):
``matplotlib_image`` draws with ``imshow(interpolation="nearest")``, saves a PNG in memory and decodes it. On real
files of all four corpora, per image: at least ``MIN_IDENTICAL`` of the pixels are identical and the mean absolute
difference is below ``MAX_MEAN_ABS_LEVELS`` 8-bit levels (the lead measured >= 99.94 % and <= 0.008 levels on 50
files; the 60 images here: >= 99.936 %, <= 0.011 levels). Every matplotlib pixel is the colour of one of the pixel
centre's nearest samples (the two sides of a tie), give or take one colour-table row: matplotlib normalises in
float64, we in float32, and a value a hair under a table edge can land on the other side (1 pixel in 3 of the 60
images). The differences are tie-breaks, almost all in matplotlib's last column (where it breaks row ties
downwards, elsewhere upwards); synthetic arrays below pin the conventions exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import spread_files

from sermodels.audio import load_audio
from sermodels.features.spectrogram_image import (
    DS_IMAGE_SIZE,
    SpectrogramImage,
    colormap_lut,
    lut_index,
    matplotlib_image,
)

MIN_IDENTICAL = 0.995  # fraction of identical pixels per image (measured >= 0.9993)
MAX_MEAN_ABS_LEVELS = 0.1  # mean |ours - matplotlib| in 8-bit levels per image (measured <= 0.008)
SR = 16000
CORPORA = ("emodb", "ravdess", "emovo", "urdu")
FILES_PER_CORPUS = 3


def _files(corpus: str, count: int = FILES_PER_CORPUS) -> list[Path]:
    return spread_files(corpus, count)


def _pixels(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8, as a PNG would hold it."""
    return (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _nearest_samples(n_rows: int, n_cols: int, height: int, width: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For every pixel centre, the data row/column on either side of it: the same index twice unless the centre lies
    exactly on the boundary between two samples (a tie), then both. Exact integer arithmetic: column x is centred at
    ``(2x + 1) n_cols / (2 W)``, image row y (from the top) at ``(2 (H - y) - 1) n_rows / (2 H)`` from the bottom."""

    def both_sides(numerator: np.ndarray, denominator: int, count: int) -> list[np.ndarray]:
        below = np.clip(-(-numerator // denominator) - 1, 0, count - 1)  # ceil(centre) - 1: ties go down
        above = np.clip(numerator // denominator, 0, count - 1)  # floor(centre): ties go up
        return [below, above]

    cols = both_sides((2 * np.arange(width) + 1) * n_cols, 2 * width, n_cols)
    rows = both_sides((2 * (height - np.arange(height)) - 1) * n_rows, 2 * height, n_rows)
    return rows, cols


def _explained(reference: np.ndarray, normalised: np.ndarray, colormap: str, slack: int = 0) -> np.ndarray:
    """``(H, W)`` bool: the reference pixel is the colour of one of its (up to four) nearest samples, give or take
    ``slack`` rows of the colour table."""
    cmap = matplotlib.colormaps[colormap]
    table = cmap(np.arange(cmap.N), bytes=True)[:, :3]
    index = np.clip(np.floor(normalised * cmap.N), 0, cmap.N - 1).astype(int)
    rows, cols = _nearest_samples(*normalised.shape, *reference.shape[:2])
    explained = np.zeros(reference.shape[:2], dtype=bool)
    for r in rows:
        for c in cols:
            for shift in range(-slack, slack + 1):
                explained |= (table[np.clip(index[r][:, c] + shift, 0, cmap.N - 1)] == reference).all(-1)
    return explained


def _quantised(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """``(1, rows, frames)`` random values at the centres of the 256 colour-table bins, with 0 and 1 present so that
    normalising leaves them unchanged: no value is near a bin edge, only the resampling can differ."""
    values = (np.random.default_rng(seed).integers(0, 256, size=shape) + 0.5) / 256
    values[0, 0], values[-1, -1] = 0.0, 1.0
    return torch.from_numpy(values).float()[None]


def _render(images: SpectrogramImage, values: torch.Tensor) -> np.ndarray:
    valid = torch.tensor([values.shape[-1]])
    return _pixels(images.colour(images.resample(images.normalise(values, valid), valid))[0])


# ---------------------------------------------------------------------------------------------------- matplotlib parity


@pytest.mark.parametrize(
    ("kind", "scale", "colormap"),
    [
        ("mel", "linear", "magma"),
        ("mel", "linear", "viridis"),
        ("linear", "linear", "magma"),
        ("linear", "linear", "viridis"),
        ("linear", "log", "viridis"),
    ],
)
def test_images_match_matplotlib_on_real_files(corpus_waves, kind, scale, colormap):
    images = SpectrogramImage(kind=kind, scale=scale, colormap=colormap)
    for corpus, waves in corpus_waves.items():
        lengths = torch.tensor([len(w) for w in waves])
        batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        with torch.inference_mode():
            ours_batch = images(batch, lengths)  # rendered as a padded batch; the reference is each clip alone
        for i, wave in enumerate(waves):
            with torch.inference_mode():
                db, valid = images.decibels(wave[None])
                normalised = images.normalise(db, valid)[0, :, : int(valid[0])].numpy()
            reference = matplotlib_image(db[0, :, : int(valid[0])].numpy(), colormap)
            ours = _pixels(ours_batch[i])
            assert ours.shape == reference.shape == (*DS_IMAGE_SIZE, 3)
            same = (ours == reference).all(-1)
            identical = same.mean()
            mean_abs = np.abs(ours.astype(np.int16) - reference.astype(np.int16)).mean()
            where = f"{corpus} file {i}, {kind}/{scale}/{colormap}"
            assert identical >= MIN_IDENTICAL, f"{where}: {identical:.5f} of pixels identical"
            assert mean_abs < MAX_MEAN_ABS_LEVELS, f"{where}: mean abs difference {mean_abs:.4f} levels"
            assert same[:, :-1].mean() >= 0.9999, f"{where}: differences outside matplotlib's last column"
            # float32 vs matplotlib's float64 normalisation may cross a colour-table edge (3 of 60 images, 1 px)
            assert _explained(reference, normalised, colormap, slack=1).all(), f"{where}: not a tie nor one table row"


def test_synthetic_tie_conventions():
    """Random arrays (values at colour-table bin centres) of sizes whose pixel centres fall exactly on sample
    boundaries, through ``resample``/``colour`` vs matplotlib (measured): identical, every pixel, for 128 x 128
    (ties on every 7th row and column), 257 x 119, 128 x 224, 112 x 112, 128 x 56 and the 1028-row log axis; for
    128 x 119 and 128 x 101 (1.9 s and 1.6 s mel images) identical but for matplotlib's last column, where it
    breaks row ties downwards (elsewhere upwards); there it still shows one of the two tied samples."""
    images = SpectrogramImage(colormap="viridis")
    for seed, shape in enumerate([(128, 128), (257, 119), (128, 224), (112, 112), (128, 56), (1028, 119)]):
        values = _quantised(shape, seed)
        np.testing.assert_array_equal(_render(images, values), matplotlib_image(values[0].numpy(), "viridis"))
    for seed, shape in enumerate([(128, 119), (128, 101)]):
        values = _quantised(shape, seed)
        ours, reference = _render(images, values), matplotlib_image(values[0].numpy(), "viridis")
        np.testing.assert_array_equal(ours[:, :-1], reference[:, :-1])
        assert _explained(reference, values[0].numpy(), "viridis").all()


def test_exact_ties_break_like_matplotlib():
    """Every pixel centre on a sample boundary (448 frames or rows on 224 pixels): columns round ties down (pixel x
    shows frame 2x), rows round them up (image row y shows data row 447 - 2y), as matplotlib does, so the images
    are identical. Currently ``(x + 0.5) / 224 * 448`` in float64 is 29.000000000000004 for x = 14, and 5 of 224
    columns (x = 14, 61, 112, 119, 126) and 4 rows go the other way (2.2 % and 1.8 % of pixels differ from
    matplotlib); exact integer arithmetic fixes it."""
    images = SpectrogramImage(colormap="viridis")
    ramp = torch.arange(448, dtype=torch.float32).expand(1, 4, 448)  # value = frame index
    picked = images.resample(ramp, torch.tensor([448]))[0, 0]
    assert picked.tolist() == [2.0 * x for x in range(224)]
    rows = images.resample(torch.arange(448, dtype=torch.float32)[None, :, None].expand(1, 448, 4), torch.tensor([4]))
    assert rows[0, :, 0].tolist() == [447.0 - 2 * y for y in range(224)]
    for seed, shape in enumerate([(64, 448), (448, 64)]):
        values = _quantised(shape, seed)
        np.testing.assert_array_equal(_render(images, values), matplotlib_image(values[0].numpy(), "viridis"))


def test_constant_clip_is_the_lowest_colour():
    """Silence: the dB image is constant; matplotlib's Normalize maps it to 0, so does ours (no NaN)."""
    images = SpectrogramImage(colormap="magma")
    image = _pixels(images(torch.zeros(1, 8000))[0])
    reference = matplotlib_image(np.full((128, 32), -100.0, dtype=np.float32), "magma")
    lowest = matplotlib.colormaps["magma"](0.0, bytes=True)[:3]
    assert (image == lowest).all() and (reference == lowest).all()


# ---------------------------------------------------------------------------------------------------- colour table


@pytest.mark.parametrize("name", ["magma", "viridis", "tab10"])
def test_colour_table_is_matplotlibs(name):
    cmap = matplotlib.colormaps[name]
    table = colormap_lut(name)
    assert table.dtype == torch.uint8 and table.shape == (cmap.N, 3)
    np.testing.assert_array_equal(table.numpy(), cmap(np.arange(cmap.N), bytes=True)[:, :3])
    assert torch.equal(SpectrogramImage(colormap=name).lut, table.float() / 255.0)


@pytest.mark.parametrize("name", ["magma", "tab10"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lut_index_picks_matplotlibs_row(name, dtype):
    """0, 1, mid-values, exact bin edges, the floats just below and just above each edge, and random values give
    the colour that matplotlib's ``Colormap.__call__`` gives for the same floats."""
    cmap = matplotlib.colormaps[name]
    edges = (np.arange(cmap.N + 1) / cmap.N).astype(dtype)
    values = np.concatenate(
        [
            np.array([0.0, 1.0, 0.5, 0.25, 1 / 3], dtype=dtype),
            edges,
            np.nextafter(edges, dtype(0)),
            np.nextafter(edges, dtype(1)),
            (np.arange(cmap.N) + 0.5).astype(dtype) / dtype(cmap.N),
            np.random.default_rng(0).random(1000).astype(dtype),
        ]
    ).astype(dtype)
    index = lut_index(torch.from_numpy(values), cmap.N)
    ours = colormap_lut(name)[index].numpy()
    np.testing.assert_array_equal(ours, cmap(values, bytes=True)[:, :3])
    assert index[0] == 0 and index[1] == cmap.N - 1  # 1.0 is in the last row, not past the table
    assert lut_index(torch.tensor([-0.5, 1.5]), cmap.N).tolist() == [0, cmap.N - 1]  # clipped like under/over


# ---------------------------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("resize", ["nearest", "bilinear"])
def test_forward_scales_after_resampling_like_before(corpus_waves, resize):
    """``forward`` rescales the resampled H x W pixels with each clip's dB range instead of every bin: the same
    image as ``colour(resample(normalise(db)))``. Exact for nearest (it only picks values); for bilinear >= 99.99 %
    of pixels identical, the rest one level off (measured 1 pixel in 150 528)."""
    waves = [corpus_waves[corpus][0] for corpus in ("emodb", "ravdess", "urdu")]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    images = SpectrogramImage(resize=resize)
    with torch.inference_mode():
        got = images(batch, lengths)
        db, valid = images.decibels(batch, lengths)
        want = images.colour(images.resample(images.normalise(db, valid), valid))
    if resize == "nearest":
        assert torch.equal(got, want)
    else:
        assert (got == want).all(1).float().mean() >= 0.9999
        assert ((got - want).abs() * 255).round().max() <= 1


def test_lengths_are_checked():
    images = SpectrogramImage()
    with pytest.raises(ValueError, match="at least 512"):  # one full frame of the uncentred STFT
        images(torch.zeros(2, 1000), torch.tensor([1000, 500]))
    with pytest.raises(ValueError, match="at least 257"):  # the centred STFT reflects n_fft // 2 samples
        SpectrogramImage(center=True)(torch.zeros(2, 1000), torch.tensor([1000, 200]))
    with pytest.raises(ValueError, match="one length per row"):
        images(torch.zeros(2, 1000), torch.tensor([1000, 1001]))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        images(torch.zeros(1000))


def test_bf16_autocast_renders_the_same_image(short_waves):
    """The picture is 8-bit: autocast must not change it. Under bf16 the mel projection and dB would move 45 % of the
    pixels (mean 0.53, max 6 levels), and under fp16 the power spectrogram can overflow; ``SpectrogramImage.forward``
    renders with autocast disabled, so a model gives the same image on every path (pipelines, training tasks)."""
    batch, lengths = short_waves
    images = SpectrogramImage()
    with torch.inference_mode():
        full = images(batch, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = images(batch, lengths)
    assert half.dtype == torch.float32
    assert torch.equal(half, full)


# ---------------------------------------------------------------------------------------------------- frequency axes


def _tone_row(images: SpectrogramImage, freq: float) -> float:
    """Image position (pixels from the top, pixel centres at y + 0.5) of the brightest rows for a 1 s sine at
    ``freq``: the middle of the run of rows sharing the maximum mean level."""
    t = torch.arange(SR, dtype=torch.float64) / SR
    wave = (0.5 * torch.sin(2 * math.pi * freq * t)).float()[None]
    db, valid = images.decibels(wave)
    profile = images.resample(images.normalise(db, valid), valid)[0].mean(dim=1)
    brightest = (profile == profile.max()).nonzero().flatten().double()
    return float(brightest.mean()) + 0.5


@pytest.mark.parametrize("freq", [500.0, 1000.0, 2500.0, 4000.0])  # on STFT bins (31.25 Hz apart)
def test_log_axis_puts_a_tone_where_a_log_axis_does(freq):
    height = DS_IMAGE_SIZE[0]
    for f_min, bottom in [(100.0, 100.0), (0.0, SR / 512)]:  # f_min=0: the axis starts one bin above DC
        images = SpectrogramImage(kind="linear", scale="log", f_min=f_min)
        expected = height * (1 - math.log(freq / bottom) / math.log((SR / 2) / bottom))
        assert abs(_tone_row(images, freq) - expected) <= 1.0, (f_min, freq)


@pytest.mark.parametrize("freq", [500.0, 1000.0, 2500.0, 4000.0])
def test_linear_axis_puts_a_tone_where_a_linear_axis_does(freq):
    height, n_bins = DS_IMAGE_SIZE[0], 257
    expected = height - (freq / (SR / 512) + 0.5) / n_bins * height  # bin k fills [k, k + 1) / 257 of the height
    assert abs(_tone_row(SpectrogramImage(kind="linear"), freq) - expected) <= 1.0


@pytest.mark.parametrize("mel_scale", ["slaney", "htk"])
def test_mel_axis_is_monotonic_and_mel_spaced(mel_scale):
    """Tones rise on the mel image; each sits on the filter whose mel centre is nearest (within one filter), on the
    Slaney scale (the toolkit's librosa default: linear to 1 kHz, logarithmic above) or the HTK scale."""
    norm = "slaney" if mel_scale == "slaney" else None
    images, height = SpectrogramImage(kind="mel", mel_scale=mel_scale, mel_norm=norm), DS_IMAGE_SIZE[0]
    freqs = [250.0, 500.0, 1000.0, 2000.0, 4000.0, 7000.0]
    rows = [_tone_row(images, f) for f in freqs]
    assert rows == sorted(rows, reverse=True) and len(set(rows)) == len(rows)

    def mel(f: float) -> float:
        if mel_scale == "htk":
            return 2595.0 * math.log10(1.0 + f / 700.0)
        return f / (200.0 / 3.0) if f < 1000.0 else 15.0 + math.log(f / 1000.0) / (math.log(6.4) / 27.0)

    for freq, row in zip(freqs, rows):
        filter_index = mel(freq) / mel(SR / 2) * 129 - 1  # centres at 1 .. 128 of 130 points from 0 to Nyquist
        expected = height - (filter_index + 0.5) / 128 * height
        assert abs(row - expected) <= height / 128, freq


def test_image_options_are_checked():
    with pytest.raises(ValueError, match="unknown kind 'cqt'"):
        SpectrogramImage(kind="cqt")
    with pytest.raises(ValueError, match="unknown scale 'mel'"):
        SpectrogramImage(kind="linear", scale="mel")
    with pytest.raises(ValueError, match="unknown resize 'bicubic'"):
        SpectrogramImage(resize="bicubic")
    with pytest.raises(ValueError, match="unknown colour map 'magmaa'"):
        SpectrogramImage(colormap="magmaa")
    with pytest.raises(ValueError, match="mel frequency axis"):
        SpectrogramImage(kind="mel", scale="log")
    for size in [(0, 224), (224, -1)]:
        with pytest.raises(ValueError, match="image size must be positive"):
            SpectrogramImage(size=size)


def test_bilinear_resize_and_other_sizes():
    """Any size; ``resize="bilinear"`` interpolates the levels (antialiased) before the colour table: every pixel
    is still a table colour, and the picture is the nearest-neighbour one smoothed (correlation > 0.9)."""
    wave = load_audio(_files("emodb", 1)[0])[None]
    table = {tuple(row) for row in colormap_lut("viridis").tolist()}
    levels = {}
    for resize in ("nearest", "bilinear"):
        images = SpectrogramImage(size=(96, 160), resize=resize)
        image = images(wave)
        assert image.shape == (1, 3, 96, 160)
        assert {tuple(p) for p in _pixels(image[0]).reshape(-1, 3).tolist()} <= table
        db, valid = images.decibels(wave)
        levels[resize] = images.resample(images.normalise(db, valid), valid).flatten()
    assert not torch.equal(levels["nearest"], levels["bilinear"])
    assert torch.corrcoef(torch.stack([levels["nearest"], levels["bilinear"]]))[0, 1] > 0.9
