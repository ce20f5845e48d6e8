"""Pseudo-sessions built from real EMO-DB utterances: plan, audio, traces, partitions and the data module."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import soundfile as sf
from conftest import corpus_root

from sermodels import labels
from sermodels.audio import load_audio
from sermodels.data import load_corpus
from sermodels.data.base import Item
from sermodels.data.sessions import (
    AV_POINTS,
    RAVDESS_NORMAL_SCALE,
    SessionConfig,
    SessionDataModule,
    av_point,
    build_sessions,
    delayed,
    load_sessions,
    smooth,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def emodb():
    return load_corpus("emodb", corpus_root("emodb"))


@pytest.fixture(scope="module")
def built(emodb, tmp_path_factory):
    cache = tmp_path_factory.mktemp("sessions")
    return cache, build_sessions(emodb, cache, SessionConfig())


def _manifest(table):
    with (table.parent / "manifest.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_points_follow_the_circumplex_signs():
    for category, (arousal, valence) in AV_POINTS.items():
        level_a, level_v = labels.placement(category)
        assert (arousal > 0) == (level_a == "high") and arousal != 0
        assert np.sign(valence) == {"negative": -1, "neutral": 0, "positive": 1}[level_v]


def test_ravdess_normal_intensity_is_scaled():
    strong = Item("a", "a.wav", "angry", "01", None, None, "ravdess", extra={"intensity": "strong"})
    normal = Item("b", "b.wav", "angry", "01", None, None, "ravdess", extra={"intensity": "normal"})
    assert av_point(strong) == AV_POINTS["anger"]
    assert av_point(normal) == pytest.approx(tuple(v * RAVDESS_NORMAL_SCALE for v in AV_POINTS["anger"]))


def test_every_utterance_once_and_partitions_follow_the_corpus(emodb, built):
    _, table = built
    rows = _manifest(table)
    assert sorted(r["item"] for r in rows) == sorted(item.id for item in emodb.items)
    sessions = load_sessions(table, "emodb_sessions")
    split = emodb.split("fixed")
    for part in ("train", "dev", "test"):
        speakers = {item.speaker for item in sessions.items if item.split == part}
        assert speakers == {item.speaker for item in split[part]}
    lengths = [sf.info(item.path).duration for item in sessions.items]
    # A speaker's sessions are 60-300 s, except a speaker with less than a minute of speech (none in EMO-DB) and a
    # remainder joined to the speaker's last session.
    assert min(lengths) >= 60.0 and max(lengths) < 300.0 + 60.0


def test_audio_holds_each_utterance_at_its_place(built):
    _, table = built
    rows = _manifest(table)[:5]
    session_audio, rate = sf.read(table.parent / "audio" / f"{rows[0]['session']}.flac", dtype="float32")
    assert rate == 16000
    corpus = load_corpus("emodb", corpus_root("emodb"))
    by_id = {item.id: item for item in corpus.items}
    for row in rows:
        original = load_audio(by_id[row["item"]].path).numpy()
        start = round(float(row["start"]) * 16000)  # the manifest's times are rounded to 0.1 ms: +-2 samples
        shifted = [session_audio[s : s + len(original)] for s in range(start - 2, start + 3)]
        errors = [np.sqrt(np.mean((placed - original) ** 2)) for placed in shifted]
        # 16-bit storage plus the -60 dBFS noise floor: the difference stays at the floor's level
        assert min(errors) < 3e-3


def test_trace_reaches_each_utterance_point(built):
    _, table = built
    rows = _manifest(table)
    sessions = {item.id: item for item in load_sessions(table, "emodb_sessions").items}
    checked = 0
    for row in rows:
        start, end = float(row["start"]), float(row["end"])
        if end - start < 5.0:
            continue  # zero-phase smoothing (tau 1 s) settles some seconds away from both edges
        session = next(s for key, s in sessions.items() if key.endswith(row["session"]))
        trace = session.trace.frames(25.0)
        frame = int((start + end) / 2 * 25)
        expected = (float(row["arousal"]), float(row["valence"]))
        assert trace[frame] == pytest.approx(expected, abs=0.2)
        checked += 1
    assert checked >= 3


def test_build_is_deterministic_and_cached(emodb, built, tmp_path):
    cache, table = built
    assert build_sessions(emodb, cache, SessionConfig()) == table  # found, not rebuilt
    again = build_sessions(emodb, tmp_path, SessionConfig())
    for name in ("sessions.csv", "manifest.csv", "traces/emodb-03-s00.csv", "audio/emodb-03-s00.flac"):
        digest = [hashlib.sha256((t.parent / name).read_bytes()).hexdigest() for t in (table, again)]
        assert digest[0] == digest[1], name
    other = build_sessions(emodb, tmp_path, SessionConfig(seed=1))
    assert other.parent != again.parent
    assert (other.parent / "manifest.csv").read_bytes() != (again.parent / "manifest.csv").read_bytes()


def test_smoothing_is_zero_phase_and_delay_shifts():
    step = np.zeros((200, 1))
    step[100:] = 1.0
    smoothed = smooth(step, tau=1.0, frame_rate=25.0)
    # zero phase: the step's midpoint stays at the edge, and the response is antisymmetric about it
    assert smoothed[99, 0] < 0.5 < smoothed[100, 0]
    assert smoothed[100 - 10, 0] == pytest.approx(1 - smoothed[100 + 9, 0], abs=0.02)
    late = delayed(smoothed, 2.0, 25.0)
    assert np.array_equal(late[50:], smoothed[:-50]) and np.all(late[:50] == smoothed[0])


def test_config_is_checked():
    with pytest.raises(ValueError, match="session_seconds"):
        SessionConfig(session_seconds=(300.0, 60.0))
    with pytest.raises(ValueError, match="delay"):
        SessionConfig(delay=-1.0)
    with pytest.raises(ValueError, match="no \\(arousal, valence\\) point"):
        av_point(Item("x", "x.wav", "interest", "1", None, None, "folder"))


def test_data_module_serves_6_s_crops_with_traces(built):
    cache, _ = built
    data = SessionDataModule(["emodb"], roots={"emodb": str(corpus_root("emodb"))}, cache_dir=str(cache), batch_size=4)
    data.setup("fit")
    assert data.target_spec().level == "frame" and data.target_spec().frame_rate == 25.0
    batch = next(iter(data.train_dataloader()))
    assert batch["waveforms"].shape == (4, 96000)
    assert batch["traces"].shape == (4, 150, 2) and bool(batch["trace_mask"].all())
    dev = next(iter(data.val_dataloader()))
    assert dev["waveforms"].shape[1] > 60 * 16000  # whole sessions
