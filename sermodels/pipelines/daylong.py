"""``sermodels daylong``: speech emotion over long real-world recordings (hours to days), resumable, in bounded memory.

The NICU paper (Interspeech; §3.1) analyses 16-hour daylong recordings by cutting them into utterance-sized speech
segments (LENA's diarisation there; a voice-activity detector here), discarding segments shorter than 600 ms, and
describing each segment by binary arousal and valence. Per recording this module:

1. streams the file in blocks of ``block_seconds`` (:func:`sermodels.audio.stream_audio`; one block in memory);
2. finds speech with a streaming voice-activity detector (:mod:`sermodels.pipelines.vad`: silero-vad, or the
   energy detector). The detector is reset at every block and first reads the last ``warmup_seconds`` of the block
   before, so a block's speech probabilities depend only on that stretch of audio: a resumed run gives the same
   segments as an uninterrupted one;
3. applies the segment rules (:class:`~sermodels.pipelines.vad.SegmentRules`: merge gaps < 300 ms, drop < 600 ms,
   split > 10 s; all settings) with a streaming segmenter whose state is saved after every block;
4. scores each closed segment (its audio read back from the file, at most ``max_duration`` long) with the heads of a
   zoo model that give arousal/valence (:mod:`sermodels.pipelines.readout`), in batches;
5. appends the block's segment rows to ``.work/segments.partial.jsonl`` and then records the block as done in
   ``.work/progress.json`` (atomic rename). An interruption loses at most the block in flight; rows of a block not yet
   recorded as done are dropped on resume and computed again.

When the stream ends, the recording's outputs are written (:mod:`sermodels.pipelines.daylong_report`): the segment
table (CSV / JSON / Parquet), the timeline plot, the HTML summary, annotation files (Praat TextGrid, ELAN, Audacity
labels) and ``summary.json``. Unreadable regions (a read error, NaN samples) are reported in the summary and the HTML
page, never fatal; a recording that cannot be opened at all is reported as failed and the run goes on.

Many recordings: :func:`sermodels.pipelines.daylong_runner.run_daylong` hands the list to Lightning's predict loop,
which shards it over processes or GPUs without repeats; each rank processes whole recordings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sermodels._io import atomic_write_text, software_versions
from sermodels.audio import AudioError, audio_info, load_region, stream_audio
from sermodels.models.base import SERModel
from sermodels.pipelines import daylong_report as report
from sermodels.pipelines.inputs import file_key
from sermodels.pipelines.readout import Reading, combine
from sermodels.pipelines.resume import locked
from sermodels.pipelines.vad import VAD, Segmenter, SegmentRules

# Blocks of a minute: 3.8 MB of float32 audio at 16 kHz; a 16 h file is 960 blocks, each a resume point. (Five
# minute blocks cost 140 MB more peak memory on a long file, measured, for no gain in speed.)
BLOCK_SECONDS = 60.0
# Audio of the block before that the detector reads (and discards) after its reset at a block start.
WARMUP_SECONDS = 4.0
BATCH_SIZE = 16
WORK_FOLDER = ".work"  # progress, the rows so far and the lock of a recording's folder
PROGRESS_FILE = f"{WORK_FOLDER}/progress.json"
ROWS_FILE = f"{WORK_FOLDER}/segments.partial.jsonl"
SUMMARY_FILE = "summary.json"
FAILED_FILE = "failed.json"  # why a recording could not be processed (removed when a rerun succeeds)
TIME_DECIMALS = 3


@dataclass(frozen=True)
class DaylongSettings:
    """Everything a recording's results depend on besides the model (stored in ``progress.json``)."""

    rules: SegmentRules = field(default_factory=SegmentRules)
    vad: str = "auto"
    vad_options: dict[str, Any] = field(default_factory=dict)
    block_seconds: float = BLOCK_SECONDS
    warmup_seconds: float = WARMUP_SECONDS
    heads: tuple[str, ...] | None = None
    batch_size: int = BATCH_SIZE
    bin_minutes: float = report.BIN_MINUTES
    tables: tuple[str, ...] = ("csv",)
    annotations: tuple[str, ...] = report.ANNOTATION_FORMATS

    def __post_init__(self) -> None:
        if self.block_seconds <= 0 or self.warmup_seconds < 0:
            raise ValueError("block_seconds must be positive and warmup_seconds not negative")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        bad = [t for t in self.tables if t not in report.TABLE_FORMATS]
        bad += [a for a in self.annotations if a not in report.ANNOTATION_FORMATS]
        if bad:
            raise ValueError(
                f"unknown output format(s) {bad}: tables {report.TABLE_FORMATS}, "
                f"annotations {report.ANNOTATION_FORMATS}"
            )


@dataclass
class RecordingResult:
    path: str
    folder: str
    ok: bool
    summary: dict[str, Any] | None = None
    error: str | None = None


# ------------------------------------------------------------------------------------------------ one recording


class RecordingJob:
    """One recording through VAD, segmentation and scoring, resumable per block (module docstring)."""

    def __init__(
        self,
        path: Path,
        folder: Path,
        model: SERModel,
        readings: list[Reading],
        vad: VAD,
        settings: DaylongSettings,
        model_id: str,
        device: torch.device,
    ):
        self.path, self.folder, self.model, self.readings = path, folder, model, readings
        self.vad, self.settings, self.model_id, self.device = vad, settings, model_id, device
        self.rate = model.sample_rate
        self.problems: list[dict[str, Any]] = []  # segments that could not be read back, until saved with a block
        hop = vad.hop
        self.block = max(1, round(settings.block_seconds * self.rate / hop)) * hop
        # A detector with a history (the energy detector's noise floor) warms up over all of it, so that its state
        # at a block start is the same whether or not a run was interrupted there.
        history = getattr(vad, "history", 0) * hop
        self.warmup = max(round(settings.warmup_seconds * self.rate / hop) * hop, history)

    def fingerprint(self) -> dict[str, Any]:
        """What the stored progress must match to be resumed."""
        return {
            "recording": file_key(self.path),
            "model": self.model_id,
            "model_config": _digest(self.model.config()),
            "heads": [r.head for r in self.readings],
            "vad": self.vad.config(),
            "rules": asdict(self.settings.rules),
            "block_samples": self.block,
            "warmup_samples": self.warmup,
            "sample_rate": self.rate,
        }

    def run(self, restart: bool = False, progress_bar: bool = True) -> dict[str, Any]:
        with locked(self.folder / WORK_FOLDER):
            state = self._open(restart)
            described = self._describe()
            summary_file = self.folder / SUMMARY_FILE
            if state.get("complete") and summary_file.is_file():
                summary = json.loads(summary_file.read_text())
                if summary.get("settings") == json.loads(json.dumps(described["settings"])):
                    return summary
                # Other output formats or bins were asked for: rewrite the outputs from the rows, no audio work.
            if not state.get("stream_done"):
                self._kept_rows(state["blocks_done"])  # drop the rows of a block in flight at an interruption
                self._stream(state, progress_bar)
            # Done blocks and the pseudo-block of segments closed at the end of the stream.
            rows = self._kept_rows(state["blocks_done"] + 1)
            summary = report.write_outputs(self.folder, self.path, rows, state, described)
            state["complete"] = True
            self._save(state)
            return summary

    # -- progress

    def _open(self, restart: bool) -> dict[str, Any]:
        progress = self.folder / PROGRESS_FILE
        fingerprint = json.loads(json.dumps(self.fingerprint()))
        if restart:
            for name in (PROGRESS_FILE, ROWS_FILE, SUMMARY_FILE):
                (self.folder / name).unlink(missing_ok=True)
        if progress.is_file():
            try:
                state = json.loads(progress.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{progress}: unreadable ({err}); rerun with --restart") from err
            if state.get("fingerprint") != fingerprint:
                changed = [k for k in fingerprint if state.get("fingerprint", {}).get(k) != fingerprint[k]]
                what = ", ".join(changed)
                if changed == ["recording"]:
                    what = "the recording's size or modification time changed since"
                raise ValueError(
                    f"{self.folder} holds work on {self.path} done with other settings ({what}); "
                    "rerun with the same settings to resume it, or add --restart to discard it"
                )
            return state
        state = {
            "fingerprint": fingerprint,
            "blocks_done": 0,
            "samples": 0,
            "segmenter": None,
            "problems": [],
            "stream_done": False,
            "complete": False,
        }
        self._save(state)
        return state

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.folder / PROGRESS_FILE, json.dumps(state, indent=1) + "\n")

    def _kept_rows(self, blocks: int) -> list[dict[str, Any]]:
        """Rows of the blocks recorded as done; rows of a block in flight at an interruption are dropped (and the
        file rewritten without them, so appending goes on from a clean state)."""
        path = self.folder / ROWS_FILE
        if not path.is_file():
            return []
        rows, dropped = [], False
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped = True  # a half-written last line
                continue
            if row["block"] < blocks:
                rows.append(row)
            else:
                dropped = True
        if dropped:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        return rows

    # -- the stream

    def _stream(self, state: dict[str, Any], progress_bar: bool) -> None:
        done = state["blocks_done"]
        rules = self.settings.rules
        if state["segmenter"] is None:
            segmenter = Segmenter(rules, self.vad.hop, self.rate)
        else:
            segmenter = Segmenter.from_state(rules, self.vad.hop, self.rate, state["segmenter"])
        tail: torch.Tensor | None = None
        index = done - 1
        bar = _bar(self.path, progress_bar)
        for block in stream_audio(
            self.path, self.rate, block_seconds=self.block / self.rate, start_block=max(0, done - 1)
        ):
            if block.index < done:  # the block before a resume point: only its tail, to warm the detector up
                tail = block.samples[-self.warmup :] if self.warmup else None
                continue
            index = block.index
            probs = self._speech_probabilities(tail, block.samples)
            closed = segmenter.feed(probs)
            self._append(self._score(closed, index))
            state["problems"] += [{"block": index, **p} for p in self.problems]
            self.problems.clear()
            if block.problem:
                state["problems"].append(
                    {"block": index, "start": round(block.start / self.rate, 3), "problem": block.problem}
                )
            tail = block.samples[-self.warmup :] if self.warmup else None
            state.update(blocks_done=index + 1, samples=block.start + len(block.samples), segmenter=segmenter.state())
            self._save(state)
            if bar is not None:
                bar.update(len(block.samples) / self.rate)
        if bar is not None:
            bar.close()
        last = max(index, done - 1) + 1  # the pseudo-block of the segments closed at the end of the stream
        self._append(self._score(segmenter.finish(state["samples"]), last))
        state["problems"] += [{"block": last, **p} for p in self.problems]
        self.problems.clear()
        state.update(stream_done=True, segmenter=None)
        self._save(state)

    def _speech_probabilities(self, tail: torch.Tensor | None, samples: torch.Tensor) -> torch.Tensor:
        self.vad.reset()
        if tail is not None and len(tail):
            self.vad(tail)
        probs = self.vad(samples)
        return probs

    def _append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with open(self.folder / ROWS_FILE, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in rows))
            handle.flush()
            os.fsync(handle.fileno())

    # -- scoring

    def _score(self, segments: Sequence[tuple[int, int]], block: int) -> list[dict[str, Any]]:
        if not segments:
            return []
        order = sorted(range(len(segments)), key=lambda i: segments[i][1] - segments[i][0], reverse=True)
        per_segment: dict[int, dict[str, Any]] = {}
        size = self.settings.batch_size
        for first in range(0, len(order), size):
            chosen = order[first : first + size]
            clips = {}
            for i in chosen:
                try:  # NaN samples were zeroed and reported by the stream; here too
                    clips[i] = load_region(self.path, *segments[i], self.rate, nonfinite="zero")
                except AudioError as err:  # e.g. the region runs into a read error: the segment is reported
                    self.problems.append({"start": round(segments[i][0] / self.rate, 3), "problem": err.problem})
            if clips:
                for i, values in zip(clips, self._score_clips(list(clips.values()))):
                    per_segment[i] = values
        rows = []
        for i, (start, end) in enumerate(segments):
            if i not in per_segment:
                continue
            rows.append(
                {
                    "block": block,
                    "start": round(start / self.rate, TIME_DECIMALS),
                    "end": round(end / self.rate, TIME_DECIMALS),
                    "start_sample": start,
                    "end_sample": end,
                    **per_segment[i],
                }
            )
        return rows

    @torch.inference_mode()
    def _score_clips(self, clips: list[torch.Tensor]) -> list[dict[str, Any]]:
        lengths = torch.tensor([len(c) for c in clips])
        batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        batch, lengths = batch.to(self.device), lengths.to(self.device)
        per_head, columns = [], [{} for _ in clips]
        for reading in self.readings:
            outputs = self.model(batch, lengths, head=reading.head).float()
            reading.spec.check(outputs, len(clips), reading.head)
            if not torch.isfinite(outputs).all():
                raise RuntimeError(f"{self.path}: the model produced non-finite outputs on head {reading.head!r}")
            scores = self.model.scores(outputs, reading.head) if reading.spec.kind == "categories" else None
            outputs, scores = outputs.cpu(), (scores.cpu() if scores is not None else None)
            per_head.append(reading.read(outputs, scores))
            for row, out, score in zip(columns, outputs, scores if scores is not None else outputs):
                row.update(report.head_columns(reading, out, score))
        return [av | head for av, head in zip(combine(self.readings, per_head), columns)]

    def _describe(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "heads": [{"head": r.head, "way": r.way, "gives": list(r.gives)} for r in self.readings],
            "vad": self.vad.config(),
            "rules": asdict(self.settings.rules),
            "sample_rate": self.rate,
            "settings": {
                "block_seconds": self.block / self.rate,
                "warmup_seconds": self.warmup / self.rate,
                "bin_minutes": self.settings.bin_minutes,
                "tables": list(self.settings.tables),
                "annotations": list(self.settings.annotations),
            },
            "software": software_versions(),
        }


# ------------------------------------------------------------------------------------------------ many recordings


def process_recording(job: RecordingJob, restart: bool = False, progress: bool = True) -> RecordingResult:
    """Run ``job``; a recording that cannot be read is reported (``failed.json`` in its folder), not raised."""
    try:
        summary = job.run(restart=restart, progress_bar=progress)
    except (AudioError, OSError, ValueError, RuntimeError, ImportError) as err:  # OutputInUse: a RuntimeError
        problem = str(err) if str(job.path) in str(err) else f"{job.path}: {err}"
        print(f"daylong: skipped {problem}", file=sys.stderr)
        job.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(job.folder / FAILED_FILE, json.dumps({"recording": str(job.path), "error": problem}) + "\n")
        return RecordingResult(str(job.path), str(job.folder), False, error=problem)
    (job.folder / FAILED_FILE).unlink(missing_ok=True)
    return RecordingResult(str(job.path), str(job.folder), True, summary=summary)


def recording_folders(paths: Sequence[Path], out: Path) -> list[Path]:
    """``out/<file stem>`` per recording; stems that clash get a short hash of the absolute path appended."""
    stems = [_slug(p.stem) for p in paths]
    counts = {s: stems.count(s) for s in stems}
    folders = []
    for path, stem in zip(paths, stems):
        if counts[stem] > 1:
            stem = f"{stem}-{hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:8]}"
        folders.append(out / stem)
    return folders


# ------------------------------------------------------------------------------------------------ helpers


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "recording"
    return slug[:100]


def _bar(path: Path, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    try:
        total = audio_info(path).duration
    except AudioError:
        total = None
    return tqdm(total=math.floor(total) if total else None, unit="s", desc=path.name, leave=False, file=sys.stderr)
