"""Numeric targets of corpus items: frame-level traces, and how they meet a frame-level head.

An item's target is a category (``Item.label``), a vector of named dimensions for the whole utterance
(``Item.values``, e.g. rated arousal and valence), or a frame-level trace (``Item.trace``, a :class:`Trace`):
values of named dimensions over time, as continuous annotation gives them (RECOLA's gold standard, MixedEmotions
D4.2 §4.5.2 and §5.3: one row per 40 ms).

A trace is a **timeline**: rows ``(time, value_1, ..., value_D)`` with ``time`` in seconds from the start of the
audio, strictly increasing. Each row's values hold from its time on; the last row holds for one step, the median
time between rows, so a trace covers ``[times[0], end)`` with ``end = times[-1] + step``. A trace is either held in
memory (:meth:`Trace.from_array`, rows at a fixed frame rate) or a CSV file with the header ``time,<dim>,...``
(:meth:`Trace.from_csv`), read each time it is needed (:func:`read_timeline` checks it and names the file, line and
problem), so that a corpus of long traces does not sit in memory.

**Meeting a head.** A frame-level head at ``r`` frames per second describes frame ``k`` of a clip by the audio in
``[k / r, (k + 1) / r)``; its target is the timeline linearly interpolated at the frame's start ``k / r`` (before
the first row the first values hold). :meth:`Trace.frames` gives one row per head frame whose start lies before the
trace's end (``ceil(end * r)`` rows for a whole clip). The head itself gives ``ceil(seconds * r)`` frames
(:meth:`sermodels.outputs.OutputSpec.frames_for`), so the two counts can differ by the rounding of either grid:
they are aligned by keeping the common first ``min(N, M)`` frames when they differ by at most
:meth:`Trace.tolerance` frames (one frame of the coarser of the two grids); a larger difference means the trace does
not belong to the audio (wrong file, wrong rate, missing time offset) and is an error. Linear interpolation
smooths a coarse trace when a head is finer; when the head is coarser, the trace is sampled at the head's frame
starts, which suits the slowly varying traces of continuous emotion annotation.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from sermodels import labels as label_maps

TIME_COLUMN = "time"
# Slack for float rounding when counting frames (seconds x frames per second).
FRAME_EPSILON = 1e-9


class TraceError(ValueError):
    """A trace that cannot be used; the message names the file (and line) and the problem."""


class Trace:
    """Named dimensions over time (module docstring): ``names``, ``timeline()`` -> ``(times (T,), values (T, D))``.

    Build it with :meth:`from_array` or :meth:`from_csv`. It holds either the arrays or the CSV path (``path``).
    """

    __slots__ = ("names", "path", "_times", "_values")

    def __init__(
        self,
        names: Sequence[str],
        *,
        times: np.ndarray | None = None,
        values: np.ndarray | None = None,
        path: str | os.PathLike | None = None,
    ):
        self.names = tuple(str(name) for name in names)
        self.path = None if path is None else str(path)
        if (path is None) == (times is None or values is None):
            raise ValueError("a trace holds either times and values, or the path of a CSV timeline")
        self._times = None if times is None else np.asarray(times, dtype=np.float64)
        self._values = None if values is None else np.asarray(values, dtype=np.float64)
        if self._times is not None:
            _check_timeline(self._times, self._values, self.names, "trace")

    @classmethod
    def from_array(cls, values: np.ndarray, frame_rate: float, names: Sequence[str], start: float = 0.0) -> Trace:
        """Rows of ``values`` ``(frames, len(names))`` at ``frame_rate`` per second, the first at ``start`` s."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1 and len(names) == 1:
            values = values[:, None]
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {frame_rate}")
        times = start + np.arange(values.shape[0], dtype=np.float64) / frame_rate
        return cls(names, times=times, values=values)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, names: Sequence[str] | None = None) -> Trace:
        """A trace read from the CSV timeline ``path`` when needed; ``names`` defaults to its header's columns."""
        if names is None:
            names = read_timeline(path)[0]
        return cls(names, path=path)

    def timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """``(times (T,), values (T, D))`` in float64, ``values`` columns in ``names`` order."""
        if self._times is not None:
            return self._times, self._values
        names, times, values = read_timeline(self.path)
        if list(names) != list(self.names):
            raise TraceError(f"trace {self.path}: columns {names} are not the expected {list(self.names)}")
        return times, values

    @staticmethod
    def step_of(times: np.ndarray) -> float:
        """The median time between rows (how long the last row holds)."""
        return float(np.median(np.diff(times)))

    def end(self) -> float:
        """The end of the trace's coverage in seconds: the last row's time plus one step."""
        times, _ = self.timeline()
        return float(times[-1]) + self.step_of(times)

    def tolerance(self, frame_rate: float) -> int:
        """How many head frames a head's and this trace's counts may differ by: one frame of the coarser grid."""
        times, _ = self.timeline()
        return max(1, math.ceil(self.step_of(times) * frame_rate - FRAME_EPSILON))

    def frames(self, frame_rate: float, start: float = 0.0, stop: float | None = None) -> np.ndarray:
        """Targets ``(M, D)`` float32 for the head frames of a clip cut at ``[start, stop)`` seconds of the audio.

        Frame ``k`` is the timeline interpolated at ``start + k / frame_rate``; there is one per frame start before
        ``stop`` (the clip's end; ``None``: no limit) and before the trace's end.
        """
        times, values = self.timeline()
        end = float(times[-1]) + self.step_of(times)
        if stop is not None:
            end = min(end, stop)
        count = max(0, math.ceil((end - start) * frame_rate - FRAME_EPSILON))
        at = start + np.arange(count, dtype=np.float64) / frame_rate
        out = np.empty((count, len(self.names)), dtype=np.float32)
        for column in range(len(self.names)):
            out[:, column] = np.interp(at, times, values[:, column])
        return out

    def __repr__(self) -> str:
        where = self.path if self.path is not None else f"{len(self._times)} rows in memory"
        return f"Trace({list(self.names)}, {where})"


def read_timeline(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(names, times (T,), values (T, D))`` of a CSV timeline, checked (module docstring).

    Raises :class:`TraceError` naming the file, and the line where there is one, for a missing or unreadable file,
    a header without ``time`` or without any dimension, a repeated column, an empty or non-numeric cell, a value
    that is not finite, a negative time, times that do not increase, or fewer than two rows.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise TraceError(f"trace {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TraceError(f"trace {path}: cannot be read ({err})") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise TraceError(f"trace {path}: empty file (expected a header time,<dimension>,...)")
    header = [cell.strip() for cell in rows[0]]
    if TIME_COLUMN not in header:
        raise TraceError(f"trace {path}: the header {header} has no {TIME_COLUMN!r} column")
    names = [name for name in header if name != TIME_COLUMN]
    if not names or any(not name for name in names) or len(set(header)) != len(header):
        raise TraceError(f"trace {path}: the header {header} must name {TIME_COLUMN!r} and distinct dimensions")
    order = [header.index(TIME_COLUMN)] + [header.index(name) for name in names]
    table = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TraceError(f"trace {path} line {line}: {len(row)} cells, the header has {len(header)}")
        for column, cell in enumerate(row):
            table[line - 2, column] = _number(cell, path, line, header[column])
    table = table[:, order]
    _check_timeline(table[:, 0], table[:, 1:], names, f"trace {path}", first_line=2)
    return names, table[:, 0], table[:, 1:]


def _number(cell: str, path: Path, line: int, column: str) -> float:
    text = cell.strip()
    if not text:
        raise TraceError(f"trace {path} line {line}: empty {column}")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"trace {path} line {line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"trace {path} line {line}: {column} is {text} (values must be finite)")
    return value


def _check_timeline(
    times: np.ndarray, values: np.ndarray, names: Sequence[str], where: str, first_line: int | None = None
) -> None:
    """Shapes, finiteness, at least two rows, non-negative and strictly increasing times."""
    if times.ndim != 1 or values.ndim != 2 or values.shape != (times.shape[0], len(names)):
        raise TraceError(f"{where}: {len(names)} dimensions {list(names)} need values of shape (rows, {len(names)})")
    if times.shape[0] < 2:
        raise TraceError(f"{where}: {times.shape[0]} row(s); a trace needs at least two (its step is their distance)")
    if not (np.isfinite(times).all() and np.isfinite(values).all()):
        raise TraceError(f"{where}: times and values must be finite (NaN or Inf found)")
    at = (lambda row: f" line {first_line + row}") if first_line is not None else (lambda row: f" row {row}")
    if times[0] < 0:
        raise TraceError(f"{where}{at(0)}: time {times[0]:g} is before the start of the audio")
    steps = np.diff(times)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise TraceError(
            f"{where}{at(row)}: time {times[row]:g} does not come after {times[row - 1]:g} (times must increase)"
        )


def coverage_problem(trace: Trace, seconds: float, frame_rate: float) -> str | None:
    """Why ``trace`` cannot be aligned with ``seconds`` of audio at ``frame_rate`` head frames per second, or None.

    The head gives ``ceil(seconds * r)`` frames and the trace ``ceil(end * r)``; they must differ by at most
    :meth:`Trace.tolerance` frames (module docstring).
    """
    try:
        end = trace.end()
        tolerance = trace.tolerance(frame_rate)
    except TraceError as err:
        return str(err)
    head = max(1, math.ceil(seconds * frame_rate - FRAME_EPSILON))
    covered = math.ceil(end * frame_rate - FRAME_EPSILON)
    if abs(head - covered) > tolerance:
        return (
            f"the trace covers {end:.3f} s ({covered} frames at {frame_rate:g}/s), the audio {seconds:.3f} s "
            f"({head} frames): more than {tolerance} frame(s) apart"
        )
    return None


def aligned_length(predicted: int, target: int, tolerance: int) -> int:
    """The common number of frames of a head's output and a trace's targets (module docstring).

    Raises ``ValueError`` when they differ by more than ``tolerance`` frames.
    """
    if abs(predicted - target) > tolerance:
        raise ValueError(f"{predicted} predicted frames and {target} target frames differ by more than {tolerance}")
    return min(predicted, target)


# ---------------------------------------------------------------------------------------------------------------------
# Numeric label spaces of SERDataModule.

#: Label spaces whose targets are numbers: categories placed on arousal/valence (:data:`sermodels.labels.VALUE_SPACES`),
#: the items' own utterance-level ``values`` ("dimensions") and their frame-level traces ("trace").
NUMERIC_SPACES = (*label_maps.VALUE_SPACES, "dimensions", "trace")


def numeric_names(space: str, corpora: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Dimension names of a numeric space; ``corpora``: ``(name, its items' dimension names)`` for the own-target
    spaces, which must agree across corpora."""
    if space in label_maps.VALUE_SPACES:
        return label_maps.value_names(space)
    (first, names), *rest = corpora
    if not names:
        kind = "numeric dimension columns" if space == "dimensions" else "traces"
        raise ValueError(f"label_space={space!r}: corpus {first!r} has no {kind}")
    for other, other_names in rest:
        if list(other_names) != list(names):
            raise ValueError(f"label_space={space!r}: corpus {other!r} has {list(other_names)}, {first!r} {names}")
    return list(names)


def item_problems(items: Sequence, space: str, names: Sequence[str], frame_rate: float | None) -> list[str]:
    """``"<item id>: <problem>"`` for every item that has no target in ``space`` (checked before training)."""
    problems = []
    for item in items:
        if space in label_maps.VALUE_SPACES:
            problem = _placement_problem(item.label, space)
        elif space == "dimensions":
            have = list(item.values or {})
            problem = None if set(names) <= set(have) else f"values {have}, expected {list(names)}"
        elif item.trace is None:
            problem = "no trace"
        else:
            problem = _trace_problem(item, names, frame_rate)
        if problem:
            problems.append(f"{item.id}: {problem}")
    return problems


def _placement_problem(label: str | None, space: str) -> str | None:
    if label is None:
        return f"no category to place in {space}"
    try:
        label_maps.map_values(label, space)
    except label_maps.UnknownLabelError as err:
        return str(err)
    return None


def _trace_problem(item, names: Sequence[str], frame_rate: float) -> str | None:
    if list(item.trace.names) != list(names):
        return f"trace columns {list(item.trace.names)}, expected {list(names)}"
    try:
        seconds = sf.info(item.path).duration
    except (RuntimeError, OSError) as err:  # soundfile raises a RuntimeError subclass for unreadable files
        return f"cannot read the audio's duration ({err})"
    return coverage_problem(item.trace, seconds, frame_rate)


def item_values(item, space: str, names: Sequence[str]) -> list[float]:
    """The utterance-level target vector of ``item`` in ``space`` (``names`` order)."""
    if space in label_maps.VALUE_SPACES:
        placed = label_maps.map_values(item.label, space)
        return [placed[name] for name in names]
    return [float(item.values[name]) for name in names]


__all__ = [
    "NUMERIC_SPACES",
    "TIME_COLUMN",
    "Trace",
    "TraceError",
    "aligned_length",
    "coverage_problem",
    "item_problems",
    "item_values",
    "numeric_names",
    "read_timeline",
]
