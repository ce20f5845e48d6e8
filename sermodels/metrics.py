"""Evaluation metrics for speech emotion recognition: UAR, WAR, macro F1, confusion matrix, McNemar's test, and CCC,
Pearson's r and RMSE for dimensions (per utterance, or per frame with sequence-level and concatenated variants).

Classification metrics follow the EmoNet paper (Gerczuk et al., IEEE TAC 2021): Unweighted Average Recall (UAR) is
the headline metric (§5, Table 3), because emotional corpora are imbalanced, and McNemar's test [108] (McNemar,
Psychometrika 12(2), 1947) compares two models on the same test set (§7, Table 4). The concordance correlation
coefficient is the regression metric of the MixedEmotions deliverable D4.2 (§3.4.2 eq. 10, §4.3 eq. 3), reported
beside Pearson's correlation coefficient (CC) and the root mean squared error as its §4.5 tables do. For
time-continuous predictions D4.2 reports two aggregates: the CCC of the values **concatenated** over all recordings
(§4.5.2 and §5.3, "in accordance with the AV+EC challenge": the end-to-end conv-BLSTM's evaluation) and the
**average per sequence** E{CCC} (§4.5.1/§4.5.2, the counterpart of the ΣCCC objective, eq. 2): see
:func:`sequence_level` and :func:`concatenated`.

Every function accepts Python lists, numpy arrays or torch tensors. Class predictions are integer indices in
``[0, num_classes)`` (``num_classes`` is inferred as ``max + 1`` when not given); :func:`classification_report` also
accepts label strings. Classification counts come from torchmetrics' confusion matrix and the ratios are taken in
float64. Where torchmetrics' own metric differs from the definition we use, the docstring says how: :func:`uar`
(absent classes) and :func:`ccc` (N - 1 moments).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

# McNemar's test: below this many discordant pairs (b + c) the chi-squared approximation is poor and the exact
# binomial test is used instead. 25 is the common rule of thumb; EmoNet (§7) does not say which variant it ran.
MCNEMAR_EXACT_BELOW = 25

ArrayLike = Sequence[Any] | np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------------- conversions


def _as_class_indices(values: ArrayLike, name: str) -> torch.Tensor:
    """A 1-D long tensor of class indices; floats that are not whole numbers are an error."""
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    tensor = tensor.detach().cpu().reshape(-1)
    if tensor.is_floating_point():
        if not torch.equal(tensor, tensor.round()):
            raise ValueError(f"{name} must hold integer class indices, got non-integer values")
    elif tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got booleans")
    return tensor.long()


def _check_pair(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int | None) -> int:
    """Validate a (true, predicted) pair and return the number of classes (inferred when not given)."""
    if y_true.numel() != y_pred.numel():
        raise ValueError(f"y_true has {y_true.numel()} items but y_pred has {y_pred.numel()}")
    if y_true.numel() == 0:
        raise ValueError("no items to score: y_true and y_pred are empty")
    low = int(min(y_true.min(), y_pred.min()))
    high = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        num_classes = high + 1
    if low < 0 or high >= num_classes:
        raise ValueError(f"class indices must lie in [0, {num_classes}); got values from {low} to {high}")
    return int(num_classes)


def _prepare(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    true = _as_class_indices(y_true, "y_true")
    pred = _as_class_indices(y_pred, "y_pred")
    return true, pred, _check_pair(true, pred, num_classes)


# ------------------------------------------------------------------------------------------- classification


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Recall of every class, shape ``(num_classes,)``; ``nan`` for a class with no true items."""
    counts = confusion_matrix(y_true, y_pred, num_classes)
    return _per_class(counts)["recall"]


def uar(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Unweighted Average Recall: the mean over classes of per-class recall (macro recall).

    Classes with no true items in ``y_true`` have no recall and are **excluded from the mean**, as scikit-learn's
    ``balanced_accuracy_score`` does. torchmetrics' ``multiclass_recall(average="macro")`` only drops classes that
    are absent from both ``y_true`` and ``y_pred``: a class that is predicted but never true enters its mean as
    recall 0 and deflates the UAR (``y_true=[0, 1]``, ``y_pred=[0, 2]``: torchmetrics 1/3, UAR 1/2).
    """
    return float(np.nanmean(per_class_recall(y_true, y_pred, num_classes)))


def war(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Weighted Average Recall, i.e. accuracy: the fraction of items whose class is predicted correctly."""
    counts = confusion_matrix(y_true, y_pred, num_classes)
    return float(np.trace(counts) / counts.sum())


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in ``y_true`` or ``y_pred``.

    A class that is neither true nor predicted has no F1 and is left out; one that is predicted but never true (or
    true but never predicted) counts as F1 = 0. This is scikit-learn's ``f1_score(average="macro")`` and
    torchmetrics' ``multiclass_f1_score(average="macro")``.
    """
    counts = confusion_matrix(y_true, y_pred, num_classes)
    return float(np.nanmean(_per_class(counts)["f1"]))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Counts, shape ``(num_classes, num_classes)``, int64: row = true class, column = predicted class.

    Counted by torchmetrics; every other classification metric here is derived from these counts in float64, so
    the values agree with scikit-learn to rounding error instead of to float32 precision.
    """
    true, pred, num_classes = _prepare(y_true, y_pred, num_classes)
    return multiclass_confusion_matrix(pred, true, num_classes=num_classes).numpy().astype(np.int64)


def _per_class(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class recall, precision and F1 from a confusion matrix; ``nan`` where a value is undefined.

    Recall is undefined without true items, precision without predictions; F1 is undefined only when the class is
    neither true nor predicted (otherwise a 0/0 precision or recall counts as 0, as in scikit-learn).
    """
    tp = np.diag(counts).astype(np.float64)
    support = counts.sum(axis=1).astype(np.float64)
    predicted = counts.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
    return {"recall": recall, "precision": precision, "f1": f1, "support": support.astype(np.int64)}


def classification_report(y_true: ArrayLike, y_pred: ArrayLike, label_names: Sequence[str]) -> dict[str, Any]:
    """All classification metrics in one JSON-able dict.

    ``y_true``/``y_pred`` are class indices into ``label_names`` or the label strings themselves. Per-class values
    that are undefined (recall of a class with no true items, precision of a class never predicted, F1 of a class
    neither true nor predicted) are ``None``. Keys: ``n``, ``uar``, ``war``, ``macro_f1``, ``labels``,
    ``per_class`` (label -> recall, precision, f1, support) and ``confusion_matrix`` (rows = true, columns =
    predicted, in ``labels`` order).
    """
    labels = list(label_names)
    if len(set(labels)) != len(labels):
        raise ValueError(f"label_names has duplicates: {labels}")
    true = _labels_to_indices(y_true, labels, "y_true")
    pred = _labels_to_indices(y_pred, labels, "y_pred")
    counts = confusion_matrix(true, pred, len(labels))
    stats = _per_class(counts)
    per_class = {
        name: {
            "recall": _finite_or_none(stats["recall"][k]),
            "precision": _finite_or_none(stats["precision"][k]),
            "f1": _finite_or_none(stats["f1"][k]),
            "support": int(stats["support"][k]),
        }
        for k, name in enumerate(labels)
    }
    return {
        "n": int(counts.sum()),
        "uar": float(np.nanmean(stats["recall"])),
        "war": float(np.trace(counts) / counts.sum()),
        "macro_f1": float(np.nanmean(stats["f1"])),
        "labels": labels,
        "per_class": per_class,
        "confusion_matrix": counts.tolist(),
    }


def _labels_to_indices(values: ArrayLike, labels: list[str], name: str) -> ArrayLike:
    """Map label strings to indices into ``labels``; integer input passes through unchanged."""
    if isinstance(values, torch.Tensor):
        return values
    array = np.asarray(values)
    if array.dtype.kind not in "UO":
        return array
    index = {label: k for k, label in enumerate(labels)}
    unknown = sorted({str(v) for v in array.reshape(-1) if v not in index})
    if unknown:
        raise ValueError(f"{name} has labels that are not in label_names {labels}: {unknown}")
    return np.array([index[v] for v in array.reshape(-1)], dtype=np.int64)


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# ------------------------------------------------------------------------------------------------ regression


def ccc(pred: ArrayLike, target: ArrayLike) -> float:
    """Concordance correlation coefficient (Lin, 1989) of two 1-D series.

    ``ccc = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))**2)`` with **population** (1/N) moments, as in
    MixedEmotions D4.2 §4.3 eq. (3) (expectation, variance and covariance of the sequence). It is 1 only for
    ``pred == target`` and penalises both scale and offset errors, unlike Pearson's r.

    torchmetrics' ``concordance_corrcoef`` divides the variances and the covariance by N - 1 but the squared mean
    difference by nothing, which mixes two estimators and gives a slightly different value (the two agree as
    N grows, and exactly when the means are equal), so it is not used here. Computed in float64.

    Degenerate cases, where the formula's denominator is 0 or the covariance vanishes: a constant ``pred`` and
    ``target`` with equal values (one value each included) gives 1 (perfect agreement, 0/0 defined so); with
    different values 0; a constant ``pred`` against a varying ``target`` (or the reverse) gives 0 (no covariance).
    """
    x, y = _paired(pred, target)
    mean_x, mean_y = x.mean(), y.mean()
    var_x = ((x - mean_x) ** 2).mean()
    var_y = ((y - mean_y) ** 2).mean()
    cov = ((x - mean_x) * (y - mean_y)).mean()
    denominator = var_x + var_y + (mean_x - mean_y) ** 2
    if denominator == 0:  # both constant and equal: perfect agreement
        return 1.0
    return float(2.0 * cov / denominator)


def _as_float64(values: ArrayLike, name: str) -> torch.Tensor:
    tensor = _as_tensor(values).reshape(-1)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return tensor


def _as_tensor(values: ArrayLike) -> torch.Tensor:
    """A float64 CPU tensor of any shape (no gradient)."""
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values, dtype=np.float64))
    return tensor.detach().cpu().double()


def _paired(pred: ArrayLike, target: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x = _as_float64(pred, "pred")
    y = _as_float64(target, "target")
    if x.numel() != y.numel():
        raise ValueError(f"pred has {x.numel()} values but target has {y.numel()}")
    if x.numel() == 0:
        raise ValueError("no values to score: pred and target are empty")
    return x, y


def pearson(pred: ArrayLike, target: ArrayLike) -> float:
    """Pearson's correlation coefficient r of two 1-D series (D4.2's CC, §4.3 eq. 8), computed in float64.

    r is undefined when either series is constant (a zero standard deviation; one value is constant too): it is
    then ``nan`` (as ``scipy.stats.pearsonr``, which also warns), and reports write it as ``null``.
    """
    x, y = _paired(pred, target)
    if x.max() == x.min() or y.max() == y.min():  # the mean of equal floats need not equal them exactly
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    norm = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if norm == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float((dx * dy).sum()) / norm))


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root mean squared error ``sqrt(mean((pred - target)**2))`` of two 1-D series, in float64."""
    x, y = _paired(pred, target)
    return math.sqrt(float(((x - y) ** 2).mean()))


#: The per-dimension regression metrics, by report key.
REGRESSION_METRICS = {"ccc": ccc, "pearson": pearson, "rmse": rmse}


def regression_scores(pred: ArrayLike, target: ArrayLike) -> dict[str, float]:
    """``{"ccc", "pearson", "rmse"}`` of two 1-D series."""
    return {name: metric(pred, target) for name, metric in REGRESSION_METRICS.items()}


def sequences(values: ArrayLike | Sequence[ArrayLike], mask: ArrayLike | None = None) -> list[torch.Tensor]:
    """Variable-length sequences as a list of float64 tensors ``(T_i, ...)``.

    ``values`` is a list of per-sequence arrays ``(T_i,)`` / ``(T_i, D)`` (``mask`` must then be ``None``), or a
    padded array ``(N, T)`` / ``(N, T, D)`` with ``mask`` ``(N, T)`` (True on valid frames; ``None``: all valid).
    Masked frames are dropped wherever they are, and only the kept values must be finite.
    """
    if isinstance(values, (list, tuple)):
        if mask is not None:
            raise ValueError("a mask goes with a padded array (N, T[, D]), not with a list of sequences")
        return [_as_tensor(sequence) for sequence in values]
    padded = _as_tensor(values)
    if padded.dim() < 2:
        raise ValueError(f"padded sequences need shape (N, T[, D]), got {tuple(padded.shape)}")
    if mask is None:
        return list(padded)
    keep = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).detach().cpu()
    if keep.shape != padded.shape[:2]:
        raise ValueError(f"mask {tuple(keep.shape)} does not match the sequences' (N, T) {tuple(padded.shape[:2])}")
    return [sequence[row.bool()] for sequence, row in zip(padded, keep)]


def sequence_level(
    metric: str, pred: ArrayLike | Sequence[ArrayLike], target: ArrayLike | Sequence[ArrayLike], mask=None
) -> float:
    """The mean over sequences of each sequence's ``metric`` (``"ccc"``, ``"pearson"`` or ``"rmse"``).

    D4.2's E{CCC} (§4.5.1/§4.5.2): every sequence weighs the same, whatever its length, and a model must follow the
    contour *within* each sequence. ``pred``/``target``: 1-D sequences as in :func:`sequences`. Sequences with no
    valid frame are skipped; values that are undefined (Pearson's r of a constant sequence) are left out of the
    mean, which is ``nan`` when no sequence has a value. A one-frame sequence has CCC 1 if the values are equal,
    else 0 (see :func:`ccc`).
    """
    function = REGRESSION_METRICS[metric]
    pairs = _sequence_pairs(pred, target, mask)
    values = [function(x, y) for x, y in pairs]
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


def concatenated(
    metric: str, pred: ArrayLike | Sequence[ArrayLike], target: ArrayLike | Sequence[ArrayLike], mask=None
) -> float:
    """``metric`` of all valid frames pooled into one series (D4.2 §4.5.2 and §5.3, the AV+EC challenge's CCC).

    Long sequences weigh more, and a model that gets each sequence's mean level right scores well even with flat
    contours (D4.2 §4.3, Fig. 5.2). ``pred``/``target``: 1-D sequences as in :func:`sequences`.
    """
    pairs = _sequence_pairs(pred, target, mask)
    return REGRESSION_METRICS[metric](torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]))


def _sequence_pairs(pred, target, mask) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Non-empty ``(pred, target)`` 1-D sequence pairs of equal lengths."""
    xs, ys = sequences(pred, mask), sequences(target, mask)
    if len(xs) != len(ys):
        raise ValueError(f"pred has {len(xs)} sequences but target has {len(ys)}")
    pairs = []
    for number, (x, y) in enumerate(zip(xs, ys)):
        if x.shape != y.shape or x.dim() != 1:
            raise ValueError(f"sequence {number}: pred {tuple(x.shape)} and target {tuple(y.shape)} must be equal 1-D")
        if x.numel():
            pairs.append((x, y))
    if not pairs:
        raise ValueError("no values to score: every sequence is empty")
    return pairs


def dimension_scores(
    pred: ArrayLike | Sequence[ArrayLike],
    target: ArrayLike | Sequence[ArrayLike],
    names: Sequence[str],
    *,
    level: str = "utterance",
    mask: ArrayLike | None = None,
) -> dict[str, dict[str, Any]]:
    """CCC, Pearson's r and RMSE of every dimension, by name.

    ``level="utterance"``: ``pred``/``target`` ``(N, D)``, one row per utterance; each dimension gets
    ``{"ccc", "pearson", "rmse"}`` over the N utterances. ``level="frame"``: sequences ``(T_i, D)`` as in
    :func:`sequences` (a list, or padded ``(N, T, D)`` with ``mask``); each dimension gets ``{"sequence": {...},
    "concatenated": {...}}`` (:func:`sequence_level`, :func:`concatenated`). Undefined values are ``nan``.
    """
    names = list(names)
    if level == "utterance":
        x, y = _as_tensor(pred), _as_tensor(target)
        if x.shape != y.shape or x.dim() != 2 or x.shape[1] != len(names):
            raise ValueError(f"pred {tuple(x.shape)} and target {tuple(y.shape)} must both be (N, {len(names)})")
        return {name: regression_scores(x[:, d], y[:, d]) for d, name in enumerate(names)}
    if level != "frame":
        raise ValueError(f"level must be 'utterance' or 'frame', got {level!r}")
    xs, ys = sequences(pred, mask), sequences(target, mask)
    for sequence in (*xs, *ys):
        if sequence.dim() != 2 or sequence.shape[1] != len(names):
            raise ValueError(f"frame-level sequences must be (frames, {len(names)}), got {tuple(sequence.shape)}")
    out = {}
    for d, name in enumerate(names):
        px, py = [x[:, d] for x in xs], [y[:, d] for y in ys]
        out[name] = {
            "sequence": {metric: sequence_level(metric, px, py) for metric in REGRESSION_METRICS},
            "concatenated": {metric: concatenated(metric, px, py) for metric in REGRESSION_METRICS},
        }
    return out


# ---------------------------------------------------------------------------------------------- significance


def mcnemar(
    y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, exact: bool | None = None
) -> dict[str, float | int | str]:
    """McNemar's test (McNemar, 1947) for a difference in error rates of models A and B on the same items.

    Only the discordant items count: ``b`` (n01) = A wrong and B right, ``c`` (n10) = A right and B wrong.
    Under the null hypothesis both are Binomial(b + c, 1/2).

    - ``exact=None`` picks the test: the exact two-sided binomial test when ``b + c < MCNEMAR_EXACT_BELOW`` (25),
      the chi-squared test with continuity correction otherwise.
    - exact binomial: ``statistic = min(b, c)``, ``p = min(1, 2 * P(X <= min(b, c)))`` for X ~ Bin(b + c, 1/2).
    - chi-squared: ``statistic = max(|b - c| - 1, 0)**2 / (b + c)`` (Edwards' continuity correction, floored at
      0 so that ``b == c`` gives 0 rather than ``1 / (b + c)``), ``p = P(chi2_1 > statistic)``.

    p-values come from scipy.stats when it is installed (it comes with scikit-learn), otherwise from the same
    closed forms with :mod:`math` (exact binomial sum; ``chi2_1`` survival is ``erfc(sqrt(s / 2))``).
    ``b + c == 0`` (the models err on the same items) gives statistic 0 and p = 1.
    """
    true, a, _ = _prepare(y_true, pred_a, None)
    _, b_pred, _ = _prepare(true, pred_b, None)
    a_right = a == true
    b_right = b_pred == true
    b = int((~a_right & b_right).sum())
    c = int((a_right & ~b_right).sum())
    use_exact = (b + c) < MCNEMAR_EXACT_BELOW if exact is None else bool(exact)
    if use_exact:
        statistic = float(min(b, c))
        p_value = _binomial_two_sided(min(b, c), b + c)
        method = "exact-binomial"
    else:
        statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c) if b + c > 0 else 0.0
        p_value = _chi2_1_survival(statistic) if b + c > 0 else 1.0
        method = "chi2-continuity"
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": float(p_value), "method": method}


def _binomial_two_sided(k: int, n: int) -> float:
    """``min(1, 2 * P(X <= k))`` for X ~ Bin(n, 1/2), with ``k <= n / 2``."""
    if n == 0:
        return 1.0
    try:
        from scipy.stats import binom
    except ImportError:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    else:
        tail = float(binom.cdf(k, n, 0.5))
    return min(1.0, 2.0 * tail)


def _chi2_1_survival(statistic: float) -> float:
    """``P(chi2 with 1 degree of freedom > statistic)``."""
    try:
        from scipy.stats import chi2
    except ImportError:
        return math.erfc(math.sqrt(statistic / 2.0))
    return float(chi2.sf(statistic, 1))
