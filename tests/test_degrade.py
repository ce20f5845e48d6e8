"""Audio degradations (D4.2 §3.4.1 stand-ins): SNR, spectral colour, phone band, RIR decay, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import spread_files
from scipy import signal

from sermodels.audio import load_audio
from sermodels.data.longform import active_speech
from sermodels.degrade import (
    DEGRADATIONS,
    SNRS_DB,
    T60_RANGE,
    Degradation,
    add_at_snr,
    babble,
    colored_noise,
    conditions,
    phone_band,
    reverberate,
    synthetic_rir,
)

RATE = 16000


@pytest.fixture(scope="module")
def clips() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three speech clips and a babble pool of clips by other speakers (EMO-DB speaker = first two characters)."""
    files = spread_files("emodb", 8)
    speech = files[:3]
    used = {path.name[:2] for path in speech}
    pool = [path for path in files[3:] if path.name[:2] not in used]
    assert pool, "the spread of EMO-DB files should include other speakers"
    load = [load_audio(path).numpy() for path in speech]
    return load, [load_audio(path).numpy() for path in pool]


def _snr_db(speech: np.ndarray, mixture: np.ndarray) -> float:
    """Measured SNR of ``mixture`` over ``speech`` (up to an overall gain, found by projection onto the speech)."""
    speech = speech.astype(np.float64)
    mixture = mixture.astype(np.float64)
    gain = float(mixture @ speech / (speech @ speech))
    noise = mixture - gain * speech
    energy, count = active_speech(gain * speech, RATE)
    return 10 * math.log10(energy / count / np.mean(np.square(noise)))


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_add_at_snr_hits_the_target_on_real_speech(clips, kind):
    speech = clips[0][0].astype(np.float64)
    rng = np.random.default_rng(0)
    for snr in SNRS_DB:
        noise = colored_noise(kind, len(speech), rng)
        mixed = add_at_snr(speech, noise, snr)
        energy, count = active_speech(speech, RATE)
        measured = 10 * math.log10(energy / count / np.mean(np.square(mixed - speech)))
        assert measured == pytest.approx(snr, abs=0.2)


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble", "phone", "reverb"])
def test_apply_hits_the_snr_against_the_processed_speech(clips, kind):
    speech, pool = clips
    for index, x in enumerate(speech):
        degradation = Degradation(kind, 6.0, seed=1)
        out = degradation.apply(x, RATE, key=f"clip{index}", babble_pool=pool)
        assert out.dtype == np.float32 and out.shape == x.shape and np.abs(out).max() <= 0.99 + 1e-6
        clean = phone_band(x, RATE) if kind == "phone" else x
        if kind == "reverb":  # the same room as the noisy call: same generator, T60 and RIR drawn first
            rng = degradation.rng(f"clip{index}")
            clean = reverberate(x, synthetic_rir(float(rng.uniform(*T60_RANGE)), RATE, rng), RATE)
        assert _snr_db(clean, out) == pytest.approx(6.0, abs=0.2)


def _slope(noise: np.ndarray) -> float:
    frequencies, power = signal.welch(noise, fs=RATE, nperseg=4096)
    band = (frequencies >= 100) & (frequencies <= 6000)
    return float(np.polyfit(np.log10(frequencies[band]), np.log10(power[band]), 1)[0])


@pytest.mark.parametrize(("kind", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_colored_noise_has_the_expected_spectral_slope(kind, slope):
    noise = colored_noise(kind, 1 << 18, np.random.default_rng(3))
    assert np.mean(np.square(noise)) == pytest.approx(1.0)
    assert abs(noise.mean()) < 1e-9
    assert _slope(noise) == pytest.approx(slope, abs=0.1)


def _tone_gain_db(frequency: float) -> float:
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * frequency * t)
    out = phone_band(tone, RATE)
    middle = slice(RATE // 4, 3 * RATE // 4)  # away from the filter's edge transients
    return 10 * math.log10(np.mean(np.square(out[middle])) / np.mean(np.square(tone[middle])))


def test_convolutions_without_noise(clips):
    x = clips[0][0]
    phone = Degradation("phone", None).apply(x, RATE, key="k")
    band = phone_band(x, RATE)
    gain = min(1.0, 0.99 / np.abs(band).max())  # peak protection (band-pass ringing can overshoot a loud clip)
    np.testing.assert_allclose(phone, (gain * band).astype(np.float32), atol=1e-6)
    room = Degradation("reverb", None).apply(x, RATE, key="k")
    assert room.shape == x.shape and not np.allclose(room, x, atol=1e-3)


def test_phone_band_passes_the_telephone_band_only():
    assert _tone_gain_db(1000.0) == pytest.approx(0.0, abs=1.0)
    assert _tone_gain_db(100.0) < -20.0
    assert _tone_gain_db(6000.0) < -20.0


def _schroeder_t60(rir: np.ndarray) -> float:
    """T60 from the Schroeder energy decay curve, fitted between -5 and -35 dB and extrapolated to -60 dB."""
    decay = np.cumsum(np.square(rir)[::-1])[::-1]
    decay_db = 10 * np.log10(decay / decay[0])
    fit = (decay_db <= -5) & (decay_db >= -35)
    slope = np.polyfit(np.arange(len(rir))[fit] / RATE, decay_db[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("t60", [0.3, 0.6, 1.0])
def test_synthetic_rir_decays_at_the_requested_t60(t60):
    rir = synthetic_rir(t60, RATE, np.random.default_rng(int(t60 * 10)))
    assert rir[0] == 1.0
    assert _schroeder_t60(rir) == pytest.approx(t60, rel=0.15)


def test_reverberate_keeps_length_and_level(clips):
    x = clips[0][1]
    wet = reverberate(x, synthetic_rir(0.8, RATE, np.random.default_rng(0)), RATE)
    assert wet.shape == x.shape
    dry_power = np.divide(*active_speech(x.astype(np.float64), RATE))
    wet_power = np.divide(*active_speech(wet, RATE))
    assert wet_power == pytest.approx(dry_power, rel=1e-6)


def test_babble_is_unit_power_and_needs_a_pool(clips):
    noise = babble(clips[1], 3 * RATE, np.random.default_rng(0))
    assert noise.shape == (3 * RATE,) and np.mean(np.square(noise)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pool"):
        babble([np.zeros(100)], 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="babble_pool"):
        Degradation("babble", 3.0).apply(clips[0][0], RATE)


def test_apply_is_deterministic_per_key_and_independent_between_partitions(clips):
    x = clips[0][2]
    for kind in ("pink", "reverb"):
        base = Degradation(kind, 3.0, seed=5, partition="train")
        first = base.apply(x, RATE, key="03a01Fa")
        np.testing.assert_array_equal(first, base.apply(x, RATE, key="03a01Fa"))
        np.testing.assert_array_equal(
            first, Degradation(kind, 3.0, seed=5, partition="train").apply(x, RATE, key="03a01Fa")
        )
        for other in (
            base.apply(x, RATE, key="another item"),
            Degradation(kind, 3.0, seed=5, partition="test").apply(x, RATE, key="03a01Fa"),
            Degradation(kind, 3.0, seed=6, partition="train").apply(x, RATE, key="03a01Fa"),
        ):
            assert not np.allclose(first, other)


def test_peak_protection_scales_the_whole_signal():
    x = 0.9 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
    out = Degradation("white", 0.0).apply(x, RATE, key="loud")
    assert np.abs(out).max() == pytest.approx(0.99, abs=1e-6)
    assert _snr_db(x, out) == pytest.approx(0.0, abs=0.2)


def test_conditions_grid():
    grid = conditions()
    assert len(grid) == 4 * len(SNRS_DB) + 2 * (1 + len(SNRS_DB))
    assert ("phone", None) in grid and ("reverb", 12.0) in grid and ("babble", 0.0) in grid
    assert {kind for kind, _ in grid} == set(DEGRADATIONS)
    for kind, snr in grid:
        assert Degradation(kind, snr).name.startswith(kind)
    assert conditions(("pink",), (0, 6)) == [("pink", 0.0), ("pink", 6.0)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Degradation("hiss", 3.0), "unknown degradation"),
        (lambda: Degradation("pink", None), "needs an snr_db"),
        (lambda: Degradation("pink", 3.0, partition="holdout"), "unknown partition"),
        (lambda: Degradation("pink", 3.0).apply(np.array([0.1, np.nan, 0.2]), RATE), "NaN"),
        (lambda: Degradation("pink", 3.0).apply(np.zeros(0), RATE), "non-empty"),
        (lambda: Degradation("reverb", None).apply(np.zeros(0), RATE), "non-empty"),
        (lambda: colored_noise("purple", 100, np.random.default_rng(0)), "unknown noise color"),
        (lambda: conditions(("hiss",)), "unknown degradation"),
        (lambda: add_at_snr(np.zeros(100), np.ones(100), 0.0), "non-zero energy"),
    ],
)
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
