"""YIN pitch and frame intensity: synthetic tones and harmonic complexes, unvoiced inputs, batching, real EMO-DB.

Synthetic signals must be tracked within 1 % on every voiced frame; the edge frames (partly zero padding) may be
unvoiced but most frames must be voiced. On EMO-DB, female speakers' median f0 must lie above male speakers'.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import corpus_root

from sermodels.audio import load_audio
from sermodels.features.pitch import intensity_db, yin

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE_RATE = 16_000
HOP = 160
FREQUENCIES = (100.0, 150.0, 220.0, 310.0)
TOLERANCE = 0.01  # relative f0 error allowed on a voiced frame
MIN_VOICED = 0.9  # fraction of a steady synthetic tone's frames that must be voiced
NOISE_SNR_DB = 20.0
FEMALE = ("08", "09", "13", "14", "16")
MALE = ("03", "10", "11", "12", "15")
FILES_PER_SPEAKER = 4
SPEECH_F0_RANGE = (70.0, 450.0)  # Hz: plausible median speaking pitch of adults, emotional speech included


def _time(seconds: float = 1.0) -> torch.Tensor:
    return torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float32) / SAMPLE_RATE


def _tone(f0: float) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * f0 * _time())


def _harmonic(f0: float, harmonics: int = 8) -> torch.Tensor:
    """Harmonics with 1/k amplitudes and scattered phases (a crude voiced source)."""
    t = _time()
    return sum(torch.sin(2 * math.pi * f0 * k * t + 0.7 * k) / k for k in range(1, harmonics + 1)) * 0.3


def _with_noise(signal: torch.Tensor, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(signal.shape, generator=torch.Generator().manual_seed(seed))
    scale = signal.square().mean().sqrt() / 10 ** (NOISE_SNR_DB / 20)
    return signal + scale * noise


def _assert_tracked(f0: torch.Tensor, target: float) -> None:
    voiced = f0[f0 > 0]
    assert len(voiced) >= MIN_VOICED * len(f0), f"only {len(voiced)}/{len(f0)} frames voiced at {target} Hz"
    worst = ((voiced - target).abs() / target).max().item()
    assert worst < TOLERANCE, f"{target} Hz tracked with a worst relative error of {worst:.4f}"


@pytest.mark.parametrize("frequency", FREQUENCIES)
@pytest.mark.parametrize("make", [_tone, _harmonic, lambda f: _with_noise(_harmonic(f))], ids=["tone", "harm", "noisy"])
def test_tracks_synthetic_pitch(frequency, make):
    f0, aperiodicity = yin(make(frequency), SAMPLE_RATE)
    assert f0.shape == aperiodicity.shape == (1 + SAMPLE_RATE // HOP,)
    _assert_tracked(f0, frequency)
    assert ((aperiodicity >= 0) & (aperiodicity <= 1)).all()


def test_silence_and_white_noise_are_unvoiced():
    silence_f0, silence_ap = yin(torch.zeros(SAMPLE_RATE), SAMPLE_RATE)
    assert (silence_f0 == 0).all() and (silence_ap == 1).all()
    noise = 0.3 * torch.randn(SAMPLE_RATE, generator=torch.Generator().manual_seed(1))
    assert (yin(noise, SAMPLE_RATE)[0] == 0).all()


def test_quiet_frames_are_unvoiced():
    """A tone 60 dB below the loud part of its utterance is periodic but counts as silence (peak - 40 dB)."""
    signal = torch.cat([_tone(200.0), 1e-3 * _tone(200.0)])
    f0 = yin(signal, SAMPLE_RATE)[0]
    assert (f0[:90] > 0).all() and (f0[110:] == 0).all()


def test_batch_equals_items_alone():
    items = [_tone(120.0), _with_noise(_harmonic(260.0)), torch.zeros(SAMPLE_RATE)]
    batch_f0, batch_ap = yin(torch.stack(items), SAMPLE_RATE)
    for row, item in enumerate(items):
        f0, ap = yin(item, SAMPLE_RATE)
        torch.testing.assert_close(batch_f0[row], f0, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(batch_ap[row], ap, rtol=1e-4, atol=1e-4)
    assert torch.equal(intensity_db(torch.stack(items), SAMPLE_RATE)[1], intensity_db(items[1], SAMPLE_RATE))


@pytest.mark.parametrize("length", [1, 159, 160, 16_001])
def test_frame_count(length):
    f0, _ = yin(torch.ones(length), SAMPLE_RATE)
    assert f0.shape == (1 + length // HOP,)
    assert intensity_db(torch.ones(length), SAMPLE_RATE).shape == (1 + length // HOP,)


def test_intensity_of_a_sine():
    """A full-scale-0.5 sine has RMS 0.5/sqrt(2): -9.03 dB away from the padded edges."""
    level = intensity_db(_tone(200.0), SAMPLE_RATE)
    expected = 20 * math.log10(0.5 / math.sqrt(2))
    assert level[5:-5].sub(expected).abs().max() < 0.1
    assert intensity_db(torch.zeros(800), SAMPLE_RATE).max() < -150


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="f_min"):
        yin(torch.zeros(100), SAMPLE_RATE, f_min=400.0, f_max=300.0)
    with pytest.raises(ValueError, match="shape"):
        yin(torch.zeros(0), SAMPLE_RATE)


def _speaker_files(root: Path, speaker: str) -> list[Path]:
    files = sorted((root / "wav").glob(f"{speaker}*.flac"))
    return files[:: max(1, len(files) // FILES_PER_SPEAKER)][:FILES_PER_SPEAKER]


def _median_f0(path: Path) -> float:
    f0 = yin(load_audio(path), SAMPLE_RATE)[0]
    return f0[f0 > 0].median().item()


def test_emodb_female_pitch_above_male():
    root = corpus_root("emodb")
    medians = {s: [_median_f0(p) for p in _speaker_files(root, s)] for s in FEMALE + MALE}
    for speaker, values in medians.items():
        low, high = SPEECH_F0_RANGE
        assert all(low < v < high for v in values), f"speaker {speaker}: implausible median f0 {values}"
    female = torch.tensor([v for s in FEMALE for v in medians[s]]).median()
    male = torch.tensor([v for s in MALE for v in medians[s]]).median()
    assert female > male * 1.3, f"median f0 female {female:.0f} Hz, male {male:.0f} Hz"
