"""Reports of a categories head (EmoNet, Gerczuk et al., IEEE TAC 2021): UAR as the headline number (§5, Table 3),
WAR and macro F1 beside it, per-class recall/precision/F1 and the confusion matrix; leave-one-speaker-out results
aggregated over folds by :func:`loso_report`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sermodels.evaluation.common import (
    LabelledItem,
    LabelMap,
    as_mapper,
    count_items,
    describe_label_map,
    failures_of,
    json_scalar,
    report_kind,
    report_versions,
    require_predictions,
)
from sermodels.metrics import classification_report
from sermodels.pipelines.predict import run_predictions


def categories_report(model, head, items, label_map, run, where) -> dict[str, Any]:
    """Score a categories head; keys as :func:`sermodels.evaluation.evaluate_items` lists them. ``run``: the engine's
    options; ``where``: corpus, split and the model entry."""
    labels = model.label_names(head)
    kept, targets, excluded = _map_labels(items, labels, label_map)
    result = run_predictions(model, [Path(item.path) for item in kept], head=head, **run)
    predictions = [
        {
            "path": str(kept[input_index].path),
            "speaker": json_scalar(getattr(kept[input_index], "speaker", None)),
            "true": targets[input_index],
            "predicted": result.rows[row]["label"],
        }
        for input_index, (is_row, row) in enumerate(result.order)
        if is_row
    ]
    require_predictions(predictions, result, items, where)
    scores = classification_report([p["true"] for p in predictions], [p["predicted"] for p in predictions], labels)
    return {
        "model": where["model"],
        "head": head,
        "labels": labels,
        "corpus": where["corpus"],
        "split": where["split"],
        "n": scores["n"],
        "n_items": len(items),
        "uar": scores["uar"],
        "war": scores["war"],
        "macro_f1": scores["macro_f1"],
        "per_class": scores["per_class"],
        "confusion_matrix": {"labels": labels, "counts": scores["confusion_matrix"]},
        "predictions": predictions,
        "failures": failures_of(result),
        "excluded": dict(sorted(excluded.items())),
        "label_map": describe_label_map(label_map),
        "versions": report_versions(),
    }


def _map_labels(
    items: list[LabelledItem], labels: list[str], label_map: LabelMap | None
) -> tuple[list[LabelledItem], list[str], Counter]:
    """Items to score, their target labels, and the count of corpus labels mapped to ``None`` (left out)."""
    mapper = as_mapper(label_map, items)
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
        listed = ", ".join(f"{label!r} ({count_items(count)})" for label, count in sorted(unknown.items()))
        hint = "" if label_map is not None else "; pass label_map to map corpus labels onto the model's"
        raise ValueError(f"labels not among the model's classes {labels}: {listed}{hint}")
    return kept, targets, excluded


def loso_report(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate the per-fold reports of a leave-one-speaker-out evaluation of a categories head.

    The top-level ``uar``, ``war``, ``macro_f1``, ``per_class`` and ``confusion_matrix`` are **pooled**: all folds'
    predictions scored together as one test set (large folds weigh more), the shape of an :func:`evaluate_items`
    report. ``fold_uar_mean``/``fold_uar_std`` (and the same for WAR and macro F1) are over folds, each fold
    weighing the same, with the population standard deviation (ddof = 0), as ``sermodels.classical.svm.run_loso``.
    ``folds`` lists each fold's split, n and metrics; ``predictions`` all predictions with their fold's split name.
    The folds must share the label set, and a file may appear in one fold only.
    """
    if not reports:
        raise ValueError("loso_report needs at least one fold report")
    kinds = sorted({report_kind(report) for report in reports})
    if kinds != ["categories"]:
        raise ValueError(f"loso_report aggregates categories reports; these folds are {kinds}")
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
    summary["versions"] = reports[0].get("versions") or report_versions()
    return summary
