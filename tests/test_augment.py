"""Training-time augmentation: identity at evaluation, seeded, and each augmentation measured on known signals."""

from __future__ import annotations

import math

import pytest
import torch

from sermodels.augment import Augmentation, SpecAugment, WaveformAugment, mixup

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16_000
ALL_ON = {"gain": {"p": 1.0}, "noise": {"p": 1.0}, "shift": {"p": 1.0}, "speed": {"p": 1.0}}


def sine(freq: float, samples: int = SR, phase: float = 0.0) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(samples) / SR + phase)


def random_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    waveforms = torch.randn(len(lengths), int(lengths.max()), generator=generator)
    return waveforms * (torch.arange(waveforms.shape[1]) < lengths[:, None]), lengths


def training(module):
    return module.train()


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    return 10 * math.log10(signal.square().sum().item() / noise.square().sum().item())


def energy_at(x: torch.Tensor, freq: float) -> float:
    """Fraction of the energy of ``x`` (1 s at SR, so bins are 1 Hz apart) within ±2 Hz of ``freq``."""
    power = torch.fft.rfft(x.double()).abs().square()
    bin_ = round(freq * len(x) / SR)
    return (power[bin_ - 2 : bin_ + 3].sum() / power.sum()).item()


# --- evaluation and seeding -----------------------------------------------------------------------------------


def test_eval_mode_returns_the_inputs_themselves():
    waveforms, lengths = random_batch([8000, 6000])
    augment = WaveformAugment(**ALL_ON).eval()
    out, out_lengths = augment(waveforms, lengths, ["a", "b"])
    assert out is waveforms and out_lengths is lengths
    spec = torch.randn(2, 40, 50)
    assert SpecAugment(freq_width=20, time_width=0.5).eval()(spec, torch.tensor([50, 30])) is spec


def test_same_seed_same_outputs_and_another_seed_differs():
    waveforms, lengths = random_batch([16000, 12000, 9000, 15000])
    speakers = ["a", "b", "a", "c"]
    first, second, other = (training(WaveformAugment(**ALL_ON, seed=s)) for s in (0, 0, 1))
    for _ in range(2):  # the same sequence of calls, not just the first
        out_a, len_a = first(waveforms, lengths, speakers)
        out_b, len_b = second(waveforms, lengths, speakers)
        assert torch.equal(out_a, out_b) and torch.equal(len_a, len_b)
    out_c, _ = other(waveforms, lengths, speakers)
    assert out_c.shape != out_a.shape or not torch.equal(out_c, out_a)


def test_state_round_trip_continues_the_stream_and_reseed_restarts_it():
    waveforms, lengths = random_batch([8000, 6000, 7000])
    augment = training(WaveformAugment(gain={"p": 0.5}, noise={"p": 1.0, "colors": ["white"]}, seed=3))
    first, _ = augment(waveforms, lengths)
    state = augment.get_state()
    second, _ = augment(waveforms, lengths)
    augment.set_state(state)
    assert torch.equal(augment(waveforms, lengths)[0], second)
    assert not torch.equal(first, second)
    augment.reseed(3)
    assert torch.equal(augment(waveforms, lengths)[0], first)
    assert augment.config()["seed"] == 3


def test_config_round_trips():
    augment = WaveformAugment(sample_rate=8000, gain={"db": [-3, 3]}, speed={"factors": [0.95, 1.05]}, seed=7)
    rebuilt = WaveformAugment.from_config(augment.config())
    assert rebuilt.config() == augment.config()
    assert augment.config()["gain"] == {"p": 0.5, "db": [-3.0, 3.0]}
    assert augment.config()["noise"] is None
    spec = SpecAugment(freq_masks=1, freq_width=5, time_masks=3, time_width=20, fill=-1.0, seed=2)
    assert SpecAugment.from_config(spec.config()).config() == spec.config()


# --- gain and noise -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("db", [6.0, -3.0])
def test_gain_changes_rms_by_the_drawn_decibels(db):
    waveforms, lengths = random_batch([8000, 5000])
    out, out_lengths = training(WaveformAugment(gain={"p": 1.0, "db": [db, db]}))(waveforms, lengths)
    assert torch.equal(out_lengths, lengths)
    for row, length in enumerate(lengths.tolist()):
        ratio = out[row, :length].square().mean().sqrt() / waveforms[row, :length].square().mean().sqrt()
        assert 20 * math.log10(ratio.item()) == pytest.approx(db, abs=1e-3)


@pytest.mark.parametrize("color", ["white", "pink", "brown", "babble"])
def test_noise_has_the_requested_snr_and_stays_inside_the_valid_samples(color):
    waveforms, lengths = random_batch([16000, 11000, 7000, 13000])
    augment = training(WaveformAugment(noise={"p": 1.0, "snr_db": [10.0, 10.0], "colors": [color]}))
    out, _ = augment(waveforms, lengths, ["a", "b", "c", "d"])
    noise = out - waveforms
    for row, length in enumerate(lengths.tolist()):
        assert snr_db(waveforms[row, :length], noise[row, :length]) == pytest.approx(10.0, abs=0.5)
        assert torch.all(out[row, length:] == 0)


@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colours_have_their_spectral_slope(color, slope):
    samples = 2**15
    waveforms, lengths = random_batch([samples] * 4, seed=1)
    augment = training(WaveformAugment(noise={"p": 1.0, "snr_db": [0.0, 0.0], "colors": [color]}))
    noise = (augment(waveforms, lengths)[0] - waveforms).double()
    if slope < 0:  # shaped noise has a zero DC bin
        assert noise.mean(dim=1).abs().max() < 0.01 * noise.std()
    power = torch.fft.rfft(noise, dim=1).abs().square().mean(dim=0)
    frequency = torch.arange(len(power), dtype=torch.float64) * SR / samples
    edges = torch.logspace(math.log10(20.0), math.log10(7500.0), 21, dtype=torch.float64)
    log_f, log_p = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        band = (frequency >= low) & (frequency < high)
        log_f.append(frequency[band].mean().log10())
        log_p.append(power[band].mean().log10())
    log_f, log_p = torch.stack(log_f), torch.stack(log_p)
    fitted = ((log_f - log_f.mean()) * (log_p - log_p.mean())).sum() / (log_f - log_f.mean()).square().sum()
    assert fitted.item() == pytest.approx(slope, abs=0.3)


def test_babble_is_made_of_other_speakers_only():
    # Clip 0 and clip 1 are speaker A (440 and 700 Hz), clips 2 and 3 speakers B and C (1000 and 1500 Hz).
    waveforms = torch.stack([sine(440), sine(700), sine(1000), sine(1500)])
    lengths = torch.full((4,), SR)
    augment = training(WaveformAugment(noise={"p": 1.0, "snr_db": [10.0, 10.0], "colors": ["babble"]}))
    out, _ = augment(waveforms, lengths, ["A", "A", "B", "C"])
    babble = out[0] - waveforms[0]
    assert snr_db(waveforms[0], babble) == pytest.approx(10.0, abs=0.5)
    assert energy_at(babble, 440) < 1e-4 and energy_at(babble, 700) < 1e-4
    for own in (waveforms[0], waveforms[1]):
        correlation = (babble * own).sum() / (babble.norm() * own.norm())
        assert abs(correlation.item()) < 0.01
    assert energy_at(babble, 1000) > 0.3 and energy_at(babble, 1500) > 0.3
    assert energy_at(babble, 1000) + energy_at(babble, 1500) > 0.99


def test_babble_of_unknown_speakers_never_uses_the_clip_itself():
    freqs = [300, 500, 800, 1200]
    waveforms = torch.stack([sine(f) for f in freqs])
    augment = training(
        WaveformAugment(noise={"p": 1.0, "snr_db": [10.0, 10.0], "colors": ["babble"], "babble_talkers": 2})
    )
    noise = augment(waveforms, torch.full((4,), SR))[0] - waveforms
    for row, freq in enumerate(freqs):
        assert energy_at(noise[row], freq) < 1e-4
        others = [energy_at(noise[row], f) for f in freqs if f != freq]
        assert sum(others) > 0.99 and sum(e > 0.2 for e in others) == 2  # exactly two talkers


def test_babble_without_other_speakers_falls_back_to_pink_noise():
    waveforms = torch.stack([sine(440), sine(700)])
    augment = training(WaveformAugment(noise={"p": 1.0, "snr_db": [10.0, 10.0], "colors": ["babble"]}))
    noise = augment(waveforms, torch.full((2,), SR), ["A", "A"])[0] - waveforms
    for row in range(2):
        assert snr_db(waveforms[row], noise[row]) == pytest.approx(10.0, abs=0.5)
        assert energy_at(noise[row], 440) < 0.01 and energy_at(noise[row], 700) < 0.01
    half = SR // 2  # pink: the lower half of the band holds far more than the upper half
    power = torch.fft.rfft(noise[0].double()).abs().square()
    assert power[1 : half // 2].sum() > 5 * power[half // 2 :].sum()


def test_a_silent_clip_gives_no_nan_and_stays_silent():
    waveforms, lengths = random_batch([16000, 12000, 9000])
    waveforms[1] = 0.0
    augment = training(WaveformAugment(**ALL_ON))
    for _ in range(4):  # every colour gets drawn for some row
        out, out_lengths = augment(waveforms, lengths, ["a", "b", "c"])
        assert torch.isfinite(out).all()
        assert torch.all(out[1] == 0)
        assert out_lengths[1] > 0
    silent = torch.zeros(2, 4000)
    out, _ = training(WaveformAugment(noise={"p": 1.0, "colors": ["babble"]}))(silent, torch.tensor([4000, 3000]))
    assert torch.all(out == 0)


# --- shift and speed ------------------------------------------------------------------------------------------


def test_shift_rotates_the_valid_samples_and_keeps_the_padding_zero():
    waveforms, lengths = random_batch([9000, 6000, 7500, 3000])
    augment = training(WaveformAugment(shift={"p": 1.0, "max_seconds": 0.01}))
    out, out_lengths = augment(waveforms, lengths)
    assert torch.equal(out_lengths, lengths) and out.shape == waveforms.shape
    most = round(0.01 * SR)
    shifts = []
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(out[row, length:] == 0)
        matches = [s for s in range(-most, most + 1) if torch.equal(out[row, :length], waveforms[row, :length].roll(s))]
        assert len(matches) == 1
        shifts.extend(matches)
    assert any(shifts)


@pytest.mark.parametrize("factor", [1.1, 0.9])
def test_speed_moves_a_sine_to_the_scaled_frequency(factor):
    waveforms, lengths = sine(1000)[None], torch.tensor([SR])
    out, out_lengths = training(WaveformAugment(speed={"p": 1.0, "factors": [factor]}))(waveforms, lengths)
    new_length = round(SR / factor)
    assert out_lengths.tolist() == [new_length] and out.shape == (1, new_length)
    padded = 16 * SR  # zero-padding the FFT: bins 1 Hz / 16 apart
    peak = torch.fft.rfft(out[0].double(), n=padded).abs().argmax().item() * SR / padded
    assert peak == pytest.approx(1000 * factor, abs=10)
    middle = out[0, 2000:-2000]  # away from the edges, where the sinc runs out of samples
    assert middle.square().mean().sqrt().item() == pytest.approx(math.sqrt(0.5), rel=0.01)


def test_speeding_up_filters_out_what_would_pass_the_new_nyquist_frequency():
    # 7.9 kHz played 1.1 times faster is 8.69 kHz, above the 8 kHz Nyquist frequency: removed, not aliased to 7.31 kHz.
    waveforms, lengths = torch.stack([sine(7900), sine(3000)]), torch.tensor([SR, SR])
    out, _ = training(WaveformAugment(speed={"p": 1.0, "factors": [1.1]}))(waveforms, lengths)
    rms = out[:, 2000:-2000].square().mean(dim=1).sqrt()
    assert rms[0].item() < 0.05 * math.sqrt(0.5)
    assert rms[1].item() == pytest.approx(math.sqrt(0.5), rel=0.01)


def test_speed_returns_new_lengths_and_zero_padding_beyond_them():
    waveforms, lengths = random_batch([16000, 9000, 12345, 4000, 15000, 7000])
    augment = training(WaveformAugment(speed={"p": 1.0, "factors": [0.9, 1.1]}))
    out, out_lengths = augment(waveforms, lengths)
    assert out.dtype == torch.float32 and out_lengths.dtype == torch.long
    assert out.shape[1] == out_lengths.max().item()
    factors = set()
    for row, (length, new_length) in enumerate(zip(lengths.tolist(), out_lengths.tolist())):
        factor = next(f for f in (0.9, 1.1) if round(length / f) == new_length)
        factors.add(factor)
        assert torch.all(out[row, new_length:] == 0)
        assert out[row, :new_length].abs().max() > 0.5
    assert factors == {0.9, 1.1}


def test_speed_keeps_unselected_clips_as_they_are():
    waveforms, lengths = random_batch([8000, 6000])
    out, out_lengths = training(WaveformAugment(speed={"p": 0.0}))(waveforms, lengths)
    assert torch.equal(out, waveforms) and torch.equal(out_lengths, lengths)


# --- SpecAugment ----------------------------------------------------------------------------------------------


def test_spec_augment_masks_only_valid_frames_within_the_configured_widths():
    spec, valid = torch.rand(4, 40, 100) + 1.0, torch.tensor([100, 60, 30, 80])
    before = spec.clone()
    augment = training(SpecAugment(freq_masks=2, freq_width=6, time_masks=2, time_width=0.2, fill=0.0))
    masked_any = False
    for _ in range(10):
        out = augment(spec, valid)
        assert torch.equal(spec, before)  # not in place
        hit = out == 0
        assert torch.equal(out[~hit], spec[~hit])
        for row, frames in enumerate(valid.tolist()):
            assert not hit[row, :, frames:].any()
            if frames == 0:
                continue
            bands = hit[row, :, :frames].all(dim=1).sum().item()
            spans = hit[row, :, :frames].all(dim=0).sum().item()
            assert bands <= 2 * 6
            assert spans <= 2 * math.floor(0.2 * frames)
            # Every masked value is in a masked band or a masked span.
            covered = hit[row, :, :frames].all(dim=1)[:, None] | hit[row, :, :frames].all(dim=0)[None]
            assert torch.equal(covered, hit[row, :, :frames])
            masked_any |= bands > 0 and spans > 0
    assert masked_any


def test_spec_augment_masks_every_channel_alike_and_takes_widths_in_frames():
    spec = torch.rand(3, 2, 20, 50) + 1.0
    augment = training(SpecAugment(freq_masks=0, time_masks=1, time_width=7, fill=-5.0))
    out = augment(spec, torch.tensor([50, 50, 10]))
    hit = out == -5.0
    assert torch.equal(hit[:, 0], hit[:, 1])
    spans = hit[:, 0].all(dim=1).sum(dim=1)
    assert spans.max().item() <= 7 and spans.sum().item() > 0
    assert not hit[2, :, :, 10:].any()


# --- mixup ----------------------------------------------------------------------------------------------------


def test_mixup_mixes_the_batch_with_a_permutation():
    waveforms, lengths = random_batch([8000, 3000, 6000, 5000, 7000])
    labels = torch.arange(5)
    generator = torch.Generator().manual_seed(0)
    mixed, new_lengths, labels_a, labels_b, lam = mixup(waveforms, lengths, labels, 0.4, generator)
    perm = labels_b
    assert 0.0 <= lam <= 1.0 and isinstance(lam, float)
    assert sorted(perm.tolist()) == list(range(5)) and not torch.equal(perm, labels)
    assert torch.equal(labels_a, labels)
    assert torch.equal(new_lengths, torch.maximum(lengths, lengths[perm]))
    torch.testing.assert_close(mixed, lam * waveforms + (1 - lam) * waveforms[perm])
    again = mixup(waveforms, lengths, labels, 0.4, torch.Generator().manual_seed(0))
    assert again[4] == lam and torch.equal(again[3], perm)


@pytest.mark.parametrize("alpha", [0.4, 2.0])
def test_mixup_lambda_follows_beta(alpha):
    generator = torch.Generator().manual_seed(1)
    x, lengths, labels = torch.zeros(2, 4), torch.tensor([4, 4]), torch.tensor([0, 1])
    lams = torch.tensor([mixup(x, lengths, labels, alpha, generator)[4] for _ in range(2000)])
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)


# --- Augmentation ---------------------------------------------------------------------------------------------


def test_augmentation_builds_its_parts_and_round_trips_its_config():
    cfg = {
        "seed": 5,
        "gain": {"p": 0.3},
        "noise": {"colors": ["white", "babble"]},
        "spec": {"freq_masks": 1},
        "mixup": {"p": 1.0, "alpha": 0.2},
    }
    augmentation = Augmentation.from_config(cfg)
    assert isinstance(augmentation.waveform, WaveformAugment) and isinstance(augmentation.spec, SpecAugment)
    assert augmentation.waveform.shift is None and augmentation.waveform.gain == {"p": 0.3, "db": [-6.0, 6.0]}
    assert augmentation.mixup == {"p": 1.0, "alpha": 0.2}
    config = augmentation.config()
    assert config["speed"] is None and config["spec"]["freq_width"] == 8
    assert Augmentation.from_config(config).config() == config
    summary = augmentation.describe()
    assert "\n" not in summary and "mixup" in summary and "babble" in summary

    off = Augmentation.from_config(None)
    assert off.waveform is None and off.spec is None and off.mixup is None
    assert off.describe() == "no augmentation"
    assert off.mix(torch.zeros(2, 4), torch.tensor([4, 4]), torch.tensor([0, 1])) is None


def test_augmentation_mix_follows_its_probability():
    waveforms, lengths = random_batch([4000, 3000, 2000])
    labels = torch.tensor([0, 1, 2])
    always = Augmentation.from_config({"mixup": {"p": 1.0, "alpha": 0.4}})
    mixed = always.mix(waveforms, lengths, labels)
    assert mixed is not None and len(mixed) == 5
    never = Augmentation.from_config({"mixup": {"p": 0.0}})
    assert never.mix(waveforms, lengths, labels) is None


def test_augmentation_rejects_unknown_keys_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown augmentation key.*'specaugment'.*known.*'spec'"):
        Augmentation.from_config({"specaugment": {}})
    with pytest.raises(ValueError, match=r"unknown gain option.*'level'"):
        Augmentation.from_config({"gain": {"level": 3}})


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"gain": {"p": 1.5}}, r"gain\.p must lie in \[0, 1\]"),
        ({"mixup": {"p": -0.1}}, r"mixup\.p must lie in \[0, 1\]"),
        ({"gain": {"db": [6.0, -6.0]}}, r"gain\.db is an empty range"),
        ({"noise": {"snr_db": [30, 5]}}, r"noise\.snr_db is an empty range"),
        ({"noise": {"colors": ["violet"]}}, r"unknown noise colour 'violet'"),
        ({"noise": {"colors": []}}, r"noise\.colors must be a non-empty list"),
        ({"speed": {"factors": [1.0, 0.0]}}, r"speed\.factors must all be > 0"),
        ({"shift": {"max_seconds": -0.1}}, r"shift\.max_seconds must be >= 0"),
        ({"spec": {"freq_width": -2}}, r"spec\.freq_width must be an integer >= 0"),
        ({"spec": {"time_width": -0.5}}, r"spec\.time_width must be >= 0"),
        ({"mixup": {"alpha": 0}}, r"mixup\.alpha must be > 0"),
        ({"gain": "loud"}, r"gain must be a dict or None"),
    ],
)
def test_augmentation_rejects_bad_values(cfg, message):
    with pytest.raises(ValueError, match=message):
        Augmentation.from_config(cfg)


@pytest.mark.gpu
def test_runs_on_the_batch_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    device = torch.device("cuda")
    waveforms, lengths = random_batch([16000, 12000, 9000])
    augment = training(WaveformAugment(**ALL_ON))
    out, out_lengths = augment(waveforms.to(device), lengths.to(device), ["a", "b", None])
    assert out.device.type == "cuda" and out_lengths.device.type == "cuda" and torch.isfinite(out).all()
    masked = training(SpecAugment())(torch.rand(3, 40, 60, device=device), torch.tensor([60, 40, 20], device=device))
    assert masked.device.type == "cuda"
    mixed = mixup(out, out_lengths, torch.arange(3, device=device), 0.4, torch.Generator(device=device).manual_seed(0))
    assert mixed[0].device.type == "cuda" and mixed[1].device.type == "cuda"
