"""Multitask regime: a weighted sum of per-head losses, reconstruction included.

Each step's loss is ``Σ_h w_h · L_h``: cross-entropy for a categories head, a CCC loss for a dimensional head (as
:class:`~sermodels.tasks.regression.RegressionTask`), and, when ``weights`` names ``reconstruction`` and the model
has ``reconstruct(waveforms, lengths) -> (reconstruction, target, mask)``, the masked MSE of the reconstruction
(the AV-SpNET autoencoder front-end trained jointly with proxy arousal labels). Batches come from a data module that
serves several heads at once (:class:`~sermodels.data.spaces.SpacesDataModule`: one batch of each space per step,
EmoNet's A+V setting, §6.2), or from one stream whose head is trained together with the reconstruction.
"""

from __future__ import annotations

from typing import Any

import torch

from sermodels import losses
from sermodels.tasks.base import REGRESSION_LOSSES
from sermodels.tasks.classification import ClassificationTask

RECONSTRUCTION = "reconstruction"


class MultitaskTask(ClassificationTask):
    """Several heads (and optionally a reconstruction) trained at once.

    Args:
        weights: loss weight per head name (and ``reconstruction``); a head not named weighs 1, the reconstruction 0.
        regression_loss: the loss of dimensional heads (``ccc``, ``sequence_ccc``, ``mse``).
        (others as :class:`~sermodels.tasks.classification.ClassificationTask`)
    """

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        weights: dict[str, float] | None = None,
        regression_loss: str = "ccc",
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        restore_best: bool = True,
        class_weighted: bool = True,
        augment: dict[str, Any] | None = None,
        ema: float | None = None,
    ):
        if regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"regression_loss must be one of {REGRESSION_LOSSES}, got {regression_loss!r}")
        super().__init__(model, optimizer, schedule, restore_best, class_weighted, augment=augment, ema=ema)
        self.weights = dict(weights or {})
        self.regression_loss = regression_loss

    def after_net(self, data) -> None:
        super().after_net(data)
        if self.weights.get(RECONSTRUCTION, 0.0) and not hasattr(self.net, "reconstruct"):
            raise TypeError(f"{type(self.net).__name__} has no reconstruct(); drop the reconstruction weight")
        unknown = sorted(set(self.weights) - set(self.net.heads) - {RECONSTRUCTION})
        if unknown:
            raise ValueError(f"weights name heads the model does not have: {unknown}")

    def batch_loss(self, batch: dict[str, Any]) -> torch.Tensor | None:
        if self._skip_single and len(batch["waveforms"]) < 2:
            return None
        head = self.head_of(batch)
        batch = self.augmented(batch)  # once for the head and the reconstruction
        loss = None
        weight = self.weights.get(head, 1.0)
        if weight:  # a head of weight 0 is not trained (the autoencoder-only setting needs no labels)
            head_loss = self.mixed_loss(batch, head)
            self.log(f"train/{head}/loss", head_loss, batch_size=len(batch["waveforms"]))
            loss = weight * head_loss
        weight = self.weights.get(RECONSTRUCTION, 0.0)
        if weight:
            recon, target, mask = self.net.reconstruct(batch["waveforms"], batch["lengths"])
            rec_loss = losses.reconstruction_loss(recon.float(), target.float(), mask)
            self.log(f"train/{RECONSTRUCTION}/loss", rec_loss, batch_size=len(batch["waveforms"]))
            loss = weight * rec_loss if loss is None else loss + weight * rec_loss
        return loss

    def regime(self) -> str:
        return "multitask"

    def training_summary(self) -> dict[str, Any]:
        return {**super().training_summary(), "weights": self.weights, "regression_loss": self.regression_loss}
