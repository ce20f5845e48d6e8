"""Native-torch front-end against torchaudio 2.11 outputs (../shared/reference/torchaudio_frontend.{npz,json}).

The npz holds torchaudio's outputs but not its input signals, so they are rebuilt here: the EMO-DB file decoded with
``load_audio``; ``0.1 * torch.randn(16000)`` from a generator seeded with 0; and a 0.5-amplitude linear chirp from
100 Hz to 7900 Hz over 1 s computed in float32 as below. The rebuilt signals reproduce the reference spectrograms to
~2e-7 of their peak, which is itself a check that they are the signals the reference was made from.

Tolerances (float32):
* spectra and filterbanks: ``rtol=1e-5`` plus ``atol=1e-6 x`` the array's peak. The FFT's float32 rounding error is
  relative to the frame's energy, not to one bin, so bins 60+ dB below the frame peak differ by more than 1e-5
  relative between FFT libraries while their absolute error stays ~1e-7 of the peak.
* dB (top_db=80): 1e-4 dB where the reference is within 40 dB of its peak, 5e-3 dB everywhere (cells near the
  -80 dB floor inherit the absolute spectral error above as a large relative one).
* deltas of log(mel + 1e-6): ``atol=1e-3`` log units, for the same reason (log of bins far below the peak).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from sermodels.audio import load_audio
from sermodels.features import (
    AmplitudeToDB,
    LogMelFunctionals,
    MelSpectrogram,
    Spectrogram,
    amplitude_to_db,
    compute_deltas,
    melscale_fbanks,
    num_frames,
)

SPEC_RTOL = 1e-5
SPEC_ATOL_OF_PEAK = 1e-6
DB_ATOL_NEAR_PEAK = 1e-4  # within DB_NEAR_RANGE of the peak
DB_NEAR_RANGE = 40.0
DB_ATOL = 5e-3
DELTA_ATOL = 1e-3
REFERENCE_LOG_EPS = 1e-6  # the json's note: deltas of log(mel + 1e-6)


@pytest.fixture
def reference(reference_dir) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((reference_dir / "torchaudio_frontend.json").read_text())
    with np.load(reference_dir / "torchaudio_frontend.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    return meta, arrays


@pytest.fixture
def signals(emodb_root, reference) -> dict[str, torch.Tensor]:
    t = torch.arange(16000, dtype=torch.float32) / 16000
    rebuilt = {
        "emodb_03a01Fa": load_audio(emodb_root / "wav" / "03a01Fa.flac"),
        "noise_1s": 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0)),
        "chirp_1s": 0.5 * torch.sin(2 * math.pi * (100.0 + (7900.0 - 100.0) / 2 * t) * t),
    }
    meta, _ = reference
    assert {name: len(x) for name, x in rebuilt.items()} == meta["signals"]
    return rebuilt


def build(config: dict) -> torch.nn.Module:
    """The module a reference configuration describes, built from its JSON fields (window as a string)."""
    common = {
        "n_fft": config["n_fft"],
        "win_length": config["win_length"],
        "hop_length": config["hop_length"],
        "window": config["window"],
        "power": config["power"],
        "center": config["center"],
        "pad_mode": config["pad_mode"],
    }
    if config["kind"] == "spec":
        return Spectrogram(**common)
    extra = {k: config[k] for k in ("n_mels", "f_min", "f_max", "norm", "mel_scale")}
    return MelSpectrogram(sample_rate=16000, **common, **extra)


def assert_spectra_close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    assert tuple(actual.shape) == expected.shape, f"{what}: shape {tuple(actual.shape)} != {expected.shape}"
    np.testing.assert_allclose(
        actual.numpy(), expected, rtol=SPEC_RTOL, atol=SPEC_ATOL_OF_PEAK * float(np.abs(expected).max()), err_msg=what
    )


@pytest.mark.filterwarnings(
    "ignore:1 of 128 mel filters are all zero:UserWarning"
)  # deepspectrum_mel128, as in torchaudio
def test_every_reference_array_matches(reference, signals):
    meta, arrays = reference
    checked = set()
    for name, config in meta["configs"].items():
        module = build(config)
        if config["kind"] == "mel":
            key = f"{name}/fbank"
            assert_spectra_close(module.fbank, arrays[key], key)
            checked.add(key)
        for signal_name, waveform in signals.items():
            key = f"{name}/{signal_name}"
            spec = module(waveform)
            assert_spectra_close(spec, arrays[key], key)
            checked.add(key)
            if config["kind"] != "mel":
                continue
            db = AmplitudeToDB("power", top_db=80)(spec).numpy()
            expected_db = arrays[f"{key}/db"]
            near = expected_db > expected_db.max() - DB_NEAR_RANGE
            np.testing.assert_allclose(db, expected_db, rtol=0, atol=DB_ATOL, err_msg=f"{key}/db")
            np.testing.assert_allclose(db[near], expected_db[near], rtol=0, atol=DB_ATOL_NEAR_PEAK, err_msg=f"{key}/db")
            deltas = compute_deltas(torch.log(spec + REFERENCE_LOG_EPS), win_length=5).numpy()
            np.testing.assert_allclose(deltas, arrays[f"{key}/deltas_w5"], rtol=0, atol=DELTA_ATOL, err_msg=key)
            checked.update({f"{key}/db", f"{key}/deltas_w5"})
    assert checked == set(arrays), f"reference arrays not checked: {sorted(set(arrays) - checked)}"


def test_avspnet_spectrogram_is_hamming_magnitude(reference):
    meta, _ = reference
    config = meta["configs"]["avspnet_spec"]
    assert (config["kind"], config["window"], config["power"]) == ("spec", "hamming", 1.0)
    spec = build(config)
    assert torch.equal(spec.window, torch.hamming_window(config["win_length"]))
    assert spec.power == 1.0


def test_melscale_fbanks_function_matches_module_and_reference(reference):
    meta, arrays = reference
    config = meta["configs"]["nicu_mel40_slaney"]
    fbank = melscale_fbanks(257, config["f_min"], config["f_max"], 40, 16000, norm="slaney", mel_scale="slaney")
    assert fbank.shape == (257, 40)
    assert_spectra_close(fbank, arrays["nicu_mel40_slaney/fbank"], "melscale_fbanks slaney")


def test_batched_equals_unbatched_and_leading_dims_kept():
    torch.manual_seed(0)
    waveforms = 0.1 * torch.randn(2, 3, 8000)
    mel = MelSpectrogram(n_fft=512, hop_length=160, n_mels=40)
    batched = mel(waveforms)
    assert batched.shape == (2, 3, 40, 1 + 8000 // 160)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(batched[i, j], mel(waveforms[i, j]), rtol=1e-5, atol=1e-6)


def test_float64_input_gives_float64_output_close_to_float32():
    torch.manual_seed(1)
    waveform = 0.1 * torch.randn(4000)
    spec = Spectrogram(n_fft=400, power=2.0)
    out64 = spec(waveform.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), spec(waveform), rtol=1e-4, atol=1e-5)
    mel = MelSpectrogram(n_mels=64)
    assert mel(waveform.double()).dtype == torch.float64


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        Spectrogram()(torch.zeros(1000, dtype=torch.int16))


def test_too_short_for_reflect_padding_is_a_clear_error():
    with pytest.raises(ValueError, match="too short for reflect padding"):
        Spectrogram(n_fft=512)(torch.zeros(100))


def test_window_string_equals_window_fn_and_conflicts_are_errors():
    waveform = torch.sin(torch.arange(3000) * 0.05)
    by_name = Spectrogram(n_fft=256, window="hamming")
    by_fn = Spectrogram(n_fft=256, window_fn=torch.hamming_window)
    assert torch.equal(by_name(waveform), by_fn(waveform))
    assert by_fn.config()["window"] == "hamming"
    assert torch.equal(Spectrogram(n_fft=8, window="rect").window, torch.ones(8))
    with pytest.raises(ValueError, match="not both"):
        Spectrogram(window="hann", window_fn=torch.hamming_window)
    with pytest.raises(ValueError, match="unknown window"):
        Spectrogram(window="kaiser")


def test_config_is_json_and_rebuilds_the_same_module():
    torch.manual_seed(2)
    waveform = 0.1 * torch.randn(5000)
    for module in (
        Spectrogram(n_fft=800, win_length=320, hop_length=160, window="hamming", power=1.0),
        MelSpectrogram(n_fft=512, win_length=480, hop_length=160, n_mels=40, norm="slaney", mel_scale="slaney"),
        AmplitudeToDB("magnitude", top_db=60.0),
    ):
        config = json.loads(json.dumps(module.config()))
        rebuilt = type(module)(**config)
        x = waveform if not isinstance(module, AmplitudeToDB) else waveform.abs().reshape(50, 100)
        assert torch.equal(module(x), rebuilt(x)), type(module).__name__


def test_custom_window_fn_works_but_is_not_serialisable():
    spec = Spectrogram(n_fft=64, window_fn=torch.bartlett_window)
    assert spec(torch.randn(640)).shape == (33, 21)
    with pytest.raises(ValueError, match="cannot be written to JSON"):
        spec.config()


def test_windows_and_filterbanks_stay_out_of_the_state_dict_and_follow_dtype_moves():
    mel = MelSpectrogram(n_mels=40)
    assert len(mel.state_dict()) == 0
    names = {name for name, _ in mel.named_buffers()}
    assert names == {"fbank", "spectrogram.window"}
    mel64 = mel.to(torch.float64)
    assert mel64.fbank.dtype == torch.float64 and mel64.spectrogram.window.dtype == torch.float64


@pytest.mark.parametrize("center", [True, False])
def test_num_frames_matches_the_spectrogram(center):
    spec = Spectrogram(n_fft=512, win_length=480, hop_length=160, center=center)
    lengths = torch.tensor([512, 513, 671, 672, 1000, 16000])
    expected = torch.tensor([spec(torch.zeros(int(n))).shape[-1] for n in lengths])
    assert torch.equal(num_frames(lengths, 160, center=center, n_fft=512), expected)
    assert torch.equal(spec.num_frames(lengths), expected)
    assert num_frames(torch.tensor([100]), 160, center=False, n_fft=512).tolist() == [0]
    with pytest.raises(ValueError, match="needs n_fft"):
        num_frames(lengths, 160, center=False)


@pytest.mark.parametrize("n_fft", [400, 401, 481])
@pytest.mark.parametrize("center", [True, False])
def test_num_frames_matches_the_spectrogram_for_odd_n_fft_and_padding(n_fft, center):
    # torch.stft(center=True) pads n_fft // 2 each side: with an odd n_fft that is one sample less than n_fft / 2.
    lengths = torch.tensor([481, 640, 641, 800, 801, 1601, 16000])
    for pad in (0, 3):
        spec = Spectrogram(n_fft=n_fft, hop_length=160, pad=pad, center=center)
        expected = torch.tensor([spec(torch.zeros(int(n))).shape[-1] for n in lengths])
        assert torch.equal(spec.num_frames(lengths), expected), (n_fft, pad)
        assert torch.equal(num_frames(lengths, 160, center=center, n_fft=n_fft, pad=pad), expected)
    with pytest.raises(ValueError, match="needs n_fft"):
        num_frames(lengths, 160, center=True)


def test_f_max_above_nyquist_is_an_error_naming_both():
    with pytest.raises(ValueError, match=r"f_max=9000.0 Hz.*8000.0 Hz.*sample_rate=16000"):
        melscale_fbanks(257, 0.0, 9000.0, 40, 16000)
    with pytest.raises(ValueError, match="Nyquist"):
        MelSpectrogram(sample_rate=16000, f_max=8001.0)


def test_all_zero_mel_filters_warn_with_their_count():
    with pytest.warns(UserWarning, match=r"(\d+) of 128 mel filters are all zero.*fewer mels.*larger n_fft") as caught:
        fbank = melscale_fbanks(65, 0.0, 8000.0, 128, 16000)  # n_fft 128: 65 bins for 128 bands
    empty = int((fbank.amax(dim=0) == 0).sum())
    assert empty > 0 and f"{empty} of 128" in str(caught[0].message)


def test_only_configurations_with_empty_filters_warn(reference):
    # Our defaults (the NICU functionals, whose configuration the released SVM uses) and the EmoNet/NICU reference
    # configurations have no empty filter and must not warn. torchaudio's own MelSpectrogram() defaults (n_fft 400,
    # 128 mels) and the Deep Spectrum 128-mel configuration do have empty filters (torchaudio warns there too): the
    # warning must give the same count as torchaudio's filterbank has empty columns.
    meta, arrays = reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LogMelFunctionals()
        MelSpectrogram(n_fft=512, win_length=480, hop_length=160, n_mels=40)
        for name, config in meta["configs"].items():
            if config["kind"] == "spec" or not (arrays[f"{name}/fbank"].max(axis=0) == 0).any():
                build(config)
    for name, config in meta["configs"].items():
        if config["kind"] == "mel" and (arrays[f"{name}/fbank"].max(axis=0) == 0).any():
            empty = int((arrays[f"{name}/fbank"].max(axis=0) == 0).sum())
            with pytest.warns(UserWarning, match=f"^{empty} of {config['n_mels']} mel filters are all zero"):
                build(config)
    with pytest.warns(UserWarning, match="^4 of 128 mel filters are all zero"):
        MelSpectrogram()


def test_amplitude_to_db_top_db_is_per_spectrogram():
    loud = torch.full((4, 5), 1e4)
    quiet = torch.full((4, 5), 1e-2)
    quiet[0, 0] = 1e-9
    batch = torch.stack([loud, quiet])
    to_db = AmplitudeToDB("power", top_db=20.0)
    batched = to_db(batch)
    assert torch.equal(batched[0], to_db(loud)) and torch.equal(batched[1], to_db(quiet))
    assert batched[1].min().item() == pytest.approx(-40.0)  # floored at its own peak (-20 dB) minus 20 dB
    assert amplitude_to_db(torch.tensor([[100.0]]), 20.0, 1e-10, 0.0).item() == pytest.approx(40.0)
    assert amplitude_to_db(torch.tensor([[0.0]]), 10.0, 1e-10, 0.0).item() == pytest.approx(-100.0)


def test_compute_deltas_of_a_ramp_is_its_slope_with_replicated_edges():
    ramp = torch.arange(10, dtype=torch.float32).repeat(3, 1) * 2.0  # (3, 10), slope 2 per frame
    deltas = compute_deltas(ramp, win_length=5)
    assert deltas.shape == ramp.shape
    torch.testing.assert_close(deltas[:, 2:-2], torch.full((3, 6), 2.0))
    # first frame: padded with two copies of frame 0 -> (1*(2-0) + 2*(4-0)) / 10 = 1.0
    torch.testing.assert_close(deltas[:, 0], torch.full((3,), 1.0))
    with pytest.raises(ValueError, match="win_length"):
        compute_deltas(ramp, win_length=2)


@pytest.mark.gpu
def test_runs_on_cuda_like_on_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(3)
    waveform = 0.1 * torch.randn(2, 16000)
    mel = MelSpectrogram(n_fft=512, win_length=480, hop_length=160, n_mels=40)
    on_gpu = mel.to("cuda")(waveform.to("cuda"))
    assert on_gpu.device.type == "cuda"
    expected = MelSpectrogram(n_fft=512, win_length=480, hop_length=160, n_mels=40)(waveform)
    torch.testing.assert_close(on_gpu.cpu(), expected, rtol=SPEC_RTOL, atol=SPEC_ATOL_OF_PEAK * float(expected.max()))
