"""Synthetic long recordings on real EMO-DB audio: manifest geometry, sample-exact positions, SNR, determinism,
bounded memory, peak protection and the errors."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import corpus_root

from sermodels.audio import load_audio
from sermodels.data import load_corpus
from sermodels.data.base import Item
from sermodels.data.longform import (
    PEAK_LIMIT,
    LongformConfig,
    Placed,
    _Pink,
    build_longform,
    main,
    read_manifest,
    write_manifest,
)
from sermodels.data.longform import test_speaker_items as speaker_items

RATE = 16000
LSB = 1 / 32768
SNR_TOLERANCE_DB = 1.0


@pytest.fixture(scope="module")
def emodb_items() -> dict[str, list[Item]]:
    root = corpus_root("emodb")
    return {"test": speaker_items({"emodb": root}), "train": speaker_items({"emodb": root}, "train")}


@pytest.fixture(scope="module")
def silent_build(emodb_items, tmp_path_factory) -> tuple[Path, list[Placed], LongformConfig]:
    config = LongformConfig(duration=90.0, gap=(0.3, 4.0), backgrounds=("silence",), seed=3)
    out = tmp_path_factory.mktemp("silent") / "rec.flac"
    rows = build_longform(emodb_items["test"], out, config, manifest=out.with_suffix(".csv"))
    return out, rows, config


def source(row: Placed) -> np.ndarray:
    return load_audio(row.path, RATE).numpy().astype(np.float64) * 10 ** (row.gain_db / 20)


def test_manifest_geometry(silent_build):
    out, rows, config = silent_build
    assert len(rows) > 10 and read_manifest(out.with_suffix(".csv")) == rows
    assert sf.info(str(out)).frames == round(config.duration * RATE)
    assert sf.info(str(out)).subtype == "PCM_16"
    ends = [0.0] + [row.end for row in rows]
    for previous_end, row in zip(ends, rows):
        assert round(row.start * RATE) / RATE == row.start and round(row.end * RATE) / RATE == row.end
        gap = row.start - previous_end  # the first gap is from the start of the recording
        assert config.gap[0] - 1 / RATE <= gap <= config.gap[1] + 1 / RATE
        assert row.start < row.end <= config.duration
        assert row.snr_db is None and row.speaker in {"03", "08"}
        assert row.arousal in {"low", "high"} and row.valence in {"positive", "non-positive"}
    assert config.duration - rows[-1].end < config.gap[1] + 10  # filled with background after the last utterance


def test_utterances_are_at_their_manifest_position(silent_build):
    out, rows, _ = silent_build
    audio, _ = sf.read(str(out), dtype="float64")
    for row in rows[:12]:
        start, end = round(row.start * RATE), round(row.end * RATE)
        expected = source(row)
        assert end - start == len(expected)
        lags = range(-3, 4)
        scores = [np.corrcoef(audio[start + lag : end + lag], expected)[0, 1] for lag in lags]
        assert scores[3] > 0.9999 and int(np.argmax(scores)) == 3, (row.item_id, scores)
        assert np.abs(audio[start:end] - expected).max() <= LSB  # the recorded gain is the applied one
    gap_end = round(rows[0].start * RATE)
    assert not np.any(audio[:gap_end])  # silence is digital zero


@pytest.mark.parametrize("kind", ["pink", "babble"])
def test_measured_snr_matches_the_drawn_one(kind, emodb_items, tmp_path):
    scene = (40.0, 60.0) if kind == "pink" else (200.0, 200.0)
    config = LongformConfig(duration=100.0, gap=(2.0, 6.0), backgrounds=(kind,), scene=scene, seed=5)
    out = tmp_path / "rec.wav"
    rows = build_longform(emodb_items["test"], out, config, babble=emodb_items["train"])
    audio, _ = sf.read(str(out), dtype="float64")
    margin = round(0.05 * RATE)
    scenes: dict[float, list[Placed]] = {}
    for row in rows:
        scenes.setdefault(row.snr_db, []).append(row)
    checked = 0
    for snr, group in scenes.items():
        if len(group) < 3:
            continue
        noise = np.concatenate(
            [audio[round(a.end * RATE) + margin : round(b.start * RATE) - margin] for a, b in zip(group, group[1:])]
        )
        clean = [source(row) for row in group]
        speech = sum(_active_energy(x) for x in clean) / sum(_active_count(x) for x in clean)
        measured = 10 * math.log10(speech / np.mean(noise**2))
        print(f"{kind}: drawn {snr:.2f} dB, measured {measured:.2f} dB")
        assert abs(measured - snr) <= SNR_TOLERANCE_DB, (kind, snr, measured)
        checked += 1
    assert checked >= 1


def _active_mask(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = np.pad(samples, (0, -len(samples) % 320)).reshape(-1, 320)
    power = np.mean(frames**2, axis=1)
    return frames, power >= power.max() * 1e-4


def _active_energy(samples: np.ndarray) -> float:
    frames, active = _active_mask(samples)
    return float(np.sum(frames[active] ** 2))


def _active_count(samples: np.ndarray) -> int:
    frames, active = _active_mask(samples)
    return int(active.sum()) * 320


def test_silence_dither_is_tiny_and_optional(emodb_items, tmp_path):
    config = LongformConfig(duration=8.0, gap=(0.5, 1.0), backgrounds=("silence",), silence_dither_db=-80.0)
    rows = build_longform(emodb_items["test"], tmp_path / "dither.wav", config)
    audio, _ = sf.read(str(tmp_path / "dither.wav"), dtype="float64")
    lead = audio[round(0.05 * RATE) : round(rows[0].start * RATE) - round(0.05 * RATE)]
    assert np.any(lead) and abs(10 * math.log10(np.mean(lead**2)) + 80.0) < 1.5


def test_same_seed_same_bytes_other_seed_differs(emodb_items, tmp_path):
    config = LongformConfig(duration=45.0, gap=(0.3, 3.0), scene=(10.0, 20.0), seed=11)
    built = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        out = tmp_path / f"{name}.flac"
        cfg = LongformConfig(**{**config.__dict__, "seed": seed})
        build_longform(emodb_items["test"], out, cfg, babble=emodb_items["train"], manifest=out.with_suffix(".csv"))
        built.append((out.read_bytes(), out.with_suffix(".csv").read_bytes()))
    assert built[0] == built[1]
    assert built[0][0] != built[2][0] and built[0][1] != built[2][1]


def build_peak_memory(items: list[Item], babble: list[Item], out: Path, config: LongformConfig) -> int:
    """Peak memory traced while building (numpy arrays report their buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        build_longform(items, out, config, babble=babble)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_twenty_minutes_in_bounded_memory(emodb_items, tmp_path):
    peaks = {}
    for duration in (240.0, 1200.0):
        config = LongformConfig(duration=duration, scene=(60.0, 180.0), seed=2)
        out = tmp_path / f"{duration:.0f}.flac"
        peaks[duration] = build_peak_memory(emodb_items["test"], emodb_items["train"], out, config)
    whole = 1200.0 * RATE * 4  # the 20-minute recording in float32
    print(f"peak {peaks[1200.0] / 1e6:.1f} MB (4 min: {peaks[240.0] / 1e6:.1f} MB); recording {whole / 1e6:.1f} MB")
    assert peaks[1200.0] < whole / 5
    assert peaks[1200.0] < 1.5 * peaks[240.0]  # five times longer, not five times the memory


def test_peak_protection_lowers_the_recorded_gain(emodb_items, tmp_path):
    config = LongformConfig(
        duration=30.0, gap=(0.3, 1.0), backgrounds=("pink",), snr_db=(30.0, 30.0), level_db=(24.0, 24.0), seed=1
    )
    out = tmp_path / "loud.wav"
    rows = build_longform(emodb_items["test"], out, config)
    audio, _ = sf.read(str(out), dtype="float64")
    assert np.abs(audio).max() <= PEAK_LIMIT + LSB
    assert all(row.gain_db < 24.0 for row in rows)
    row = rows[0]
    start, end = round(row.start * RATE), round(row.end * RATE)
    assert np.corrcoef(audio[start:end], source(row))[0, 1] > 0.998  # turned down, not clipped


def test_pink_noise_is_continuous_and_one_over_f():
    stream = _Pink(np.random.default_rng(0), RATE)
    pieces = np.concatenate([stream.take(n) for n in (1000, 70000, 3, 90000, 40000)])
    whole = _Pink(np.random.default_rng(0), RATE).take(len(pieces))
    np.testing.assert_array_equal(pieces, whole)  # block boundaries do not change the stream
    steps = np.abs(np.diff(whole))
    assert steps.max() < 8 * steps.std() + steps.mean()  # no clicks at the chunk joins
    assert abs(np.mean(whole**2) - 1) < 0.1
    spectrum = np.abs(np.fft.rfft(whole[: 1 << 17])) ** 2
    freqs = np.fft.rfftfreq(1 << 17, 1 / RATE)
    band = (freqs > 100) & (freqs < 4000)
    slope = np.polyfit(np.log(freqs[band]), np.log(spectrum[band]), 1)[0]
    assert -1.15 < slope < -0.85


def test_manifest_round_trip(tmp_path):
    rows = [
        Placed(0.5, 1.25, "emodb", "03a01Wa", "/x/03a01Wa.flac", "03", "anger", "high", "non-positive", -3.5, None),
        Placed(2.0, 3.0, "urdu", "SM1_F1_A1", "/x/a.flac", "SM1", "angry", "high", "non-positive", 1 / 3, 7.25),
    ]
    assert read_manifest(write_manifest(tmp_path / "m.csv", rows)) == rows
    (tmp_path / "bad.csv").write_text("start,end\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: not a longform manifest"):
        read_manifest(tmp_path / "bad.csv")


def test_test_speaker_items_follow_the_fixed_split(emodb_items):
    corpus = load_corpus("emodb", corpus_root("emodb"))
    assert emodb_items["test"] == corpus.split("fixed")["test"]
    assert not {item.speaker for item in emodb_items["test"]} & {item.speaker for item in emodb_items["train"]}


def test_command_line_writes_the_manifest_beside(tmp_path):
    root = corpus_root("emodb")
    out = tmp_path / "rec.flac"
    lines: list[str] = []
    argv = ["--corpora", f"EMODB={root}", "--duration", "20", "--out", str(out), "--gap", "0.3", "3"]
    assert main(argv, echo=lines.append) == 0
    assert out.is_file() and read_manifest(tmp_path / "rec.csv") and "rec.csv" in lines[0]


def test_errors_name_the_file_and_the_problem(emodb_items, tmp_path):
    items = emodb_items["test"][:2]
    silent = LongformConfig(duration=20.0, gap=(0.3, 1.0), backgrounds=("silence",))
    with pytest.raises(ValueError, match=r"rec.flac: no items"):
        build_longform([], tmp_path / "rec.flac", silent)
    with pytest.raises(FileNotFoundError, match="output folder .*missing does not exist"):
        build_longform(items, tmp_path / "missing" / "rec.flac", silent)
    with pytest.raises(ValueError, match=r"rec.mp4: unsupported output format"):
        build_longform(items, tmp_path / "rec.mp4", silent)
    with pytest.raises(ValueError, match="gap range .* is invalid"):
        LongformConfig(duration=10.0, gap=(5.0, 1.0))
    with pytest.raises(ValueError, match="gap range .* low end"):
        LongformConfig(duration=10.0, gap=(-1.0, 1.0))
    with pytest.raises(ValueError, match="unknown background 'rain'"):
        LongformConfig(duration=10.0, backgrounds=("pink", "rain"))
    with pytest.raises(ValueError, match="babble items"):
        build_longform(items, tmp_path / "rec.flac", LongformConfig(duration=10.0))

    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    bad = Item("broken", str(broken), "anger", "03", None, None, "emodb")
    with pytest.warns(UserWarning, match="broken.flac: .*skipped"):
        rows = build_longform([bad, *items], tmp_path / "rec.flac", silent)
    assert rows and all(row.item_id != "broken" for row in rows)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none of the 1 items could be decoded"):
        build_longform([bad], tmp_path / "rec.flac", silent)
