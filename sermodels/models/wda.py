"""The WDA source/adapted model of the NICU paper: log-mel functionals -> z-score -> per head F (MLP) -> C (MLP).

Provenance
- Paper: the NICU paper (Vaaras et al., Interspeech 2021: SER for daylong child-centred NICU recordings; our
  copy, ../shared/papers/nicu_ser_cross_corpus_wda_active_learning.txt, has no title page).
  §2.2: the source model ``M = C_L ∘ F_S`` of
  Wasserstein distance-based domain adaptation (WDA, after Shen et al.'s WDGRL, its ref. [18]); stage 2 adapts
  ``F_S`` into ``F_T`` (:mod:`sermodels.tasks.wda`, :mod:`sermodels.training.wda`).
- Input features, §4.1: the 600-dimensional log-mel functionals (:class:`sermodels.features.LogMelFunctionals`),
  "z-score normalized at the corpus level". The model carries one :class:`~sermodels.features.Standardizer`: a
  source model (after stage 1) holds the **source** corpus's statistics, an adapted model (after stage 2) the
  **target** corpus's, because §4.1 normalises every corpus with its own statistics and the adapted ``F_T`` was
  trained on target features standardised that way. To run a model on another corpus the paper's way, give it that
  corpus's statistics with :meth:`WDAMLP.set_standardizer`.
- Architecture, §4.2.3: ``F`` is three fully connected layers of 512, 512 and 256 units, each followed by batch
  normalisation, LReLU and dropout 0.4 after the first two; ``C_L`` is three fully connected layers of 256, 256 and
  ``n_classes`` units, LReLU and dropout 0.3 after the first two, softmax on the last (applied by
  :meth:`~sermodels.models.base.SERModel.scores`; the forward pass returns logits). "For each variant of the source
  data, a separate M was trained for both valence and arousal": one model here holds several heads (e.g. ``arousal``
  and ``valence``), each with its own ``F`` and ``C``, trained separately, so one release answers both.

Departures and choices the paper leaves open
- The critic's Lipschitz constraint (stage 2, :mod:`sermodels.tasks.wda`): the paper leaves it to its references.
  We clip every critic weight to ±0.01 with 5 critic steps per extractor step by default, because §4.2.3 says the
  adaptation follows the WGAN framework (its ref. [19]) and uses WGAN's optimiser and learning rate (RMSProp,
  5e-5), which belong to weight clipping; WDGRL's gradient penalty (λ = 10, ref. [18]'s Algorithm 1) is the option
  ``lipschitz="gp"``. With clipping at the paper's rates the adaptation needs a whole unsupervised run (70-100
  epochs on EMO-DB -> URDU) to bring the features closer; the penalty gets there sooner.
- Stage 2 keeps ``C_L`` fixed; the batch-norm layers of ``F_T`` run in training mode on separate source and target
  batches, so their running statistics mix both domains (see :mod:`sermodels.tasks.wda`).
- LReLU slope: not given; we use 0.01 (:data:`LRELU_SLOPE`), the slope of the LReLU paper the NICU paper cites
  ([34], Maas et al., 2013) and torch's default.
- Order inside a layer: FC -> BN -> LReLU -> dropout (the paper lists BN after every FC layer, then nonlinearity and
  dropout); the 256-unit output of ``F`` is FC -> BN with no nonlinearity (the paper names none).
- Several heads in one module, and one standardiser shared by them (both heads of a release are adapted to one
  target corpus). For several source corpora (4-to-1) the features are standardised per corpus during training;
  the source model then carries the statistics of the pooled source features, an approximation: the per-corpus
  statistics of a new corpus (``set_standardizer``) follow §4.1 exactly.
- The forward pass runs on raw waveforms (the front-end is inside); :meth:`WDAMLP.forward_features` and
  :meth:`WDAMLP.embed_features` take cached standardised functionals, which is how the training tasks feed it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from sermodels._registry import register_model
from sermodels.features import LogMelFunctionals, Standardizer
from sermodels.layers.domains import check_domain_name, domain_key
from sermodels.models.base import SERModel, valid_lengths
from sermodels.models.svm import MIN_DURATION_S, copy_standardizer
from sermodels.outputs import OutputSpec

#: §4.2.3: "F, consisting of three FC layers of 512, 512, and 256 units, each followed by batch normalization".
EXTRACTOR_UNITS = (512, 512, 256)
#: §4.2.3: "The first two layers had LReLU nonlinearities and a dropout of 0.4".
EXTRACTOR_DROPOUT = 0.4
#: §4.2.3: "C_L was an NN consisting of three FC layers of 256, 256, and 2 units" (the last is ``n_classes``).
CLASSIFIER_UNITS = (256, 256)
#: §4.2.3: "The first two layers had LReLU nonlinearities and a dropout of 0.3".
CLASSIFIER_DROPOUT = 0.3
#: Not in the paper: the slope of Maas et al. (its ref. [34]) and torch's default.
LRELU_SLOPE = 0.01
#: The paper's two tasks: binary arousal and binary valence (negative and neutral merged, §3.1/§4.2).
NICU_HEADS = {"arousal": ["low", "high"], "valence": ["non-positive", "positive"]}


def extractor_network(
    dim: int,
    units: tuple[int, ...] = EXTRACTOR_UNITS,
    dropout: float = EXTRACTOR_DROPOUT,
    slope: float = LRELU_SLOPE,
) -> nn.Sequential:
    """``F``: ``(B, dim)`` -> ``(B, units[-1])``; FC-BN-LReLU-dropout for all but the last layer, FC-BN last."""
    layers: list[nn.Module] = []
    width = dim
    for index, size in enumerate(units):
        layers += [nn.Linear(width, size), nn.BatchNorm1d(size)]
        if index < len(units) - 1:
            layers += [nn.LeakyReLU(slope), nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers)


def classifier_network(
    dim: int,
    num_classes: int,
    units: tuple[int, ...] = CLASSIFIER_UNITS,
    dropout: float = CLASSIFIER_DROPOUT,
    slope: float = LRELU_SLOPE,
) -> nn.Sequential:
    """``C_L``: ``(B, dim)`` -> logits ``(B, num_classes)``; FC-LReLU-dropout per hidden layer, FC last."""
    layers: list[nn.Module] = []
    width = dim
    for size in units:
        layers += [nn.Linear(width, size), nn.LeakyReLU(slope), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("wda_mlp")
class WDAMLP(SERModel):
    """Waveforms ``(B, T)`` -> functionals ``(B, 600)`` -> z-score -> ``F[head]`` ``(B, 256)`` -> ``C[head]`` logits.

    Args:
        heads: head name -> class names, e.g. :data:`NICU_HEADS`; each head has its own ``F`` and ``C``.
        frontend: :class:`LogMelFunctionals` arguments (the paper's §4.1 settings by default).
        extractor_units / classifier_units / dropouts / slope: §4.2.3 sizes (module constants).
    """

    min_duration = MIN_DURATION_S

    def __init__(
        self,
        heads: dict[str, list[str]],
        default_head: str | None = None,
        sample_rate: int = 16000,
        frontend: dict[str, Any] | None = None,
        extractor_units: list[int] | tuple[int, ...] = EXTRACTOR_UNITS,
        classifier_units: list[int] | tuple[int, ...] = CLASSIFIER_UNITS,
        extractor_dropout: float = EXTRACTOR_DROPOUT,
        classifier_dropout: float = CLASSIFIER_DROPOUT,
        slope: float = LRELU_SLOPE,
    ):
        super().__init__()
        if not heads:
            raise ValueError("wda_mlp needs at least one head (head name -> class names)")
        for name, labels in heads.items():
            check_domain_name(name)
            if len(labels) < 2:
                raise ValueError(f"head {name!r} needs at least two classes, got {labels}")
        self.sample_rate = sample_rate
        self.heads = {name: list(labels) for name, labels in heads.items()}
        self.default_head = next(iter(self.heads)) if default_head is None else default_head
        self.resolve_head(self.default_head)
        self.extractor_units = [int(u) for u in extractor_units]
        self.classifier_units = [int(u) for u in classifier_units]
        self.extractor_dropout, self.classifier_dropout, self.slope = extractor_dropout, classifier_dropout, slope
        self.functionals = LogMelFunctionals(**({"sample_rate": sample_rate} | (frontend or {})))
        dim = self.functionals.dim
        self.standardizer = Standardizer(dim)
        # Identity until statistics are set, so that a fresh model runs (the model contract, end-to-end tests).
        self.set_standardizer(np.zeros(dim), np.ones(dim))
        units = tuple(self.extractor_units)
        self.extractors = nn.ModuleDict(
            {domain_key(h): extractor_network(dim, units, extractor_dropout, slope) for h in self.heads}
        )
        self.classifiers = nn.ModuleDict(
            {
                domain_key(h): classifier_network(
                    units[-1], len(labels), tuple(self.classifier_units), classifier_dropout, slope
                )
                for h, labels in self.heads.items()
            }
        )

    @classmethod
    def from_specs(cls, heads: dict[str, OutputSpec], sample_rate: int = 16000, **kwargs: Any) -> WDAMLP:
        """One ``F``/``C`` pair per categories head."""
        bad = [name for name, spec in heads.items() if spec.kind != "categories" or spec.level != "utterance"]
        if bad:
            raise ValueError(f"wda_mlp heads are utterance-level categories; not so: {bad}")
        return cls({name: list(spec.names) for name, spec in heads.items()}, sample_rate=sample_rate, **kwargs)

    def config(self) -> dict[str, Any]:
        return {
            "heads": {name: list(labels) for name, labels in self.heads.items()},
            "default_head": self.default_head,
            "sample_rate": self.sample_rate,
            "frontend": self.functionals.config(),
            "extractor_units": list(self.extractor_units),
            "classifier_units": list(self.classifier_units),
            "extractor_dropout": self.extractor_dropout,
            "classifier_dropout": self.classifier_dropout,
            "slope": self.slope,
        }

    # ---- parts ------------------------------------------------------------------------------------------------------
    def extractor(self, head: str | None = None) -> nn.Sequential:
        """``F`` of ``head``."""
        return self.extractors[domain_key(self.resolve_head(head))]

    def classifier(self, head: str | None = None) -> nn.Sequential:
        """``C_L`` of ``head``."""
        return self.classifiers[domain_key(self.resolve_head(head))]

    def set_standardizer(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Write z-score statistics ``(600,)`` (those of the corpus the model is to run on, §4.1)."""
        as_numpy = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for v in (mean, std)]
        copy_standardizer(self.standardizer, *as_numpy)

    def layer_groups(self) -> dict[str, list[str]]:
        """``extractor_<head>`` and ``classifier_<head>`` per head, input to output."""
        groups: dict[str, list[str]] = {}
        for head in self.heads:
            groups[f"extractor_{head}"] = [f"extractors.{domain_key(head)}"]
            groups[f"classifier_{head}"] = [f"classifiers.{domain_key(head)}"]
        return groups

    # ---- on standardised features ----------------------------------------------------------------------------------
    def embed_features(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """Standardised functionals ``(B, 600)`` -> ``F[head]`` output ``(B, 256)``."""
        return self.extractor(head)(x)

    def forward_features(self, x: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """Standardised functionals ``(B, 600)`` -> logits ``(B, n_classes)`` of ``head``."""
        return self.classifier(head)(self.embed_features(x, head))

    # ---- on waveforms ------------------------------------------------------------------------------------------------
    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveforms ``(B, T)`` with valid ``lengths (B,)`` -> standardised functionals ``(B, 600)``."""
        return self.standardizer(self.functionals(waveforms, valid_lengths(waveforms, lengths)))

    def embed(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None
    ) -> torch.Tensor:
        """Waveforms ``(B, T)`` -> the 256-d output of ``F[head]`` ``(B, 256)`` (default head if None)."""
        return self.embed_features(self.features(waveforms, lengths), head)

    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None
    ) -> torch.Tensor:
        """Waveforms ``(B, T)`` -> logits ``(B, n_classes)`` of ``head`` (softmax in :meth:`scores`)."""
        return self.forward_features(self.features(waveforms, lengths), head)
