"""Reports of a dimensions head: CCC, Pearson's r and RMSE per dimension (:mod:`sermodels.metrics`, MixedEmotions
D4.2 §4.3-§4.5).

Targets, in this order: a label map placing each item's category on the dimensions (e.g.
:func:`sermodels.labels.av_values`); for a frame-level head, the items' traces (every item must have one); the
items' own ``values``. An utterance-level head is scored over utterances. A frame-level head against traces gets
both aggregates of D4.2: the CCC of all frames concatenated (the headline, as the AV+EC challenge and the
end-to-end conv-BLSTM, §5.3) and the mean over sequences (E{CCC}, §4.5.1); the traces are brought to the head's
frame rate and the two lengths aligned as :mod:`sermodels.data.targets` describes (they may differ by one frame of
the coarser grid; the common first frames are scored). A frame-level head against utterance-level targets is scored
on the mean of each file's frames.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from sermodels.data.targets import Trace, aligned_length, coverage_problem
from sermodels.evaluation.common import (
    LabelledItem,
    LabelMap,
    as_mapper,
    count_items,
    describe_label_map,
    failures_of,
    json_scalar,
    report_versions,
    require_predictions,
)
from sermodels.metrics import REGRESSION_METRICS, dimension_scores
from sermodels.outputs import OutputSpec
from sermodels.pipelines.predict import run_predictions

#: Bins per axis of a frame-level report's predicted-vs-true histogram (``density``).
DENSITY_BINS = 24


def dimensions_report(model, head, spec: OutputSpec, items, label_map, run, where) -> dict[str, Any]:
    """Score a dimensions head (module docstring); ``run``: the engine's options; ``where``: corpus, split, model.

    Report keys: ``model``, ``head``, ``output`` (the head's spec), ``dimensions``, ``targets`` (``"values"``,
    ``"trace"`` or ``"label_map"``), ``level`` (``"utterance"``, or ``"frame"`` for traces), ``pooled`` (how a
    frame-level head was brought to utterance targets, else ``None``), ``corpus``, ``split``, ``n``, ``n_items``,
    ``ccc`` (dimension -> CCC: the headline, concatenated frames at frame level), ``ccc_mean`` (over dimensions),
    ``metrics`` (dimension -> ``{ccc, pearson, rmse}``, at frame level ``{"sequence": {...}, "concatenated":
    {...}}``), ``predictions``, ``failures``, ``excluded``, ``label_map``, ``versions``; at frame level also
    ``n_frames``, ``ccc_sequence`` and ``density`` (dimension -> ``{"edges", "counts"}``, a histogram of frames,
    rows = true bin, columns = predicted bin). Undefined values (Pearson's r of a constant series) are ``null``.
    """
    names = list(spec.names)
    source, kept, targets, excluded = _dimension_targets(items, spec, label_map)
    result = run_predictions(model, [Path(item.path) for item in kept], head=head, **run)
    rows = [(index, row) for index, (is_row, row) in enumerate(result.order) if is_row]
    require_predictions(rows, result, items, where)
    frame = source == "trace"
    predicted, true, predictions = [], [], []
    for index, row in rows:
        item, output = kept[index], result.outputs[row].double()
        entry = {"path": str(item.path), "speaker": json_scalar(getattr(item, "speaker", None))}
        if frame:
            output, target = _aligned(output, targets[index], spec, str(item.path))
            entry |= _frame_entry(output, target, names)
        else:
            output = output.mean(0) if spec.level == "frame" else output
            target = torch.tensor(targets[index], dtype=torch.float64)
            entry |= {"true": _named(target, names), "predicted": _named(output, names)}
        if getattr(item, "label", None) is not None:
            entry["label"] = json_scalar(item.label)
        predicted.append(output)
        true.append(target)
        predictions.append(entry)
    report = {
        "model": where["model"],
        "head": head,
        "output": spec.to_json(),
        "dimensions": names,
        "targets": source,
        "level": "frame" if frame else "utterance",
        "pooled": "mean over frames" if spec.level == "frame" and not frame else None,
        # a stored post-processing chain (conv_blstm, D4.2 §5.3) applied to the frames scored here, else None
        "postprocessing": _chain_applied(model, head, spec, run),
        "corpus": where["corpus"],
        "split": where["split"],
        "n": len(predictions),
        "n_items": len(items),
    }
    if frame:
        scores = dimension_scores(predicted, true, names, level="frame")
        report["n_frames"] = int(sum(p.shape[0] for p in predicted))
        report["ccc"] = {name: scores[name]["concatenated"]["ccc"] for name in names}
        report["ccc_sequence"] = {name: scores[name]["sequence"]["ccc"] for name in names}
    else:
        scores = dimension_scores(torch.stack(predicted), torch.stack(true), names)
        report["ccc"] = {name: scores[name]["ccc"] for name in names}
    report["ccc_mean"] = float(np.mean(list(report["ccc"].values())))
    report["metrics"] = _finite_tree(scores)
    if frame:
        report["density"] = _density(predicted, true, names, spec.range)
    report |= {
        "predictions": predictions,
        "failures": failures_of(result),
        "excluded": dict(sorted(excluded.items())),
        "label_map": describe_label_map(label_map),
        "versions": report_versions(),
    }
    return report


def _dimension_targets(
    items: list[LabelledItem], spec: OutputSpec, label_map: LabelMap | None
) -> tuple[str, list[LabelledItem], list[Any], Counter]:
    """``(source, kept items, their targets, excluded labels)``: vectors in ``spec.names`` order, or traces.

    With ``label_map`` every label is mapped to ``{dimension: value}``; otherwise a frame-level head takes the
    items' traces when every item has one, and any head the items' ``values`` when every item has them.
    """
    names = list(spec.names)
    if label_map is not None:
        return ("label_map", *_mapped_values(items, names, label_map))
    if spec.level == "frame" and items and all(getattr(item, "trace", None) is not None for item in items):
        _check_traces(items, spec)
        return "trace", items, [item.trace for item in items], Counter()
    lacking = [item for item in items if not set(names) <= set(getattr(item, "values", None) or {})]
    if lacking or not items:
        shown = ", ".join(str(item.path) for item in lacking[:3])
        raise ValueError(
            f"{len(lacking)} of {len(items)} items have no values for the head's dimensions {names} (e.g. {shown})"
            f"{' and not every item has a trace' if spec.level == 'frame' else ''}; pass label_map to place their "
            "categories on these dimensions (e.g. sermodels.labels.av_values: a coarse placement, see its notes)"
        )
    vectors = [[_finite(item.values[name], name, item.path) for name in names] for item in items]
    return "values", items, vectors, Counter()


def _mapped_values(
    items: list[LabelledItem], names: list[str], label_map: LabelMap
) -> tuple[list[LabelledItem], list[list[float]], Counter]:
    mapper = as_mapper(label_map, items)
    kept, vectors, excluded, unknown = [], [], Counter(), Counter()
    for item in items:
        placed = mapper(item.label)
        if placed is None:
            excluded[str(item.label)] += 1
        elif not isinstance(placed, Mapping) or not set(names) <= set(placed):
            unknown[str(item.label)] += 1
        else:
            kept.append(item)
            vectors.append([_finite(placed[name], name, item.path) for name in names])
    if unknown:
        listed = ", ".join(f"{label!r} ({count_items(count)})" for label, count in sorted(unknown.items()))
        raise ValueError(f"label_map does not place these labels on the dimensions {names}: {listed}")
    return kept, vectors, excluded


def _chain_applied(model, head: str, spec: OutputSpec, run: dict[str, Any]) -> dict[str, Any] | None:
    chain = getattr(model, "postprocessing", {}).get(head) if spec.level == "frame" else None
    return chain.to_json() if chain is not None and run.get("postprocess", True) else None


def _check_traces(items: list[LabelledItem], spec: OutputSpec) -> None:
    """Every trace has the head's dimensions and covers its audio (module docstring of ``data.targets``)."""
    problems = []
    for item in items:
        trace: Trace = item.trace
        missing = [name for name in spec.names if name not in trace.names]
        if missing:
            problems.append(f"{item.path}: its trace has no {missing} (columns {list(trace.names)})")
            continue
        try:
            seconds = sf.info(str(item.path)).duration
        except (RuntimeError, OSError):
            continue  # an unreadable file is the engine's to report as a failure
        problem = coverage_problem(trace, seconds, spec.frame_rate)
        if problem:
            problems.append(f"{item.path}: {problem}")
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems[:20])
        raise ValueError(f"{len(problems)} trace(s) do not fit the head {list(spec.names)}:\n{listed}")


def _aligned(output: torch.Tensor, trace: Trace, spec: OutputSpec, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's frames and the trace at the head's frame rate, both cut to their common length."""
    columns = [trace.names.index(name) for name in spec.names]
    target = torch.from_numpy(trace.frames(spec.frame_rate)[:, columns]).double()
    try:
        count = aligned_length(output.shape[0], target.shape[0], trace.tolerance(spec.frame_rate))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return output[:count], target[:count]


def _frame_entry(output: torch.Tensor, target: torch.Tensor, names: list[str]) -> dict[str, Any]:
    ccc = REGRESSION_METRICS["ccc"]
    return {
        "frames": int(output.shape[0]),
        "true_mean": _named(target.mean(0), names),
        "predicted_mean": _named(output.mean(0), names),
        "ccc": {name: ccc(output[:, d], target[:, d]) for d, name in enumerate(names)},
    }


def _density(
    predicted: list[torch.Tensor], true: list[torch.Tensor], names: list[str], value_range
) -> dict[str, dict[str, Any]]:
    """Per dimension, counts of frames by (true bin, predicted bin) over ``value_range`` (else the data's range)."""
    pooled_pred, pooled_true = torch.cat(predicted).numpy(), torch.cat(true).numpy()
    out = {}
    for d, name in enumerate(names):
        x, y = pooled_true[:, d], pooled_pred[:, d]
        low, high = value_range or (float(min(x.min(), y.min())), float(max(x.max(), y.max())))
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, DENSITY_BINS + 1)
        counts, _, _ = np.histogram2d(np.clip(x, low, high), np.clip(y, low, high), bins=[edges, edges])
        out[name] = {"edges": edges.tolist(), "counts": counts.astype(np.int64).tolist()}
    return out


def _named(vector: torch.Tensor, names: list[str]) -> dict[str, float]:
    return {name: float(value) for name, value in zip(names, vector.tolist())}


def _finite(value: Any, name: str, path: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {name} target {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{path}: {name} target is {number}")
    return number


def _finite_tree(node: Any) -> Any:
    """``node`` with every float ``nan`` replaced by ``None`` (strict JSON)."""
    if isinstance(node, dict):
        return {key: _finite_tree(value) for key, value in node.items()}
    if isinstance(node, float) and math.isnan(node):
        return None
    return node
