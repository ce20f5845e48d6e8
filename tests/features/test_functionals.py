"""NICU 600-d log-mel functionals: layout, a hand check against numpy/scipy, and masked padded batches.

Tolerances: the padded batch is compared with per-utterance calls at ``rtol=1e-5, atol=1e-5`` (float32 outputs of
float64 moments; on this CPU they are bit-identical, the slack is for other FFT/BLAS back-ends). The hand check
compares against numpy/scipy statistics of the same float32 log-mel matrix at ``rtol=1e-5, atol=1e-5``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch

from sermodels.audio import load_audio
from sermodels.features import LogMelFunctionals, MelSpectrogram, compute_deltas
from sermodels.features import functionals as functionals_module
from sermodels.features.functionals import LOG_EPS

EMODB_FILES = ("03a01Fa", "08b02Nb", "11a02Tc", "16b10Wb")  # four speakers, four emotions, different lengths
RTOL = 1e-5
ATOL = 1e-5


@pytest.fixture
def emodb_waveforms(emodb_root) -> list[torch.Tensor]:
    return [load_audio(emodb_root / "wav" / f"{stem}.flac") for stem in EMODB_FILES]


def pad_batch(waveforms: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waveforms])
    batch = torch.full((len(waveforms), int(lengths.max())), fill)
    for row, waveform in enumerate(waveforms):
        batch[row, : len(waveform)] = waveform
    return batch, lengths


def test_shape_names_and_finiteness(emodb_waveforms):
    functionals = LogMelFunctionals()
    names = functionals.feature_names()
    assert len(names) == 600 == functionals.dim and len(set(names)) == 600
    assert names[:2] == ["logmel_b00_mean", "logmel_b01_mean"]
    assert names[40] == "logmel_b00_std" and names[279] == "logmel_b39_range"
    assert names[280] == "d1_b00_mean" and names[320] == "d1_b00_std" and names[-1] == "d2_b39_kurt"
    features = functionals(emodb_waveforms[0])
    assert features.shape == (600,) and features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_padded_batch_equals_per_utterance_calls(emodb_waveforms):
    lengths = [len(w) for w in emodb_waveforms]
    assert len(set(lengths)) == len(lengths), "the test needs utterances of different lengths"
    functionals = LogMelFunctionals()
    single = torch.stack([functionals(w.unsqueeze(0))[0] for w in emodb_waveforms])
    for fill in (0.0, 0.7):  # what sits in the padding must not matter
        batch, lengths_tensor = pad_batch(emodb_waveforms, fill)
        batched = functionals(batch, lengths_tensor)
        torch.testing.assert_close(batched, single, rtol=RTOL, atol=ATOL)
    # Without lengths the padding counts as signal: the short utterances change, which is why lengths exist.
    unmasked = functionals(pad_batch(emodb_waveforms)[0])
    shortest = int(np.argmin(lengths))
    assert not torch.allclose(unmasked[shortest], single[shortest], rtol=1e-3, atol=1e-3)


def test_odd_n_fft_padded_batch_equals_per_utterance_and_frames_match(emodb_waveforms):
    # n_fft 481: torch.stft-style centring pads 240 samples each side, so an utterance of L samples has
    # 1 + (L - 1) // 160 frames, not 1 + L // 160; a wrong count leaks a padded frame into the statistics.
    functionals = LogMelFunctionals(n_fft=481)
    waveforms = [w[:n] for w, n in zip(emodb_waveforms, (8000, 8001, 8160, 12345))]
    single = torch.stack([functionals(w) for w in waveforms])
    batch, lengths = pad_batch(waveforms, fill=0.7)
    torch.testing.assert_close(functionals(batch, lengths), single, rtol=RTOL, atol=ATOL)
    stft = MelSpectrogram(16000, n_fft=481, win_length=480, hop_length=160, n_mels=40, window="hann")
    expected = torch.tensor([stft(w).shape[-1] for w in waveforms])
    assert torch.equal(functionals.num_frames(lengths), expected)
    log_mel, mask = functionals.log_mel(batch, lengths)
    assert torch.equal(mask.sum(dim=1), expected)


def test_float32_moments_match_float64(emodb_waveforms, monkeypatch):
    # Devices without float64 (Apple MPS) take the float32 path; emptying FLOAT64_DEVICE_TYPES runs it on the CPU.
    # Measured difference on these files: 2e-6 at most; tolerance 1e-5 (absolute and relative).
    assert functionals_module.moment_dtype("cpu") == torch.float64
    assert functionals_module.moment_dtype("mps") == torch.float32
    functionals = LogMelFunctionals()
    batch, lengths = pad_batch(emodb_waveforms)
    in_float64 = functionals(batch, lengths)
    silence = functionals(torch.zeros(1, 8000))
    monkeypatch.setattr(functionals_module, "FLOAT64_DEVICE_TYPES", frozenset())
    assert functionals_module.moment_dtype("cpu") == torch.float32
    in_float32 = functionals(batch, lengths)
    torch.testing.assert_close(in_float32, in_float64, rtol=1e-5, atol=1e-5)
    assert not torch.equal(in_float32, in_float64)  # the float32 path really ran
    assert torch.equal(functionals(torch.zeros(1, 8000)), silence)  # constant bands: std, skew, kurt exactly 0


def test_matches_numpy_statistics_of_the_same_log_mel(emodb_waveforms):
    waveform = emodb_waveforms[1]
    mel = MelSpectrogram(16000, n_fft=512, win_length=480, hop_length=160, n_mels=40, window="hann")
    log_mel = torch.log(mel(waveform) + LOG_EPS)  # (40, frames), centred reflect-padded frames
    delta1 = compute_deltas(log_mel)
    delta2 = compute_deltas(delta1)
    x, d1, d2 = (a.double().numpy() for a in (log_mel, delta1, delta2))

    def four(a: np.ndarray) -> list[np.ndarray]:
        return [a.mean(1), a.std(1), scipy.stats.skew(a, 1), scipy.stats.kurtosis(a, 1, fisher=True, bias=True)]

    expected = np.concatenate([*four(x), x.min(1), x.max(1), x.max(1) - x.min(1), *four(d1), *four(d2)])
    features = LogMelFunctionals()(waveform).double().numpy()
    np.testing.assert_allclose(features, expected, rtol=RTOL, atol=ATOL)


def test_excess_kurtosis_and_skewness_on_a_known_series():
    # A waveform whose log-mel is not needed: check the moment helper directly on a two-valued series.
    from sermodels.features.functionals import _masked_moments

    series = torch.tensor([[[0.0, 0.0, 0.0, 4.0, 99.0]]], dtype=torch.float64)  # last frame is padding
    mask = torch.tensor([[True, True, True, True, False]])
    mean, std, skew, kurt = (m.item() for m in _masked_moments(series, mask))
    assert mean == pytest.approx(1.0) and std == pytest.approx(np.sqrt(3.0))
    assert skew == pytest.approx(scipy.stats.skew([0, 0, 0, 4.0]))  # 2/sqrt(3)
    assert kurt == pytest.approx(scipy.stats.kurtosis([0, 0, 0, 4.0]))  # excess: 7/3 - 3


def test_constant_series_have_zero_std_skew_and_kurtosis():
    silence = torch.zeros(1, 8000)  # mel power 0 everywhere -> log-mel constant at log(LOG_EPS)
    features = LogMelFunctionals()(silence)[0]
    names = LogMelFunctionals().feature_names()
    values = dict(zip(names, features.tolist()))
    assert values["logmel_b07_mean"] == pytest.approx(np.log(LOG_EPS))
    assert values["logmel_b07_range"] == 0.0
    for group in ("logmel", "d1", "d2"):
        for stat in ("std", "skew", "kurt"):
            assert values[f"{group}_b07_{stat}"] == 0.0, f"{group}_b07_{stat}"
    assert torch.isfinite(features).all()


def test_config_round_trips_through_json(emodb_waveforms):
    functionals = LogMelFunctionals()
    config = json.loads(json.dumps(functionals.config()))
    assert config["n_mels"] == 40 and config["win_length"] == 480 and config["hop_length"] == 160
    assert config["n_fft"] == 512 and config["window"] == "hann" and config["log_eps"] == LOG_EPS
    rebuilt = LogMelFunctionals(**config)
    waveform = emodb_waveforms[2][:8000]
    assert torch.equal(functionals(waveform), rebuilt(waveform))
    assert len(functionals.state_dict()) == 0


def test_fewer_bands_change_the_dimension():
    functionals = LogMelFunctionals(n_mels=10)
    assert functionals.dim == 150 == len(functionals.feature_names())
    assert functionals(0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))).shape == (2, 150)


def test_bad_inputs_are_clear_errors():
    functionals = LogMelFunctionals()
    batch = torch.zeros(2, 4000)
    with pytest.raises(ValueError, match=r"items \[1\]"):
        functionals(batch, torch.tensor([4000, 100]))  # 100 samples < n_fft // 2 + 1
    with pytest.raises(ValueError, match=r"items \[0\]"):
        functionals(batch, torch.tensor([5000, 4000]))  # longer than the batch
    with pytest.raises(ValueError, match="shape"):
        functionals(batch, torch.tensor([4000]))
    with pytest.raises(ValueError, match="batch, time"):
        functionals(torch.zeros(1, 2, 4000))
    with pytest.raises(TypeError, match="floating"):
        functionals(torch.zeros(2, 4000, dtype=torch.int16))
