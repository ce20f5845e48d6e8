"""The classical baselines' protocols: utterance features -> z-norm -> SVM, under the fixed and LOSO protocols.

Protocols (EmoNet paper §4.1, NICU paper §4.2.1):
- fixed split: C (and gamma for the RBF kernel) chosen by UAR on the dev partition, then refit on train + dev and
  scored once on test;
- leave-one-speaker-out: for each held-out speaker, C (and gamma) chosen by speaker-grouped inner cross-validation
  on the remaining speakers, then refit on all of them.
The standardiser is always fitted on exactly the data the SVM is fitted on (it is the first step of the pipeline),
so no statistic of a held-out partition leaks into training.

The utterance functionals (log-mel 600, eGeMAPS, GeMAPS) of a file list are computed here and cached as one
``.npy`` per list (:func:`feature_cache_path`, shared with :mod:`sermodels.classical.deep_spectrum`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from sermodels._version import __version__
from sermodels.data.features import extract_functionals
from sermodels.features import LogMelFunctionals
from sermodels.metrics import uar, war
from sermodels.models.svm import MIN_DURATION_S

# EmoNet paper §4.1: "complexity parameter ... optimised on the validation partitions ... on a logarithmic scale
# from 1 to 10^-9".
LINEAR_C_GRID = tuple(10.0**-k for k in range(10))
# The RBF kernel has no grid in either paper (NICU §4.2.1 says "grid search"); ours spans the usual range, with
# gamma as multiples of scikit-learn's "scale" heuristic 1 / (D * var(X)) = 1 / D after standardisation.
RBF_C_GRID = (0.1, 1.0, 10.0, 100.0)
RBF_GAMMA_FACTORS = (0.25, 1.0, 4.0)
LINEAR_MAX_ITER = 20_000
SEED = 0

FEATURE_SETS = ("logmel600", "egemaps", "gemaps")
_OPENSMILE_SETS = {"egemaps": "eGeMAPSv02", "gemaps": "GeMAPSv01b"}


@dataclass
class SVMFit:
    """A fitted pipeline with the hyper-parameters that won and the selection scores of the whole grid."""

    pipeline: Pipeline
    labels: list[str]
    params: dict[str, float]
    selection: list[dict[str, float]] = field(default_factory=list)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.pipeline.predict(features)


def make_svm(kind: str, C: float, gamma: float | None = None) -> Pipeline:
    """z-normalisation + class-balanced SVM (linear one-vs-rest, or RBF)."""
    if kind == "linear":
        svm = LinearSVC(C=C, class_weight="balanced", max_iter=LINEAR_MAX_ITER, random_state=SEED)
    elif kind == "rbf":
        svm = SVC(kernel="rbf", C=C, gamma=gamma if gamma is not None else "scale", class_weight="balanced")
    else:
        raise ValueError(f"unknown SVM kind {kind!r}; use 'linear' or 'rbf'")
    return Pipeline([("zscore", StandardScaler()), ("svm", svm)])


def param_grid(kind: str, dim: int) -> list[dict[str, float]]:
    if kind == "linear":
        return [{"C": c} for c in LINEAR_C_GRID]
    return [{"C": c, "gamma": g / dim} for c in RBF_C_GRID for g in RBF_GAMMA_FACTORS]


def _score(y_true: Sequence[str], y_pred: Sequence[str], labels: list[str]) -> float:
    index = {name: i for i, name in enumerate(labels)}
    return uar([index[y] for y in y_true], [index[y] for y in y_pred], num_classes=len(labels))


def select_on_dev(kind: str, x_train, y_train, x_dev, y_dev) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The grid point with the best dev UAR (ties: the first, i.e. the largest C); and every point's score."""
    labels = sorted(set(y_train) | set(y_dev))
    scores = []
    for params in param_grid(kind, x_train.shape[1]):
        pipe = make_svm(kind, **params).fit(x_train, y_train)
        scores.append(params | {"uar": _score(y_dev, pipe.predict(x_dev), labels)})
    best = max(scores, key=lambda s: s["uar"])
    return {k: v for k, v in best.items() if k != "uar"}, scores


def select_by_group_cv(kind: str, x, y, groups, n_splits: int | None = None) -> tuple[dict[str, float], list[dict]]:
    """Speaker-grouped inner cross-validation (one fold per speaker unless ``n_splits``), pooled UAR."""
    y = np.asarray(y)
    labels = sorted(set(y))
    folds = list(GroupKFold(n_splits=n_splits or len(set(groups))).split(x, y, groups))
    scores = []
    for params in param_grid(kind, x.shape[1]):
        pred = np.empty_like(y)
        for train, test in folds:
            pred[test] = make_svm(kind, **params).fit(x[train], y[train]).predict(x[test])
        scores.append(params | {"uar": _score(y, pred, labels)})
    best = max(scores, key=lambda s: s["uar"])
    return {k: v for k, v in best.items() if k != "uar"}, scores


def fit_fixed(kind: str, x_train, y_train, x_dev, y_dev) -> SVMFit:
    """Choose hyper-parameters on dev, then refit on train + dev (EmoNet paper §4.1)."""
    params, scores = select_on_dev(kind, x_train, y_train, x_dev, y_dev)
    x_all, y_all = np.concatenate([x_train, x_dev]), np.concatenate([y_train, y_dev])
    pipe = make_svm(kind, **params).fit(x_all, y_all)
    return SVMFit(pipe, [str(c) for c in pipe.classes_], params, scores)


def run_fixed(kind: str, features: np.ndarray, items: Sequence, split: dict[str, list]) -> dict[str, Any]:
    """Fixed-split result: dev-selected, train+dev refit, scored on test."""
    index = {id(it): i for i, it in enumerate(items)}
    part = {name: np.array([index[id(it)] for it in split[name]]) for name in ("train", "dev", "test")}
    y = np.array([it.label for it in items])
    fit = fit_fixed(kind, features[part["train"]], y[part["train"]], features[part["dev"]], y[part["dev"]])
    pred = fit.predict(features[part["test"]])
    labels = fit.labels
    true_idx = [labels.index(v) for v in y[part["test"]]]
    pred_idx = [labels.index(v) for v in pred]
    return {
        "uar": uar(true_idx, pred_idx, num_classes=len(labels)),
        "war": war(true_idx, pred_idx),
        "n_test": int(len(part["test"])),
        "params": fit.params,
        "dev_uar": max(s["uar"] for s in fit.selection),
    }


def run_loso(kind: str, features: np.ndarray, items: Sequence) -> dict[str, Any]:
    """Leave-one-speaker-out with speaker-grouped inner CV for model selection; pooled and per-fold UAR."""
    y = np.array([it.label for it in items])
    speakers = np.array([it.speaker for it in items])
    labels = sorted(set(y))
    pred = np.empty_like(y)
    folds = {}
    for speaker in sorted(set(speakers)):
        test, train = speakers == speaker, speakers != speaker
        params, _ = select_by_group_cv(kind, features[train], y[train], speakers[train])
        pred[test] = make_svm(kind, **params).fit(features[train], y[train]).predict(features[test])
        folds[str(speaker)] = {"uar": _score(y[test], pred[test], labels), "n": int(test.sum()), "params": params}
    true_idx = [labels.index(v) for v in y]
    pred_idx = [labels.index(v) for v in pred]
    fold_uars = [f["uar"] for f in folds.values()]
    return {
        "uar": uar(true_idx, pred_idx, num_classes=len(labels)),
        "war": war(true_idx, pred_idx),
        "fold_uar_mean": float(np.mean(fold_uars)),
        "fold_uar_std": float(np.std(fold_uars)),
        "n": int(len(y)),
        "folds": folds,
    }


# ---------------------------------------------------------------------------------------------------- features


def extract_features(
    paths: Sequence[str | os.PathLike],
    feature_set: str = "logmel600",
    *,
    sample_rate: int = 16000,
    frontend: dict[str, Any] | None = None,
    batch_size: int = 16,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Utterance functionals ``(N, D)`` float32 for ``paths``, optionally cached as one ``.npy`` per file list.

    ``frontend`` overrides :class:`LogMelFunctionals` arguments (a checkpoint's ``model_args["frontend"]``). The cache
    key covers the files (path, size, mtime), the extractor's full configuration and the library versions, so a
    changed setting or extractor never reuses stale features. Log-mel functionals are computed by
    :func:`sermodels.data.features.extract_functionals`, the batched extraction WDA uses too.
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose from {FEATURE_SETS}")
    if feature_set == "logmel600":
        extractor = LogMelFunctionals(**({"sample_rate": sample_rate} | (frontend or {}))).eval()
        config = extractor.config()
    else:
        from sermodels.features.egemaps import OpenSmileFunctionals

        extractor = OpenSmileFunctionals(_OPENSMILE_SETS[feature_set], sample_rate=sample_rate)
        config = extractor.config() | {"opensmile": _version("opensmile")}
    cache = feature_cache_path(paths, [feature_set, config, __version__], cache_dir)
    if cache is not None and cache.is_file():
        return np.load(cache, allow_pickle=False)
    if feature_set == "logmel600":
        feats = extract_functionals(paths, extractor, batch_size=batch_size, min_duration=MIN_DURATION_S).numpy()
    else:
        feats = np.asarray(extractor.extract_files(paths), dtype=np.float32)
    if cache is not None:
        store_features(cache, feats)
    return feats


def feature_cache_path(paths: Sequence, settings: list, cache_dir) -> Path | None:
    """``<cache_dir>/<settings[0]>-<key>.npy`` (None without a cache folder): the key covers the settings (JSON) and
    every file's absolute path, size and mtime, so a changed setting or file never reuses stale features."""
    if cache_dir is None:
        return None
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return Path(cache_dir) / f"{settings[0]}-{h.hexdigest()[:20]}.npy"


def store_features(cache: Path, feats: np.ndarray) -> None:
    """Write a feature matrix to its cache file atomically (a temporary file, then a rename)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(cache)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
