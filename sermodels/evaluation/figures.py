"""Saving a report: its JSON and its figure, the confusion matrix of a categories report or predicted against true
values per dimension of a dimensions report. Figures are drawn on a bare matplotlib ``Figure`` with the Agg canvas,
so no pyplot state or display backend is involved."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from sermodels._io import atomic_write_bytes, atomic_write_text
from sermodels.evaluation.common import report_kind


def save_report(
    report: Mapping[str, Any], json_path: str | os.PathLike, png_path: str | os.PathLike | None = None
) -> None:
    """Write ``report`` as JSON and, with ``png_path``, its figure as a PNG (both written atomically).

    The figure is the confusion matrix of a categories report (for a :func:`loso_report` summary, the pooled
    matrix) and the predicted-vs-true plot per dimension of a dimensions report.
    """
    atomic_write_text(json_path, json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    if png_path is not None:
        figure = confusion_png if report_kind(report) == "categories" else dimensions_png
        atomic_write_bytes(png_path, figure(report))


def _new_figure(width: float, height: float):
    """A bare ``Figure`` with the Agg canvas, so no pyplot state or display backend is involved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_png(report: Mapping[str, Any]) -> bytes:
    """PNG bytes of the row-normalised confusion matrix, each cell annotated with its count and row percentage."""
    matrix = report["confusion_matrix"]
    labels = list(matrix["labels"])
    counts = np.asarray(matrix["counts"], dtype=np.int64)
    support = counts.sum(axis=1, keepdims=True)
    fraction = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    size = 1.6 + 0.75 * len(labels)
    figure = _new_figure(size + 1.5, size)
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
    return _png(figure)


def dimensions_png(report: Mapping[str, Any]) -> bytes:
    """PNG bytes of predicted against true values, one panel per dimension, with the identity line.

    Utterance level: one point per utterance. Frame level: the report's ``density`` histogram of frames (log
    colour scale). Each panel's title gives its CCC, Pearson's r and RMSE.
    """
    names = list(report["dimensions"])
    figure = _new_figure(0.5 + 4.0 * len(names), 4.6)
    panels = figure.subplots(1, len(names), squeeze=False)[0]
    for axes, name in zip(panels, names):
        if report["level"] == "frame":
            scores = report["metrics"][name]["concatenated"]
            low, high = _draw_density(figure, axes, report["density"][name])
        else:
            scores = report["metrics"][name]
            low, high = _draw_points(axes, report, name)
        axes.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
        axes.set_xlim(low, high)
        axes.set_ylim(low, high)
        axes.set_aspect("equal")
        axes.set_xlabel(f"true {name}")
        axes.set_ylabel(f"predicted {name}")
        axes.set_title(f"{name}\n{_scores_text(scores)}", fontsize=9)
    figure.suptitle(_figure_title(report), fontsize=10)
    return _png(figure)


def _draw_points(axes, report: Mapping[str, Any], name: str) -> tuple[float, float]:
    true = np.array([p["true"][name] for p in report["predictions"]])
    predicted = np.array([p["predicted"][name] for p in report["predictions"]])
    axes.scatter(true, predicted, s=12, alpha=0.6, color="tab:blue", edgecolors="none")
    value_range = report["output"].get("range")
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    if value_range:
        low, high = min(low, float(value_range[0])), max(high, float(value_range[1]))
    margin = 0.05 * (high - low) or 0.5  # points on the range's edges stay whole
    return low - margin, high + margin


def _draw_density(figure, axes, density: Mapping[str, Any]) -> tuple[float, float]:
    from matplotlib.colors import LogNorm

    edges = np.asarray(density["edges"])
    counts = np.asarray(density["counts"], dtype=np.float64)
    shown = np.ma.masked_equal(counts.T, 0)  # rows of counts = true bins -> x axis
    image = axes.pcolormesh(edges, edges, shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(1, counts.max())))
    figure.colorbar(image, ax=axes, label="frames", shrink=0.8)
    return float(edges[0]), float(edges[-1])


def _scores_text(scores: Mapping[str, Any]) -> str:
    parts = []
    for key, label in (("ccc", "CCC"), ("pearson", "r"), ("rmse", "RMSE")):
        value = scores.get(key)
        parts.append(f"{label} {value:.3f}" if value is not None else f"{label} n/a")
    return ", ".join(parts)


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
    if report_kind(report) == "dimensions":
        frames = f", {report['n_frames']} frames (concatenated)" if report["level"] == "frame" else ""
        return f"{subject}\nn = {report['n']}{frames}, targets: {report['targets']}"
    return f"{subject}\nUAR {report['uar']:.1%}, n = {report['n']}"
