"""From a baseline recipe to a released checkpoint folder: fit, export to torch, check, release.

A recipe (``recipes/baselines/*.yaml``, ``sermodels fit-svm --config``) names the corpus, its root, the split, the
feature set and the SVM. The exported :class:`~sermodels.models.svm.LogMelSVM` must reproduce the scikit-learn
pipeline's predictions on the test partition; a disagreement aborts the release. The folder is written by the one
release export (:func:`sermodels.classical.recipe.write_recipe_release`). :func:`fit_on_items` refits the same
model on the training speakers of a fold (``sermodels evaluate --split loso``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sermodels.classical.recipe import FIXED_PARTITIONS, merge_recipe, write_recipe_release
from sermodels.classical.svm import SVMFit, extract_features, fit_fixed, make_svm, select_by_group_cv
from sermodels.data import load_corpus
from sermodels.models.svm import LogMelSVM

RECIPE_DEFAULTS = {
    "arch": "logmel_svm",
    "split": "fixed",
    "features": "logmel600",
    "svm": "linear",
    "sample_rate": 16000,
    "cache_dir": None,
}


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A recipe YAML merged over the defaults, with ``key=value`` overrides from the command line."""
    recipe = merge_recipe(path, RECIPE_DEFAULTS, overrides)
    if recipe["arch"] != "logmel_svm" or recipe["features"] != "logmel600" or recipe["svm"] != "linear":
        raise ValueError(
            f"{path}: only a linear SVM on logmel600 exports to a torch model "
            f"(got {recipe['svm']} on {recipe['features']})"
        )
    return recipe


def export_linear(
    fit: SVMFit, sample_rate: int = 16000, head: str = "default", frontend: dict[str, Any] | None = None
) -> LogMelSVM:
    """Copy a fitted z-score + LinearSVC pipeline into a :class:`LogMelSVM` (with the front-end it was fitted on)."""
    scaler, svm = fit.pipeline.named_steps["zscore"], fit.pipeline.named_steps["svm"]
    model = LogMelSVM(labels=fit.labels, head=head, sample_rate=sample_rate, frontend=frontend)
    model.set_linear_svm(scaler.mean_, scaler.scale_, svm.coef_, svm.intercept_)
    return model.eval()


def fit_on_items(
    train_items: Sequence,
    sample_rate: int = 16000,
    *,
    frontend: dict[str, Any] | None = None,
    features: np.ndarray | None = None,
    cache_dir=None,
    head: str = "default",
) -> LogMelSVM:
    """A linear logmel SVM for ``train_items`` alone: C by speaker-grouped CV, refit on all (used for LOSO).

    ``features`` (one row per item, computed with the same ``frontend``) spares the extraction, so that folds of
    one corpus share a single pass over its audio.
    """
    if features is None:
        paths = [it.path for it in train_items]
        features = extract_features(paths, "logmel600", sample_rate=sample_rate, frontend=frontend, cache_dir=cache_dir)
    feats = features
    y = np.array([it.label for it in train_items])
    groups = np.array([it.speaker for it in train_items])
    params, scores = select_by_group_cv("linear", feats, y, groups)
    pipe = make_svm("linear", **params).fit(feats, y)
    return export_linear(SVMFit(pipe, [str(c) for c in pipe.classes_], params, scores), sample_rate, head, frontend)


def release(recipe: dict[str, Any]) -> Path:
    """Fit the recipe's model on the fixed split (C on dev, refit on train + dev) and release its folder (config,
    weights, training log, the recipe's ``evaluate_splits`` in metrics.json, card)."""
    corpus = load_corpus(recipe["corpus"], recipe["root"])
    split = corpus.split(recipe["split"])
    paths = {name: [it.path for it in split[name]] for name in FIXED_PARTITIONS}
    feats = {
        name: extract_features(p, "logmel600", sample_rate=recipe["sample_rate"], cache_dir=recipe["cache_dir"])
        for name, p in paths.items()
    }
    labels = {name: np.array([it.label for it in split[name]]) for name in paths}
    fit = fit_fixed("linear", feats["train"], labels["train"], feats["dev"], labels["dev"])
    model = export_linear(fit, recipe["sample_rate"], head=recipe["corpus"])
    _check_export(model, fit, feats["test"])
    return write_recipe_release(
        model,
        recipe,
        corpus,
        split,
        ["train", "dev"],
        history=fit.selection,
        classifier={"kind": "linear_svm", "class_weight": "balanced", **fit.params},
        selection=fit.selection,
    )


@torch.inference_mode()
def _check_export(model: LogMelSVM, fit: SVMFit, test_features: np.ndarray) -> None:
    """The torch model's argmax on the same features must equal scikit-learn's predictions."""
    logits = model.classifier(model.standardizer(torch.from_numpy(test_features)))
    ours = [model.label_names()[i] for i in logits.argmax(-1).tolist()]
    theirs = fit.predict(test_features).tolist()
    disagree = sum(a != b for a, b in zip(ours, theirs))
    if disagree:
        raise RuntimeError(f"exported model disagrees with scikit-learn on {disagree}/{len(ours)} test utterances")
