"""Post-processing of time-continuous arousal/valence predictions, fitted on the development partition.

Provenance: MixedEmotions deliverable D4.2, §4.5.2 (LSTM-DRNNs on RECOLA) and §5.3 (the end-to-end conv-BLSTM):
"a chain of post-processing is applied to the predictions obtained on the validation set: (i) median filtering
(with size of window ranging from 0.4s to 20s), (ii) centring (by computing the bias between gold-standard and
prediction), (iii) scaling (using the ratio of standard-deviation of gold-standard and prediction as scaling factor)
and (iv) time-shifting (by shifting the prediction forward in time with values ranging from 0.04s to 10s), to
compensate for delays in the ratings. Any of these post-processing steps is kept when an improvement is observed on
the ρc of the validation set, and applied then with the same configuration on the test partition."

:func:`fit_postprocessing` must be given **development (validation) data only**; the :class:`PostProcessing` it
returns is then applied unchanged to the test partition and to new recordings. It is stored with the model: the
``config.json`` of a released model holds :meth:`PostProcessing.to_json`.

Traces are lists of float arrays ``(T_i, D)``, one per recording (sequence), sampled at ``frame_rate`` frames per
second, with the D dimensions named by ``names``. Every step works on one sequence at a time: no step reads across
a sequence boundary. Conventions (the paper states the steps, not these details):

- **Score**: the CCC of all development frames concatenated over the sequences, as the AV+EC challenge and D4.2
  §4.5.2/§5.3 compute it: :func:`sermodels.metrics.ccc` (population moments) on the concatenated values, i.e.
  :func:`sermodels.metrics.concatenated`. A step is kept when it raises this score by more than rounding noise
  (:data:`MIN_IMPROVEMENT`); the steps are fitted greedily in the paper's order, each dimension on its own. Within a
  grid, the first best candidate wins (the shortest window or shift on ties). Greedy means what the paper does:
  when the raw CCC is low, a step fitted early (a wide median window) can be kept for a chance gain and mislead
  the later ones (the best shift is searched after it, not jointly).
- **Median filter**: the window is the odd number of frames nearest ``seconds * frame_rate`` (an even count goes up
  to the next odd one; at least 1 frame), centred on each frame; at the edges the sequence is padded with its first
  and last values ('nearest' padding, ``scipy.ndimage.median_filter(mode="nearest")``), so every output frame sees
  a full window.
- **Centring**: ``x + bias`` with ``bias = mean(gold) - mean(prediction)`` over the development frames, after the
  median filter.
- **Scaling**: ``center + (x - center) * scale`` with ``center`` the mean of the development predictions after the
  previous steps and ``scale = gold_std / std(prediction)`` (population std of the development predictions after
  the previous steps). Scaling about the mean keeps the mean that centring set, which a bare ``x * scale`` would
  move. ``gold_std`` is the std of the gold traces of the training partition when given (see :func:`trace_std`),
  otherwise of the development gold. ``center`` is stored as ``scale_center``.
- **Time shift** forward by ``k = round(seconds * frame_rate)`` frames: ``out[t] = x[t - k]``, i.e. the prediction
  is delayed to match the raters' lag; the first ``k`` frames repeat the sequence's first value (a shift as long as
  the sequence makes it constant). The length is unchanged.

:meth:`PostProcessing.apply` returns float64 arrays and does not modify its input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy.ndimage import median_filter

from sermodels.metrics import ccc

# D4.2 §5.3 (and §4.5.2): median windows "ranging from 0.4s to 20s". The paper gives no step; this grid is ours,
# roughly geometric so that short windows (where small changes matter) are tried more densely.
DEFAULT_MEDIAN_SECONDS = (0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0, 2.4, 3.2, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)

# D4.2 §5.3 (and §4.5.2): time shifts "ranging from 0.04s to 10s"; 0.04 s is one frame of RECOLA's 25 Hz gold
# standard, so the grid is every frame from 1 to 250 at that rate.
DEFAULT_SHIFT_SECONDS = tuple(round(0.04 * k, 2) for k in range(1, 251))

#: A step must raise the development CCC by more than this to be kept (a smaller gain is rounding noise).
MIN_IMPROVEMENT = 1e-12

#: The keys of :attr:`PostProcessing.dev_ccc` per dimension, in the order the chain is fitted.
STEP_NAMES = ("raw", "median", "centring", "scaling", "shift", "final")


# ----------------------------------------------------------------------------------------------- frame counts


def median_window(seconds: float, frame_rate: float) -> int:
    """The median filter's window in frames: the odd number nearest ``seconds * frame_rate`` (ties go up), >= 1."""
    frames = round(seconds * frame_rate, 9)  # 0.4 s * 25 Hz is 10, not 10.000000000000002
    return max(1, 2 * math.floor((frames - 1) / 2 + 0.5) + 1)


def shift_frames(seconds: float, frame_rate: float) -> int:
    """The time shift in frames: ``round(seconds * frame_rate)`` (half-way rounds to even, as Python's round)."""
    return int(round(round(seconds * frame_rate, 9)))


# ------------------------------------------------------------------------------------------------ the chain


@dataclass(frozen=True)
class DimensionSteps:
    """The kept steps of one dimension; ``None`` means the step is not applied.

    ``scale`` and ``scale_center`` go together (both set or both ``None``); see the module docstring for the
    formula of each step.
    """

    median_seconds: float | None = None
    bias: float | None = None
    scale: float | None = None
    scale_center: float | None = None
    shift_seconds: float | None = None

    def __post_init__(self) -> None:
        _check_optional(self.median_seconds, "median_seconds", positive=True)
        _check_optional(self.bias, "bias")
        _check_optional(self.scale, "scale", positive=True)
        _check_optional(self.scale_center, "scale_center")
        _check_optional(self.shift_seconds, "shift_seconds", positive=True)
        if (self.scale is None) != (self.scale_center is None):
            raise ValueError(
                f"scale and scale_center go together, got scale={self.scale} and scale_center={self.scale_center}"
            )

    def apply(self, values: np.ndarray, frame_rate: float) -> np.ndarray:
        """The chain on one dimension of one sequence, ``(T,)`` -> ``(T,)``."""
        out = values
        if self.median_seconds is not None:
            out = _median(out, median_window(self.median_seconds, frame_rate))
        if self.bias is not None:
            out = out + self.bias
        if self.scale is not None:
            out = self.scale_center + (out - self.scale_center) * self.scale
        if self.shift_seconds is not None:
            out = _delay(out, shift_frames(self.shift_seconds, frame_rate))
        return out


@dataclass(frozen=True)
class PostProcessing:
    """A fitted post-processing chain: per dimension name, the steps kept on the development set.

    ``dev_ccc`` records, per dimension, the development CCC (concatenated) of the raw predictions (``"raw"``), of
    the best candidate of each step (``"median"``, ``"centring"``, ``"scaling"``, ``"shift"``: the score it reached
    whether or not it was kept; a step that could not be tried, e.g. scaling a constant prediction or an empty grid,
    is absent) and of the kept chain (``"final"``). It is for reports and plays no part in :meth:`apply`.
    """

    names: tuple[str, ...]
    frame_rate: float
    steps: dict[str, DimensionSteps]
    dev_ccc: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", _check_names(self.names))
        object.__setattr__(self, "frame_rate", _check_frame_rate(self.frame_rate))
        if set(self.steps) != set(self.names):
            raise ValueError(f"steps must have one entry per name {list(self.names)}, got {sorted(self.steps)}")
        unknown = sorted(set(self.dev_ccc) - set(self.names))
        if unknown:
            raise ValueError(f"dev_ccc has dimensions that are not in names {list(self.names)}: {unknown}")

    @classmethod
    def identity(cls, names: Sequence[str], frame_rate: float) -> PostProcessing:
        """A chain that keeps no step: :meth:`apply` returns the traces unchanged (as float64)."""
        names = _check_names(names)
        return cls(names=names, frame_rate=frame_rate, steps={name: DimensionSteps() for name in names})

    def apply(self, traces: Iterable[np.ndarray]) -> list[np.ndarray]:
        """The chain on every sequence ``(T_i, D)`` -> ``(T_i, D)`` float64, in :attr:`names` order.

        The traces must be at :attr:`frame_rate`, the rate the chain was fitted at.
        """
        sequences = _as_traces(traces, "traces", len(self.names))
        steps = [self.steps[name] for name in self.names]
        return [
            np.stack([step.apply(sequence[:, d], self.frame_rate) for d, step in enumerate(steps)], axis=1)
            for sequence in sequences
        ]

    def to_json(self) -> dict[str, Any]:
        """A dict of JSON types only (for ``config.json``); :meth:`from_json` reads it back."""
        return {
            "frame_rate": float(self.frame_rate),
            "names": list(self.names),
            "steps": {name: _json_floats(asdict(self.steps[name])) for name in self.names},
            "dev_ccc": {name: _json_floats(scores) for name, scores in self.dev_ccc.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PostProcessing:
        """The chain that :meth:`to_json` wrote; a malformed ``data`` raises ``ValueError`` naming the bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"post-processing must be a JSON object, got {type(data).__name__}")
        _check_keys(data, required={"frame_rate", "names", "steps"}, optional={"dev_ccc"}, where="post-processing")
        frame_rate = _check_frame_rate(data["frame_rate"])
        if not isinstance(data["names"], list):
            raise ValueError(f"names must be a list of strings, got {type(data['names']).__name__}")
        names = _check_names(data["names"])
        steps = _steps_from_json(data["steps"], names)
        dev_ccc = _dev_ccc_from_json(data.get("dev_ccc", {}), names)
        return cls(names=names, frame_rate=frame_rate, steps=steps, dev_ccc=dev_ccc)


def _steps_from_json(data: Any, names: tuple[str, ...]) -> dict[str, DimensionSteps]:
    if not isinstance(data, Mapping):
        raise ValueError(f"steps must be an object keyed by dimension name, got {type(data).__name__}")
    if set(data) != set(names):
        raise ValueError(f"steps must have one entry per name {list(names)}, got {sorted(data)}")
    keys = {item.name for item in fields(DimensionSteps)}
    steps = {}
    for name in names:
        entry = data[name]
        if not isinstance(entry, Mapping):
            raise ValueError(f"steps.{name} must be an object, got {type(entry).__name__}")
        _check_keys(entry, required=set(), optional=keys, where=f"steps.{name}")
        for key, value in entry.items():
            if value is not None and not _is_number(value):
                raise ValueError(f"steps.{name}.{key} must be a number or null, got {value!r}")
        try:
            steps[name] = DimensionSteps(**entry)
        except ValueError as error:
            raise ValueError(f"steps.{name}: {error}") from None
    return steps


def _dev_ccc_from_json(data: Any, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    if not isinstance(data, Mapping):
        raise ValueError(f"dev_ccc must be an object keyed by dimension name, got {type(data).__name__}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"dev_ccc has dimensions that are not in names {list(names)}: {unknown}")
    out = {}
    for name, scores in data.items():
        if not isinstance(scores, Mapping):
            raise ValueError(f"dev_ccc.{name} must be an object, got {type(scores).__name__}")
        _check_keys(scores, required=set(), optional=set(STEP_NAMES), where=f"dev_ccc.{name}")
        for step, value in scores.items():
            if not _is_number(value) or not math.isfinite(value):
                raise ValueError(f"dev_ccc.{name}.{step} must be a finite number, got {value!r}")
        out[name] = {step: float(value) for step, value in scores.items()}
    return out


# ------------------------------------------------------------------------------------------------ fitting


def fit_postprocessing(
    predictions: Iterable[np.ndarray],
    gold: Iterable[np.ndarray],
    frame_rate: float,
    names: Sequence[str],
    *,
    gold_std: Mapping[str, float] | None = None,
    medians: Sequence[float] = DEFAULT_MEDIAN_SECONDS,
    shifts: Sequence[float] = DEFAULT_SHIFT_SECONDS,
) -> PostProcessing:
    """Fit the D4.2 chain on **development** predictions and gold traces, each a list of ``(T_i, D)`` arrays.

    Per dimension, greedily in the paper's order: the best median window of ``medians`` (seconds), centring,
    scaling to ``gold_std[name]`` (the training gold's std; the development gold's when ``None``), the best time
    shift of ``shifts`` (seconds); each is kept only if it raises the concatenated development CCC.
    """
    frame_rate = _check_frame_rate(frame_rate)
    names = _check_names(names)
    pred_sequences, gold_sequences = _paired_traces(predictions, gold, len(names))
    medians = _check_grid(medians, "medians")
    shifts = _check_grid(shifts, "shifts")
    if gold_std is not None:
        gold_std = _check_gold_std(gold_std, names)
    steps, dev_ccc = {}, {}
    for d, name in enumerate(names):
        pred = [sequence[:, d] for sequence in pred_sequences]
        target = [sequence[:, d] for sequence in gold_sequences]
        target_std = gold_std[name] if gold_std is not None else float(np.concatenate(target).std())
        steps[name], dev_ccc[name] = _fit_dimension(pred, target, frame_rate, target_std, medians, shifts)
    return PostProcessing(names=names, frame_rate=frame_rate, steps=steps, dev_ccc=dev_ccc)


def _fit_dimension(
    pred: list[np.ndarray],
    gold: list[np.ndarray],
    frame_rate: float,
    gold_std: float,
    medians: tuple[float, ...],
    shifts: tuple[float, ...],
) -> tuple[DimensionSteps, dict[str, float]]:
    """The kept steps of one dimension and the development CCC of each step (see :attr:`PostProcessing.dev_ccc`)."""
    gold_all = np.concatenate(gold)
    best = ccc(np.concatenate(pred), gold_all)
    scores = {"raw": best}
    kept: dict[str, float] = {}

    median = _best_median(pred, gold_all, frame_rate, medians)
    if median is not None:
        seconds, scores["median"] = median
        if scores["median"] > best + MIN_IMPROVEMENT:
            pred = [_median(x, median_window(seconds, frame_rate)) for x in pred]
            best, kept["median_seconds"] = scores["median"], seconds

    bias = float(gold_all.mean() - np.concatenate(pred).mean())
    scores["centring"] = ccc(np.concatenate(pred) + bias, gold_all)
    if scores["centring"] > best + MIN_IMPROVEMENT:
        pred = [x + bias for x in pred]
        best, kept["bias"] = scores["centring"], bias

    pred_all = np.concatenate(pred)
    if pred_all.std() > 0 and gold_std > 0:  # a constant prediction (or gold) has no scale to match
        center, scale = float(pred_all.mean()), gold_std / float(pred_all.std())
        scores["scaling"] = ccc(center + (pred_all - center) * scale, gold_all)
        if scores["scaling"] > best + MIN_IMPROVEMENT:
            pred = [center + (x - center) * scale for x in pred]
            best, kept["scale"], kept["scale_center"] = scores["scaling"], scale, center

    shift = _best_shift(pred, gold_all, frame_rate, shifts)
    if shift is not None:
        seconds, scores["shift"] = shift
        if scores["shift"] > best + MIN_IMPROVEMENT:
            best, kept["shift_seconds"] = scores["shift"], seconds

    scores["final"] = best
    return DimensionSteps(**kept), scores


def _best_median(
    pred: list[np.ndarray], gold_all: np.ndarray, frame_rate: float, medians: tuple[float, ...]
) -> tuple[float, float] | None:
    """``(seconds, ccc)`` of the best median window (windows of one frame are no-ops and skipped), or ``None``."""
    best = None
    for seconds in _distinct(medians, lambda s: median_window(s, frame_rate), skip=1):
        window = median_window(seconds, frame_rate)
        score = ccc(np.concatenate([_median(x, window) for x in pred]), gold_all)
        if best is None or score > best[1]:
            best = (seconds, score)
    return best


def _best_shift(
    pred: list[np.ndarray], gold_all: np.ndarray, frame_rate: float, shifts: tuple[float, ...]
) -> tuple[float, float] | None:
    """``(seconds, ccc)`` of the best forward shift (shifts of zero frames skipped), or ``None``.

    Each candidate gathers ``out[t] = x[max(t - k, 0)]`` within each sequence from the concatenated predictions,
    which is :func:`_delay` sequence by sequence without a Python loop over the sequences.
    """
    lengths = np.array([len(x) for x in pred])
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    local = np.arange(lengths.sum()) - starts
    pred_all = np.concatenate(pred)
    best = None
    for seconds in _distinct(shifts, lambda s: shift_frames(s, frame_rate), skip=0):
        frames = shift_frames(seconds, frame_rate)
        score = ccc(pred_all[starts + np.maximum(local - frames, 0)], gold_all)
        if best is None or score > best[1]:
            best = (seconds, score)
    return best


def _distinct(grid: tuple[float, ...], to_frames: Callable[[float], int], skip: int) -> list[float]:
    """The grid values whose frame counts are new (the first of each), leaving out those of ``skip`` frames."""
    seen, out = {skip}, []
    for seconds in grid:
        frames = to_frames(seconds)
        if frames not in seen:
            seen.add(frames)
            out.append(seconds)
    return out


def trace_std(traces: Iterable[np.ndarray], names: Sequence[str]) -> dict[str, float]:
    """Per dimension, the population std of all frames concatenated: ``gold_std`` from the training gold traces."""
    names = _check_names(names)
    frames = np.concatenate(_as_traces(traces, "traces", len(names)))
    return {name: float(frames[:, d].std()) for d, name in enumerate(names)}


# ------------------------------------------------------------------------------------------------ the steps


def _median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over ``window`` (odd) frames, edges padded with the first/last value."""
    if window <= 1:
        return values
    return median_filter(values, size=window, mode="nearest")


def _delay(values: np.ndarray, frames: int) -> np.ndarray:
    """``out[t] = values[t - frames]``, the first ``frames`` outputs repeating ``values[0]``; same length."""
    if frames <= 0 or len(values) == 0:
        return values
    frames = min(frames, len(values))
    return np.concatenate([np.full(frames, values[0]), values[: len(values) - frames]])


# ------------------------------------------------------------------------------------------------ validation


def _paired_traces(
    predictions: Iterable[np.ndarray], gold: Iterable[np.ndarray], dims: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pred = _as_traces(predictions, "predictions", dims)
    target = _as_traces(gold, "gold", dims)
    if len(pred) != len(target):
        raise ValueError(f"predictions has {len(pred)} sequences but gold has {len(target)}")
    for number, (x, y) in enumerate(zip(pred, target)):
        if x.shape != y.shape:
            raise ValueError(f"sequence {number}: predictions {x.shape} and gold {y.shape} differ in shape")
    return pred, target


def _as_traces(traces: Iterable[np.ndarray], what: str, dims: int) -> list[np.ndarray]:
    """Float64 copies of ``(T_i, dims)`` sequences, each with at least one frame and only finite values."""
    if isinstance(traces, np.ndarray) and traces.ndim < 3:
        raise ValueError(f"{what} must be a list of (frames, {dims}) arrays, one per sequence, got one array")
    sequences = [np.array(sequence, dtype=np.float64) for sequence in traces]
    if not sequences:
        raise ValueError(f"{what} is empty: no sequences")
    for number, sequence in enumerate(sequences):
        if sequence.ndim != 2 or sequence.shape[1] != dims:
            raise ValueError(f"{what} sequence {number} must be (frames, {dims}), got {sequence.shape}")
        if sequence.shape[0] == 0:
            raise ValueError(f"{what} sequence {number} is empty: it has no frames")
        if not np.isfinite(sequence).all():
            raise ValueError(f"{what} sequence {number} contains NaN or Inf values")
    return sequences


def _check_frame_rate(frame_rate: Any) -> float:
    if not _is_number(frame_rate) or not math.isfinite(frame_rate) or frame_rate <= 0:
        raise ValueError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}")
    return float(frame_rate)


def _check_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of dimension names, got the string {names!r}")
    names = tuple(names)
    if not names:
        raise ValueError("names is empty: give one name per dimension")
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"names must be non-empty strings, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"names has duplicates: {list(names)}")
    return names


def _check_grid(grid: Sequence[float], what: str) -> tuple[float, ...]:
    grid = tuple(grid)
    for value in grid:
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{what} must hold positive numbers of seconds, got {value!r}")
    return tuple(float(value) for value in grid)


def _check_gold_std(gold_std: Mapping[str, float], names: tuple[str, ...]) -> dict[str, float]:
    missing = [name for name in names if name not in gold_std]
    if missing:
        raise ValueError(f"gold_std has no value for {missing}")
    for name in names:
        value = gold_std[name]
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"gold_std[{name!r}] must be a positive number, got {value!r}")
    return {name: float(gold_std[name]) for name in names}


def _check_optional(value: Any, name: str, positive: bool = False) -> None:
    if value is None:
        return
    if not _is_number(value) or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind} or None, got {value!r}")


def _check_keys(data: Mapping[str, Any], required: set[str], optional: set[str], where: str) -> None:
    missing = sorted(required - set(data))
    if missing:
        raise ValueError(f"{where} is missing {missing}")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise ValueError(f"{where} has unknown fields {unknown}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _json_floats(values: Mapping[str, Any]) -> dict[str, float | None]:
    return {key: None if value is None else float(value) for key, value in values.items()}
