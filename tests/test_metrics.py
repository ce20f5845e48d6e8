"""Metrics against hand-computed values, scikit-learn, scipy and torchmetrics."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torchmetrics.functional.classification import multiclass_recall
from torchmetrics.functional.regression import concordance_corrcoef

from sermodels import metrics

# 10 items, 3 classes. Confusion (rows true): [[2,1,0],[1,3,0],[0,1,2]]
Y_TRUE = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 0, 1, 1, 1, 1, 2, 2]


def test_hand_computed_classification_metrics():
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [1, 3, 0], [0, 1, 2]]
    assert metrics.uar(Y_TRUE, Y_PRED, 3) == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3, abs=1e-12)
    assert metrics.war(Y_TRUE, Y_PRED, 3) == pytest.approx(7 / 10, abs=1e-12)
    # F1 per class = 2tp / (support + predicted): 4/6, 6/9, 4/5
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((4 / 6 + 6 / 9 + 4 / 5) / 3, abs=1e-12)


@pytest.mark.parametrize("kind", ["list", "numpy", "torch"])
def test_input_types_agree(kind):
    convert = {"list": list, "numpy": np.array, "torch": torch.tensor}[kind]
    assert metrics.uar(convert(Y_TRUE), convert(Y_PRED)) == pytest.approx(balanced_accuracy_score(Y_TRUE, Y_PRED))


def test_random_predictions_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true = rng.integers(0, 5, size=60)
        y_pred = np.where(rng.random(60) < 0.5, y_true, rng.integers(0, 5, size=60))
        assert metrics.uar(y_true, y_pred, 5) == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        assert metrics.war(y_true, y_pred, 5) == pytest.approx(float(np.mean(y_true == y_pred)), abs=1e-12)
        assert metrics.macro_f1(y_true, y_pred, 5) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
        expected = sk_confusion_matrix(y_true, y_pred, labels=range(5))
        np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, 5), expected)


def test_class_absent_from_predictions():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 0, 1]  # class 2 is never predicted
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the ill-defined precision of class 2
        assert metrics.macro_f1(y_true, y_pred, 3) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    report = metrics.classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report["per_class"]["c"] == {"recall": 0.0, "precision": None, "f1": 0.0, "support": 2}


def test_class_absent_from_truth_is_excluded_from_uar():
    y_true = [0, 0, 1, 1]
    y_pred = [0, 2, 1, 2]  # class 2 predicted but never true
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(y_true, y_pred)
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx(0.5) == pytest.approx(expected)
    # torchmetrics' macro recall counts class 2 as recall 0: the reason uar() averages per-class recall itself.
    torchmetrics_macro = float(multiclass_recall(torch.tensor(y_pred), torch.tensor(y_true), 3, average="macro"))
    assert torchmetrics_macro == pytest.approx(1 / 3, abs=1e-6)
    # A class absent from both is simply ignored, whatever num_classes says.
    assert metrics.uar([0, 1], [0, 1], num_classes=7) == 1.0
    assert math.isnan(metrics.per_class_recall([0, 1], [0, 1], 3)[2])


def test_classification_report_with_label_strings():
    names = ["angry", "happy", "sad"]
    y_true = [names[i] for i in Y_TRUE]
    y_pred = [names[i] for i in Y_PRED]
    report = metrics.classification_report(y_true, y_pred, names)
    assert report == metrics.classification_report(Y_TRUE, Y_PRED, names)
    assert report["n"] == 10 and report["labels"] == names
    assert report["confusion_matrix"] == [[2, 1, 0], [1, 3, 0], [0, 1, 2]]
    recall = recall_score(Y_TRUE, Y_PRED, average=None)
    precision = precision_score(Y_TRUE, Y_PRED, average=None)
    f1 = f1_score(Y_TRUE, Y_PRED, average=None)
    for k, name in enumerate(names):
        assert report["per_class"][name]["recall"] == pytest.approx(recall[k])
        assert report["per_class"][name]["precision"] == pytest.approx(precision[k])
        assert report["per_class"][name]["f1"] == pytest.approx(f1[k])
    assert [report["per_class"][n]["support"] for n in names] == [3, 4, 3]
    with pytest.raises(ValueError, match=r"y_pred has labels that are not in label_names .*'fear'"):
        metrics.classification_report(["angry"], ["fear"], names)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="y_true has 2 items but y_pred has 3"):
        metrics.uar([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.war([], [])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metrics.uar([0, 1], [0, 2], num_classes=2)
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.uar([0.5, 1.0], [0, 1])


# ------------------------------------------------------------------------------------------------------ McNemar


def _pairs(b: int, c: int, both_right: int = 3, both_wrong: int = 2):
    """Labels and two prediction vectors with exactly b (A wrong, B right) and c (A right, B wrong) items."""
    n = b + c + both_right + both_wrong
    y_true = np.zeros(n, dtype=int)
    a_right = np.array([False] * b + [True] * c + [True] * both_right + [False] * both_wrong)
    b_right = np.array([True] * b + [False] * c + [True] * both_right + [False] * both_wrong)
    return y_true, np.where(a_right, 0, 1), np.where(b_right, 0, 2)


def test_mcnemar_exact_hand_computed():
    # b = 1, c = 6: P(X <= 1 | n=7, 1/2) = (1 + 7) / 128, two-sided 16/128.
    result = metrics.mcnemar(*_pairs(1, 6))
    assert result == {"b": 1, "c": 6, "statistic": 1.0, "p_value": pytest.approx(16 / 128), "method": "exact-binomial"}
    # b = 0, c = 5: 2 / 32; b = c: p = 1 (capped).
    assert metrics.mcnemar(*_pairs(0, 5))["p_value"] == pytest.approx(2 / 32)
    assert metrics.mcnemar(*_pairs(4, 4))["p_value"] == 1.0
    zero = {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0}
    assert metrics.mcnemar(*_pairs(0, 0)) == zero | {"method": "exact-binomial"}
    assert metrics.mcnemar(*_pairs(0, 0), exact=False) == zero | {"method": "chi2-continuity"}


def test_mcnemar_chi2_hand_computed():
    # b = 30, c = 10: (|30 - 10| - 1)^2 / 40 = 9.025; chi2(1) survival = erfc(sqrt(9.025 / 2)) = 0.0026631...
    result = metrics.mcnemar(*_pairs(30, 10))
    assert result["method"] == "chi2-continuity"
    assert (result["b"], result["c"]) == (30, 10)
    assert result["statistic"] == pytest.approx(9.025)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-9)
    assert result["p_value"] == pytest.approx(0.0026631, rel=1e-4)
    # Direction matters for b/c but not for the test.
    swapped = metrics.mcnemar(_pairs(30, 10)[0], _pairs(30, 10)[2], _pairs(30, 10)[1])
    assert (swapped["b"], swapped["c"], swapped["p_value"]) == (10, 30, result["p_value"])


def test_mcnemar_threshold_and_override():
    assert metrics.MCNEMAR_EXACT_BELOW == 25
    assert metrics.mcnemar(*_pairs(12, 12))["method"] == "exact-binomial"  # b + c = 24 < 25
    assert metrics.mcnemar(*_pairs(12, 13))["method"] == "chi2-continuity"  # b + c = 25
    assert metrics.mcnemar(*_pairs(12, 12), exact=False)["method"] == "chi2-continuity"
    forced = metrics.mcnemar(*_pairs(30, 10), exact=True)
    # exact: 2 * P(X <= 10 | n = 40) = 2 * sum_{i<=10} C(40, i) / 2^40
    expected = 2 * sum(math.comb(40, i) for i in range(11)) / 2**40
    assert forced["method"] == "exact-binomial" and forced["p_value"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_without_scipy_gives_the_same_p(monkeypatch):
    with_scipy = [metrics.mcnemar(*_pairs(b, c)) for b, c in [(1, 6), (30, 10), (3, 19), (40, 22)]]
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # makes "from scipy.stats import ..." raise ImportError
    without = [metrics.mcnemar(*_pairs(b, c)) for b, c in [(1, 6), (30, 10), (3, 19), (40, 22)]]
    for a, b in zip(with_scipy, without):
        assert a["p_value"] == pytest.approx(b["p_value"], rel=1e-9)


# ---------------------------------------------------------------------------------------------------------- CCC


def _ccc_numpy(x: np.ndarray, y: np.ndarray) -> float:
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_ccc_against_numpy_formula():
    rng = np.random.default_rng(1)
    for _ in range(10):
        target = rng.normal(size=50)
        pred = 0.7 * target + rng.normal(scale=0.5, size=50) + 0.3
        assert metrics.ccc(pred, target) == pytest.approx(_ccc_numpy(pred, target), rel=1e-12)
        assert metrics.ccc(torch.tensor(pred, dtype=torch.float32), list(target)) == pytest.approx(
            _ccc_numpy(pred, target), rel=1e-6
        )


def test_ccc_perfect_negated_shifted():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert metrics.ccc(x, x) == pytest.approx(1.0)
    assert metrics.ccc(-x, x) == pytest.approx(-1.0)  # zero mean: negation is perfect discordance
    # x + 1: var 2, cov 2, mean difference 1 -> 4 / 5 (Pearson would say 1)
    assert metrics.ccc(x + 1, x) == pytest.approx(4 / 5)
    assert metrics.ccc([3.0, 3.0], [3.0, 3.0]) == 1.0
    assert metrics.ccc([3.0, 3.0], [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        metrics.ccc([1.0, float("nan")], [1.0, 2.0])


def test_ccc_differs_from_torchmetrics_only_by_its_moment_estimator():
    x = np.array([2.5, 0.0, 2.0, 8.0])
    y = np.array([3.0, -0.5, 2.0, 7.0])
    ours = metrics.ccc(x, y)
    theirs = float(concordance_corrcoef(torch.tensor(x), torch.tensor(y)))
    n = len(x)
    # torchmetrics: (n - 1) moments for variances/covariance, the plain squared mean difference.
    cov = np.sum((x - x.mean()) * (y - y.mean())) / (n - 1)
    expected_theirs = 2 * cov / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2)
    assert theirs == pytest.approx(expected_theirs, rel=1e-9)
    assert ours == pytest.approx(_ccc_numpy(x, y), rel=1e-12)
    assert abs(ours - theirs) > 1e-4
    # With equal means the two estimators agree exactly.
    y_centred = y - y.mean() + x.mean()
    assert metrics.ccc(x, y_centred) == pytest.approx(
        float(concordance_corrcoef(torch.tensor(x), torch.tensor(y_centred))), rel=1e-9
    )


# -------------------------------------------------------------------------------------- Pearson's r and RMSE


def test_pearson_and_rmse_hand_computed():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [2.0, 4.0, 5.0, 4.0]
    # dx = [-1.5, -0.5, 0.5, 1.5], dy = [-1.75, 0.25, 1.25, 0.25]: sum dx dy = 3.5, sum dx^2 = 5, sum dy^2 = 4.75
    assert metrics.pearson(x, y) == pytest.approx(3.5 / math.sqrt(5 * 4.75), abs=1e-12)
    # errors [1, 2, 2, 0] -> mean square 9/4
    assert metrics.rmse(x, y) == pytest.approx(1.5, abs=1e-12)
    assert metrics.pearson(x, [-v for v in x]) == pytest.approx(-1.0)
    assert metrics.rmse(x, x) == 0.0


def test_pearson_matches_scipy_and_numpy_for_every_input_type():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(4)
    target = rng.normal(size=40)
    pred = 0.5 * target + rng.normal(scale=0.8, size=40) - 1.0
    expected = pearsonr(pred, target).statistic
    for pair in ((pred, target), (torch.tensor(pred), torch.tensor(target)), (list(pred), list(target))):
        assert metrics.pearson(*pair) == pytest.approx(expected, rel=1e-12)
    assert metrics.pearson(torch.tensor(pred, dtype=torch.float32), target) == pytest.approx(expected, rel=1e-6)
    assert metrics.rmse(pred, target) == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)), rel=1e-12)


def test_degenerate_regression_inputs_have_documented_values():
    # A constant series has no correlation: nan, as scipy's pearsonr (which also warns).
    assert math.isnan(metrics.pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))
    assert math.isnan(metrics.pearson([5.0], [5.0]))
    # CCC of constants: 1 when equal, else 0; a constant against a varying series has no covariance: 0.
    assert metrics.ccc([5.0], [5.0]) == 1.0 and metrics.ccc([5.0], [4.0]) == 0.0
    assert metrics.ccc([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == 0.0
    assert metrics.rmse([5.0], [4.0]) == 1.0
    with pytest.raises(ValueError, match="empty"):
        metrics.rmse([], [])
    with pytest.raises(ValueError, match="3 values but target has 2"):
        metrics.pearson([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.rmse([1.0, float("inf")], [1.0, 2.0])


# ----------------------------------------------------------------------------- frame level: sequence vs pooled


def test_sequence_level_and_concatenated_differ_as_in_d42():
    # MixedEmotions D4.2 Fig. 5.2: predicting each sequence's mean gives CCC 0 per sequence, but the concatenation
    # still agrees on the levels. Sequence a: [0, 2] (mean 1), b: [4, 6, 8] (mean 6).
    true = [np.array([0.0, 2.0]), np.array([4.0, 6.0, 8.0])]
    pred = [np.array([1.0, 1.0]), np.array([6.0, 6.0, 6.0])]
    assert metrics.sequence_level("ccc", pred, true) == 0.0
    pooled_true, pooled_pred = np.concatenate(true), np.concatenate(pred)
    assert metrics.concatenated("ccc", pred, true) == pytest.approx(_ccc_numpy(pooled_pred, pooled_true), rel=1e-12)
    # By hand: means 4.0 both; var(true) = 8, var(pred) = 6, cov = 6 -> 12 / 14.
    assert metrics.concatenated("ccc", pred, true) == pytest.approx(12 / 14, rel=1e-12)
    # RMSE: per sequence sqrt(1) and sqrt(8/3), averaged; pooled sqrt(10/5).
    assert metrics.sequence_level("rmse", pred, true) == pytest.approx((1 + math.sqrt(8 / 3)) / 2, rel=1e-12)
    assert metrics.concatenated("rmse", pred, true) == pytest.approx(math.sqrt(2.0), rel=1e-12)
    # Pearson of a constant prediction is undefined in every sequence: the mean over none is nan.
    assert math.isnan(metrics.sequence_level("pearson", pred, true))


def test_masked_padding_is_ignored_and_inputs_agree():
    rng = np.random.default_rng(7)
    lengths = [5, 3, 8]
    true = [rng.normal(size=n) for n in lengths]
    pred = [t * 0.8 + rng.normal(scale=0.3, size=t.shape) for t in true]
    padded_true = np.full((3, 8), np.nan)  # garbage (even NaN) under the mask must not matter
    padded_pred = np.full((3, 8), 1e6)
    mask = np.zeros((3, 8), dtype=bool)
    for row, n in enumerate(lengths):
        padded_true[row, :n], padded_pred[row, :n], mask[row, :n] = true[row], pred[row], True
    for metric in ("ccc", "pearson", "rmse"):
        per_sequence = np.mean([metrics.REGRESSION_METRICS[metric](p, t) for p, t in zip(pred, true)])
        assert metrics.sequence_level(metric, pred, true) == pytest.approx(per_sequence, rel=1e-12)
        assert metrics.sequence_level(metric, padded_pred, padded_true, mask) == pytest.approx(per_sequence, rel=1e-12)
        torch_value = metrics.concatenated(
            metric, torch.tensor(padded_pred), torch.tensor(padded_true), torch.tensor(mask)
        )
        assert torch_value == pytest.approx(metrics.concatenated(metric, pred, true), rel=1e-12)
    with pytest.raises(ValueError, match="does not match"):
        metrics.sequence_level("ccc", padded_pred, padded_true, mask[:, :4])
    with pytest.raises(ValueError, match="every sequence is empty"):
        metrics.concatenated("ccc", padded_pred, padded_true, np.zeros_like(mask))
    with pytest.raises(ValueError, match="sequence 1"):
        metrics.concatenated("ccc", pred, [true[0], true[1][:2], true[2]])


def test_dimension_scores_per_level():
    rng = np.random.default_rng(2)
    true = rng.uniform(-1, 1, size=(20, 2))
    pred = true * 0.5 + 0.1
    scores = metrics.dimension_scores(pred, true, ["arousal", "valence"])
    assert set(scores) == {"arousal", "valence"}
    assert scores["valence"] == {
        "ccc": pytest.approx(_ccc_numpy(pred[:, 1], true[:, 1])),
        "pearson": pytest.approx(1.0),
        "rmse": pytest.approx(np.sqrt(np.mean((pred[:, 1] - true[:, 1]) ** 2))),
    }
    frames_true = [rng.uniform(-1, 1, size=(n, 2)) for n in (30, 12)]
    frames_pred = [t[:, ::-1].copy() for t in frames_true]  # the dimensions swapped
    frame = metrics.dimension_scores(frames_pred, frames_true, ["arousal", "valence"], level="frame")
    assert set(frame["arousal"]) == {"sequence", "concatenated"}
    assert frame["arousal"]["concatenated"]["ccc"] == pytest.approx(
        metrics.ccc(np.concatenate([p[:, 0] for p in frames_pred]), np.concatenate([t[:, 0] for t in frames_true]))
    )
    assert frame["valence"]["sequence"]["rmse"] == pytest.approx(
        np.mean([metrics.rmse(p[:, 1], t[:, 1]) for p, t in zip(frames_pred, frames_true)])
    )
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        metrics.dimension_scores(pred, true, ["a", "b", "c"])
    with pytest.raises(ValueError, match="level"):
        metrics.dimension_scores(pred, true, ["arousal", "valence"], level="segment")


def test_pearson_of_a_constant_series_is_undefined_whatever_its_float_mean():
    """The mean of three 0.1s is not exactly 0.1 in floating point; r must still be undefined, not 0."""
    import math

    from sermodels.metrics import pearson

    assert math.isnan(pearson([0.1] * 3, [1.0, 2.0, 3.0]))
    assert math.isnan(pearson([1.0, 2.0, 3.0], [0.1] * 3))
