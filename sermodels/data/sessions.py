"""Pseudo-sessions: a time-continuous arousal/valence task built from the acted corpora.

The end-to-end conv-BLSTM and the feature-enhancement back-end of the MixedEmotions deliverable D4.2 (§3.4, §5.3)
learn traces of arousal and valence rated continuously over long recordings (RECOLA: 5-minute sessions, gold
standard every 40 ms). No such corpus is available offline, so we build a stand-in and say plainly what it is:

* **Sessions.** For each speaker of a corpus, that speaker's utterances in random order, separated by gaps uniform in
  ``gap`` seconds (0.2–1 s), cut into sessions: a session closes with the first utterance that takes it past a target
  length drawn uniform in ``session_seconds`` (60–300 s), so it runs a few seconds past its target. Every utterance is
  used once. A speaker whose utterances last less than the minimum gets one shorter session; a remainder shorter than
  the minimum joins the speaker's previous session (which can then reach about 360 s). Gaps hold a faint white noise
  floor (``noise_floor_db`` dBFS RMS, so that silence is not digital zero) unless it is ``None``.
* **Targets.** Each utterance's category is placed at a point ``(arousal, valence)`` of :data:`AV_POINTS` — our own
  placement on [-1, 1]², whose signs follow the circumplex map of :mod:`sermodels.labels` (EmoNet Table 2; a "neutral"
  valence is 0). RAVDESS items of normal (not strong) intensity are scaled by :data:`RAVDESS_NORMAL_SCALE` towards the
  origin (RAVDESS's neutral exists at normal intensity only, so it sits at (-0.12, 0) where the other corpora's
  neutral sits at (-0.2, 0)). The raw trace at ``frame_rate`` (25 Hz, RECOLA's 40 ms) holds the utterance's point from
  its first frame to the start of the next utterance (a rater keeps the last rating through a pause; the first gap
  takes the first utterance's point). It is then smoothed by a first-order low-pass filter of time constant ``tau``
  seconds (≈ 1 s) run forwards and backwards (zero phase, so smoothing adds no lag), and delayed by ``delay`` seconds
  (0 by default; e.g. 2 s imitates the reaction time of human raters, which the post-processing time shift of D4.2
  §5.3 compensates), the first value held over the delay.
* **Partitions.** Speaker-disjoint: a speaker's sessions belong to the partition that the corpus's ``fixed``
  protocol gives that speaker (:mod:`sermodels.data.splits`).
* **Determinism.** Everything is drawn from ``numpy.random.default_rng((seed, crc32(corpus), crc32(speaker)))``;
  the same items and config give byte-identical audio and traces.

What does not carry over: these are acted, single-speaker utterances with one category each, spliced together,
so the "trace" changes only at utterance boundaries and says nothing about how emotion develops within real
spontaneous interaction, about rater disagreement, or about real rater lag. A model that does well here recognises
acted emotion per utterance and times it; claims about RECOLA-like data need real continuous ratings.

A built corpus is cached: ``<cache>/<corpus>-<fingerprint>/`` holds ``sessions.csv`` (a table that
:func:`sermodels.data.folder.load_folder` reads: ``path, speaker, split, trace``), ``audio/*.flac`` (16-bit),
``traces/*.csv`` (``time, arousal, valence``), ``manifest.csv`` (where each utterance sits) and ``config.json``.
The fingerprint hashes the config and the items used, so a change builds a new folder. The folder is written under a
temporary name and renamed when complete, so an interrupted build is never read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from sermodels import labels as label_maps
from sermodels.audio import load_audio
from sermodels.data.base import Corpus, Item, corpus_meta, load_corpus
from sermodels.data.datamodule import SERDataModule
from sermodels.data.folder import load_folder

#: The dimensions of a session trace, in column order.
AV_NAMES = ("arousal", "valence")

#: Our (arousal, valence) placement of each category in [-1, 1]² (module docstring). Signs follow
#: ``sermodels.labels.placement`` (EmoNet Table 2): high arousal > 0, low < 0; negative valence < 0, neutral 0,
#: positive > 0 (checked by the tests). Magnitudes are our choice, ordered as the circumplex usually draws them
#: (anger and fear more aroused than surprise; sadness and boredom the least), not numbers from a paper.
AV_POINTS: dict[str, tuple[float, float]] = {
    "anger": (0.8, -0.6),
    "fear": (0.6, -0.7),
    "disgust": (-0.2, -0.7),
    "sadness": (-0.6, -0.6),
    "boredom": (-0.7, 0.0),
    "neutral": (-0.2, 0.0),
    "calm": (-0.5, 0.4),
    "surprise": (0.5, 0.0),
    "happiness": (0.6, 0.7),
    "joy": (0.6, 0.7),
}

#: RAVDESS's "normal" intensity items are placed this fraction of the way from the origin (its "strong" ones at 1).
RAVDESS_NORMAL_SCALE = 0.6

#: RECOLA's gold standard rate (D4.2 §4.5.2, §5.2.1: 40 ms frames).
TRACE_RATE = 25.0
#: Environment variable naming the session cache folder (default ``~/.cache/sermodels/sessions``).
CACHE_ENV = "SERMODELS_SESSIONS"


def default_cache() -> Path:
    """Where built sessions are kept: ``$SERMODELS_SESSIONS`` or ``~/.cache/sermodels/sessions``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sermodels" / "sessions").expanduser()


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are assembled and rated (module docstring); the defaults are those of the released task."""

    session_seconds: tuple[float, float] = (60.0, 300.0)
    gap: tuple[float, float] = (0.2, 1.0)
    frame_rate: float = TRACE_RATE
    tau: float = 1.0
    delay: float = 0.0
    noise_floor_db: float | None = -60.0
    sample_rate: int = 16000
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.session_seconds
        if not 0 < low <= high:
            raise ValueError(f"session_seconds must be 0 < low <= high, got {self.session_seconds}")
        if not 0 <= self.gap[0] <= self.gap[1]:
            raise ValueError(f"gap must be 0 <= low <= high seconds, got {self.gap}")
        for name in ("frame_rate", "tau"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(f"delay must be a non-negative number of seconds, got {self.delay}")

    def to_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SessionConfig:
        known = {key: tuple(v) if isinstance(v, list) else v for key, v in value.items()}
        return cls(**known)


def av_point(item: Item) -> tuple[float, float]:
    """The item's ``(arousal, valence)`` target point (:data:`AV_POINTS`; RAVDESS normal intensity scaled)."""
    if item.label is None:
        raise ValueError(f"{item.path}: an item without a category cannot be placed in a session")
    word = label_maps.canonical(item.label)
    if word not in AV_POINTS:
        raise ValueError(f"{item.path}: category {item.label!r} has no (arousal, valence) point in AV_POINTS")
    arousal, valence = AV_POINTS[word]
    if item.corpus == "ravdess" and item.extra.get("intensity") == "normal":
        arousal, valence = arousal * RAVDESS_NORMAL_SCALE, valence * RAVDESS_NORMAL_SCALE
    return arousal, valence


# ---------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Placed:
    """One utterance of a session: ``start``/``end`` in samples of the session audio."""

    session: str
    item: Item
    start: int
    end: int
    arousal: float
    valence: float


@dataclass(frozen=True)
class Session:
    id: str
    speaker: str
    split: str
    samples: int
    utterances: tuple[Placed, ...]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng((seed, *(zlib.crc32(key.encode()) for key in keys)))


def plan_speaker(
    corpus: str, speaker: str, split: str, items: Sequence[Item], lengths: Mapping[str, int], config: SessionConfig
) -> list[Session]:
    """The sessions of one speaker (module docstring); ``lengths``: item id -> samples at ``config.sample_rate``."""
    rng = _rng(config.seed, corpus, speaker)
    order = [items[i] for i in rng.permutation(len(items))]
    rate = config.sample_rate
    gaps = rng.uniform(*config.gap, size=len(order) + 1)
    # Group utterances into sessions of drawn lengths; a short remainder joins the previous group.
    groups: list[list[int]] = []
    target = rng.uniform(*config.session_seconds)
    current: list[int] = []
    seconds = 0.0
    for index, item in enumerate(order):
        current.append(index)
        seconds += gaps[index] + lengths[item.id] / rate
        if seconds >= target:
            groups.append(current)
            current, seconds = [], 0.0
            target = rng.uniform(*config.session_seconds)
    if current:
        if groups and seconds < config.session_seconds[0]:
            groups[-1].extend(current)
        else:
            groups.append(current)
    sessions = []
    for number, group in enumerate(groups):
        session_id = f"{corpus}-{speaker}-s{number:02d}"
        at = int(round(gaps[group[0]] * rate))
        placed = []
        for position, index in enumerate(group):
            item = order[index]
            if position:
                at += int(round(gaps[index] * rate))
            end = at + lengths[item.id]
            placed.append(Placed(session_id, item, at, end, *av_point(item)))
            at = end
        total = at + int(round(gaps[-1] * rate))
        sessions.append(Session(session_id, speaker, split, total, tuple(placed)))
    return sessions


# ---------------------------------------------------------------------------------------------------- targets


def raw_trace(session: Session, config: SessionConfig) -> np.ndarray:
    """``(frames, 2)`` step targets: each utterance's point from its first frame until the next utterance starts."""
    frames = math.ceil(session.samples / config.sample_rate * config.frame_rate - 1e-9)
    trace = np.empty((frames, 2), dtype=np.float64)
    first = session.utterances[0]
    trace[:] = (first.arousal, first.valence)
    for utterance in session.utterances:
        start = int(math.floor(utterance.start / config.sample_rate * config.frame_rate))
        trace[start:] = (utterance.arousal, utterance.valence)
    return trace


def smooth(trace: np.ndarray, tau: float, frame_rate: float) -> np.ndarray:
    """First-order low-pass of time constant ``tau`` s run forwards then backwards (zero phase), per column; each
    pass starts from its first value so the edges do not droop."""
    alpha = 1.0 - math.exp(-1.0 / (tau * frame_rate))
    out = np.array(trace, dtype=np.float64)
    for sequence in (out, out[::-1]):
        state = sequence[0].copy()
        for t in range(sequence.shape[0]):
            state += alpha * (sequence[t] - state)
            sequence[t] = state
    return out


def delayed(trace: np.ndarray, delay: float, frame_rate: float) -> np.ndarray:
    """``trace`` later by ``round(delay * frame_rate)`` frames, the first value held over the delay."""
    shift = int(round(delay * frame_rate))
    if shift == 0:
        return trace
    out = np.empty_like(trace)
    out[:shift] = trace[0]
    out[shift:] = trace[: trace.shape[0] - shift] if shift < trace.shape[0] else trace[:0]
    return out


def session_trace(session: Session, config: SessionConfig) -> np.ndarray:
    """The gold trace ``(frames, 2)`` (arousal, valence) of a session at ``config.frame_rate``."""
    return delayed(smooth(raw_trace(session, config), config.tau, config.frame_rate), config.delay, config.frame_rate)


# ---------------------------------------------------------------------------------------------------- building


def session_plan(corpus: Corpus, config: SessionConfig) -> list[Session]:
    """Every session of ``corpus`` (speakers in sorted order), partitions from its ``fixed`` protocol."""
    partitions = corpus.split("fixed")
    lengths = {}
    sessions = []
    for split in ("train", "dev", "test"):
        by_speaker: dict[str, list[Item]] = {}
        for item in partitions[split]:
            if item.speaker is None:
                raise ValueError(f"{item.path}: sessions are per speaker; this item has none")
            by_speaker.setdefault(item.speaker, []).append(item)
        for speaker in sorted(by_speaker):
            items = sorted(by_speaker[speaker], key=lambda item: item.id)
            for item in items:
                lengths[item.id] = _length(item, config)
            sessions.extend(plan_speaker(corpus.name, speaker, split, items, lengths, config))
    return sessions


def _length(item: Item, config: SessionConfig) -> int:
    """The item's length in samples at ``config.sample_rate``: from the header when the file has that rate, else
    decoded (and resampled) as ``render`` will place it."""
    try:
        info = sf.info(item.path)
    except RuntimeError:
        info = None
    if info is not None and info.samplerate == config.sample_rate:
        return int(info.frames)
    return int(load_audio(item.path, sample_rate=config.sample_rate).shape[0])


def render(session: Session, config: SessionConfig) -> np.ndarray:
    """The session's audio (float32): its utterances at their places over the noise floor."""
    rng = _rng(config.seed, "floor", session.id)
    if config.noise_floor_db is None:
        audio = np.zeros(session.samples, dtype=np.float32)
    else:
        audio = (rng.standard_normal(session.samples) * 10 ** (config.noise_floor_db / 20)).astype(np.float32)
    for utterance in session.utterances:
        waveform = load_audio(utterance.item.path, sample_rate=config.sample_rate).numpy()
        audio[utterance.start : utterance.end] += waveform[: utterance.end - utterance.start]
    return np.clip(audio, -1.0, 1.0)


def fingerprint(corpus: Corpus, config: SessionConfig) -> str:
    digest = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode())
    for item in sorted(corpus.items, key=lambda item: item.id):
        digest.update(f"{item.id}\t{item.label}\t{item.speaker}\t{os.path.basename(item.path)}\n".encode())
    return digest.hexdigest()[:12]


def build_sessions(corpus: Corpus, cache_dir: str | os.PathLike, config: SessionConfig = SessionConfig()) -> Path:
    """Build (or find) the session corpus of ``corpus`` under ``cache_dir``; returns its ``sessions.csv``."""
    folder = Path(cache_dir).expanduser() / f"{corpus.name}-{fingerprint(corpus, config)}"
    table = folder / "sessions.csv"
    if table.is_file():
        return table
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "audio").mkdir(parents=True)
    (partial / "traces").mkdir()
    sessions = session_plan(corpus, config)
    rows, placed = [], []
    for session in sessions:
        audio_path = Path("audio") / f"{session.id}.flac"
        trace_path = Path("traces") / f"{session.id}.csv"
        sf.write(partial / audio_path, render(session, config), config.sample_rate, subtype="PCM_16")
        _write_trace(partial / trace_path, session_trace(session, config), config.frame_rate)
        rows.append({"path": str(audio_path), "speaker": session.speaker, "split": session.split,
                     "trace": str(trace_path)})  # fmt: skip
        placed.extend(session.utterances)
    _write_rows(partial / "sessions.csv", ["path", "speaker", "split", "trace"], rows)
    _write_manifest(partial / "manifest.csv", placed, config.sample_rate)
    meta = {"corpus": corpus.name, "licence": corpus.meta.licence, "config": config.to_json(),
            "sessions": len(sessions), "seconds": sum(s.samples for s in sessions) / config.sample_rate}  # fmt: skip
    (partial / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    try:
        partial.rename(folder)
    except OSError:  # another process finished the same build first
        shutil.rmtree(partial, ignore_errors=True)
    return table


def _write_trace(path: Path, trace: np.ndarray, frame_rate: float) -> None:
    times = np.arange(trace.shape[0]) / frame_rate
    with path.open("w", newline="") as handle:
        handle.write("time," + ",".join(AV_NAMES) + "\n")
        for t, (a, v) in zip(times, trace):
            handle.write(f"{t:.6f},{a:.6f},{v:.6f}\n")


def _write_rows(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_manifest(path: Path, placed: Sequence[Placed], sample_rate: int) -> None:
    rows = [
        {"session": p.session, "item": p.item.id, "corpus": p.item.corpus, "label": p.item.label,
         "start": f"{p.start / sample_rate:.4f}", "end": f"{p.end / sample_rate:.4f}",
         "arousal": p.arousal, "valence": p.valence}
        for p in placed
    ]  # fmt: skip
    _write_rows(path, ["session", "item", "corpus", "label", "start", "end", "arousal", "valence"], rows)


def load_sessions(table: str | os.PathLike, name: str) -> Corpus:
    """A built session table as a corpus (traces ``arousal, valence``; partitions from its ``split`` column)."""
    meta = json.loads((Path(table).parent / "config.json").read_text())
    source = corpus_meta(meta["corpus"])
    corpus = load_folder(table, name=name, language=source.language, licence=source.licence)
    corpus.meta = replace(
        corpus.meta,
        title=f"pseudo-sessions of {source.title}",
        description=f"{source.name} utterances spliced into sessions with synthetic arousal/valence traces",
        citation=source.citation,
        url=source.url,
    )
    return corpus


# ---------------------------------------------------------------------------------------------------- data module


class SessionDataModule(SERDataModule):
    """Batches of pseudo-session audio with arousal/valence traces at 25 Hz (module docstring).

    Training batches are random ``max_duration`` crops of the training sessions, their traces cut to the same
    window; an epoch draws one crop per session (a few batches), so schedules count optimiser steps, not epochs.
    Validation and test use whole sessions.

    Args:
        corpora: built-in corpora whose utterances make the sessions (one session corpus each, named
            ``<corpus>_sessions``).
        roots: corpus -> folder, as :class:`~sermodels.data.SERDataModule` (``None``: ``$SERMODELS_DATA``).
        cache_dir: where built sessions are kept (default :func:`default_cache`).
        max_duration: training crop in seconds (D4.2 §5.2.1: 6 s sequences); dev and test use whole sessions.
        session_seconds / gap / tau / delay / noise_floor_db / session_seed: the :class:`SessionConfig` (its
            ``seed`` is ``session_seed``: which utterances make which session).
        seed: the training crops' seed (:class:`~sermodels.data.SERDataModule`); it does not change the sessions,
            so runs with different seeds are scored on the same test sessions.
        batch_size / num_workers / multi_corpus: as :class:`~sermodels.data.SERDataModule`.
    """

    def __init__(
        self,
        corpora: list[str],
        roots: dict[str, str] | None = None,
        cache_dir: str | None = None,
        batch_size: int = 50,
        max_duration: float | None = 6.0,
        num_workers: int = 0,
        multi_corpus: Literal["concat", "round_robin"] = "concat",
        session_seconds: tuple[float, float] = (60.0, 300.0),
        gap: tuple[float, float] = (0.2, 1.0),
        tau: float = 1.0,
        delay: float = 0.0,
        noise_floor_db: float | None = -60.0,
        seed: int = 0,
        session_seed: int = 0,
    ):
        self.source_corpora = [name.lower() for name in ([corpora] if isinstance(corpora, str) else corpora)]
        self.session_config = SessionConfig(
            tuple(session_seconds), tuple(gap), TRACE_RATE, tau, delay, noise_floor_db, 16000, session_seed
        )
        self.session_cache = Path(cache_dir).expanduser() if cache_dir else default_cache()
        base = SERDataModule(self.source_corpora, roots)  # resolves the source folders as every data module does
        self.source_roots = dict(base.roots)
        super().__init__(
            [f"folder:{name}_sessions" for name in self.source_corpora],
            # the tables are built (or found in the cache) by setup(), not when a recipe is parsed
            roots={f"folder:{name}_sessions": "" for name in self.source_corpora},
            label_space="trace",
            frame_rate=TRACE_RATE,
            batch_size=batch_size,
            max_duration=max_duration,
            num_workers=num_workers,
            multi_corpus=multi_corpus,
            seed=seed,
        )

    def setup(self, stage: str | None = None) -> None:
        for name in self.source_corpora:
            if not self.roots[f"{name}_sessions"]:
                self.roots[f"{name}_sessions"] = str(self._table(name))
        super().setup(stage)

    def _load(self, entry: str, name: str) -> Corpus:
        """A session table as a corpus that carries its source corpus's licence (for the model card)."""
        return load_sessions(self.roots[name], name)

    def _table(self, name: str) -> Path:
        corpus = load_corpus(name, self.source_roots[name])
        return build_sessions(corpus, self.session_cache, self.session_config)
