"""The log-mel SVM model: shapes, gradients, the copied hyperplanes and standardiser (the scikit-learn fit and its
export are tested in tests/classical/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sermodels.models.svm import LogMelSVM


def test_shapes_and_backward():
    model = LogMelSVM(labels=["a", "b", "c"])
    wave = torch.randn(2, 16000, requires_grad=True)
    logits = model(wave, torch.tensor([16000, 9000]))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()
    assert model.classifier.weight.grad is not None


def test_binary_svm_keeps_decision():
    model = LogMelSVM(labels=["neg", "pos"])
    dim = model.classifier.in_features
    rng = np.random.default_rng(0)
    coef, intercept = rng.normal(size=(1, dim)), np.array([0.3])
    model.set_linear_svm(np.zeros(dim), np.ones(dim), coef, intercept)
    x = torch.randn(5, dim)
    logits = model.classifier(model.standardizer(x))
    margin = x.double().numpy() @ coef[0] + intercept[0]
    assert (logits.argmax(-1).numpy() == (margin > 0)).all()


def test_wrong_coef_shape_is_an_error():
    model = LogMelSVM(labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="do not fit 3 classes"):
        model.set_linear_svm(np.zeros(600), np.ones(600), np.zeros((2, 600)), np.zeros(2))


def test_set_linear_svm_validates_the_standardiser():
    model = LogMelSVM(labels=["a", "b", "c"])
    coef, bias = np.zeros((3, 600)), np.zeros(3)
    with pytest.raises(ValueError, match=r"shape \(600,\)"):
        model.set_linear_svm(np.zeros(1), np.ones(1), coef, bias)
    std = np.ones(600)
    std[7] = 0.0
    with pytest.raises(ValueError, match="std > 0"):
        model.set_linear_svm(np.zeros(600), std, coef, bias)
