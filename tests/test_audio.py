"""Decoding, downmix, resampling and every bad-input error of sermodels.audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from sermodels.audio import AudioError, audio_info, load_audio


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_real_corpus_file(emodb_root):
    path = emodb_root / "wav" / "03a01Fa.flac"
    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert len(wave) == audio_info(path).frames == 30372
    assert 0 < wave.abs().max() <= 1


def test_stereo_48k_wav_is_downmixed_and_resampled(tmp_path):
    left, right = _tone(48000, 1.0, 440.0), _tone(48000, 1.0, 440.0) * 0.5
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 48000)
    wave = load_audio(path, 16000)
    assert len(wave) == 16000
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    # The average of the channels: amplitude (0.3 + 0.15) / 2.
    assert np.isclose(np.abs(wave.numpy()[2000:-2000]).max(), 0.225, atol=5e-3)


def test_native_rate_kept_with_none(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, _tone(22050, 0.5), 22050)
    assert len(load_audio(path, None)) == 11025


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not audio at all"), "not an audio file"),
    ],
    ids=["missing", "empty", "text"],
)
def test_bad_files_name_path_and_problem(tmp_path, make, message):
    path = tmp_path / "clip.wav"
    make(path)
    with pytest.raises(AudioError, match=message) as err:
        load_audio(path)
    assert str(path) in str(err.value)
    assert err.value.path == str(path)


def test_truncated_wav_and_flac(tmp_path, emodb_root):
    wav = tmp_path / "full.wav"
    sf.write(wav, _tone(16000, 1.0), 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav.read_bytes()[:12000])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(cut)
    flac = (emodb_root / "wav" / "03a01Fa.flac").read_bytes()
    cut_flac = tmp_path / "cut.flac"
    cut_flac.write_bytes(flac[: len(flac) // 2])
    with pytest.raises(AudioError, match="truncated|corrupt"):
        load_audio(cut_flac)


def test_nan_samples(tmp_path):
    data = _tone(16000, 0.5)
    data[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 NaN/Inf"):
        load_audio(path)


def test_too_short_and_wrong_rate(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _tone(16000, 0.05), 16000)
    with pytest.raises(AudioError, match="too short: 0.050 s"):
        load_audio(path, min_duration=0.1)
    with pytest.raises(AudioError, match="sample rate is 16000 Hz, expected 8000 Hz"):
        load_audio(path, 8000, resample=False)


def test_multichannel_layout_rejected(tmp_path):
    path = tmp_path / "surround.wav"
    sf.write(path, np.stack([_tone(16000, 0.2)] * 6, axis=1), 16000)
    with pytest.raises(AudioError, match="6 channels"):
        load_audio(path)
    assert len(load_audio(path, max_channels=6)) == 3200


def test_streamed_wav_with_placeholder_sizes_is_accepted(tmp_path):
    """WAVs written to a pipe keep 0xFFFFFFFF as their RIFF and data sizes; libsndfile reads them to the end."""
    path = tmp_path / "ok.wav"
    sf.write(path, _tone(16000, 0.5), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.index(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    assert torch.equal(load_audio(streamed), load_audio(path))


def test_frames_for_is_not_fooled_by_float_error():
    from sermodels.audio import frames_for

    assert frames_for(4.03, 16000) == 64480
    assert frames_for(0.5, 16000) == 8000 and frames_for(1 / 16000 + 1e-9, 16000) == 2
