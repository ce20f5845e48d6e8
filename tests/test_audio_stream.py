"""``stream_audio``: blocks that join into ``load_audio``, resuming at a block, damaged files, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from sermodels import audio
from sermodels.audio import AudioBlock, AudioError, load_audio, stream_audio

BLOCK_SECONDS = 1.3  # blocks that are not a whole number of read pieces nor of seconds


def _write(path, seconds: float, rate: int, channels: int = 1, subtype: str = "PCM_16", seed: int = 0):
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    sf.write(path, tone.astype(np.float32), rate, subtype=subtype)
    return path


def _joined(blocks: list[AudioBlock]) -> torch.Tensor:
    return torch.cat([b.samples for b in blocks])


@pytest.fixture
def flac16k(tmp_path):
    return _write(tmp_path / "a.flac", 7.7, 16_000)


@pytest.fixture
def wav44k(tmp_path):
    return _write(tmp_path / "b.wav", 6.1, 44_100, channels=2)


def test_blocks_join_into_load_audio_exactly_at_the_file_rate(flac16k):
    blocks = list(stream_audio(flac16k, block_seconds=BLOCK_SECONDS))
    size = round(BLOCK_SECONDS * 16_000)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert [b.start for b in blocks] == [i * size for i in range(len(blocks))]
    assert all(len(b.samples) == size for b in blocks[:-1]) and 0 < len(blocks[-1].samples) <= size
    assert all(b.problem is None and b.samples.dtype == torch.float32 for b in blocks)
    assert torch.equal(_joined(blocks), load_audio(flac16k))


def test_resampled_stereo_blocks_join_into_load_audio(wav44k):
    whole = load_audio(wav44k)
    blocks = list(stream_audio(wav44k, 16_000, block_seconds=BLOCK_SECONDS))
    assert all(len(b.samples) == round(BLOCK_SECONDS * 16_000) for b in blocks[:-1])
    assert len(_joined(blocks)) == len(whole)
    torch.testing.assert_close(_joined(blocks), whole, atol=1e-6, rtol=0)


def _count_reads(monkeypatch) -> list[int]:
    frames: list[int] = []
    read = sf.SoundFile.read

    def counting(self, *args, **kwargs):
        out = read(self, *args, **kwargs)
        frames.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    return frames


def test_start_block_seeks_at_the_file_rate(flac16k, monkeypatch):
    whole = load_audio(flac16k)
    frames = _count_reads(monkeypatch)
    blocks = list(stream_audio(flac16k, block_seconds=BLOCK_SECONDS, start_block=3))
    first = 3 * round(BLOCK_SECONDS * 16_000)
    assert (blocks[0].index, blocks[0].start) == (3, first)
    assert torch.equal(_joined(blocks), whole[first:])
    assert sum(frames) == len(whole) - first  # nothing before the block was decoded
    assert list(stream_audio(flac16k, block_seconds=BLOCK_SECONDS, start_block=50)) == []


def test_start_block_when_resampling_matches_an_uninterrupted_run(wav44k, monkeypatch):
    whole = load_audio(wav44k)
    frames = _count_reads(monkeypatch)
    blocks = list(stream_audio(wav44k, block_seconds=BLOCK_SECONDS, start_block=3))
    first = 3 * round(BLOCK_SECONDS * 16_000)
    assert (blocks[0].index, blocks[0].start) == (3, first)
    torch.testing.assert_close(_joined(blocks), whole[first:], atol=1e-6, rtol=0)
    decoded_before = sum(frames) - (round(6.1 * 44_100) - first * 44_100 // 16_000)
    assert 0 < decoded_before <= audio.RESAMPLE_WARMUP_FRAMES + 441  # only the warm-up margin


def test_nan_samples_are_zeroed_and_reported(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.full(16_000 * 3, 0.1, dtype=np.float32)
    x[20_000:20_010] = np.nan
    x[20_500] = np.inf
    sf.write(path, x, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/Inf"):
        load_audio(path)
    blocks = list(stream_audio(path, block_seconds=1.0))
    assert [b.problem is None for b in blocks] == [True, False, True]
    assert blocks[1].problem == "samples 20000..20500: 11 NaN/Inf samples set to 0"
    assert (blocks[1].samples[4000:4010] == 0).all() and blocks[1].samples[4500] == 0
    assert torch.isfinite(_joined(blocks)).all()
    resampled = list(stream_audio(path, 8_000, block_seconds=1.0))
    assert "11 NaN/Inf samples set to 0" in resampled[1].problem and torch.isfinite(_joined(resampled)).all()


def test_truncated_flac_reports_on_the_last_block_without_raising(tmp_path):
    path = _write(tmp_path / "long.flac", 12.0, 16_000)
    whole = load_audio(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    blocks = list(stream_audio(cut, block_seconds=1.0))
    assert all(b.problem is None for b in blocks[:-1])
    assert blocks[-1].problem is not None and len(_joined(blocks)) < len(whole)
    assert torch.equal(_joined(blocks), whole[: len(_joined(blocks))])  # what decoded is right
    resampled = list(stream_audio(cut, 8_000, block_seconds=1.0))
    assert resampled[-1].problem is not None


def test_truncated_wav_reports_on_the_last_block(tmp_path):
    path = _write(tmp_path / "long.wav", 4.0, 16_000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:50_000])
    blocks = list(stream_audio(cut, block_seconds=1.0))
    assert "truncated" in blocks[-1].problem and all(b.problem is None for b in blocks[:-1])


def test_unopenable_files_raise_naming_the_file(tmp_path):
    missing = tmp_path / "missing.flac"
    with pytest.raises(AudioError, match="missing.flac: no such file"):
        stream_audio(missing)  # raised on the call, not on the first next()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="junk.wav: not an audio file"):
        stream_audio(junk)
    wide = _write(tmp_path / "wide.wav", 0.5, 16_000, channels=6)
    with pytest.raises(AudioError, match="6 channels"):
        stream_audio(wide)


def test_memory_stays_bounded_over_a_ten_minute_file(tmp_path):
    path = tmp_path / "ten.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 16_000, 1, "PCM_16") as f:
        for _ in range(10):
            f.write((0.1 * rng.standard_normal(60 * 16_000)).astype(np.float32))
    float32_size = 600 * 16_000 * 4
    tracemalloc.start()
    try:
        count = sum(len(b.samples) for b in stream_audio(path, block_seconds=30.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 600 * 16_000
    block_size = 30 * 16_000 * 4
    message = f"peak {peak / 1e6:.1f} MB for a {float32_size / 1e6:.1f} MB file"
    assert peak < 4 * block_size and peak < float32_size / 5, message  # measured: 6.1 MB, ~3 blocks


def test_load_region_equals_the_whole_file_decoded(tmp_path):
    """A region read back (how daylong segments are scored) is exactly those samples of load_audio, at the file's
    own rate and resampled (44.1 kHz stereo -> 16 kHz), and past-the-end regions are refused naming the file."""
    from sermodels.audio import AudioError, load_audio, load_region

    noise = np.random.default_rng(1).standard_normal((44_100 * 4, 2)).astype(np.float32) * 0.1
    resampled = tmp_path / "stereo.wav"
    sf.write(resampled, noise, 44_100, subtype="FLOAT")
    whole = load_audio(resampled, 16_000)
    for start, end in [(0, 800), (12_345, 40_001), (50_000, 64_000)]:
        assert torch.equal(load_region(resampled, start, end, 16_000), whole[start:end])
    native = tmp_path / "mono.flac"
    sf.write(native, noise[:48_000, 0] * 0.5, 16_000)
    assert torch.equal(load_region(native, 100, 5_000, 16_000), load_audio(native, 16_000)[100:5_000])
    with pytest.raises(AudioError, match="mono.flac"):
        load_region(native, 60_000, 70_000, 16_000)
