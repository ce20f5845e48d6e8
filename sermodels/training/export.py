"""The one release export: every trained model leaves through :func:`write_release`.

A release folder holds ``config.json`` (architecture, constructor arguments, output specs, training provenance),
``model.safetensors``, ``recipe_resolved.yaml`` when the recipe was a LightningCLI one (written by the caller),
``training_log.json`` (what was run and the validation history), ``metrics.json`` (each listed partition scored by
the same code as ``sermodels evaluate``) and the generated model card ``README.md``. Lightning recipes
(:mod:`sermodels.training.train`) and the scikit-learn recipes (:mod:`sermodels.classical.release`) both call it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sermodels import labels as label_maps
from sermodels._io import atomic_write_text
from sermodels.models.base import SERModel


@dataclass(frozen=True)
class Scoring:
    """One partition to score into metrics.json: the items, the head, and how corpus labels map into its space."""

    corpus: str
    split: str
    items: Sequence[Any]
    head: str
    label_space: str = "categories"


def score(net: SERModel, scorings: Iterable[Scoring], batch_size: int = 16) -> dict[str, Any]:
    """``{"<corpus>/<split>": {metrics..., "head"}}`` through :func:`sermodels.evaluation.evaluate_items`."""
    from sermodels.evaluation import evaluate_items, metrics_entry

    metrics: dict[str, Any] = {}
    for s in scorings:
        report = evaluate_items(
            net,
            s.items,
            head=s.head,
            batch_size=batch_size,
            label_map=label_map_for(s.label_space),
            corpus=s.corpus,
            split=s.split,
        )
        metrics[f"{s.corpus}/{s.split}"] = {**metrics_entry(report), "head": s.head}
    return metrics


def label_map_for(space: str):
    """How a corpus's categories reach a head trained in ``space``: unchanged, onto classes (arousal levels, ...),
    or onto numbers (``av_values``); numeric targets of the items themselves need no map."""
    if space == "categories" or space in ("dimensions", "trace"):
        return None
    if space in label_maps.VALUE_SPACES:
        return label_maps.value_mapper(space)
    return label_maps.scoring_map(space)


def write_release(
    net: SERModel,
    folder: str | Path,
    *,
    model_id: str | None = None,
    description: str | None = None,
    training: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] = (),
    scorings: Iterable[Scoring] = (),
    card: bool = True,
) -> Path:
    """Save ``net`` (on the CPU, in eval mode) with its provenance, score ``scorings`` into metrics.json (none: no
    metrics.json; release scripts then write it with ``sermodels evaluate --metrics``) and write the card."""
    from sermodels.card import write_model_card
    from sermodels.checkpoint import save_pretrained

    folder = Path(folder)
    net = net.to("cpu").eval()
    extra: dict[str, Any] = {"id": model_id or folder.name, "training": dict(training)}
    if description:
        extra["description"] = description
    save_pretrained(net, folder, extra=extra)
    log = {"training": dict(training), "history": list(history)}
    atomic_write_text(folder / "training_log.json", json.dumps(log, indent=2) + "\n")
    scorings = list(scorings)
    (folder / "metrics.json").unlink(missing_ok=True)  # an earlier release's numbers never outlive its weights
    if scorings:
        metrics = score(net, scorings)
        atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if card:
        write_model_card(folder, model_id)
    return folder


#: What a re-released run keeps beside its weights (the resolved recipe and the training log).
RUN_RECORDS = ("training_log.json", "recipe_resolved.yaml")


def rerelease(
    model: SERModel, run: str | Path, out: str | Path, extra: dict[str, Any], store_dtype: str | None = None
) -> Path:
    """Write ``model`` (a trained run's, possibly changed) as the release folder ``out`` with the config extras
    ``extra``: the run's records are copied, and ``store_dtype`` (``float16``) stores the floating-point weights in
    that dtype (half the size of float32; :func:`~sermodels.checkpoint.load_folder` loads them into the model's
    float32 parameters)."""
    import shutil

    import torch

    from sermodels.checkpoint import save_pretrained

    run, out = Path(run), Path(out)
    if out.resolve() != run.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_RECORDS:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
    if store_dtype is not None:
        model = model.to(getattr(torch, store_dtype))
        extra = {**extra, "weights_dtype": store_dtype}
    return save_pretrained(model, out, extra=extra)
