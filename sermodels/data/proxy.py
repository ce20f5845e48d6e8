"""Proxy arousal labels from audio alone, for pre-training a speech front-end without emotion annotation.

Provenance: C.-C. Lu, J.-L. Li and C.-C. Lee, "Learning an Arousal-Valence Speech Front-End Network using Media
Data In-the-Wild for Emotion Recognition", AVEC 2018, DOI 10.1145/3266302.3266306, §2.2.2, after D. Bone, C.-C. Lee
and S. Narayanan, "Robust Unsupervised Arousal Rating", IEEE TAC 5(2), 2014, DOI 10.1109/TAFFC.2014.2326393:

* per utterance, two of Bone et al.'s features, *median pitch* and *median vocal intensity* (§2.2.2: the noisy
  media corpus allowed only these two);
* per speaker, a baseline distribution ``N^(i)`` of each feature over the speaker's utterances;
* eq. (1): ``a_u^(i) = 2 P(N^(i) < x_u^(i)) - 1`` in [-1, 1]; eq. (2): ``a'_u``, the mean over the two features;
* the binary proxy label is ``high`` where ``a'_u > 0``, else ``low`` (AV-SpNET trains on high/low arousal).

The labels come from the audio only; the corpora's own emotion categories are never read to make them. They are
copied into the table (column ``category``) only so that :func:`proxy_agreement` can report how well the proxy
matches the categories' arousal (a diagnostic for the benchmark, never a training target).

Choices the papers leave open, made here:

* pitch is YIN (:func:`sermodels.features.pitch.yin`, 10 ms hop, 60-500 Hz); the median runs over voiced frames.
  Intensity is the frame RMS in dB, its median over the voiced frames (so pauses do not lower it), or over the
  frames within :data:`FALLBACK_BELOW_PEAK_DB` of the loudest one when no frame is voiced;
* the baseline of an utterance is the *other* utterances of its speaker (leave-one-out, so a speaker's scores are
  symmetric around 0 and the labels are balanced per speaker by construction); ties count half;
* an utterance without a value (no voiced frame: f0 is NaN) scores 0 on that feature and is left out of the
  baselines; a speaker with a single utterance scores 0;
* speakers are the corpus's own, keyed ``<corpus>-<speaker>`` so that baselines never mix corpora.

Measured agreement with the Table 2 arousal of the categories (UAR, full corpora): EMO-DB 0.589, RAVDESS 0.796,
EMOVO 0.759, URDU 0.498. EMO-DB's files are peak-normalised (every peak is 1.0), which turns median intensity
against arousal (0.224 alone; f0 alone 0.905); in URDU most speaker ids (26 of 29) have a single category, so
per-speaker baselines cancel it. A corpus without speakers cannot have per-speaker baselines: it is refused.

Command: ``python -m sermodels.data.proxy --corpora emodb ravdess emovo urdu --out /tmp/proxy_all.csv`` writes the
table (readable by ``load_corpus("folder", table)``) and prints the agreement. Per-file prosody is cached (JSON,
keyed by path, size, modification time and tracker settings), so a table for another set of corpora reuses it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sermodels._io import atomic_write_text
from sermodels.audio import DEFAULT_SAMPLE_RATE, load_audio
from sermodels.data.base import Item, corpus_meta, group_of, load_corpus
from sermodels.features import pitch
from sermodels.labels import UnknownLabelError, arousal

HIGH, LOW = "high", "low"  # AV-SpNET's binary arousal classes (§2.2.2, Table 1)
FEATURES = ("f0", "intensity")  # §2.2.2: median pitch and median vocal intensity, I = 2 in eq. (2)
FALLBACK_BELOW_PEAK_DB = 30.0  # intensity frames used when no frame is voiced: within 30 dB of the loudest
DATA_ENV = "SERMODELS_DATA"  # the folder holding EMODB/, RAVDESS/, ... (as SERDataModule reads it)
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the repository
DEFAULT_CACHE = Path.home() / ".cache" / "sermodels" / "proxy_prosody.json"
CACHE_VERSION = 1
TABLE_COLUMNS = ("path", "label", "speaker", "split", "corpus", "category", "score", "f0", "intensity")
#: Everything that changes a cached prosody value; part of every cache key.
TRACKER_SETTINGS = {
    "version": CACHE_VERSION,
    "sample_rate": DEFAULT_SAMPLE_RATE,
    "hop": pitch.DEFAULT_HOP,
    "window_seconds": pitch.DEFAULT_WINDOW_SECONDS,
    "f_min": pitch.DEFAULT_F_MIN,
    "f_max": pitch.DEFAULT_F_MAX,
    "threshold": pitch.DEFAULT_THRESHOLD,
    "silence_below_peak_db": pitch.SILENCE_BELOW_PEAK_DB,
    "fallback_below_peak_db": FALLBACK_BELOW_PEAK_DB,
}


@dataclass(frozen=True)
class ProxyLabel:
    """An utterance's per-feature scores (eq. 1), their mean ``score`` (eq. 2, in [-1, 1]) and the binary label."""

    f0_score: float
    intensity_score: float
    score: float
    label: str


# ------------------------------------------------------------------------------------------------ scoring


def utterance_prosody(waveform: torch.Tensor, sample_rate: int) -> tuple[float, float]:
    """``(median f0 in Hz, median intensity in dB)`` of a ``(T,)`` waveform, both over its voiced frames.

    f0 is NaN when no frame is voiced; the intensity then is the median over the frames within
    :data:`FALLBACK_BELOW_PEAK_DB` of the loudest frame.
    """
    f0, _ = pitch.yin(waveform, sample_rate)
    level = pitch.intensity_db(waveform, sample_rate)
    voiced = f0 > 0
    if not voiced.any():
        loud = level >= level.max() - FALLBACK_BELOW_PEAK_DB
        return math.nan, float(level[loud].median())
    return float(f0[voiced].median()), float(level[voiced].median())


def rank_scores(values: Sequence[float] | np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Eq. (1) for every item: ``2 P(N < x) - 1``, ``N`` the values of the *other* items of its group.

    Ties count half; a NaN value scores 0 and is no part of any baseline; an item alone in its group scores 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(groups):
        raise ValueError(f"{len(values)} values for {len(groups)} groups")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        if np.isfinite(values[index]):
            members.setdefault(group, []).append(index)
    scores = np.zeros(len(values))
    for index in members.values():
        scores[index] = _leave_one_out_scores(values[index])
    return scores


def _leave_one_out_scores(values: np.ndarray) -> np.ndarray:
    others = len(values) - 1
    if others < 1:
        return np.zeros(len(values))
    ordered = np.sort(values)
    below = np.searchsorted(ordered, values, side="left")
    ties = np.searchsorted(ordered, values, side="right") - below - 1  # the item itself is not its own baseline
    return 2.0 * (below + 0.5 * ties) / others - 1.0


def proxy_arousal(items: Sequence[Item], prosody: Sequence[Sequence[float]] | np.ndarray) -> list[ProxyLabel]:
    """Proxy labels of ``items`` from their ``(f0, intensity)`` rows, scored per ``<corpus>-<speaker>``."""
    values = np.asarray(prosody, dtype=np.float64).reshape(len(items), len(FEATURES))
    groups = [speaker_key(item) for item in items]
    per_feature = np.stack([rank_scores(values[:, i], groups) for i in range(len(FEATURES))], axis=1)
    means = per_feature.mean(axis=1)
    return [
        ProxyLabel(float(f0), float(level), float(mean), HIGH if mean > 0 else LOW)
        for (f0, level), mean in zip(per_feature, means)
    ]


def speaker_key(item: Item) -> str:
    """The baseline group of an item: its corpus and speaker (the item itself where the speaker is unknown)."""
    return f"{item.corpus}-{group_of(item)}"


# ------------------------------------------------------------------------------------------------ prosody of files


def prosody_of_files(paths: Sequence[str | os.PathLike], cache: Path | None = None) -> np.ndarray:
    """``(len(paths), 2)`` median f0 and intensity of audio files; an unreadable file raises an
    :class:`~sermodels.audio.AudioError` naming it. ``cache`` (JSON) keeps values across calls and corpora."""
    stored = _read_cache(cache)
    keys = [_file_key(path) for path in paths]
    missing = [(path, key) for path, key in zip(paths, keys) if key not in stored]
    try:
        for path, key in missing:
            f0, level = utterance_prosody(load_audio(path, DEFAULT_SAMPLE_RATE), DEFAULT_SAMPLE_RATE)
            stored[key] = [None if math.isnan(f0) else f0, level]
    finally:  # what was computed before a bad file is kept
        if cache is not None and missing:
            atomic_write_text(cache, json.dumps({"version": CACHE_VERSION, "entries": stored}))
    return np.array([[math.nan if v is None else v for v in stored[key]] for key in keys], dtype=np.float64)


def _file_key(path: str | os.PathLike) -> str:
    """Fingerprint of a file's identity (absolute path, size, mtime) and of the tracker settings."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return f"missing:{resolved}"  # never cached: load_audio reports it
    text = json.dumps([str(resolved), stat.st_size, stat.st_mtime_ns, TRACKER_SETTINGS], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_cache(cache: Path | None) -> dict[str, list[float | None]]:
    if cache is None or not Path(cache).is_file():
        return {}
    try:
        data = json.loads(Path(cache).read_text(encoding="utf-8"))
        if data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), dict):
            return data["entries"]
    except (OSError, ValueError, AttributeError) as err:
        warnings.warn(f"{cache}: unreadable prosody cache ({err}); recomputing", stacklevel=3)
    return {}


# ------------------------------------------------------------------------------------------------ tables


def default_root(corpus: str) -> Path:
    """The shared 16 kHz copy of a built-in corpus: ``$SERMODELS_DATA/<FOLDER>``, else ``../shared/data/<FOLDER>``."""
    folder = corpus_meta(corpus).folder
    if folder is None:
        raise ValueError(f"corpus {corpus!r} has no default folder: give its root")
    return Path(os.environ.get(DATA_ENV, DEFAULT_DATA)) / folder


def proxy_table(
    corpora: Sequence[str],
    roots: Mapping[str, str | os.PathLike] | None,
    out: str | os.PathLike,
    *,
    cache: Path | None = None,
) -> Path:
    """Write the proxy-arousal table of the built-in ``corpora`` to ``out`` (CSV, written atomically); return it.

    Columns :data:`TABLE_COLUMNS`: absolute ``path``, ``label`` (high/low), ``speaker`` (``<corpus>-<speaker>``),
    ``split`` (the item's partition in the corpus's ``"fixed"`` split), then ``corpus``, ``category`` (the corpus's
    own label, for :func:`proxy_agreement` only), ``score`` (a'), and the median ``f0`` and ``intensity``.
    ``roots``: corpus -> folder; corpora it leaves out are found with :func:`default_root`.
    """
    if not corpora:
        raise ValueError("name at least one corpus")
    rows = []
    for name in corpora:
        root = (roots or {}).get(name) or default_root(name)
        rows.extend(_corpus_rows(name, Path(root), cache))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(out, buffer.getvalue())
    return Path(out)


def _corpus_rows(name: str, root: Path, cache: Path | None) -> list[list[str]]:
    """Table rows of one corpus: its items scored against baselines of their own speakers."""
    corpus = load_corpus(name, root)
    if any(item.speaker is None for item in corpus.items):
        raise ValueError(f"{name} at {root}: proxy labels rank an utterance among its speaker's, and some items have "
                         "no speaker (give a table with a speaker column)")  # fmt: skip
    partition = {item.id: part for part, items in corpus.split("fixed").items() for item in items}
    unplaced = [item.id for item in corpus.items if item.id not in partition]
    if unplaced:
        raise ValueError(f"{name}: {len(unplaced)} items in no partition of the fixed split, e.g. {unplaced[:3]}")
    prosody = prosody_of_files([item.path for item in corpus.items], cache)
    labels = proxy_arousal(corpus.items, prosody)
    return [
        [
            str(Path(item.path).resolve()),
            proxy.label,
            speaker_key(item),
            partition[item.id],
            name,
            item.label or "",
            f"{proxy.score:.6g}",
            f"{f0:.6g}",
            f"{level:.6g}",
        ]
        for item, proxy, (f0, level) in zip(corpus.items, labels, prosody)
    ]


def proxy_agreement(table: str | os.PathLike) -> dict[str, dict[str, float | int | None]]:
    """How the proxy labels of a :func:`proxy_table` agree with the arousal of the corpora's own categories.

    Per corpus and over ``"all"``: ``items``, ``compared`` (items whose category has an arousal placement in
    :mod:`sermodels.labels`; the others are left out), ``uar`` of proxy high/low against that arousal, and the
    fractions ``proxy_high`` (of all items) and ``true_high`` (of the compared ones). A diagnostic only.
    """
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    corpora = dict.fromkeys(row["corpus"] for row in rows)  # in table order
    report = {name: _agreement([row for row in rows if row["corpus"] == name]) for name in corpora}
    report["all"] = _agreement(rows)
    return report


def _agreement(rows: list[dict[str, str]]) -> dict[str, float | int | None]:
    pairs = []
    for row in rows:
        try:
            pairs.append((arousal(row["category"]), row["label"]))
        except UnknownLabelError:
            continue
    recalls = []
    for level in (LOW, HIGH):
        predicted = [proxy for truth, proxy in pairs if truth == level]
        if predicted:
            recalls.append(sum(p == level for p in predicted) / len(predicted))
    return {
        "items": len(rows),
        "compared": len(pairs),
        "uar": float(np.mean(recalls)) if recalls else None,
        "proxy_high": sum(r["label"] == HIGH for r in rows) / len(rows) if rows else None,
        "true_high": sum(t == HIGH for t, _ in pairs) / len(pairs) if pairs else None,
    }


# ------------------------------------------------------------------------------------------------ command


def _root_entry(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=FOLDER, e.g. emodb=../shared/data/EMODB")
    return name.lower(), folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sermodels.data.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", required=True, help="built-in corpora: emodb ravdess emovo urdu")
    parser.add_argument("--roots", nargs="*", type=_root_entry, default=[], help="NAME=FOLDER (default: shared)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV table to write")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"prosody cache (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", help="compute every file's prosody again, store nothing")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    table = proxy_table(
        [name.lower() for name in args.corpora], dict(args.roots), args.out, cache=None if args.no_cache else args.cache
    )
    print(f"wrote {table} in {time.perf_counter() - started:.1f} s")
    json.dump(proxy_agreement(table), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
