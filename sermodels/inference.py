"""Batch inference over audio files: the engine behind ``sermodels predict`` and ``sermodels evaluate``.

:func:`predict_files` decodes files with :func:`sermodels.audio.load_audio` at the model's sample rate, groups them
into padded batches (with their true lengths, so the model can ignore the padding), runs the model under
``torch.inference_mode()`` and returns per-file labels, scores and logits **in input order**.

How a long job stays safe and bounded:

- A file that cannot be used (missing, empty, not audio, truncated, too short, NaN samples, a model output that is
  not finite) becomes a ``(path, reason)`` failure; the run goes on.
- Files are decoded a window at a time (at most ``batch_size * SORT_WINDOW_BATCHES`` files and about
  ``WINDOW_MAX_SECONDS`` of audio), sorted by length inside the window so that a batch pads little, and the results
  are put back in input order. Memory does not grow with the number of files.
- ``max_batch_seconds`` caps the padded audio in one batch (batch size x longest item), ``max_chunk_seconds``
  classifies a longer file in consecutive windows and averages their logits, so GPU memory is bounded however long
  a recording is. The decoded waveform of a long file is still held in memory (4 bytes per sample: one hour at
  16 kHz is 230 MB); only the model sees it in chunks.
- A file's result is recorded as soon as the last of its chunks has been through the model (not at the end of its
  window). With ``out``, the results so far are written atomically (temporary file + rename) when at least
  ``save_every_seconds`` have passed since the last write (checked after every batch) and when the run ends, also
  when it ends with an exception such as Ctrl-C: every file finished before the interruption is on disk. A file on
  disk is always a complete, parseable snapshot, never a half-written one. JSON snapshots carry
  ``"complete": false`` until the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from sermodels.audio import AudioError, frames_for, load_audio
from sermodels.models.base import SERModel

# Extensions of the formats libsndfile decodes (soundfile.available_formats()), matched case-insensitively when a
# folder is expanded. Files given explicitly are kept whatever their extension, and fail later if not audio.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd",
        ".caf", ".w64", ".rf64", ".sph", ".nist", ".voc", ".htk", ".paf", ".svx", ".8svx", ".mat", ".pvf",
        ".xi", ".sds", ".avr", ".wve", ".ircam", ".sf", ".mpc",
    }
)  # fmt: skip
# Files decoded and length-sorted together: enough to make batches of similar lengths, small enough to bound memory.
SORT_WINDOW_BATCHES = 16
# A window also closes once it holds this much decoded audio (seconds), whatever the number of files.
WINDOW_MAX_SECONDS = 1800.0
SCORE_PREFIX = "score_"
# Random names tried for the temporary file of an atomic write before giving up (a clash is already improbable).
TEMP_NAME_ATTEMPTS = 100


@dataclass
class PredictionResult:
    """The outcome of :func:`predict_files`.

    ``rows``: one dict per successfully predicted file, in input order: ``path``, ``label`` (the top class) and
    ``score_<class>`` for every class in ``label_names`` order (probabilities or decision values, see
    ``score_kind``). ``failures``: ``(path, reason)`` for every file that could not be predicted, in input order.
    ``logits``: ``(len(rows), num_classes)`` float32 on the CPU, row ``i`` belonging to ``rows[i]``.
    """

    label_names: list[str]
    head: str
    score_kind: str
    rows: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    logits: torch.Tensor
    complete: bool = True
    # Input order across rows and failures: (True, i) is rows[i], (False, j) is failures[j].
    order: list[tuple[bool, int]] = field(default_factory=list, repr=False)

    @property
    def paths(self) -> list[str]:
        return [row["path"] for row in self.rows]

    @property
    def predicted_indices(self) -> torch.Tensor:
        """Index of the top class per row, shape ``(len(rows),)``."""
        return self.logits.argmax(dim=-1) if len(self.rows) else torch.empty(0, dtype=torch.long)


# -------------------------------------------------------------------------------------------------- inputs


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Replace every folder by the audio files below it (recursively, sorted by path); keep other paths as given.

    Audio files are recognised by extension (:data:`AUDIO_EXTENSIONS`); hidden files and folders (names starting
    with ``.``, such as macOS ``._x.wav`` resource forks) are skipped. A path that does not exist is kept, so that
    the prediction reports it as a failure instead of silently dropping it; so is a folder with no audio files in it.
    Symbolic links to folders are not followed (no cycles).
    """
    expanded: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.is_dir():
            expanded.append(path)
            continue
        found = sorted(_audio_files_below(path), key=lambda p: p.as_posix())
        expanded.extend(found if found else [path])
    return expanded


def _audio_files_below(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(root) / name


# ------------------------------------------------------------------------------------------------ predict


def predict_files(model: SERModel, paths: Iterable[str | os.PathLike], **options: Any) -> PredictionResult:
    """Classify every audio file in ``paths``, folders expanded with :func:`expand_inputs`.

    ``options`` are the keyword arguments of :func:`run_predictions` (``head``, ``batch_size``, ``device``,
    ``progress``, ``max_batch_seconds``, ``max_chunk_seconds``, ``out``, ``save_every_seconds``).
    """
    return run_predictions(model, expand_inputs(paths), **options)


@dataclass
class _Piece:
    """A decoded file or one chunk of it: ``waveform`` ``(samples,)``; its logits count with weight ``samples``."""

    index: int
    waveform: torch.Tensor

    @property
    def frames(self) -> int:
        return int(self.waveform.shape[0])


def run_predictions(
    model: SERModel,
    paths: Sequence[Path],
    *,
    head: str | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_batch_seconds: float | None = None,
    max_chunk_seconds: float | None = None,
    out: str | os.PathLike | None = None,
    save_every_seconds: float = 60.0,
) -> PredictionResult:
    """Classify exactly these files (folders are not expanded; :func:`predict_files` expands them).

    The model is moved to ``device`` and put in eval mode for the run (its train/eval mode is restored after).
    ``max_batch_seconds`` caps ``batch size x longest item`` in seconds (a single item longer than that still runs,
    alone, unless chunked). ``max_chunk_seconds``: a file longer than this is cut into consecutive chunks of that
    length (a last chunk shorter than ``model.min_duration`` is merged into the one before) and its logits are the
    length-weighted mean of the chunk logits, so every second counts equally. A file no longer than the chunk is
    processed whole, exactly as without chunking. ``None`` takes the model's ``default_chunk_seconds`` (windowed
    inference with bounded memory for neural models; ``None`` = whole files for the SVM baselines), ``0`` forces
    whole files. ``out`` (``.csv`` or ``.json``): see the module docstring.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_chunk_seconds is None:
        max_chunk_seconds = getattr(model, "default_chunk_seconds", None)
    elif max_chunk_seconds == 0:
        max_chunk_seconds = None
    if max_chunk_seconds is not None and max_chunk_seconds < max(model.min_duration, 1.0 / model.sample_rate):
        raise ValueError(
            f"max_chunk_seconds={max_chunk_seconds} is shorter than the model's minimum input ({model.min_duration} s)"
        )
    if max_batch_seconds is not None and max_batch_seconds <= 0:
        raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
    head = model.resolve_head(head)
    labels = model.label_names(head)
    paths = [Path(p) for p in paths]
    outcomes: list[torch.Tensor | str | None] = [None] * len(paths)
    was_training = model.training
    model.to(device).eval()
    last_save = time.monotonic()
    finished = False
    try:
        with tqdm(total=len(paths), unit="file", desc="predict", file=sys.stderr, disable=not progress) as bar:
            for window in _windows(paths, model, batch_size, outcomes, bar):
                batches = _predict_window(
                    model, window, head, len(labels), batch_size, device, max_batch_seconds, max_chunk_seconds, outcomes
                )
                for files_done in batches:
                    bar.update(files_done)
                    if out is not None and time.monotonic() - last_save >= save_every_seconds:
                        write_predictions(_collect(model, paths, outcomes, head, labels, complete=False), out)
                        last_save = time.monotonic()
        finished = True
    finally:
        model.train(was_training)
        if out is not None and (finished or any(outcome is not None for outcome in outcomes)):
            write_predictions(_collect(model, paths, outcomes, head, labels, complete=finished), out)
    return _collect(model, paths, outcomes, head, labels, complete=True)


def _windows(
    paths: Sequence[Path], model: SERModel, batch_size: int, outcomes: list, bar: tqdm
) -> Iterator[list[_Piece]]:
    """Decode files in order and yield them in groups; decoding failures go straight into ``outcomes``."""
    max_files = batch_size * SORT_WINDOW_BATCHES
    max_frames = frames_for(WINDOW_MAX_SECONDS, model.sample_rate)
    window: list[_Piece] = []
    frames = 0
    for index, path in enumerate(paths):
        waveform = _decode(path, model, outcomes, index)
        if waveform is None:
            bar.update(1)
            continue
        window.append(_Piece(index, waveform))
        frames += waveform.shape[0]
        if len(window) >= max_files or frames >= max_frames:
            yield window
            window, frames = [], 0
    if window:
        yield window


def _decode(path: Path, model: SERModel, outcomes: list, index: int) -> torch.Tensor | None:
    if path.is_dir():
        outcomes[index] = f"a folder with no audio files in it (extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"
        return None
    try:
        return load_audio(path, model.sample_rate, min_duration=model.min_duration)
    except AudioError as err:
        outcomes[index] = err.problem
    except OSError as err:  # e.g. permission denied between the checks and the read
        outcomes[index] = f"cannot read the file ({err})"
    return None


def _predict_window(
    model: SERModel,
    window: list[_Piece],
    head: str,
    num_classes: int,
    batch_size: int,
    device: str | torch.device,
    max_batch_seconds: float | None,
    max_chunk_seconds: float | None,
    outcomes: list,
) -> Iterator[int]:
    """Run the model over one decoded window, one batch per step, and yield after each batch how many files it finished.

    A file's (chunk-averaged) logits go into ``outcomes`` as soon as the last of its chunks has been through the
    model, so that an interruption between two batches loses no finished file.
    """
    chunk_frames = None if max_chunk_seconds is None else frames_for(max_chunk_seconds, model.sample_rate)
    min_frames = frames_for(model.min_duration, model.sample_rate)
    pieces = [chunk for piece in window for chunk in _split(piece, chunk_frames, min_frames)]
    # Longest first and stable: batches pad little, and equal lengths keep input order (deterministic batches).
    pieces.sort(key=lambda piece: -piece.frames)
    max_batch_frames = None if max_batch_seconds is None else max_batch_seconds * model.sample_rate
    chunks_left: dict[int, int] = {}
    for piece in pieces:
        chunks_left[piece.index] = chunks_left.get(piece.index, 0) + 1
    sums: dict[int, torch.Tensor] = {}
    weights: dict[int, int] = {}
    for batch in _batches(pieces, batch_size, max_batch_frames):
        logits = _forward(model, batch, head, num_classes, device)
        files_done = 0
        for piece, row in zip(batch, logits):
            weighted = row.double() * piece.frames
            sums[piece.index] = sums[piece.index] + weighted if piece.index in sums else weighted
            weights[piece.index] = weights.get(piece.index, 0) + piece.frames
            chunks_left[piece.index] -= 1
            if chunks_left[piece.index] == 0:
                mean = (sums.pop(piece.index) / weights.pop(piece.index)).float()
                finite = torch.isfinite(mean).all()
                outcomes[piece.index] = mean if finite else "the model produced non-finite logits (NaN/Inf)"
                files_done += 1
        yield files_done


def _split(piece: _Piece, chunk_frames: int | None, min_frames: int) -> list[_Piece]:
    """Consecutive chunks of ``chunk_frames`` samples; a last chunk under ``min_frames`` joins the one before."""
    if chunk_frames is None or piece.frames <= chunk_frames:
        return [piece]
    starts = list(range(0, piece.frames, chunk_frames))
    if piece.frames - starts[-1] < min_frames:
        starts.pop()
    bounds = starts[1:] + [piece.frames]
    return [_Piece(piece.index, piece.waveform[start:stop]) for start, stop in zip(starts, bounds)]


def _batches(pieces: list[_Piece], batch_size: int, max_batch_frames: float | None) -> Iterator[list[_Piece]]:
    """Greedy batches of length-sorted pieces: at most ``batch_size`` and ``count x longest <= max_batch_frames``."""
    batch: list[_Piece] = []
    for piece in pieces:
        width = batch[0].frames if batch else piece.frames
        over_budget = max_batch_frames is not None and (len(batch) + 1) * width > max_batch_frames
        if batch and (len(batch) >= batch_size or over_budget):
            yield batch
            batch = []
        batch.append(piece)
    if batch:
        yield batch


def _forward(
    model: SERModel, batch: list[_Piece], head: str, num_classes: int, device: str | torch.device
) -> torch.Tensor:
    """Zero-pad the batch on the right, run the model, return logits ``(len(batch), num_classes)`` on the CPU."""
    lengths = torch.tensor([piece.frames for piece in batch], dtype=torch.long)
    waveforms = torch.zeros(len(batch), int(lengths.max()), dtype=torch.float32)
    for row, piece in enumerate(batch):
        waveforms[row, : piece.frames] = piece.waveform
    with torch.inference_mode():
        logits = model(waveforms.to(device), lengths.to(device), head=head)
    if logits.shape != (len(batch), num_classes):
        raise RuntimeError(
            f"{type(model).__name__} returned logits of shape {tuple(logits.shape)} for head {head!r}, "
            f"expected ({len(batch)}, {num_classes})"
        )
    return logits.detach().float().cpu()


def _collect(
    model: SERModel, paths: Sequence[Path], outcomes: list, head: str, labels: list[str], *, complete: bool
) -> PredictionResult:
    """Assemble rows and failures in input order from the per-file outcomes (``None`` = not processed yet)."""
    rows: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    logits: list[torch.Tensor] = []
    order: list[tuple[bool, int]] = []
    for path, outcome in zip(paths, outcomes):
        if outcome is None:
            continue
        if isinstance(outcome, str):
            order.append((False, len(failures)))
            failures.append((str(path), outcome))
            continue
        scores = model.scores(outcome.unsqueeze(0))[0].tolist()
        row: dict[str, Any] = {"path": str(path), "label": labels[int(outcome.argmax())]}
        row.update({f"{SCORE_PREFIX}{name}": float(score) for name, score in zip(labels, scores)})
        order.append((True, len(rows)))
        rows.append(row)
        logits.append(outcome)
    stacked = torch.stack(logits) if logits else torch.empty(0, len(labels))
    return PredictionResult(labels, head, model.score_kind, rows, failures, stacked, complete, order)


# -------------------------------------------------------------------------------------------------- output


def write_predictions(
    result: PredictionResult, path: str | os.PathLike | TextIO, *, format: str | None = None
) -> Path | None:
    """Write ``result`` to a file (atomically) or to an open text stream such as ``sys.stdout``.

    ``format`` is ``"csv"`` or ``"json"``; by default a file's suffix decides (``.csv``/``.json``, anything else is
    an error) and a stream gets CSV. Returns the file's path, or ``None`` for a stream.

    CSV: one line per input in input order, columns ``path, label, score_<class>...`` (class names prefixed with
    ``score_`` so that no class name can clash with ``path``/``label``) and a last column ``error``, empty for a
    prediction and holding the reason (with empty label and scores) for a failed file.
    JSON: ``{"head", "labels", "score_kind", "complete", "predictions": [row...], "failures": [{"path",
    "reason"}...]}`` with rows as in :class:`PredictionResult`.
    """
    stream = path if hasattr(path, "write") else None
    if format is None:
        format = "csv" if stream is not None else Path(path).suffix.lower().lstrip(".")
    if format == "csv":
        text = _csv_text(result)
    elif format == "json":
        text = json.dumps(_json_payload(result), indent=2, ensure_ascii=False) + "\n"
    else:
        where = "" if stream is not None else f"{path}: "
        raise ValueError(f"{where}unsupported output format {format!r}; use csv or json (.csv or .json files)")
    if stream is not None:
        stream.write(text)
        stream.flush()
        return None
    atomic_write_text(path, text)
    return Path(path)


def _csv_text(result: PredictionResult) -> str:
    score_columns = [f"{SCORE_PREFIX}{name}" for name in result.label_names]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "label", *score_columns, "error"], lineterminator="\n")
    writer.writeheader()
    for is_row, index in _input_order(result):
        if is_row:
            writer.writerow({**result.rows[index], "error": ""})
        else:
            failed_path, reason = result.failures[index]
            writer.writerow({"path": failed_path, "error": reason})
    return buffer.getvalue()


def _input_order(result: PredictionResult) -> list[tuple[bool, int]]:
    if result.order:
        return result.order
    return [(True, i) for i in range(len(result.rows))] + [(False, j) for j in range(len(result.failures))]


def _json_payload(result: PredictionResult) -> dict[str, Any]:
    return {
        "head": result.head,
        "labels": result.label_names,
        "score_kind": result.score_kind,
        "complete": result.complete,
        "predictions": result.rows,
        "failures": [{"path": p, "reason": reason} for p, reason in result.failures],
    }


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: readers never see half a file.

    The file keeps the mode of the file it replaces; a new file gets the mode any new file gets (``0o666`` less the
    process umask, applied by the OS when the temporary file is created; the umask itself is never changed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = create_beside(path)
    try:
        with os.fdopen(handle, "wb") as tmp:
            if path.exists():  # before any data goes in: a private file's contents never sit in a wider-open one
                os.chmod(tmp_name, path.stat().st_mode & 0o777)
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def create_beside(path: Path) -> tuple[int, str]:
    """Create a new, uniquely named hidden file next to ``path``; return its open descriptor and its name.

    Unlike ``tempfile.mkstemp`` (always mode 0600) the file is opened with mode 0666 and the OS applies the umask,
    exactly as for any new file, without reading or changing the process-wide umask (which would race with threads).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(TEMP_NAME_ATTEMPTS):
        tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp_name, flags, 0o666), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: could not create a temporary file beside it after {TEMP_NAME_ATTEMPTS} attempts")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))
