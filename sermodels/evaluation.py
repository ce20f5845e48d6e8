"""Evaluation reports: run a model over labelled corpus items, score it, save JSON + a confusion-matrix figure.

The metrics are those of EmoNet (Gerczuk et al., IEEE TAC 2021): UAR as the headline number (§5, Table 3), WAR and
macro F1 beside it, per-class recall/precision/F1 and the confusion matrix; leave-one-speaker-out (LOSO) results are
aggregated over folds by :func:`loso_report`. The predictions come from the batch engine in
:mod:`sermodels.inference`, so evaluation and ``sermodels predict`` decode and batch files the same way.
"""

from __future__ import annotations

import io
import json
import os
import platform
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sermodels.inference import atomic_write_bytes, atomic_write_text, run_predictions
from sermodels.metrics import classification_report
from sermodels.models.base import SERModel

# Packages whose versions go into every report, so a number can be traced to the software that produced it.
REPORTED_PACKAGES = ("sermodels", "torch", "torchmetrics", "lightning", "numpy", "scikit-learn", "soundfile", "soxr")

LabelMap = Callable[[str], "str | None"] | Mapping[str, "str | None"]


class LabelledItem(Protocol):
    """What evaluation needs from a corpus item (``sermodels.data`` items satisfy it)."""

    path: Any
    label: str
    speaker: Any


def evaluate_items(
    model: SERModel,
    items: Iterable[LabelledItem],
    *,
    head: str | None = None,
    batch_size: int = 8,
    label_map: LabelMap | None = None,
    corpus: str = "",
    split: str = "",
    model_id: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    max_chunk_seconds: float | None = None,
) -> dict[str, Any]:
    """Predict every item and return the JSON-able evaluation report.

    Each item's ``label`` must be one of the model's class names for ``head``. Otherwise pass ``label_map`` (a
    function or a dict) from corpus labels to model labels, e.g. emotion -> arousal level; an item mapped to ``None``
    is left out and counted under ``"excluded"``. Labels that are still unknown raise a ``ValueError`` that lists
    them, before any audio is decoded. Files that cannot be decoded are listed under ``"failures"`` and do not count
    in ``n`` or the metrics.

    Keys: ``model`` (id, arch, config), ``head``, ``labels``, ``corpus``, ``split``, ``n``, ``n_items``, ``uar``,
    ``war``, ``macro_f1``, ``per_class``, ``confusion_matrix`` (``labels`` and ``counts``, rows = true),
    ``predictions`` (path, speaker, true, predicted), ``failures`` (path, reason), ``excluded``, ``label_map``,
    ``versions``.
    """
    head = model.resolve_head(head)
    labels = model.label_names(head)
    items = list(items)
    kept, targets, excluded = _map_labels(items, labels, label_map)
    result = run_predictions(
        model,
        [Path(item.path) for item in kept],
        head=head,
        batch_size=batch_size,
        device=device,
        progress=progress,
        max_chunk_seconds=max_chunk_seconds,
    )
    predictions = [
        {
            "path": str(kept[input_index].path),
            "speaker": _json_scalar(getattr(kept[input_index], "speaker", None)),
            "true": targets[input_index],
            "predicted": result.rows[row]["label"],
        }
        for input_index, (is_row, row) in enumerate(result.order)
        if is_row
    ]
    if not predictions:
        shown = "; ".join(f"{path}: {reason}" for path, reason in result.failures[:5])
        raise ValueError(
            f"no item of {corpus or 'the corpus'} {split} could be predicted ({len(items)} items). {shown}"
        )
    scores = classification_report([p["true"] for p in predictions], [p["predicted"] for p in predictions], labels)
    return {
        "model": _model_info(model, model_id),
        "head": head,
        "labels": labels,
        "corpus": corpus,
        "split": split,
        "n": scores["n"],
        "n_items": len(items),
        "uar": scores["uar"],
        "war": scores["war"],
        "macro_f1": scores["macro_f1"],
        "per_class": scores["per_class"],
        "confusion_matrix": {"labels": labels, "counts": scores["confusion_matrix"]},
        "predictions": predictions,
        "failures": [{"path": path, "reason": reason} for path, reason in result.failures],
        "excluded": dict(sorted(excluded.items())),
        "label_map": _describe_label_map(label_map),
        "versions": software_versions(),
    }


def _map_labels(
    items: list[LabelledItem], labels: list[str], label_map: LabelMap | None
) -> tuple[list[LabelledItem], list[str], Counter]:
    """Items to score, their target labels, and the count of corpus labels mapped to ``None`` (left out)."""
    mapper = _as_mapper(label_map, items)
    kept, targets, excluded, unknown = [], [], Counter(), Counter()
    for item in items:
        target = mapper(item.label)
        if target is None:
            excluded[str(item.label)] += 1
        elif target not in labels:
            unknown[str(target)] += 1
        else:
            kept.append(item)
            targets.append(target)
    if unknown:
        listed = ", ".join(f"{label!r} ({_items(count)})" for label, count in sorted(unknown.items()))
        hint = "" if label_map is not None else "; pass label_map to map corpus labels onto the model's"
        raise ValueError(f"labels not among the model's classes {labels}: {listed}{hint}")
    return kept, targets, excluded


def _as_mapper(label_map: LabelMap | None, items: list[LabelledItem]) -> Callable[[str], str | None]:
    """``label_map`` as a function; a dict must have an entry for every corpus label (``None`` to leave one out)."""
    if label_map is None:
        return lambda label: label
    if isinstance(label_map, Mapping):
        missing = Counter(str(item.label) for item in items if item.label not in label_map)
        if missing:
            listed = ", ".join(f"{label!r} ({_items(count)})" for label, count in sorted(missing.items()))
            raise ValueError(f"label_map has no entry for these labels: {listed}")
        return label_map.__getitem__
    return label_map


def _items(count: int) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _describe_label_map(label_map: LabelMap | None) -> Any:
    if label_map is None:
        return None
    if isinstance(label_map, Mapping):
        return dict(label_map)
    return f"{getattr(label_map, '__module__', '?')}.{getattr(label_map, '__qualname__', repr(label_map))}"


def _model_info(model: SERModel, model_id: str | None) -> dict[str, Any]:
    try:
        config = model.config()
    except NotImplementedError:
        config = None
    arch = model.arch or type(model).__name__
    return {"id": model_id or getattr(model, "model_id", None) or arch, "arch": arch, "config": config}


def _json_scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def software_versions() -> dict[str, str | None]:
    """Python, libsndfile and :data:`REPORTED_PACKAGES` versions (``None`` for a package that is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import soundfile

        versions["libsndfile"] = soundfile.__libsndfile_version__
    except (ImportError, AttributeError):
        versions["libsndfile"] = None
    return versions


# ---------------------------------------------------------------------------------------------------- LOSO


def loso_report(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate the per-fold reports of a leave-one-speaker-out evaluation.

    The top-level ``uar``, ``war``, ``macro_f1``, ``per_class`` and ``confusion_matrix`` are **pooled**: all folds'
    predictions scored together as one test set (large folds weigh more), the shape of an :func:`evaluate_items`
    report. ``fold_uar_mean``/``fold_uar_std`` (and the same for WAR and macro F1) are over folds, each fold
    weighing the same, with the population standard deviation (ddof = 0), as ``sermodels.tasks.svm.run_loso``.
    ``folds`` lists each fold's split, n and metrics; ``predictions`` all predictions with their fold's split name.
    The folds must share the label set, and a file may appear in one fold only.
    """
    if not reports:
        raise ValueError("loso_report needs at least one fold report")
    labels = list(reports[0]["labels"])
    for report in reports[1:]:
        if list(report["labels"]) != labels:
            raise ValueError(f"fold {report.get('split')!r} has labels {report['labels']}, the first fold {labels}")
    seen: dict[str, int] = {}
    for fold, report in enumerate(reports):
        for prediction in report["predictions"]:
            other = seen.setdefault(prediction["path"], fold)
            if other != fold:
                names = (reports[other].get("split") or other, report.get("split") or fold)
                raise ValueError(
                    f"{prediction['path']} is in the test sets of two folds: {names[0]!r} and {names[1]!r}"
                )
    predictions = [p for report in reports for p in report["predictions"]]
    pooled = classification_report([p["true"] for p in predictions], [p["predicted"] for p in predictions], labels)
    folds = [
        {key: report.get(key) for key in ("split", "n", "uar", "war", "macro_f1")}
        | {"n_failures": len(report["failures"])}
        for report in reports
    ]
    summary: dict[str, Any] = {
        "kind": "loso",
        "model": reports[0].get("model"),
        "head": reports[0].get("head"),
        "labels": labels,
        "corpus": ", ".join(sorted({str(report.get("corpus", "")) for report in reports})),
        "split": "loso",
        "n": pooled["n"],
        "uar": pooled["uar"],
        "war": pooled["war"],
        "macro_f1": pooled["macro_f1"],
        "per_class": pooled["per_class"],
        "confusion_matrix": {"labels": labels, "counts": pooled["confusion_matrix"]},
        "folds_n": len(reports),
    }
    for metric in ("uar", "war", "macro_f1"):
        values = np.array([report[metric] for report in reports], dtype=np.float64)
        summary[f"fold_{metric}_mean"] = float(values.mean())
        summary[f"fold_{metric}_std"] = float(values.std())
    summary["folds"] = folds
    summary["predictions"] = [p | {"fold": r.get("split")} for r in reports for p in r["predictions"]]
    summary["failures"] = [f for report in reports for f in report["failures"]]
    summary["versions"] = reports[0].get("versions") or software_versions()
    return summary


# ---------------------------------------------------------------------------------------------------- saving


def save_report(
    report: Mapping[str, Any], json_path: str | os.PathLike, png_path: str | os.PathLike | None = None
) -> None:
    """Write ``report`` as JSON and, with ``png_path``, its confusion matrix as a PNG (both written atomically).

    Works for :func:`evaluate_items` reports and for :func:`loso_report` summaries (the pooled matrix is drawn).
    """
    atomic_write_text(json_path, json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    if png_path is not None:
        atomic_write_bytes(png_path, confusion_png(report))


def confusion_png(report: Mapping[str, Any]) -> bytes:
    """PNG bytes of the row-normalised confusion matrix, each cell annotated with its count and row percentage.

    Drawn on a bare ``Figure`` with the Agg canvas, so no pyplot state or display backend is involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = report["confusion_matrix"]
    labels = list(matrix["labels"])
    counts = np.asarray(matrix["counts"], dtype=np.int64)
    support = counts.sum(axis=1, keepdims=True)
    fraction = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    size = 1.6 + 0.75 * len(labels)
    figure = Figure(figsize=(size + 1.5, size), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of the true class")
    for row in range(len(labels)):
        for col in range(len(labels)):
            text = f"{counts[row, col]}\n{fraction[row, col]:.0%}" if support[row, 0] else "0"
            colour = "white" if fraction[row, col] > 0.5 else "black"
            axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=8)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(_figure_title(report), fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _figure_title(report: Mapping[str, Any]) -> str:
    model = report.get("model")
    model = (model.get("id") if isinstance(model, Mapping) else model) or "model"
    split = report.get("split") if report.get("kind") != "loso" else None
    where = " ".join(str(part) for part in (report.get("corpus"), split) if part)
    subject = f"{model} on {where}" if where else str(model)
    if report.get("kind") == "loso":
        mean, std = report["fold_uar_mean"], report["fold_uar_std"]
        folds = f"LOSO, {report['folds_n']} folds"
        return (
            f"{subject} ({folds})\npooled UAR {report['uar']:.1%}, per fold {mean:.1%} ± {std:.1%}, n = {report['n']}"
        )
    return f"{subject}\nUAR {report['uar']:.1%}, n = {report['n']}"
