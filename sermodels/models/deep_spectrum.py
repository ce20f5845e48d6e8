"""Deep Spectrum + linear classifier on raw audio: spectrogram image -> frozen ImageNet CNN layer -> z-score -> linear.

Provenance
- Amiriparian et al., "Snore sound classification using image-based deep spectrum features", Interspeech 2017;
  the EmoNet paper's Deep Spectrum baseline (Gerczuk et al., IEEE Trans. Affective Computing, §4.2): features of
  128-band mel-spectrogram plots (magma colour map, whole files, 224 x 224) from an ImageNet VGG16, classified by a
  linear SVM whose complexity C is chosen on dev from 1 down to 1e-9 and refit on train + dev (§4.1). The feature
  extractor is :class:`sermodels.features.deepspectrum.DeepSpectrum` (its docstring lists how images are rendered).

Two ways to fill the linear layer:
- ``classifier="svm"``: the paper's protocol (:mod:`sermodels.classical.deep_spectrum`); scikit-learn's one-vs-rest
  hyperplanes (and the z-score fitted with them) are copied in; scores are SVM decision values;
- ``classifier="linear"``: a softmax head trained with Lightning on the frozen features
  (:class:`sermodels.tasks.ClassificationTask`, ``sermodels train``); scores are probabilities.

Departures
- The backbone is any timm model and its weights travel in the checkpoint (``model.safetensors``), so a released
  model runs offline; the EmoNet paper's VGG16 ImageNet weights are not available offline here, the released model
  uses torchvision's ImageNet MobileNetV2 converted from its int8 TorchScript file (:mod:`sermodels.convert`).
- A two-class SVM is stored as two rows (-w, +w) with biases (-b, +b), so that argmax is the SVM's decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sermodels._registry import register_model
from sermodels.features import Standardizer
from sermodels.features.deepspectrum import DS_BACKBONE, DeepSpectrum
from sermodels.models.base import SERModel, valid_lengths
from sermodels.models.svm import copy_linear_svm, copy_standardizer
from sermodels.outputs import OutputSpec

CLASSIFIERS = ("svm", "linear")
MIN_DURATION_S = 0.05  # a few STFT frames (one 512-point frame is 32 ms); more if the image's n_fft needs it


@register_model("deep_spectrum")
class DeepSpectrumModel(SERModel):
    """Waveforms ``(B, T)`` -> Deep Spectrum features ``(B, D)`` -> z-score -> linear scores ``(B, C)``.

    ``pretrained`` only matters when building a model to train (False, True for timm's Hub weights, or a local
    ``.safetensors`` file); a saved model's backbone weights are in its own ``model.safetensors``.
    """

    min_duration = MIN_DURATION_S

    def __init__(
        self,
        labels: list[str],
        head: str = "default",
        sample_rate: int = 16000,
        backbone: str = DS_BACKBONE,
        layer: str | None = None,
        image: dict[str, Any] | None = None,
        pool: str = "avg",
        classifier: str = "svm",
        pretrained: bool | str | Path = False,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        super().__init__()
        if len(labels) < 2:
            raise ValueError(f"a classifier needs at least two labels, got {labels}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; choose one of {list(CLASSIFIERS)}")
        image = dict(image or {})
        if image.setdefault("sample_rate", sample_rate) != sample_rate:
            raise ValueError(f"image sample_rate {image['sample_rate']} differs from the model's {sample_rate}")
        self.sample_rate = sample_rate
        self.heads = {head: list(labels)}
        self.default_head = head
        self.classifier_kind = classifier
        self.score_kind = "decision" if classifier == "svm" else "probability"
        self.extractor = DeepSpectrum(
            backbone, layer, pretrained=pretrained, image=image, pool=pool, mean=mean, std=std
        )
        self.extractor.requires_grad_(False)
        self.min_duration = max(MIN_DURATION_S, self.extractor.images.min_samples() / sample_rate)
        dim = self.extractor.dim
        self.standardizer = Standardizer(dim)
        with torch.no_grad():  # identity until fitted statistics are copied in
            self.standardizer.mean.zero_()
            self.standardizer.std.fill_(1.0)
        self.classifier = nn.Linear(dim, len(labels))

    def config(self) -> dict[str, Any]:
        extractor = self.extractor.config()
        return {
            "labels": self.heads[self.default_head],
            "head": self.default_head,
            "sample_rate": self.sample_rate,
            "backbone": extractor["backbone"],
            "layer": extractor["layer"],
            "image": extractor["image"],
            "pool": extractor["pool"],
            "mean": extractor["mean"],
            "std": extractor["std"],
            "classifier": self.classifier_kind,
        }

    @classmethod
    def from_specs(cls, heads: dict[str, OutputSpec], sample_rate: int = 16000, **kwargs: Any) -> DeepSpectrumModel:
        """One categories head on the frozen extractor; a trainable head is the softmax linear layer by default."""
        if len(heads) != 1:
            raise ValueError(f"a Deep Spectrum model has one head, the data asks for {list(heads)}")
        ((head, spec),) = heads.items()
        if spec.kind != "categories" or spec.level != "utterance":
            raise ValueError(f"a Deep Spectrum head is an utterance-level categories head, not {spec.to_json()}")
        return cls(list(spec.names), head=head, sample_rate=sample_rate, **({"classifier": "linear"} | kwargs))

    # ---- what a training task needs: a frozen front-end and a trainable classifier on its features -----------------
    def frozen_features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Features of the frozen extractor ``(B, D)``: the same for a clip in every epoch, so a task may cache them."""
        return self.features(waveforms, lengths)

    def classify_features(self, features: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """Logits ``(B, C)`` of :meth:`frozen_features` output."""
        self.resolve_head(head)
        return self.classifier(self.standardizer(features.float()))

    @property
    def feature_statistics_fitted(self) -> bool:
        """False for a fresh model, whose z-score is the identity until statistics are fitted or loaded (fitted
        statistics of real features are never exactly zero means and unit deviations)."""
        std = self.standardizer
        return not (bool((std.mean == 0).all()) and bool((std.std == 1).all()))

    def fit_feature_statistics(self, features: torch.Tensor) -> None:
        """Fit the z-score on the training partition's features ``(N, D)`` (before the first step)."""
        self.standardizer.fit(features)

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Raw Deep Spectrum features ``(B, D)`` of the frozen extractor."""
        return self.extractor(waveforms, valid_lengths(waveforms, lengths))

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised features ``(B, D)``."""
        return self.standardizer(self.features(waveforms, lengths).float())

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        self.resolve_head(head)
        return self.classifier(self.embed(waveforms, lengths))

    def train(self, mode: bool = True) -> DeepSpectrumModel:
        super().train(mode)
        self.extractor.train(False)  # frozen: BN statistics and dropout of the backbone never change
        return self

    def set_standardizer(self, mean: np.ndarray, std: np.ndarray) -> None:
        copy_standardizer(self.standardizer, mean, std)

    def set_linear_svm(self, mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Copy a fitted standardiser and one-vs-rest linear SVM (``coef (C|1, D)``, ``intercept (C|1,)``) in."""
        copy_linear_svm(self.standardizer, self.classifier, mean, std, coef, intercept)
