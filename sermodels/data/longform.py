"""Synthetic daylong recordings built from corpus utterances, with a ground-truth manifest.

No real daylong recording is available offline, so the daylong pipeline (voice activity detection -> segments ->
emotion scoring) is tested and benchmarked on long recordings assembled from the test-speaker utterances of the
corpora: utterances separated by random gaps, each with a random level change, over a background that changes by
scene (digital silence, pink noise or babble). The manifest (:class:`Placed` rows, CSV) says where every utterance
is, to the sample, with its corpus label and arousal/valence (:mod:`sermodels.labels`).

>>> items = test_speaker_items({"emodb": Path("../shared/data/EMODB")})                # doctest: +SKIP
>>> babble = test_speaker_items({"emodb": Path("../shared/data/EMODB")}, "train")      # doctest: +SKIP
>>> rows = build_longform(items, Path("rec.flac"), LongformConfig(3600), babble=babble,
...                       manifest=Path("rec.csv"))                                     # doctest: +SKIP

or ``python -m sermodels.data.longform --corpora EMODB=../shared/data/EMODB --duration 3600 --out rec.flac``.

How it is built (all of it deterministic: the same items, in the same order, and config give byte-identical audio
and manifest):

* **Plan first, then stream.** The plan (utterance positions, gains, scenes) is drawn before any audio is written;
  it needs each used item's length and speech power, so each distinct item is decoded once for its statistics
  (kept as a few numbers). The audio is then written block by block (:data:`BLOCK_SECONDS`, extended to the end of
  any utterance that starts in it, so an utterance is always mixed whole), and only the block, the utterances in it
  and a small cache of decoded audio (:data:`CACHE_SECONDS`) are ever in memory: a 16 h recording (921 M samples)
  needs no more memory than a minute long one.
* **Gaps** are uniform in ``config.gap`` and include the start: the recording opens with a gap, and after the last
  utterance that fits the background fills up to ``duration``. When the items run out they are reshuffled and
  reused, with new gains.
* **Levels.** Each utterance gets ``gain_db`` uniform in ``config.level_db``. Peak protection lowers that gain
  (never the whole block, which would make the background's level jump): first so that the utterance's own peak
  stays below :data:`PEAK_LIMIT`, then, when mixing, exactly so that utterance plus background stays below it.
  The manifest's ``gain_db`` is the gain finally applied: placed samples = source samples x 10^(gain_db / 20).
* **Scenes** have lengths uniform in ``config.scene``; each draws its background from ``config.backgrounds`` and
  its SNR from ``config.snr_db``. A scene boundary that would fall inside an utterance is moved to the middle of
  the gap after it, so every utterance has one background and one SNR. Backgrounds fade in and out over
  :data:`SCENE_FADE_SECONDS` at scene edges, so a change of scene never clicks.
* **SNR is against active speech power**: the mean power of the 20 ms frames (:data:`FRAME_SECONDS`) within
  :data:`ACTIVE_RANGE_DB` of the utterance's loudest frame, pooled over all utterances of the scene as placed
  (after their gains), i.e. total active-frame energy / number of active samples. The background's mean power is
  set to that over 10^(snr_db / 10), so ``snr_db`` is the ratio of the speech a listener hears to the noise
  between and under it (pauses and silent lead-ins of the clips do not dilute the speech level). A scene without
  utterances uses the mean over the whole recording. The background is kept below :data:`MAX_BACKGROUND_RMS`;
  where a low SNR would need more, the scene's speech is turned down with it, which keeps the SNR.
* **Pink noise** (1/f power spectrum, flat below :data:`PINK_LOW_HZ`, no DC) is white Gaussian noise shaped in the
  frequency domain, in chunks of :data:`PINK_CHUNK` samples, each scaled to unit power; consecutive chunks overlap
  by :data:`PINK_OVERLAP` samples with an equal-power (sine/cosine) cross-fade, which keeps the power of the
  independent chunks constant and the stream continuous across chunk and block boundaries.
* **Babble** is the sum of 4 to 6 (:data:`BABBLE_TALKERS`, drawn per scene) talkers, each looping the ``babble``
  items (other speakers than the placed ones, e.g. train speakers) end to end in its own random order from a
  random offset; every babble item is scaled to unit mean power and the sum by 1/sqrt(talkers), so the babble has
  unit power on average before the scene's level is applied.
* **Silence** is digital zero (exact zeros in the file), or, with ``config.silence_dither_db``, white Gaussian
  dither at that level (dBFS RMS; about -96 is one 16-bit step), for tools that dislike digital silence.

The file is 16-bit PCM, FLAC or WAV by the output's suffix, written to ``<name>.partial`` and renamed when done.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from sermodels import labels
from sermodels.audio import AudioError, load_audio
from sermodels.data.base import Item, load_corpus

#: Background kinds a scene can have.
BACKGROUNDS = ("silence", "pink", "babble")
#: Output containers by file suffix; samples are written as 16-bit PCM.
OUTPUT_FORMATS = {".flac": "FLAC", ".wav": "WAV"}
OUTPUT_SUBTYPE = "PCM_16"
#: Nominal length of a written block (seconds); a block grows to end with the last utterance starting in it.
BLOCK_SECONDS = 10.0
#: Decoded audio kept for reuse (seconds of samples in total), so babble loops and reused items decode less often.
CACHE_SECONDS = 30.0
#: No sample of the recording exceeds this magnitude (a little below 16-bit full scale).
PEAK_LIMIT = 0.99
#: Highest background RMS (-24 dBFS): babble and pink peaks then stay well below full scale.
MAX_BACKGROUND_RMS = 10 ** (-24 / 20)
#: Speech level assumed when a recording has no utterance at all (dBFS, the usual active speech level of ITU-T P.56).
REFERENCE_SPEECH_DB = -26.0
#: Frame length and dynamic range of the active speech power (frames within this range of the loudest count).
FRAME_SECONDS = 0.02
ACTIVE_RANGE_DB = 40.0
#: Raised-cosine fade of the background at each scene edge (seconds).
SCENE_FADE_SECONDS = 0.02
#: Pink noise: FFT chunk length, cross-fade overlap between chunks (samples) and the 1/f spectrum's low corner (Hz).
PINK_CHUNK = 1 << 16
PINK_OVERLAP = 1 << 12
PINK_LOW_HZ = 20.0
#: Number of simultaneous babble talkers, drawn per scene (inclusive).
BABBLE_TALKERS = (4, 6)
# Relative safety margin under PEAK_LIMIT for rounding in the mix.
_MARGIN = 1e-6
# Independent random streams of one seed (numpy SeedSequence keys).
_PLAN_STREAM, _SCENE_STREAM, _NOISE_STREAM = 1, 2, 3


@dataclass(frozen=True)
class Placed:
    """One manifest row: an utterance placed in the recording.

    ``start``/``end`` are seconds, exactly ``sample / sample_rate`` of the first sample and one past the last.
    ``arousal``/``valence`` are :func:`sermodels.labels.arousal` and :func:`~sermodels.labels.binary_valence` of the
    label (empty where the label has no circumplex placement). ``gain_db`` is the level change applied to the source
    samples; ``snr_db`` the SNR of the scene's background (``None``: silence).
    """

    start: float
    end: float
    corpus: str
    item_id: str
    path: str
    speaker: str
    label: str
    arousal: str
    valence: str
    gain_db: float
    snr_db: float | None


@dataclass(frozen=True)
class LongformConfig:
    """What to build: length, gaps, scenes, SNRs, levels (ranges are uniform draws, ``(low, high)``) and the seed."""

    duration: float  # seconds of the recording
    gap: tuple[float, float] = (0.3, 30.0)  # gap before each utterance, seconds
    backgrounds: tuple[str, ...] = BACKGROUNDS  # chosen per scene, with equal probability
    scene: tuple[float, float] = (30.0, 180.0)  # scene length, seconds
    snr_db: tuple[float, float] = (0.0, 20.0)  # SNR of speech over the background, per scene
    level_db: tuple[float, float] = (-12.0, 6.0)  # per-utterance level change
    sample_rate: int = 16000
    seed: int = 0
    silence_dither_db: float | None = None  # None: silence is digital zero; else dither RMS in dBFS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"duration must be a positive number of seconds, not {self.duration!r}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {self.sample_rate!r}")
        _check_range("gap", self.gap, low=0.0)
        _check_range("scene", self.scene, low=0.0, open_low=True)
        _check_range("snr_db", self.snr_db)
        _check_range("level_db", self.level_db)
        if not self.backgrounds:
            raise ValueError(f"backgrounds is empty; choose from {', '.join(BACKGROUNDS)}")
        unknown = [kind for kind in self.backgrounds if kind not in BACKGROUNDS]
        if unknown:
            raise ValueError(f"unknown background {', '.join(map(repr, unknown))}; known: {', '.join(BACKGROUNDS)}")


def _check_range(name: str, value: Sequence[float], *, low: float | None = None, open_low: bool = False) -> None:
    if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
        raise ValueError(f"{name} range {tuple(value)!r} is invalid: give (low, high) with finite low <= high")
    if low is not None and (value[0] < low or (open_low and value[0] <= low)):
        relation = ">" if open_low else ">="
        raise ValueError(f"{name} range {tuple(value)!r} is invalid: the low end must be {relation} {low}")


# ---------------------------------------------------------------------------------------------------------------------
# Decoded audio, with a bounded cache and per-item statistics.


@dataclass(frozen=True)
class _Stats:
    length: int  # samples
    active_energy: float  # sum of squares over active frames
    active_samples: int
    peak: float


def _key(item: Item) -> tuple[str, str, str]:
    return (item.corpus, item.id, item.path)


def active_speech(samples: np.ndarray, sample_rate: int) -> tuple[float, int]:
    """(energy, samples) of the active frames of ``samples`` ``(n,)``: the frames of :data:`FRAME_SECONDS` within
    :data:`ACTIVE_RANGE_DB` of the loudest frame (a trailing partial frame counts as a frame). Their ratio is the
    active speech power that sets the SNR."""
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    count = -(-len(samples) // frame)
    padded = np.zeros(count * frame)
    padded[: len(samples)] = samples
    energy = np.square(padded).reshape(count, frame).sum(axis=1)
    sizes = np.full(count, frame)
    sizes[-1] = len(samples) - (count - 1) * frame
    power = energy / sizes
    active = power >= power.max() * 10 ** (-ACTIVE_RANGE_DB / 10)
    if power.max() <= 0:
        return 0.0, 0
    return float(energy[active].sum()), int(sizes[active].sum())


class _AudioStore:
    """Decodes items at the recording's rate, keeps at most :data:`CACHE_SECONDS` of them, and remembers failures.

    A file that fails to decode is skipped with a warning naming it (once) and is never tried again.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.capacity = int(CACHE_SECONDS * sample_rate)
        self.cache: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self.held = 0
        self.failed: set[tuple[str, str, str]] = set()
        self.stats: dict[tuple[str, str, str], _Stats] = {}

    def audio(self, item: Item) -> np.ndarray | None:
        key = _key(item)
        if key in self.failed:
            return None
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        try:
            samples = load_audio(item.path, self.sample_rate).numpy()
        except AudioError as err:
            self.failed.add(key)
            warnings.warn(f"{err}: skipped (item {item.corpus}/{item.id})", stacklevel=3)
            return None
        samples.setflags(write=False)
        if len(samples) <= self.capacity:
            self.cache[key] = samples
            self.held += len(samples)
            while self.held > self.capacity:
                _, dropped = self.cache.popitem(last=False)
                self.held -= len(dropped)
        return samples

    def stats_of(self, item: Item) -> _Stats | None:
        key = _key(item)
        if key not in self.stats:
            samples = self.audio(item)
            if samples is None:
                return None
            energy, active = active_speech(samples, self.sample_rate)
            self.stats[key] = _Stats(len(samples), energy, active, float(np.abs(samples).max()))
        return self.stats[key]


# ---------------------------------------------------------------------------------------------------------------------
# The plan: where utterances go, with which gain, and the scenes.


@dataclass
class _Utterance:
    start: int
    item: Item
    stats: _Stats
    gain: float  # linear; lowered by the scene's cap and, when mixing, by peak protection
    scene: int = -1


@dataclass(frozen=True)
class _Scene:
    index: int
    start: int
    end: int
    kind: str
    snr_db: float | None
    rms: float  # background RMS


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _plan_utterances(items: Sequence[Item], store: _AudioStore, config: LongformConfig, total: int) -> list[_Utterance]:
    """Utterances in order: gap, utterance, gap, ... while they fit in ``total`` samples."""
    rng = _rng(config.seed, _PLAN_STREAM)
    rate = config.sample_rate
    usable = list(range(len(items)))
    order: list[int] = []
    placed: list[_Utterance] = []
    cursor = 0
    while True:
        gap = round(rng.uniform(*config.gap) * rate)
        level = rng.uniform(*config.level_db)
        while True:  # the next item that decodes
            if not order:
                usable = [i for i in usable if _key(items[i]) not in store.failed]
                if not usable:
                    raise ValueError(f"none of the {len(items)} items could be decoded (see the warnings)")
                order = [usable[i] for i in rng.permutation(len(usable))]
            item = items[order.pop(0)]
            stats = store.stats_of(item)
            if stats is not None and stats.length > 0:
                break
        start = cursor + gap
        if start + stats.length > total:
            return placed
        gain = 10 ** (level / 20)
        if stats.peak * gain > PEAK_LIMIT:
            gain = PEAK_LIMIT / stats.peak
        placed.append(_Utterance(start, item, stats, gain))
        cursor = start + stats.length


def _plan_scenes(utterances: list[_Utterance], config: LongformConfig, total: int) -> list[_Scene]:
    """Scenes covering ``[0, total)``, boundaries moved out of utterances, each with its background level."""
    rng = _rng(config.seed, _SCENE_STREAM)
    rate = config.sample_rate
    bounds = [0]
    index = 0
    while bounds[-1] < total:
        end = bounds[-1] + max(1, round(rng.uniform(*config.scene) * rate))
        while index < len(utterances) and utterances[index].start + utterances[index].stats.length <= end:
            index += 1
        if index < len(utterances) and utterances[index].start < end:  # inside an utterance: to the next gap's middle
            stop = utterances[index].start + utterances[index].stats.length
            following = utterances[index + 1].start if index + 1 < len(utterances) else total
            end = (stop + following) // 2
            index += 1
        bounds.append(min(end, total))
    kinds = [config.backgrounds[rng.integers(len(config.backgrounds))] for _ in bounds[1:]]
    snrs = [float(rng.uniform(*config.snr_db)) for _ in bounds[1:]]

    energy = np.zeros(len(kinds))
    active = np.zeros(len(kinds))
    members: list[list[_Utterance]] = [[] for _ in kinds]
    position = 0
    for utterance in utterances:
        while utterance.start >= bounds[position + 1]:
            position += 1
        utterance.scene = position
        members[position].append(utterance)
        energy[position] += utterance.gain**2 * utterance.stats.active_energy
        active[position] += utterance.stats.active_samples
    overall = energy.sum() / active.sum() if active.sum() > 0 else 10 ** (REFERENCE_SPEECH_DB / 10)

    scenes = []
    for index, kind in enumerate(kinds):
        speech = energy[index] / active[index] if active[index] > 0 else overall
        snr = None if kind == "silence" else snrs[index]
        if snr is None:
            dither = config.silence_dither_db
            rms = 0.0 if dither is None else 10 ** (dither / 20)
        else:
            rms = math.sqrt(speech / 10 ** (snr / 10))
            if rms > MAX_BACKGROUND_RMS:  # turn the scene's speech down with its background: the SNR stays
                scale = MAX_BACKGROUND_RMS / rms
                rms = MAX_BACKGROUND_RMS
                for utterance in members[index]:
                    utterance.gain *= scale
        scenes.append(_Scene(index, bounds[index], bounds[index + 1], kind, snr, rms))
    return scenes


# ---------------------------------------------------------------------------------------------------------------------
# Background generators: endless unit-power streams, read in order with take(n).


class _Zeros:
    def take(self, count: int) -> np.ndarray:
        return np.zeros(count)


class _White:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def take(self, count: int) -> np.ndarray:
        return self.rng.standard_normal(count)


class _Pink:
    """1/f noise shaped in the frequency domain, chunk by chunk, chunks joined by an equal-power cross-fade."""

    def __init__(self, rng: np.random.Generator, sample_rate: int):
        self.rng = rng
        frequencies = np.fft.rfftfreq(PINK_CHUNK, 1 / sample_rate)
        self.shape = 1 / np.sqrt(np.maximum(frequencies, PINK_LOW_HZ))  # amplitude ~ f^-1/2: power ~ 1/f
        self.shape[0] = 0.0
        phase = (np.arange(PINK_OVERLAP) + 0.5) / PINK_OVERLAP * (np.pi / 2)
        self.fade_in, self.fade_out = np.sin(phase), np.cos(phase)
        self.tail: np.ndarray | None = None
        self.pending = np.zeros(0)

    def _chunk(self) -> np.ndarray:
        noise = np.fft.irfft(np.fft.rfft(self.rng.standard_normal(PINK_CHUNK)) * self.shape, PINK_CHUNK)
        noise /= math.sqrt(np.mean(np.square(noise)))
        head, tail = noise[:PINK_OVERLAP], noise[-PINK_OVERLAP:]
        if self.tail is None:
            out = noise[:-PINK_OVERLAP]
        else:
            out = np.concatenate([self.tail * self.fade_out + head * self.fade_in, noise[PINK_OVERLAP:-PINK_OVERLAP]])
        self.tail = tail
        return out

    def take(self, count: int) -> np.ndarray:
        out = np.empty(count)
        filled = 0
        while filled < count:
            if not len(self.pending):
                self.pending = self._chunk()
            piece = self.pending[: count - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            self.pending = self.pending[len(piece) :]
        return out


@dataclass
class _Talker:
    """One babble talker: its remaining item order, the item playing (unit power) and the position in it."""

    order: list[int] = field(default_factory=list)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: int = 0


class _Babble:
    """Several talkers, each looping the babble items end to end in its own order; unit power on average."""

    def __init__(self, rng: np.random.Generator, pool: Sequence[Item], store: _AudioStore):
        self.rng = rng
        self.pool = pool
        self.store = store
        talkers = int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))
        self.talkers = [self._talker() for _ in range(talkers)]

    def _talker(self) -> _Talker:
        talker = _Talker()
        talker.audio = self._next(talker)
        talker.offset = int(self.rng.integers(len(talker.audio)))
        return talker

    def _next(self, talker: _Talker) -> np.ndarray:
        for _ in range(2 * len(self.pool) + 1):
            if not talker.order:
                talker.order = [int(i) for i in self.rng.permutation(len(self.pool))]
            samples = self.store.audio(self.pool[talker.order.pop(0)])
            if samples is not None and len(samples) and np.any(samples):
                return samples / math.sqrt(np.mean(np.square(samples, dtype=np.float64)))
        raise ValueError(f"none of the {len(self.pool)} babble items could be decoded (see the warnings)")

    def take(self, count: int) -> np.ndarray:
        out = np.zeros(count)
        for talker in self.talkers:
            filled = 0
            while filled < count:
                if talker.offset >= len(talker.audio):
                    talker.audio, talker.offset = self._next(talker), 0
                piece = talker.audio[talker.offset : talker.offset + count - filled]
                out[filled : filled + len(piece)] += piece
                filled += len(piece)
                talker.offset += len(piece)
        out /= math.sqrt(len(self.talkers))
        return out


class _Background:
    """The background of the whole recording, rendered in order, scene by scene, with faded scene edges."""

    def __init__(self, scenes: list[_Scene], config: LongformConfig, babble: Sequence[Item], store: _AudioStore):
        self.scenes = scenes
        self.config = config
        self.babble = babble
        self.store = store
        self.current = -1  # the scene whose source is open
        self.first = 0  # the first scene not yet finished
        self.source: _Zeros | _White | _Pink | _Babble = _Zeros()
        self.fade = max(1, round(SCENE_FADE_SECONDS * config.sample_rate))

    def _open(self, scene: _Scene) -> None:
        rng = _rng(self.config.seed, _NOISE_STREAM, scene.index)
        if scene.rms == 0.0:
            self.source = _Zeros()
        elif scene.kind == "silence":
            self.source = _White(rng)
        elif scene.kind == "pink":
            self.source = _Pink(rng, self.config.sample_rate)
        else:
            self.source = _Babble(rng, self.babble, self.store)
        self.current = scene.index

    def render(self, start: int, end: int) -> np.ndarray:
        out = np.zeros(end - start)
        while self.scenes[self.first].end <= start:  # scenes before this block are done
            self.first += 1
        for scene in self.scenes[self.first :]:
            if scene.start >= end:
                break
            lo, hi = max(start, scene.start), min(end, scene.end)
            if scene.index != self.current:
                self._open(scene)
            if scene.rms == 0.0:
                continue
            piece = self.source.take(hi - lo)
            piece *= scene.rms
            self._fade_edges(piece, lo - scene.start, scene.end - scene.start)
            out[lo - start : hi - start] = piece
        return out

    def _fade_edges(self, piece: np.ndarray, first: int, length: int) -> None:
        """Apply the raised-cosine scene fades to ``piece``, which holds scene samples ``first ...`` of ``length``."""
        last = first + len(piece)
        for lo, hi in ((first, min(last, self.fade)), (max(first, length - self.fade, self.fade), last)):
            if lo < hi:
                position = np.arange(lo, hi)
                edge = np.minimum(position, length - 1 - position)
                piece[lo - first : hi - first] *= 0.5 - 0.5 * np.cos(np.pi * (edge + 0.5) / (self.fade + 0.5))


# ---------------------------------------------------------------------------------------------------------------------
# Mixing and writing.


def _protected_gain(speech: np.ndarray, background: np.ndarray, gain: float) -> float:
    """The largest gain <= ``gain`` with ``|gain * speech + background| <= PEAK_LIMIT`` where the background allows."""
    mixed = gain * speech + background
    if np.abs(mixed).max() <= PEAK_LIMIT:
        return gain
    usable = (speech != 0) & (np.abs(background) < PEAK_LIMIT)
    s, b = speech[usable], background[usable]
    bound = np.where(s > 0, (PEAK_LIMIT - b) / np.where(s > 0, s, 1), (-PEAK_LIMIT - b) / np.where(s < 0, s, -1))
    return min(gain, float(bound.min()) * (1 - _MARGIN)) if len(bound) else gain


def _row(utterance: _Utterance, scene: _Scene, rate: int) -> Placed:
    item = utterance.item
    label = item.label or ""
    try:
        arousal, valence = labels.arousal(label), labels.binary_valence(label)
    except labels.UnknownLabelError:
        arousal = valence = ""
    return Placed(
        start=utterance.start / rate,
        end=(utterance.start + utterance.stats.length) / rate,
        corpus=item.corpus,
        item_id=item.id,
        path=item.path,
        speaker=item.speaker or "",
        label=label,
        arousal=arousal,
        valence=valence,
        gain_db=20 * math.log10(utterance.gain) if utterance.gain > 0 else -math.inf,
        snr_db=scene.snr_db,
    )


def _output_format(out: Path) -> str:
    fmt = OUTPUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"{out}: unsupported output format {out.suffix!r}; use {' or '.join(OUTPUT_FORMATS)}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: output folder {out.parent} does not exist")
    return fmt


def build_longform(
    items: Sequence[Item],
    out: Path,
    config: LongformConfig,
    *,
    babble: Sequence[Item] = (),
    manifest: Path | None = None,
) -> list[Placed]:
    """Write a recording of ``config.duration`` s to ``out`` (FLAC or WAV) from ``items``; return its manifest rows.

    ``babble`` items (other speakers than ``items``) make the babble background; they are needed only when
    ``config.backgrounds`` has ``"babble"``. ``manifest``: where to write the rows as CSV (``None``: not written).
    Items whose audio fails to decode are skipped with a warning naming the file.
    """
    out = Path(out)
    fmt = _output_format(out)
    if not items:
        raise ValueError(f"{out}: no items to place in the recording")
    if "babble" in config.backgrounds and not babble:
        raise ValueError(
            f"{out}: background 'babble' needs babble items (e.g. train-speaker items), or leave it out of backgrounds"
        )
    rate = config.sample_rate
    total = max(1, round(config.duration * rate))
    store = _AudioStore(rate)
    utterances = _plan_utterances(items, store, config, total)
    scenes = _plan_scenes(utterances, config, total)
    background = _Background(scenes, config, babble, store)

    rows: list[Placed] = []
    block = max(1, round(BLOCK_SECONDS * rate))
    partial = out.with_name(out.name + ".partial")
    try:
        with sf.SoundFile(partial, "w", rate, 1, subtype=OUTPUT_SUBTYPE, format=fmt) as writer:
            cursor, next_index = 0, 0
            while cursor < total:
                end = min(cursor + block, total)
                first = next_index
                while next_index < len(utterances) and utterances[next_index].start < end:
                    end = max(end, utterances[next_index].start + utterances[next_index].stats.length)
                    next_index += 1
                samples = background.render(cursor, end)
                block_rows = [
                    _mix(samples, cursor, utterance, store, scenes[utterance.scene], rate)
                    for utterance in utterances[first:next_index]
                ]
                rows.extend(_limit_block(samples, block_rows, out, cursor / rate))
                writer.write(samples)
                cursor = end
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    if manifest is not None:
        write_manifest(manifest, rows)
    return rows


def _limit_block(samples: np.ndarray, rows: list[Placed], out: Path, at: float) -> list[Placed]:
    """Last resort where the background itself peaks above :data:`PEAK_LIMIT` (kept far below it by
    :data:`MAX_BACKGROUND_RMS`): scale the whole block down and lower its utterances' recorded gains to match."""
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    if peak <= PEAK_LIMIT:
        return rows
    scale = PEAK_LIMIT / peak * (1 - _MARGIN)
    samples *= scale
    change = 20 * math.log10(scale)
    warnings.warn(f"{out}: block at {at:.2f} s scaled by {change:.2f} dB to avoid clipping", stacklevel=3)
    return [replace(row, gain_db=row.gain_db + change) for row in rows]


def _mix(
    samples: np.ndarray, offset: int, utterance: _Utterance, store: _AudioStore, scene: _Scene, rate: int
) -> Placed:
    """Add ``utterance`` to the block ``samples`` (which starts at sample ``offset``), peak-protected."""
    decoded = store.audio(utterance.item)
    speech = None if decoded is None else decoded.astype(np.float64)
    if speech is None or len(speech) != utterance.stats.length:
        raise RuntimeError(f"{utterance.item.path}: decoded differently on a second read")
    at = utterance.start - offset
    region = samples[at : at + len(speech)]
    utterance.gain = _protected_gain(speech, region, utterance.gain)
    region += utterance.gain * speech
    return _row(utterance, scene, rate)


# ---------------------------------------------------------------------------------------------------------------------
# Manifest CSV and corpus items.

_FIELDS = [f.name for f in fields(Placed)]
_FLOATS = {"start", "end", "gain_db"}


def write_manifest(path: str | os.PathLike, placed: Sequence[Placed]) -> Path:
    """Write rows as CSV (header = :class:`Placed` field names; floats exact, ``snr_db`` empty for silence)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(_FIELDS)
        for row in placed:
            values = [getattr(row, name) for name in _FIELDS]
            writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in values])
    return path


def read_manifest(path: str | os.PathLike) -> list[Placed]:
    """Rows written by :func:`write_manifest`; a missing column or a bad number is an error naming file and line."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [name for name in _FIELDS if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a longform manifest, missing column(s) {', '.join(missing)}")
        rows = []
        for line, record in enumerate(reader, start=2):
            try:
                values = {name: record[name] for name in _FIELDS}
                for name in _FLOATS:
                    values[name] = float(values[name])
                values["snr_db"] = float(values["snr_db"]) if values["snr_db"] else None
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
            rows.append(Placed(**values))
    return rows


def test_speaker_items(roots: Mapping[str, Path], split: str = "test") -> list[Item]:
    """The items of partition ``split`` of each corpus's fixed speaker split (corpus name -> root), in order."""
    items: list[Item] = []
    for name, root in roots.items():
        corpus = load_corpus(name.lower(), root)
        parts = corpus.split("fixed")
        if split not in parts:
            raise ValueError(f"{name}: no partition {split!r} in the fixed split; choose from {', '.join(parts)}")
        items.extend(parts[split])
    return items


test_speaker_items.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


# ---------------------------------------------------------------------------------------------------------------------
# Command line.


def _corpus_root(text: str) -> tuple[str, Path]:
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=FOLDER, e.g. EMODB=../shared/data/EMODB")
    return name.lower(), Path(root)


def _parser() -> argparse.ArgumentParser:
    defaults = LongformConfig(duration=1.0)
    parser = argparse.ArgumentParser(
        prog="python -m sermodels.data.longform",
        description="Build a synthetic long recording from test-speaker utterances (babble from train speakers), "
        "with a ground-truth CSV manifest beside it.",
    )
    parser.add_argument("--corpora", nargs="+", type=_corpus_root, required=True, metavar="NAME=FOLDER")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--out", type=Path, required=True, help=".flac or .wav; the manifest is <out>.csv")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--gap", type=float, nargs=2, default=defaults.gap, metavar=("LOW", "HIGH"))
    parser.add_argument("--scene", type=float, nargs=2, default=defaults.scene, metavar=("LOW", "HIGH"))
    parser.add_argument("--snr-db", type=float, nargs=2, default=defaults.snr_db, metavar=("LOW", "HIGH"))
    parser.add_argument("--level-db", type=float, nargs=2, default=defaults.level_db, metavar=("LOW", "HIGH"))
    parser.add_argument("--backgrounds", nargs="+", default=list(defaults.backgrounds), choices=BACKGROUNDS)
    parser.add_argument("--silence-dither-db", type=float, default=None)
    return parser


def main(argv: Sequence[str] | None = None, *, echo: Callable[[str], None] = print) -> int:
    args = _parser().parse_args(argv)
    roots = dict(args.corpora)
    config = LongformConfig(
        duration=args.duration,
        gap=tuple(args.gap),
        backgrounds=tuple(args.backgrounds),
        scene=tuple(args.scene),
        snr_db=tuple(args.snr_db),
        level_db=tuple(args.level_db),
        seed=args.seed,
        silence_dither_db=args.silence_dither_db,
    )
    babble = test_speaker_items(roots, "train") if "babble" in config.backgrounds else []
    manifest = args.out.with_suffix(".csv")
    rows = build_longform(test_speaker_items(roots), args.out, config, babble=babble, manifest=manifest)
    speech = sum(row.end - row.start for row in rows)
    echo(f"{args.out}: {config.duration:.1f} s, {len(rows)} utterances ({speech:.1f} s of speech); manifest {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
