"""``sermodels predict``: a model's head over audio files, in input order, for every kind of output a head declares.

What is written depends on the head's output spec (:mod:`sermodels.outputs`):

- ``categories``: ``path, label, score_<class>...``: the top class and a score per class (probabilities, or SVM
  decision values: ``score_kind``). Class names are prefixed with ``score_`` so that none can clash with a column.
- ``dimensions``: ``path`` and one column per dimension name (``arousal``, ``valence``).
- ``embedding``: ``path, emb_0 .. emb_{D-1}``.
- A frame-level head gives a timeline: one row per output frame, ``path, start, end`` (seconds from the start of the
  file) and the kind's columns; with ``timeline_seconds`` the frames are averaged over windows of that length (a
  shorter table; categories are scored from the averaged logits). ``result.rows`` then holds one row per file, the
  whole file averaged (``start`` 0, ``end`` its duration), and ``result.timelines`` the rows of each file.

Every file's output is checked against the spec (``spec.check``). Files longer than ``max_chunk_seconds`` go through
the model in consecutive chunks: an utterance-level output is the length-weighted mean of the chunks' outputs
(logits for categories), so every second counts equally; a frame-level output is the chunks' valid frames
(``model.output_lengths``) concatenated in time. A chunk is a whole number of frames when a frame is a whole number
of samples (160 at 16 kHz and 100 frames/s), so no frame straddles two chunks; frames next to a chunk boundary see
only their own chunk's audio.

Decoding (``decode_workers`` threads ahead of the model, in input order), batching, bounded memory, bad files and
the host-to-device copy: :mod:`sermodels.pipelines.engine`. With ``out``, the results so far are written atomically
when at least ``save_every_seconds`` have passed since the last write (checked after every batch) and when the run
ends, also when it ends with an exception such as Ctrl-C: every file finished before the interruption is on disk,
and a file on disk is always a complete, parseable snapshot. JSON snapshots carry ``"complete": false`` until the
end. A file's result is recorded when the last of its chunks has been through the model, never a partial average.

The timed snapshots are written by one background thread (:class:`SnapshotWriter`), so a large table being
formatted and synced to disk does not stall the model: the loop hands it a copy of the finished files and goes on.
One write at a time; a snapshot requested while one is being written waits, and a newer one replaces it. The final
snapshot is written by the calling thread after the writer thread has stopped, so it is always the last write and
complete; a failed background write is raised in the calling thread at the next check (or at the end), as a
synchronous write's error would be. ``background_writes=False`` writes every snapshot in the loop itself.
What the command prints on the terminal: :mod:`sermodels.pipelines.terminal`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import torch

from sermodels._io import atomic_write_text
from sermodels.audio import frames_for
from sermodels.models.base import SERModel
from sermodels.outputs import OutputSpec, categories
from sermodels.pipelines.engine import BatchEngine, Cut, Finished, chunks, steps, weighted_mean
from sermodels.pipelines.inputs import expand_inputs
from sermodels.pipelines.writers import pyarrow, table_csv, write_table_parquet
from sermodels.runtime import prepare_for_inference

SCORE_PREFIX = "score_"
FORMATS = ("csv", "json", "parquet")
TEXT_COLUMNS = ("path", "label", "error")  # every other column of a table is a number
RESERVED_COLUMNS = ("path", "start", "end", "label", "error")
TIME_DECIMALS = 6  # start/end rounded to the microsecond: 0.3, not 0.30000000000000004


@dataclass
class PredictionResult:
    """The outcome of :func:`run_predictions`.

    ``rows``: one dict per successfully predicted file, in input order, with the columns of the head's kind (module
    docstring); for a frame-level head the file averaged over its frames. ``failures``: ``(path, reason)`` for every
    file that could not be predicted, in input order. ``outputs[i]``: the raw output of ``rows[i]``'s file, float32
    on the CPU: ``(size,)`` for an utterance-level head (logits for categories), ``(frames, size)`` for a frame-level
    one. ``logits``: ``(len(rows), size)``, the utterance-level outputs stacked (each file's mean frame for a
    frame-level head). ``timelines[i]``: the timeline rows of ``rows[i]``'s file (frame-level heads only).
    """

    label_names: list[str]
    head: str
    score_kind: str | None
    rows: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    logits: torch.Tensor
    complete: bool = True
    # Input order across rows and failures: (True, i) is rows[i], (False, j) is failures[j].
    order: list[tuple[bool, int]] = field(default_factory=list, repr=False)
    spec: OutputSpec | None = None
    outputs: list[torch.Tensor] = field(default_factory=list, repr=False)
    timelines: list[list[dict[str, Any]]] = field(default_factory=list, repr=False)
    timeline_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.spec is None:  # built by hand from class names: a categories head
            self.spec = categories(self.label_names, score=self.score_kind or "probability")

    @property
    def paths(self) -> list[str]:
        return [row["path"] for row in self.rows]

    @property
    def predicted_indices(self) -> torch.Tensor:
        """Index of the top class per row, shape ``(len(rows),)``."""
        return self.logits.argmax(dim=-1) if len(self.rows) else torch.empty(0, dtype=torch.long)

    @property
    def timeline(self) -> list[dict[str, Any]]:
        """Every file's timeline rows, in input order (frame-level heads; empty otherwise)."""
        return [row for rows in self.timelines for row in rows]

    @property
    def columns(self) -> list[str]:
        """The columns of the written table, ``error`` aside."""
        return output_columns(self.spec)

    def records(self) -> list[dict[str, Any]]:
        """The written table: every input in input order (a failed file as its path and ``error``), a frame-level
        head's files as their timeline rows."""
        frame = self.spec.level == "frame"
        records: list[dict[str, Any]] = []
        for is_row, index in self.input_order():
            if not is_row:
                failed_path, reason = self.failures[index]
                records.append({"path": failed_path, "error": reason})
            elif frame:
                records += [{**row, "error": ""} for row in self.timelines[index]]
            else:
                records.append({**self.rows[index], "error": ""})
        return records

    def input_order(self) -> list[tuple[bool, int]]:
        if self.order:
            return self.order
        return [(True, i) for i in range(len(self.rows))] + [(False, j) for j in range(len(self.failures))]


def output_columns(spec: OutputSpec) -> list[str]:
    """``path``, ``start, end`` for frame-level heads, then the kind's columns (module docstring)."""
    times = ["start", "end"] if spec.level == "frame" else []
    if spec.kind == "categories":
        return ["path", *times, "label", *[f"{SCORE_PREFIX}{name}" for name in spec.names]]
    return ["path", *times, *spec.columns]


# ---------------------------------------------------------------------------------------------------- predict


def predict_files(model: SERModel, paths: Iterable[str | os.PathLike], **options: Any) -> PredictionResult:
    """Predict every audio file in ``paths``, folders expanded with :func:`~sermodels.pipelines.inputs.expand_inputs`.

    ``options`` are the keyword arguments of :func:`run_predictions`.
    """
    return run_predictions(model, expand_inputs(paths), **options)


def run_predictions(
    model: SERModel,
    paths: Sequence[str | os.PathLike],
    *,
    head: str | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_batch_seconds: float | None = None,
    max_chunk_seconds: float | None = None,
    out: str | os.PathLike | None = None,
    save_every_seconds: float = 60.0,
    timeline_seconds: float | None = None,
    postprocess: bool = True,
    decode_workers: int = 0,
    decode_processes: bool = False,
    resample_on_device: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    background_writes: bool = True,
) -> PredictionResult:
    """Predict exactly these files (folders are not expanded; :func:`predict_files` expands them).

    The model is moved to ``device`` and put in eval mode for the run (its train/eval mode is restored after).
    ``max_batch_seconds`` caps ``batch size x longest item`` in seconds (a single item longer than that still runs,
    alone, unless chunked). ``max_chunk_seconds``: a file longer than this goes through the model in consecutive
    chunks of that length (a last chunk shorter than ``model.min_duration`` is merged into the one before; see the
    module docstring for how chunk outputs are joined); a file no longer than a chunk is processed whole, exactly as
    without chunking. ``None`` takes the model's ``default_chunk_seconds`` (windowed inference with bounded memory
    for neural models; ``None`` = whole files for the SVM baselines), ``0`` forces whole files.
    ``timeline_seconds``: average a frame-level head's frames over windows of this length. ``out`` (``.csv``,
    ``.json`` or ``.parquet``): snapshots, see the module docstring. ``postprocess``: pass a frame-level head's
    whole-file frames through :meth:`~sermodels.models.base.SERModel.finish_frames` (a stored post-processing chain,
    e.g. conv_blstm's; False gives the network's raw frames).

    Speed: ``decode_workers`` threads (processes with ``decode_processes``, for short clips on many cores) decode
    files ahead of the model (0: in the calling thread);
    ``resample_on_device`` resamples files whose rate is not the model's on ``device`` instead of with soxr on the
    host (:mod:`sermodels.pipelines.engine`). ``precision`` (``fp32``, ``bf16``, ``fp16`` on CUDA), ``channels_last``
    and ``compile`` are those of :func:`sermodels.runtime.prepare_for_inference`, which sets the network up once
    for the run (bf16/fp16 and channels-last change the model in place, never its values).
    ``background_writes``: timed snapshots in a background thread (module docstring).
    """
    head = model.resolve_head(head)
    spec = model.output_spec(head)
    _check_options(model, spec, head, max_chunk_seconds, timeline_seconds, out)
    if max_chunk_seconds is None:
        max_chunk_seconds = getattr(model, "default_chunk_seconds", None)
    elif max_chunk_seconds == 0:
        max_chunk_seconds = None
    was_training = model.training  # prepare_for_inference switches the model to eval mode
    try:
        # The one place the network is prepared: what the forward calls (autocast and compile inside; attributes such
        # as output_lengths are the model's). An unknown precision, or fp16 off CUDA, fails here, before any work.
        network = prepare_for_inference(
            model, device=device, precision=precision, channels_last=channels_last, compile=compile
        )
        engine = BatchEngine(
            module=model,
            sample_rate=model.sample_rate,
            forward=partial(_forward, network, head, spec),
            combine=_combine_frames if spec.level == "frame" else weighted_mean,
            cut=partial(_cut, chunk=_chunk_samples(model, spec, max_chunk_seconds), minimum=_min_samples(model)),
            min_duration=model.min_duration,
            batch_size=batch_size,
            max_batch_seconds=max_batch_seconds,
            device=device,
            nonfinite=f"the model produced non-finite {'logits' if spec.kind == 'categories' else 'outputs'} (NaN/Inf)",
            decode_workers=decode_workers,
            decode_processes=decode_processes,
            resample_on_device=resample_on_device,
        )
    except BaseException:  # invalid settings: the model keeps the train/eval mode it was given
        model.train(was_training)
        raise
    paths = [Path(p) for p in paths]
    outcomes: list[_FileOutcome | str | None] = [None] * len(paths)
    collect = partial(_collect, model, head, spec, paths)
    snapshot = partial(_write_snapshot, collect, timeline_seconds, out)
    writer = SnapshotWriter(snapshot) if out is not None and background_writes else None
    last_save = time.monotonic()
    finished = False
    try:
        with steps(engine, paths, desc="predict", progress=progress) as run:
            for step in run:
                finished_now = _outcomes(model, head, spec, paths, step.finished, timeline_seconds, postprocess)
                for done, outcome in zip(step.finished, finished_now):
                    outcomes[done.index] = outcome
                if out is not None and time.monotonic() - last_save >= save_every_seconds:
                    # A copy of the list (not of the outcomes, which are never changed once set): the writer sees
                    # the files finished so far, whatever the loop records while it writes.
                    if writer is not None:
                        writer.submit(list(outcomes))
                    else:
                        snapshot(list(outcomes))
                    last_save = time.monotonic()
        finished = True
    finally:
        model.train(was_training)
        failed_write = writer.stop() if writer is not None else None
        if out is not None and (finished or any(outcome is not None for outcome in outcomes)):
            snapshot(outcomes, complete=finished)
    if failed_write is not None:  # the run and the final snapshot are fine, a timed one failed: say so
        raise failed_write
    return collect(outcomes, timeline_seconds, complete=True)


def _write_snapshot(
    collect: Callable[..., PredictionResult],
    timeline_seconds: float | None,
    out: str | os.PathLike,
    outcomes: list,
    *,
    complete: bool = False,
) -> None:
    """Write the table of ``outcomes`` (``None``: not finished yet) to ``out``, atomically."""
    write_predictions(collect(outcomes, timeline_seconds, complete=complete), out)


class SnapshotWriter:
    """One background thread that writes snapshots with ``write(snapshot)``, one at a time, the latest first.

    :meth:`submit` hands over a snapshot and returns at once; one submitted while a write is under way waits for
    it and is replaced by any newer submission (nothing is gained by writing an older table). A write that raises
    stops the thread; its exception is raised by the next :meth:`submit`, and :meth:`stop` returns it. :meth:`stop`
    waits for the write under way (a complete file: writes are atomic), drops one not started and ends the thread,
    after which the caller writes the final snapshot itself: no background write can come after it.
    """

    def __init__(self, write: Callable[[Any], None]):
        self._write = write
        self._changed = threading.Condition()
        self._waiting: list[Any] = []  # at most one snapshot, submitted and not started
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sermodels-snapshots", daemon=True)
        self._thread.start()

    def submit(self, snapshot: Any) -> None:
        with self._changed:
            if self._error is not None:
                raise RuntimeError(f"writing a snapshot failed: {self._error}") from self._error
            self._waiting[:] = [snapshot]
            self._changed.notify()

    def stop(self) -> RuntimeError | None:
        """End the thread after the write under way; the error of a failed write (as raised by :meth:`submit`)."""
        with self._changed:
            self._stopping = True
            self._waiting.clear()
            self._changed.notify()
        self._thread.join()
        if self._error is None:
            return None
        error = RuntimeError(f"writing a snapshot failed: {self._error}")
        error.__cause__ = self._error
        return error

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                snapshot = self._waiting.pop()
            try:
                self._write(snapshot)
            except BaseException as err:  # reported in the calling thread
                with self._changed:
                    self._error = err
                return


def _check_options(
    model: SERModel,
    spec: OutputSpec,
    head: str,
    max_chunk_seconds: float | None,
    timeline_seconds: float | None,
    out: str | os.PathLike | None,
) -> None:
    """Refuse, before any work, what would fail later."""
    if max_chunk_seconds and max_chunk_seconds < max(model.min_duration, 1.0 / model.sample_rate):
        raise ValueError(
            f"max_chunk_seconds={max_chunk_seconds} is shorter than the model's minimum input ({model.min_duration} s)"
        )
    clash = sorted(set(spec.columns) & set(RESERVED_COLUMNS)) if spec.kind != "categories" else []
    if clash:
        raise ValueError(f"head {head!r} names outputs {clash}, which clash with the columns {RESERVED_COLUMNS}")
    if timeline_seconds is not None:
        if spec.level != "frame":
            raise ValueError(f"timeline_seconds averages the frames of a frame-level head; {head!r} is utterance-level")
        if not (math.isfinite(timeline_seconds) and timeline_seconds > 0):
            raise ValueError(f"timeline_seconds must be a positive number of seconds, got {timeline_seconds}")
        if timeline_seconds * spec.frame_rate < 1 - 1e-9:
            raise ValueError(
                f"timeline_seconds={timeline_seconds} is shorter than one frame of head {head!r} "
                f"({1 / spec.frame_rate:g} s at {spec.frame_rate:g} frames/s)"
            )
    if out is not None:
        check_output_path(out)


def check_output_path(out: str | os.PathLike) -> None:
    """A ``.csv``, ``.json`` or ``.parquet`` path (Parquet only with pyarrow installed), or a ValueError/ImportError."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"{out}: unsupported output format; use a .csv, .json or .parquet file")
    if suffix == "parquet":
        pyarrow()
    # Found out now, not after hours of work that could then not be saved.
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"{out}: is a folder; --out names the file to write")
    folder = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: cannot write into {existing or folder}")


def _min_samples(model: SERModel) -> int:
    return frames_for(model.min_duration, model.sample_rate)


def _chunk_samples(model: SERModel, spec: OutputSpec, seconds: float | None) -> int | None:
    """A chunk's length in samples; for a frame-level head rounded down to a whole number of frame periods, the
    shortest stretch of samples that holds a whole number of frames (160 samples = 1 frame at 100 frames/s and
    16 kHz; 1600 samples = 3 frames at 30 frames/s), so every chunk starts on a frame boundary of the file and the
    chunks' frames join into the file's own frame grid. A model with ``chunk_step_samples`` (one that processes its
    input in fixed sequences) gets chunks of whole sequences, so chunking does not change its output."""
    if seconds is None:
        return None
    chunk = frames_for(seconds, model.sample_rate)
    if spec.level == "frame":
        period = (Fraction(model.sample_rate) / Fraction(spec.frame_rate).limit_denominator(10**6)).numerator
        if chunk < period:
            raise ValueError(
                f"--chunk-seconds {seconds} is shorter than {period / model.sample_rate:g} s, the shortest stretch "
                f"holding whole frames of the {spec.frame_rate:g} frames/s head"
            )
        chunk -= chunk % period
    step = getattr(model, "chunk_step_samples", None)
    if step:  # a model that cuts its input into fixed sequences (conv_blstm): chunks are whole sequences
        chunk = max(step, chunk - chunk % step)
    return chunk


def _cut(samples: int, *, chunk: int | None, minimum: int) -> Cut:
    return Cut(chunks(samples, chunk, minimum))


def _forward(
    model: SERModel, head: str, spec: OutputSpec, waveforms: torch.Tensor, lengths: torch.Tensor
) -> list[torch.Tensor]:
    """One output per clip, on the CPU: ``(size,)``, or a frame-level head's valid frames ``(frames, size)``."""
    output = model(waveforms, lengths, head=head)
    spec.check(output, waveforms.shape[0], head)
    output = output.detach().float().cpu()
    if spec.level == "utterance":
        return [row.clone() for row in output]
    valid = model.output_lengths(lengths, head).cpu().tolist()
    if max(valid) > output.shape[1]:
        raise RuntimeError(
            f"head {head!r} returned {output.shape[1]} frames for clips that output_lengths gives {max(valid)} frames"
        )
    return [row[:count].clone() for row, count in zip(output, valid)]


def _combine_frames(outputs: list[torch.Tensor], cut: Cut) -> torch.Tensor:
    return torch.cat(outputs)  # the chunks' frames, in time order


# ---------------------------------------------------------------------------------------------------- rows


@dataclass
class _FileOutcome:
    output: torch.Tensor  # (size,) or (frames, size)
    row: dict[str, Any]
    timeline: list[dict[str, Any]]


def _outcome(
    model: SERModel,
    head: str,
    spec: OutputSpec,
    path: Path,
    done: Finished,
    timeline_seconds: float | None,
    postprocess: bool = True,
) -> _FileOutcome | str:
    """A finished file's rows, computed once (snapshots reuse them), or its failure."""
    if not done.ok:
        return done.problem
    output: torch.Tensor = done.result
    if spec.level == "utterance":
        return _FileOutcome(output, {"path": str(path), **_values(model, head, spec, output[None])[0]}, [])
    if postprocess:
        output = model.finish_frames(output, head)
    duration = round(done.samples / model.sample_rate, TIME_DECIMALS)
    whole = {"path": str(path), "start": 0.0, "end": duration, **_values(model, head, spec, output.mean(0)[None])[0]}
    return _FileOutcome(output, whole, _timeline(model, head, spec, str(path), output, duration, timeline_seconds))


def _outcomes(
    model: SERModel,
    head: str,
    spec: OutputSpec,
    paths: Sequence[Path],
    finished: list[Finished],
    timeline_seconds: float | None,
    postprocess: bool,
) -> list[_FileOutcome | str]:
    """:func:`_outcome` of each file a step finished. An utterance-level head's rows are computed for the whole step
    at once (one ``scores`` call, not one per file: the main loop's cost per file at high file rates); the same
    values as file by file."""
    if spec.level != "utterance":
        return [_outcome(model, head, spec, paths[d.index], d, timeline_seconds, postprocess) for d in finished]
    good = [done for done in finished if done.ok]
    values = iter(_values(model, head, spec, torch.stack([done.result for done in good])) if good else [])
    return [
        _FileOutcome(done.result, {"path": str(paths[done.index]), **next(values)}, []) if done.ok else done.problem
        for done in finished
    ]


def _values(model: SERModel, head: str, spec: OutputSpec, outputs: torch.Tensor) -> list[dict[str, Any]]:
    """The kind's columns of each row of ``outputs`` ``(n, size)``."""
    if spec.kind == "categories":
        scores = model.scores(outputs, head).tolist()
        labels = outputs.argmax(dim=-1).tolist()
        return [
            {"label": spec.names[label], **{f"{SCORE_PREFIX}{n}": float(s) for n, s in zip(spec.names, row)}}
            for label, row in zip(labels, scores)
        ]
    return [dict(zip(spec.columns, map(float, row))) for row in outputs.tolist()]


def _timeline(
    model: SERModel,
    head: str,
    spec: OutputSpec,
    path: str,
    frames: torch.Tensor,
    duration: float,
    seconds: float | None,
) -> list[dict[str, Any]]:
    """One row per frame ``[i / rate, (i + 1) / rate)``, or per window ``[k * seconds, (k + 1) * seconds)`` holding
    the mean of the frames that start in it; the last row ends at the end of the file."""
    rate = spec.frame_rate
    index = torch.arange(frames.shape[0], dtype=torch.float64)
    if seconds is None:
        starts, ends, values = index / rate, (index + 1) / rate, frames
    else:
        window = torch.floor(index / rate / seconds + 1e-9).long()
        count = torch.bincount(window)
        sums = torch.zeros(len(count), frames.shape[1], dtype=torch.float64).index_add_(0, window, frames.double())
        used = count > 0
        values = (sums[used] / count[used, None]).float()
        number = torch.nonzero(used)[:, 0].double()
        starts, ends = number * seconds, (number + 1) * seconds
    ends = ends.clamp(max=duration)
    rows = _values(model, head, spec, values)
    return [
        {"path": path, "start": round(start, TIME_DECIMALS), "end": round(end, TIME_DECIMALS), **row}
        for start, end, row in zip(starts.tolist(), ends.tolist(), rows)
    ]


def _collect(
    model: SERModel,
    head: str,
    spec: OutputSpec,
    paths: Sequence[Path],
    outcomes: list,
    timeline_seconds: float | None,
    *,
    complete: bool,
) -> PredictionResult:
    """Assemble rows and failures in input order from the per-file outcomes (``None`` = not processed yet)."""
    rows: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    outputs: list[torch.Tensor] = []
    timelines: list[list[dict[str, Any]]] = []
    order: list[tuple[bool, int]] = []
    for path, outcome in zip(paths, outcomes):
        if outcome is None:
            continue
        if isinstance(outcome, str):
            order.append((False, len(failures)))
            failures.append((str(path), outcome))
            continue
        order.append((True, len(rows)))
        rows.append(outcome.row)
        outputs.append(outcome.output)
        timelines.append(outcome.timeline)
    pooled = [output.mean(0) if spec.level == "frame" else output for output in outputs]
    logits = torch.stack(pooled) if pooled else torch.empty(0, spec.dim)
    return PredictionResult(
        label_names=list(spec.columns),
        head=head,
        score_kind=spec.score,
        rows=rows,
        failures=failures,
        logits=logits,
        complete=complete,
        order=order,
        spec=spec,
        outputs=outputs,
        timelines=timelines if spec.level == "frame" else [],
        timeline_seconds=timeline_seconds,
    )


# ---------------------------------------------------------------------------------------------------- output


def write_predictions(
    result: PredictionResult, path: str | os.PathLike | TextIO, *, format: str | None = None
) -> Path | None:
    """Write ``result`` to a file (atomically) or to an open text stream such as ``sys.stdout``.

    ``format`` is ``"csv"``, ``"json"`` or ``"parquet"``; by default a file's suffix decides (anything else is an
    error) and a stream gets CSV. Returns the file's path, or ``None`` for a stream.

    CSV and Parquet: the table of :meth:`PredictionResult.records`: one line per input in input order (per frame or
    timeline window for a frame-level head), the columns of the head's kind (module docstring) and a last column
    ``error``, empty for a prediction and holding the reason (other columns empty) for a failed file. Parquet types
    ``path``/``label``/``error`` as strings and the rest as float64, with nulls where CSV is empty.
    JSON: ``{"head", "labels", "score_kind", "output" (the head's spec), "complete", "predictions": [row...],
    "failures": [{"path", "reason"}...]}``, the rows as in :class:`PredictionResult` (the timeline rows for a
    frame-level head, with ``"timeline_seconds"``).
    """
    stream = path if hasattr(path, "write") else None
    if format is None:
        format = "csv" if stream is not None else Path(path).suffix.lower().lstrip(".")
    where = "" if stream is not None else f"{path}: "
    if format not in FORMATS:
        raise ValueError(
            f"{where}unsupported output format {format!r}; use csv, json or parquet (.csv, .json, .parquet)"
        )
    columns = [*result.columns, "error"]
    if format == "parquet":
        if stream is not None:
            raise ValueError("Parquet is a binary format: write it to a .parquet file, not to a text stream")
        write_table_parquet(path, columns, result.records(), text=TEXT_COLUMNS)
        return Path(path)
    if format == "csv":
        text = table_csv(columns, result.records())
    else:
        text = json.dumps(_json_payload(result), indent=2, ensure_ascii=False) + "\n"
    if stream is not None:
        stream.write(text)
        stream.flush()
        return None
    atomic_write_text(path, text)
    return Path(path)


def _json_payload(result: PredictionResult) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "head": result.head,
        "labels": result.label_names,
        "score_kind": result.score_kind,
        "output": result.spec.to_json(),
        "complete": result.complete,
    }
    if result.spec.level == "frame":
        payload.update({"timeline_seconds": result.timeline_seconds, "predictions": result.timeline})
    else:
        payload["predictions"] = result.rows
    payload["failures"] = [{"path": p, "reason": reason} for p, reason in result.failures]
    return payload
