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
