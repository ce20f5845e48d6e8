"""The Deep Spectrum paper's head: an SVM on frozen Deep Spectrum features, copied into a
:class:`~sermodels.models.deep_spectrum.DeepSpectrumModel` built with ``classifier="svm"``.

EmoNet paper §4.1-4.2: Deep Spectrum features of every file of the fixed split (:func:`extract_features`, cached),
z-normalisation and a class-balanced linear SVM with C chosen on dev from 1 down to 1e-9, refit on train + dev
(:func:`fit_svm`, through :mod:`sermodels.classical.svm`); the hyperplanes and the z-score are copied into the
model's linear layer and standardiser. :func:`release` runs a ``classifier: svm`` recipe
(``recipes/deep_spectrum/mobilenetv2_svm.emodb.yaml``, ``sermodels fit-deep-spectrum --config``) end to end and
writes its folder through the one release export.

The softmax linear head (the released ``deep_spectrum_mobilenetv2.emodb``) is trained by gradient descent instead:
it is a LightningCLI recipe of :class:`sermodels.tasks.ClassificationTask` run by ``sermodels train``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sermodels._version import __version__
from sermodels.audio import load_audio
from sermodels.classical.recipe import (
    FIXED_PARTITIONS,
    is_lightning_recipe,
    lightning_release_target,
    merge_recipe,
    write_recipe_release,
)
from sermodels.classical.svm import SVMFit, feature_cache_path, fit_fixed, store_features
from sermodels.features.deepspectrum import DeepSpectrum
from sermodels.models.deep_spectrum import DeepSpectrumModel
from sermodels.runtime import autocast, autocast_dtype, weights_digest

RECIPE_DEFAULTS = {
    "arch": "deep_spectrum",
    "split": "fixed",
    "sample_rate": 16000,
    "backbone": "mobilenetv2_100",
    "weights": "hub",
    "layer": None,
    "pool": "avg",
    "image": {},
    "classifier": "svm",
    "batch_size": 16,
    "precision": "fp32",
    "device": "cpu",
    "cache_dir": None,
    "seed": 0,  # the backbone's random initialisation, when weights=random
}
#: Two floats agree to float32 rounding when they differ by less than this share of the largest decision value.
DECISION_RTOL = 1e-3

# ---------------------------------------------------------------------------------------------------- features


@torch.inference_mode()
def extract_features(
    extractor: DeepSpectrum,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Whole-file Deep Spectrum features ``(N, D)`` float32, optionally cached as one ``.npy`` per file list.

    The cache key covers the files (path, size, mtime), the extractor's configuration, its weights' sha256 and
    the precision, so a changed setting or weight never reuses stale features."""
    rate = extractor.images.sample_rate
    cache = None
    if cache_dir is not None:
        settings = ["deepspectrum", extractor.config(), weights_digest(extractor), precision, __version__]
        cache = feature_cache_path(paths, settings, cache_dir)
        if cache.is_file():
            return np.load(cache, allow_pickle=False)
    extractor = extractor.to(device).eval()
    min_duration = extractor.images.min_samples() / rate
    paths = list(paths)
    out = []
    bar = tqdm(total=len(paths), disable=not progress, desc="deep spectrum", unit="file")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        waves = [load_audio(p, rate, min_duration=min_duration) for p in chunk]
        lengths = torch.tensor([len(w) for w in waves])
        batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(device)
        with autocast(device, precision):
            out.append(extractor(batch, lengths.to(device)).float().cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    feats = np.concatenate(out) if out else np.zeros((0, extractor.dim), dtype=np.float32)
    if cache is not None:
        store_features(cache, feats)
    return feats


# ---------------------------------------------------------------------------------------------------- the SVM


def fit_svm(model: DeepSpectrumModel, feats: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> SVMFit:
    """C on dev, refit on train + dev (EmoNet paper §4.1), copied into ``model``; checked against scikit-learn on
    the test features when ``feats`` has a "test" entry.

    ``feats``: partition -> ``(N, D)`` features; ``labels``: partition -> ``(N,)`` class names."""
    if model.classifier_kind != "svm":
        raise ValueError("fit_svm fills a model built with classifier='svm'")
    fit = fit_fixed("linear", feats["train"], labels["train"], feats["dev"], labels["dev"])
    if fit.labels != model.label_names():
        raise ValueError(f"the model's labels {model.label_names()} differ from the fitted classes {fit.labels}")
    scaler, svm = fit.pipeline.named_steps["zscore"], fit.pipeline.named_steps["svm"]
    model.set_linear_svm(scaler.mean_, scaler.scale_, svm.coef_, svm.intercept_)
    if "test" in feats:
        _check_copy(model, fit, feats["test"])
    return fit


def _check_copy(model: DeepSpectrumModel, fit: SVMFit, test_features: np.ndarray) -> None:
    """The torch head's decision values on ``test_features`` must be scikit-learn's (to float32 rounding)."""
    with torch.inference_mode():
        logits = model.classifier(model.standardizer(torch.from_numpy(test_features))).double()
    decision = fit.pipeline.decision_function(test_features)
    if decision.ndim == 1:  # two classes: one hyperplane, stored as (-w, +w)
        decision = np.stack([-decision, decision], axis=1)
    worst = float(np.abs(logits.numpy() - decision).max())
    if worst > DECISION_RTOL * max(1.0, float(np.abs(decision).max())):
        raise RuntimeError(f"the torch head's decision values differ from scikit-learn's by up to {worst:.3g}")


# ---------------------------------------------------------------------------------------------------- recipes


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A Deep Spectrum SVM recipe YAML merged over :data:`RECIPE_DEFAULTS`, with ``key=value`` overrides."""
    recipe = merge_recipe(path, RECIPE_DEFAULTS, overrides)
    if recipe["arch"] != "deep_spectrum":
        raise ValueError(f"{path}: arch must be deep_spectrum, got {recipe['arch']!r}")
    if recipe["classifier"] != "svm":
        raise ValueError(
            f"{path}: a flat recipe fits the paper's SVM head (classifier: svm), got {recipe['classifier']!r}; "
            "the softmax linear head is a LightningCLI recipe for `sermodels train` (recipes/deep_spectrum/README.md)"
        )
    _pretrained_arg(recipe["weights"])
    autocast_dtype(recipe["precision"], recipe["device"])  # fp16 on a CPU fails before any work
    return recipe


def release_target(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``output``, ``id``, ``corpus`` and ``root`` of either kind of Deep Spectrum recipe after ``key=value``
    overrides (``recipes/deep_spectrum/release.sh`` scores the folder it writes)."""
    if is_lightning_recipe(path):
        return lightning_release_target(path, overrides)
    recipe = load_recipe(path, overrides)
    return {key: recipe[key] for key in ("output", "id", "corpus", "root")}


def _pretrained_arg(weights: str) -> bool | str:
    """The ``pretrained`` argument of the extractor for a ``weights`` setting: "hub", "random" or a file."""
    if weights == "random":
        return False
    if weights == "hub":
        return True
    if not isinstance(weights, str | Path) or not str(weights).endswith(".safetensors"):
        raise ValueError(f"weights must be 'hub', 'random' or a .safetensors file, got {weights!r}")
    return str(weights)


def _weights_provenance(weights: str) -> dict[str, Any]:
    """Where the backbone's weights came from, for config.json: the source, or a file's name and metadata."""
    if weights == "random":
        return {"source": "random initialisation"}
    if weights == "hub":
        return {"source": "timm pretrained weights from the Hugging Face Hub"}
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as f:
        meta = dict(f.metadata() or {})
    return {"file": Path(weights).name, **{k: meta[k] for k in sorted(meta) if k != "format"}}


def release(recipe: dict[str, Any]) -> Path:
    """Fit a recipe's SVM head on the fixed split and write its folder (config, weights, training log, the recipe's
    ``evaluate_splits`` in metrics.json, card)."""
    from sermodels.data import load_corpus

    corpus = load_corpus(recipe["corpus"], recipe["root"])
    split = corpus.split(recipe["split"])
    labels = sorted({it.label for it in corpus.items})
    torch.manual_seed(recipe["seed"])  # the backbone's random initialisation, when it has no weights
    model = DeepSpectrumModel(
        labels,
        head=recipe["corpus"],
        sample_rate=recipe["sample_rate"],
        backbone=recipe["backbone"],
        layer=recipe["layer"],
        image=recipe["image"],
        pool=recipe["pool"],
        classifier="svm",
        pretrained=_pretrained_arg(recipe["weights"]),
    )
    options = {key: recipe[key] for key in ("batch_size", "precision", "device", "cache_dir")}
    paths = {name: [it.path for it in split[name]] for name in FIXED_PARTITIONS}
    feats = {name: extract_features(model.extractor, p, **options) for name, p in paths.items()}
    ys = {name: np.array([it.label for it in split[name]]) for name in FIXED_PARTITIONS}
    fit = fit_svm(model, feats, ys)
    return write_recipe_release(
        model.eval(),
        recipe,
        corpus,
        split,
        ["train", "dev"],
        history=fit.selection,
        backbone_weights=_weights_provenance(recipe["weights"]),
        classifier={"kind": "linear_svm", "class_weight": "balanced", **fit.params},
        selection=fit.selection,
    )
