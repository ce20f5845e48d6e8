"""Utterance functionals + z-normalisation + linear SVM, exported as one torch module.

Provenance
- Features: the 600-dimensional log-mel functionals of the NICU paper (Vaaras et al., Interspeech 2021; our copy
  has no title page), §4.1:
  40 mel bands, 30 ms Hann window, 10 ms hop; seven functionals of the log-mel bands and the first four moments of
  their first and second deltas. See :class:`sermodels.features.LogMelFunctionals`.
- Classifier: the EmoNet paper's feature baseline (Gerczuk et al., IEEE Trans. Affective Computing, §4.1):
  z-normalisation learnt on the training data, a linear SVM whose complexity C is chosen on the development
  partition on a logarithmic grid from 1 down to 1e-9, then refit on train + dev. The NICU paper (§4.2.1) adds
  class-balanced sample weights; we use them too (``class_weight="balanced"``).

Departures
- The SVM is fitted with scikit-learn (:mod:`sermodels.classical.svm`); its one-vs-rest hyperplanes are copied into a
  ``nn.Linear`` so that the released model is a plain module running on raw waveforms, on any device, with weights
  in safetensors. Scores are SVM decision values (``score_kind = "decision"``), not probabilities.
- A two-class SVM has a single hyperplane w; it is stored as the two rows (-w, +w) with biases (-b, +b) so that
  argmax over the logits is the SVM's decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sermodels._registry import register_model
from sermodels.features import LogMelFunctionals, Standardizer
from sermodels.models.base import SERModel, valid_lengths

# Shortest input: a few 10 ms frames are needed for the second-order deltas (NICU paper §4.1 discards utterances
# shorter than 600 ms in its own data; we only enforce what the front-end itself needs).
MIN_DURATION_S = 0.1


@register_model("logmel_svm")
class LogMelSVM(SERModel):
    """Waveforms ``(B, T)`` -> log-mel functionals ``(B, 600)`` -> z-score -> linear decision values ``(B, C)``."""

    score_kind = "decision"
    min_duration = MIN_DURATION_S

    def __init__(
        self,
        labels: list[str],
        head: str = "default",
        sample_rate: int = 16000,
        frontend: dict[str, Any] | None = None,
    ):
        super().__init__()
        if len(labels) < 2:
            raise ValueError(f"a classifier needs at least two labels, got {labels}")
        self.sample_rate = sample_rate
        self.heads = {head: list(labels)}
        self.default_head = head
        self.functionals = LogMelFunctionals(**({"sample_rate": sample_rate} | (frontend or {})))
        dim = len(self.functionals.feature_names())
        self.standardizer = Standardizer(dim)
        # Identity until a fitted standardiser is copied or loaded in, so a fresh model runs (and trains end to end).
        with torch.no_grad():
            self.standardizer.mean.zero_()
            self.standardizer.std.fill_(1.0)
        self.classifier = nn.Linear(dim, len(labels))

    def config(self) -> dict[str, Any]:
        return {
            "labels": self.heads[self.default_head],
            "head": self.default_head,
            "sample_rate": self.sample_rate,
            "frontend": self.functionals.config(),
        }

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised functionals ``(B, 600)``."""
        return self.standardizer(self.functionals(waveforms, valid_lengths(waveforms, lengths)))

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        self.resolve_head(head)
        return self.classifier(self.embed(waveforms, lengths))

    def set_linear_svm(self, mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Copy a fitted standardiser and one-vs-rest linear SVM (``coef (C|1, D)``, ``intercept (C|1,)``) in."""
        copy_linear_svm(self.standardizer, self.classifier, mean, std, coef, intercept)


@torch.no_grad()
def copy_standardizer(standardizer: Standardizer, mean: np.ndarray, std: np.ndarray) -> None:
    """Write fitted z-score statistics ``(D,)`` (e.g. a scikit-learn ``StandardScaler``'s) into ``standardizer``."""
    dim = standardizer.dim
    mean, std = np.asarray(mean), np.asarray(std)
    if mean.shape != (dim,) or std.shape != (dim,):
        raise ValueError(f"standardiser mean/std must have shape ({dim},), got {mean.shape} and {std.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ValueError("standardiser mean/std must be finite and std > 0")
    standardizer.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    standardizer.std.copy_(torch.as_tensor(std, dtype=torch.float32))


@torch.no_grad()
def copy_linear_svm(
    standardizer: Standardizer,
    classifier: nn.Linear,
    mean: np.ndarray,
    std: np.ndarray,
    coef: np.ndarray,
    intercept: np.ndarray,
) -> None:
    """A fitted z-score + one-vs-rest linear SVM into ``standardizer`` and ``classifier``; a two-class SVM's single
    hyperplane becomes the rows (-w, +w) with biases (-b, +b), so that argmax is the SVM's decision."""
    num_classes, dim = classifier.out_features, classifier.in_features
    copy_standardizer(standardizer, mean, std)
    coef, intercept = np.asarray(coef), np.asarray(intercept)
    if coef.shape[0] == 1 and num_classes == 2:
        coef, intercept = np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
    if coef.shape != (num_classes, dim):
        raise ValueError(f"SVM coefficients of shape {coef.shape} do not fit {num_classes} classes")
    classifier.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
    classifier.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
