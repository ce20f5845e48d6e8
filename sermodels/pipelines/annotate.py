"""``sermodels annotate select`` / ``annotate import``: the human-in-the-loop half of the daylong pipeline.

**select** (NICU paper, Interspeech, §2.1 "medoid-based active learning" and §3.1): the speech segments found by
``sermodels daylong`` in one or more recordings are described by the 600-d log-mel functionals of §4.1, compressed
by an autoencoder, clustered by k-medoids on Pearson distances (k = N/3 by default) and ranked by cluster size
(:mod:`sermodels.active`). The medoids, largest cluster first, are what a human labels: ``selection.csv`` (rank,
recording, segment, start, end, cluster size, an empty ``label`` column to fill), the same segments as annotation
files per recording (Praat TextGrid / ELAN: a ``label`` tier whose intervals read ``?`` until labelled, and a
``rank`` tier), and optionally the segments as WAV clips. ``assignments.csv`` keeps every segment's cluster, for
propagating labels.

**import**: reads the labels back, from the filled ``label`` column of ``selection.csv`` or from labelled annotation
files (TextGrid / ELAN / Audacity / CSV; an interval labels the selected segment it overlaps by at least half), cuts
the labelled segments out of the recordings as 16-bit WAV clips and writes a corpus table (``labels.csv``: ``path,
label, speaker, recording, start, end, source``) that :mod:`sermodels.data.folder` reads, so ``sermodels finetune
--data OUT/labels.csv`` fine-tunes on it and the WDA driver uses it for its semi-supervised epoch selection. With
``propagate`` every segment of a labelled cluster gets its medoid's label (§2.1 "cluster labels"; ``source`` says
``medoid`` or ``cluster``). The recording is the speaker column: daylong audio has no speaker identities, and the
recording is the unit a split must keep apart; with fewer than three recordings the table gets a per-segment
stratified ``split`` column instead (and its test scores are then not recording-independent).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from sermodels._io import atomic_write_text
from sermodels.audio import load_region
from sermodels.features import LogMelFunctionals
from sermodels.pipelines import annotations as ann
from sermodels.pipelines.writers import table_csv

SELECTION_FILE = "selection.csv"
ASSIGNMENTS_FILE = "assignments.csv"
SOURCES_FILE = "sources.json"
PLACEHOLDER = "?"  # the text of a not yet labelled interval in the exported annotation files
MIN_OVERLAP = 0.5  # an annotated interval labels a selected segment it covers by at least this share
FEATURE_BATCH = 32
SELECTION_COLUMNS = ("rank", "recording", "segment", "start", "end", "cluster", "cluster_size", "clip", "label")
ASSIGNMENT_COLUMNS = ("recording", "segment", "start", "end", "start_sample", "end_sample", "cluster", "medoid_rank")
CORPUS_COLUMNS = ("path", "label", "speaker", "recording", "start", "end", "source")
# Fewer recordings than this cannot be split by recording (train / dev / test): the corpus gets a per-segment split.
MIN_RECORDINGS_FOR_GROUPS = 3
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class Segment:
    recording: str  # the recording's folder name in the daylong output (unique within a run)
    audio: Path  # the recording's audio file
    segment: int
    start: float
    end: float
    start_sample: int
    end_sample: int
    sample_rate: int


def read_daylong_outputs(folders: Sequence[str | Path]) -> list[Segment]:
    """Every segment of the finished recordings below ``folders`` (a run's output folder or recording folders)."""
    found: list[Segment] = []
    summaries = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (give the output folder of sermodels daylong)")
        here = (
            [folder / "summary.json"] if (folder / "summary.json").is_file() else sorted(folder.glob("*/summary.json"))
        )
        if not here:
            raise ValueError(f"{folder}: no finished daylong recording (summary.json) in it or its sub-folders")
        summaries += here
    for summary_file in summaries:
        summary = json.loads(summary_file.read_text())
        table = summary_file.parent / "segments.csv"
        if not table.is_file():
            raise ValueError(f"{summary_file.parent}: no segments.csv (run sermodels daylong with --tables csv)")
        audio = Path(summary["recording"])
        if not audio.is_absolute():  # outputs of an older run: relative to where it ran, tried from here
            audio = audio.resolve()
        if not audio.is_file():
            raise FileNotFoundError(f"{summary_file}: its recording {audio} is not there (moved or renamed?)")
        with open(table, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [
                c
                for c in ("segment", "start", "end", "start_sample", "end_sample")
                if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise ValueError(f"{table}: not a sermodels daylong segment table (no {', '.join(missing)} column)")
            for row in reader:
                found.append(
                    Segment(
                        recording=summary_file.parent.name,
                        audio=audio,
                        segment=int(row["segment"]),
                        start=float(row["start"]),
                        end=float(row["end"]),
                        start_sample=int(row["start_sample"]),
                        end_sample=int(row["end_sample"]),
                        sample_rate=int(summary["sample_rate"]),
                    )
                )
    names = [s.recording for s in found]
    if len({(s.recording, s.segment) for s in found}) != len(names):
        raise ValueError("two recordings of the given folders share a folder name; select from one daylong run")
    return found


@torch.inference_mode()
def segment_features(segments: Sequence[Segment], frontend: LogMelFunctionals | None = None) -> np.ndarray:
    """The 600-d log-mel functionals (NICU §4.1) of every segment, ``(N, 600)`` float32, in batches of similar
    lengths (padded batches give each segment its own values, see :class:`LogMelFunctionals`)."""
    frontend = frontend or LogMelFunctionals()
    out = np.zeros((len(segments), frontend.dim), dtype=np.float32)
    order = sorted(range(len(segments)), key=lambda i: segments[i].end_sample - segments[i].start_sample)
    for first in range(0, len(order), FEATURE_BATCH):
        chosen = order[first : first + FEATURE_BATCH]
        clips = [_clip(segments[i], frontend.config()["sample_rate"]) for i in chosen]
        lengths = torch.tensor([len(c) for c in clips])
        batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        out[chosen] = frontend(batch, lengths).float().numpy()
    return out


def select(
    folders: Sequence[str | Path],
    out: str | Path,
    *,
    k: int | None = None,
    budget: int | None = None,
    per_recording: bool = False,
    seed: int = 0,
    formats: Sequence[str] = ("textgrid", "eaf"),
    clips: bool = False,
) -> list[dict[str, Any]]:
    """Rank the segments of daylong outputs for annotation (module docstring); returns the selection rows."""
    from sermodels.active import select_medoids

    if per_recording and k is not None:
        raise ValueError("per recording, k is a third of each recording's segments; give --budget instead of --k")
    out = Path(out)
    segments = read_daylong_outputs(folders)
    if len(segments) < 2:
        raise ValueError(f"{len(segments)} segment(s) in {', '.join(map(str, folders))}: nothing to select from")
    features = segment_features(segments)
    groups = [s.recording for s in segments] if per_recording else None
    selection = select_medoids(features, k=k, seed=seed, groups=groups)
    medoids = list(selection.medoids)
    if budget is not None:
        medoids = medoids[:budget]
    sizes = dict(zip(selection.medoids, selection.sizes))
    rank_of = {m: r for r, m in enumerate(selection.medoids, start=1)}
    rows = []
    for rank, index in enumerate(medoids, start=1):
        s = segments[index]
        clip = ""
        if clips:
            clip = f"clips/{rank:05d}_{s.recording}_{s.segment:06d}.wav"
            samples = load_region(s.audio, s.start_sample, s.end_sample, s.sample_rate, nonfinite="zero")
            _write_wav(out / clip, samples, s.sample_rate)
        rows.append(
            {
                "rank": rank,
                "recording": s.recording,
                "segment": s.segment,
                "start": s.start,
                "end": s.end,
                "cluster": int(selection.assignment[index]) + 1,
                "cluster_size": int(sizes[index]),
                "clip": clip,
                "label": "",
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SELECTION_FILE, table_csv(SELECTION_COLUMNS, rows))
    assignments = [
        {
            "recording": s.recording,
            "segment": s.segment,
            "start": s.start,
            "end": s.end,
            "start_sample": s.start_sample,
            "end_sample": s.end_sample,
            "cluster": int(selection.assignment[i]) + 1,
            "medoid_rank": rank_of[int(selection.medoid_of(i))],
        }
        for i, s in enumerate(segments)
    ]
    atomic_write_text(out / ASSIGNMENTS_FILE, table_csv(ASSIGNMENT_COLUMNS, assignments))
    sources = {s.recording: {"audio": str(s.audio.resolve()), "sample_rate": s.sample_rate} for s in segments}
    meta = {"recordings": sources, "segments": len(segments), "k": len(selection.medoids), "seed": seed}
    meta |= {"per_recording": per_recording, "budget": budget, "features": "logmel_functionals_600"}
    atomic_write_text(out / SOURCES_FILE, json.dumps(meta, indent=1) + "\n")
    _write_selection_annotations(out, rows, sources, formats)
    return rows


def _write_selection_annotations(out: Path, rows: list[dict], sources: dict[str, dict], formats: Sequence[str]) -> None:
    for recording in sorted({r["recording"] for r in rows}):
        mine = [r for r in rows if r["recording"] == recording]
        tiers = {
            "label": [ann.Interval(r["start"], r["end"], PLACEHOLDER) for r in mine],
            "rank": [ann.Interval(r["start"], r["end"], str(r["rank"])) for r in mine],
        }
        audio = sources[recording]["audio"]
        duration = max(sf.info(audio).duration, max(r["end"] for r in mine))
        for kind in formats:
            if kind == "textgrid":
                ann.write_textgrid(out / f"{recording}.TextGrid", tiers, duration)
            elif kind == "eaf":
                ann.write_eaf(out / f"{recording}.eaf", tiers, media=audio)
            elif kind != "csv":
                raise ValueError(f"unknown annotation format {kind!r}: textgrid, eaf or csv (selection.csv)")


# ------------------------------------------------------------------------------------------------ import


def read_labels(selection_dir: Path, labelled: Sequence[str | Path] = ()) -> dict[int, str]:
    """Rank -> label, from ``selection.csv``'s filled ``label`` cells and from labelled annotation files (a file
    named after a recording labels that recording's segments; a CSV selection copy labels by rank)."""
    rows = _read_csv(selection_dir / SELECTION_FILE)
    labels = {int(r["rank"]): r["label"].strip() for r in rows if r["label"].strip() not in ("", PLACEHOLDER)}
    by_recording: dict[str, list[dict]] = {}
    for r in rows:
        by_recording.setdefault(r["recording"], []).append(r)
    for file in map(Path, labelled):
        if file.suffix.lower() == ".csv" and "rank" in _header(file):
            for r in _read_csv(file):
                if r.get("label", "").strip() not in ("", PLACEHOLDER):
                    labels[int(r["rank"])] = r["label"].strip()
            continue
        # The recording whose name the file's name starts with (recording names may hold dots: 2021.05.03.eaf).
        matches = [r for r in by_recording if file.name == r or file.name.startswith(r + ".")]
        recording = max(matches, key=len) if matches else None
        if recording is None:
            raise ValueError(
                f"{file}: its name does not start with a recording of the selection "
                f"({', '.join(sorted(by_recording))}); name annotation files after their recording"
            )
        tiers = ann.read_annotations(file)
        tier = tiers.get("label") or next(iter(tiers.values()), [])
        for interval in tier:
            text = interval.text.strip()
            if text in ("", PLACEHOLDER):
                continue
            for r in by_recording[recording]:
                start, end = float(r["start"]), float(r["end"])
                overlap = min(end, interval.end) - max(start, interval.start)
                if overlap >= MIN_OVERLAP * (end - start):
                    labels[int(r["rank"])] = text
    return labels


def import_labels(
    selection_dir: str | Path,
    out: str | Path,
    labelled: Sequence[str | Path] = (),
    *,
    propagate: bool = False,
) -> list[dict[str, Any]]:
    """The labelled segments as a corpus table ``out/labels.csv`` with WAV clips under ``out/clips/``."""
    selection_dir, out = Path(selection_dir), Path(out)
    meta = json.loads((selection_dir / SOURCES_FILE).read_text())
    labels = read_labels(selection_dir, labelled)
    if not labels:
        raise ValueError(
            f"{selection_dir}: no labels found (fill the label column of {SELECTION_FILE}, or give the labelled "
            "TextGrid/ELAN/Audacity/CSV files)"
        )
    medoids = {int(r["rank"]): (r["recording"], r["segment"]) for r in _read_csv(selection_dir / SELECTION_FILE)}
    rows = []
    for a in _read_csv(selection_dir / ASSIGNMENTS_FILE):
        rank = int(a["medoid_rank"])
        if rank not in labels:
            continue
        selected = medoids.get(rank) == (a["recording"], a["segment"])
        if not (selected or propagate):
            continue
        source = meta["recordings"][a["recording"]]
        rate = int(source["sample_rate"])
        start, end = float(a["start"]), float(a["end"])
        clip = f"clips/{a['recording']}_{int(a['segment']):06d}.wav"
        samples = load_region(source["audio"], int(a["start_sample"]), int(a["end_sample"]), rate, nonfinite="zero")
        _write_wav(out / clip, samples, rate)
        rows.append(
            {
                "path": clip,
                "label": labels[rank],
                "speaker": a["recording"],
                "recording": a["recording"],
                "start": start,
                "end": end,
                "source": "medoid" if selected else "cluster",
            }
        )
    columns = list(CORPUS_COLUMNS)
    if len({r["recording"] for r in rows}) < MIN_RECORDINGS_FOR_GROUPS:
        _add_split(rows)
        columns.append("split")
    atomic_write_text(out / "labels.csv", table_csv(columns, rows))
    return rows


def _add_split(rows: list[dict[str, Any]], seed: int = 0) -> None:
    """A per-segment stratified train/dev/test split (≈70/10/20 %) for a corpus of fewer than three recordings,
    which cannot be split by recording: segments of one recording then meet in training and test, so its test
    scores are not recording-independent (the ``split`` column tells :mod:`sermodels.data.folder` to use it)."""
    rng = np.random.default_rng(seed)
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label]
        order = rng.permutation(len(mine))
        n_test = max(1, round(SPLIT_FRACTIONS[2] * len(mine))) if len(mine) >= 3 else 0
        n_dev = max(1, round(SPLIT_FRACTIONS[1] * len(mine))) if len(mine) >= 3 else 0
        for position, index in enumerate(order):
            mine[index]["split"] = "test" if position < n_test else "dev" if position < n_test + n_dev else "train"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run sermodels annotate select first)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def _clip(segment: Segment, rate: int) -> torch.Tensor:
    return load_region(
        segment.audio, segment.start_sample, segment.end_sample, segment.sample_rate, rate=rate, nonfinite="zero"
    )


def _write_wav(path: Path, samples: torch.Tensor, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, samples.numpy(), rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
