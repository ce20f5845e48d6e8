"""Evaluation reports: run a model's head over labelled corpus items, score it by the head's output kind, save JSON
and a figure.

The metrics follow the head's output spec (:mod:`sermodels.outputs`):

- **categories** (EmoNet, Gerczuk et al., IEEE TAC 2021): UAR as the headline number (§5, Table 3), WAR and macro
  F1 beside it, per-class recall/precision/F1 and the confusion matrix; leave-one-speaker-out (LOSO) results are
  aggregated over folds by :func:`loso_report`. The figure is the confusion matrix.
- **dimensions**: CCC, Pearson's r and RMSE per dimension (:mod:`sermodels.metrics`, MixedEmotions D4.2 §4.3-§4.5).
  An utterance-level head is scored over utterances. A frame-level head scored against frame-level traces gets
  both aggregates of D4.2: the CCC of all frames concatenated (the headline, as the AV+EC challenge and the
  end-to-end conv-BLSTM, §5.3) and the mean over sequences (E{CCC}, §4.5.1); the traces are brought to the head's
  frame rate and aligned as :mod:`sermodels.data.targets` describes. A frame-level head scored against
  utterance-level targets is scored on its mean over each file's frames. The figure plots predicted against true
  values per dimension (utterances as points; frames as a 2-D histogram).
- **embedding**: nothing to score against; asking is an error.

The predictions come from the batch engine of :mod:`sermodels.pipelines.predict`, so evaluation and
``sermodels predict`` decode, batch and chunk files the same way. One module per job: ``common`` (item protocol,
label maps, versions, the headline), ``categories`` (and LOSO), ``dimensions``, ``figures`` (saving and figures).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from sermodels.evaluation.categories import categories_report, loso_report
from sermodels.evaluation.common import (
    REPORTED_PACKAGES,
    LabelledItem,
    LabelMap,
    headline,
    metrics_entry,
    model_info,
    report_kind,
    report_versions,
)
from sermodels.evaluation.dimensions import dimensions_report
from sermodels.evaluation.figures import confusion_png, dimensions_png, save_report
from sermodels.models.base import SERModel


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
    postprocess: bool = True,
) -> dict[str, Any]:
    """Predict every item with ``head`` and return the JSON-able evaluation report for the head's output kind.

    ``label_map`` (a function or a dict) maps each item's ``label``: for a categories head onto the head's class
    names (e.g. emotion -> arousal level); for a dimensions head onto ``{dimension: value}`` (e.g.
    :func:`sermodels.labels.av_values`). An item mapped to ``None`` is left out and counted under ``"excluded"``.
    ``postprocess=False`` scores a frame-level head's raw frames, without the model's stored post-processing
    (:meth:`~sermodels.models.base.SERModel.finish_frames`). Targets that are missing or unknown raise a
    ``ValueError`` that lists them, before any audio is decoded. Files that cannot be decoded are listed under
    ``"failures"`` and do not count in ``n`` or the metrics.

    Categories report keys: ``model`` (id, arch, config), ``head``, ``labels``, ``corpus``, ``split``, ``n``,
    ``n_items``, ``uar``, ``war``, ``macro_f1``, ``per_class``, ``confusion_matrix`` (``labels`` and ``counts``, rows
    = true), ``predictions`` (path, speaker, true, predicted), ``failures`` (path, reason), ``excluded``,
    ``label_map``, ``versions``. Dimensions reports: :func:`sermodels.evaluation.dimensions.dimensions_report`.
    """
    head = model.resolve_head(head)
    spec = model.output_spec(head)
    if spec.kind == "embedding":
        raise ValueError(
            f"head {head!r} outputs an embedding of {spec.dim} numbers, which has no targets to be scored against; "
            "evaluate a categories or dimensions head"
        )
    items = list(items)
    run = {
        "batch_size": batch_size,
        "device": device,
        "progress": progress,
        "max_chunk_seconds": max_chunk_seconds,
        "postprocess": postprocess,
    }
    where = {"corpus": corpus, "split": split, "model": model_info(model, model_id)}
    if spec.kind == "dimensions":
        return dimensions_report(model, head, spec, items, label_map, run, where)
    return categories_report(model, head, items, label_map, run, where)


__all__ = [
    "REPORTED_PACKAGES",
    "LabelMap",
    "LabelledItem",
    "confusion_png",
    "dimensions_png",
    "evaluate_items",
    "headline",
    "loso_report",
    "metrics_entry",
    "report_kind",
    "report_versions",
    "save_report",
]
