"""WDA on cached log-mel functionals: the two stages of the NICU paper (§2.2, §4.2.3) as LightningModules.

Both tasks train one head of a :class:`~sermodels.models.wda.WDAMLP` on standardised features served by
:class:`~sermodels.data.features.FeatureDataModule`; the driver is :mod:`sermodels.training.wda`.

Stage 1, :class:`WDASourceTask`: ``F_S`` and ``C_L`` on the labelled source training part (85 % of the source,
§4.2.3), Adam at 1e-4, batches of 256, early stopping on the source dev UAR with a patience (§4.2.3: 100 epochs,
on "test set accuracy"; we select on UAR, the paper's evaluation measure, because the corpora are imbalanced), and
the best epoch's weights restored. The loss is cross-entropy (Eq. 2); by default class-weighted (inverse class
frequency), because the binary arousal/valence maps of acted corpora are imbalanced (of EMO-DB's 7 emotions only
happiness has positive valence) and an unweighted network drifts to the majority class; ``class_weights=None``
gives Eq. 2 as written.

Stage 2, :class:`WDAAdaptationTask` (manual optimisation): ``F_T`` starts as ``F_S``; a frozen copy of ``F_S``
gives the source features (Eq. 3). A critic ``C_D = critic_network(256)`` (§4.2.3 sizes, from
:mod:`sermodels.tasks.adaptation`), trained by RMSProp at 5e-5, estimates the Wasserstein-1 distance
``mean C_D(F_S(x)) − mean C_D(F_T(z))`` (the sign convention of :mod:`sermodels.losses`); ``F_T`` (Adam, 5e-5)
minimises that estimate plus the source cross-entropy of ``C_L(F_T(x))`` with weight 1 (Eq. 4).

Choices made here
- Lipschitz constraint: ``lipschitz="clip"`` (default) clips every critic weight to ±0.01 after each critic step,
  with 5 critic steps per extractor step: the WGAN recipe (Arjovsky et al., 2017), which the paper says it follows
  ("Following a WGAN framework [19]") and whose optimiser and learning rate (RMSProp, 5e-5) are exactly the
  paper's. ``lipschitz="gp"`` uses WDGRL's gradient penalty (λ = 10) instead, as
  :class:`~sermodels.tasks.adaptation.AdaptationTask` does. The critic is trained 5 times on each batch's features
  (WDGRL's Algorithm 1).
- ``C_L`` is frozen by default (``train_classifier=False``): §2.2 updates only ``C_D`` and ``F_T`` ("Eqs. 3 and 4
  are the loss functions for updating the parameters of C_D and F_T"); the source term of Eq. 4 keeps ``F_T``
  compatible with the fixed ``C_L``. A frozen ``C_L`` runs in eval mode (no dropout), as does ``F_S``.
- ``F_T``'s batch-norm layers see source batches (the classification term) and target batches (the adversarial
  term) in training mode, so their running statistics mix both domains.
- An epoch covers the longer of the source training part and the target pool, the shorter cycled (the data module).
- The paper's stage 2 uses "the full unlabeled data from the source corpus"; we keep to the 85 % training part so
  that the source dev UAR recorded per epoch stays held out.
- Per epoch we record the mean of the critic's estimate over the epoch's batches (before each extractor step), the
  source dev UAR and, when labelled target items are given, their UAR.
- Unsupervised variant (§4.2.3: "trained until the first term in Eq. 4 was saturated"): training stops when the
  moving mean of the per-epoch estimate over :data:`SATURATION_WINDOW` epochs has changed, over the last
  :data:`SATURATION_PATIENCE` epochs, by at most :data:`SATURATION_RTOL` times the mean magnitude of the estimates
  compared (:func:`saturated`), or at ``max_epochs``; the last weights are kept. Semi-supervised variant: the state
  of the epoch with the best labelled-target UAR (the first such epoch on ties) is kept too
  (:attr:`WDAAdaptationTask.best_target_state`); the labels serve nothing else. One run gives both.
- What to expect with clipping at the paper's learning rates (EMO-DB -> URDU, arousal, three seeds): the run's own
  estimate swings for tens of epochs while the critic catches up; over a whole unsupervised run (70-100 epochs) the
  distance measured by a fresh critic (:func:`sermodels.training.wda.measure_wasserstein`) between ``F_S`` on the
  source and the target features drops from ~8 to 4-5.5, but after 30 epochs it had not yet dropped for every seed
  (the gradient-penalty variant had).
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import nn

from sermodels import losses, metrics
from sermodels.models.wda import WDAMLP
from sermodels.tasks.adaptation import CRITIC_STEPS, GP_WEIGHT, NICU_LR, critic_network

#: §4.2.3: stage 1 "Adam optimizer (lr = 10−4)".
SOURCE_LR = 1e-4
#: §4.2.3: "early stopping with a patience of 100".
SOURCE_PATIENCE = 100
#: WGAN (Arjovsky et al., 2017; the paper's ref. [19]): critic weights clipped to ±0.01.
WEIGHT_CLIP = 0.01
#: Saturation of the critic's estimate (unsupervised stopping; not given in the paper): moving mean over this many
#: epochs, compared with the moving mean this many epochs earlier, relative tolerance. The tolerance is relative to
#: the mean magnitude of the estimates compared (a clipped critic's estimate swings around small values, at times
#: across 0, so a tolerance relative to one moving mean alone would rarely be met).
SATURATION_WINDOW = 10
SATURATION_PATIENCE = 20
SATURATION_RTOL = 0.1
#: The scale of the comparison is at least this (an estimate that stays at 0 has saturated).
SATURATION_ATOL = 1e-6
LIPSCHITZ = ("clip", "gp")


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse class frequencies ``n / (K n_c)`` ``(K,)`` of class indices ``(N,)``; a missing class gets 0."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    weights = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


def saturated(values: list[float], window: int, patience: int, rtol: float) -> bool:
    """Whether the moving mean (over ``window``) of ``values`` changed by at most ``rtol`` times the mean magnitude
    of the last ``window + patience`` values over the last ``patience`` values."""
    if len(values) < window + patience:
        return False
    now = sum(values[-window:]) / window
    before = sum(values[-window - patience : len(values) - patience]) / window
    scale = sum(abs(v) for v in values[-window - patience :]) / (window + patience)
    return abs(now - before) <= rtol * max(scale, SATURATION_ATOL)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


class _HeadTask(L.LightningModule):
    """What both stages share: one head of a WDAMLP, evaluation loaders (0: source dev, 1: labelled target)."""

    def __init__(self, model: WDAMLP, head: str, class_weights: torch.Tensor | None):
        super().__init__()
        self.model = model
        self.head = model.resolve_head(head)
        self.class_weights = None if class_weights is None else class_weights.float()
        self.history: list[dict[str, Any]] = []
        self._predictions: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._val: dict[str, float] = {}

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return losses.weighted_cross_entropy(logits, labels, self.class_weights)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        predicted = self.model.forward_features(x, self.head).argmax(dim=-1)
        self._predictions.setdefault(dataloader_idx, []).append((y.cpu(), predicted.cpu()))

    def on_validation_epoch_end(self) -> None:
        names = {0: "source_dev_uar", 1: "target_uar"}
        num_classes = len(self.model.heads[self.head])
        self._val = {}
        for index, parts in sorted(self._predictions.items()):
            true, predicted = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            self._val[names[index]] = metrics.uar(true, predicted, num_classes)
        self._predictions = {}
        for name, value in self._val.items():
            self.log(name, value)


class WDASourceTask(_HeadTask):
    """Stage 1: ``C_L(F_S(x))`` of ``head`` on source features (module docstring).

    Args:
        model: the WDAMLP; only ``head``'s ``F`` and ``C`` are trained.
        lr: Adam's learning rate (§4.2.3: 1e-4).
        class_weights: cross-entropy class weights ``(K,)`` (:func:`balanced_class_weights`), None for Eq. 2.
        patience: epochs without a better source dev UAR before stopping (§4.2.3: 100).
    After ``fit``, the model holds the weights of the best epoch (:attr:`best_epoch`); :attr:`history` has one row
    per epoch: ``epoch``, ``train_loss``, ``source_dev_uar``.
    """

    def __init__(
        self,
        model: WDAMLP,
        head: str,
        lr: float = SOURCE_LR,
        class_weights: torch.Tensor | None = None,
        patience: int = SOURCE_PATIENCE,
    ):
        super().__init__(model, head, class_weights)
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.lr, self.patience = lr, patience
        self.best_epoch: int | None = None
        self.best_uar = float("-inf")
        self._best_state: dict[str, torch.Tensor] | None = None
        self._losses: list[float] = []

    def parameters_trained(self) -> list[nn.Parameter]:
        return [*self.model.extractor(self.head).parameters(), *self.model.classifier(self.head).parameters()]

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters_trained(), lr=self.lr)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.classification_loss(self.model.forward_features(x, self.head), y)
        self._losses.append(float(loss.detach()))
        return loss

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        uar = self._val.get("source_dev_uar", float("nan"))
        train_loss = sum(self._losses) / max(len(self._losses), 1)
        self.history.append({"epoch": epoch, "train_loss": train_loss, "source_dev_uar": uar})
        self._losses = []
        if uar > self.best_uar:
            self.best_uar, self.best_epoch, self._best_state = uar, epoch, _state(self.model)
        elif epoch - (self.best_epoch or 0) >= self.patience:
            self.trainer.should_stop = True

    def on_fit_end(self) -> None:
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)


class WDAAdaptationTask(_HeadTask):
    """Stage 2: adapt ``F_S`` of ``head`` into ``F_T`` against a critic (module docstring).

    Args:
        model: the source model (stage 1); its ``head`` extractor becomes ``F_T`` and is trained in place.
        lipschitz: ``"clip"`` (weights in ±``clip``) or ``"gp"`` (gradient penalty of weight ``gp_weight``).
        critic_steps: critic updates per extractor update (WGAN: 5).
        critic_lr / extractor_lr: RMSProp and Adam learning rates (§4.2.3: 5e-5; 6e-5 and 7e-5 in some settings).
        classification_weight: weight of the source cross-entropy in Eq. 4 (1).
        train_classifier: also update ``C_L`` with ``F_T`` (default False: §2.2 updates ``F_T`` only; ``C_L``'s
            parameters are then frozen during the fit and given back ``requires_grad`` at its end).
        class_weights: cross-entropy class weights of the source term, None for plain CE.
        stop_on_saturation: stop when the estimate levels off (:func:`saturated`).
    Per epoch, :attr:`history` gets ``epoch``, ``wasserstein`` (mean critic estimate), ``classification`` (mean
    source CE), ``source_dev_uar`` and, with labelled target items, ``target_uar``. :attr:`best_target_state` and
    :attr:`best_target_epoch` hold the semi-supervised selection; the model itself ends with the last weights.
    """

    def __init__(
        self,
        model: WDAMLP,
        head: str,
        lipschitz: str = "clip",
        critic_steps: int = CRITIC_STEPS,
        clip: float = WEIGHT_CLIP,
        gp_weight: float = GP_WEIGHT,
        critic_lr: float = NICU_LR,
        extractor_lr: float = NICU_LR,
        classification_weight: float = 1.0,
        train_classifier: bool = False,
        class_weights: torch.Tensor | None = None,
        stop_on_saturation: bool = True,
        saturation_window: int = SATURATION_WINDOW,
        saturation_patience: int = SATURATION_PATIENCE,
        saturation_rtol: float = SATURATION_RTOL,
    ):
        super().__init__(model, head, class_weights)
        if lipschitz not in LIPSCHITZ:
            raise ValueError(f"lipschitz must be one of {LIPSCHITZ}, got {lipschitz!r}")
        if critic_steps < 1:
            raise ValueError(f"critic_steps must be at least 1, got {critic_steps}")
        self.automatic_optimization = False
        self.lipschitz, self.critic_steps, self.clip, self.gp_weight = lipschitz, critic_steps, clip, gp_weight
        self.critic_lr, self.extractor_lr = critic_lr, extractor_lr
        self.classification_weight, self.train_classifier = classification_weight, train_classifier
        self.stop_on_saturation = stop_on_saturation
        self.saturation = (saturation_window, saturation_patience, saturation_rtol)
        self.source_extractor = copy.deepcopy(model.extractor(self.head)).requires_grad_(False)
        if not train_classifier:
            model.classifier(self.head).requires_grad_(False)
        self.critic = critic_network(model.extractor_units[-1])
        self.clip_critic()
        self.best_target_state: dict[str, torch.Tensor] | None = None
        self.best_target_epoch: int | None = None
        self.best_target_uar = float("-inf")
        self._epoch: dict[str, list[float]] = {"wasserstein": [], "classification": []}

    def train(self, mode: bool = True) -> WDAAdaptationTask:
        """Training mode for ``F_T`` and the critic; ``F_S`` (and a frozen ``C_L``) stay in eval mode."""
        super().train(mode)
        self.source_extractor.eval()
        if not self.train_classifier:
            self.model.classifier(self.head).eval()
        return self

    def adapted_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.extractor(self.head).parameters())
        return params + (list(self.model.classifier(self.head).parameters()) if self.train_classifier else [])

    def configure_optimizers(self):
        extractor = torch.optim.Adam(self.adapted_parameters(), lr=self.extractor_lr)
        critic = torch.optim.RMSprop(self.critic.parameters(), lr=self.critic_lr)
        return [extractor, critic]

    @torch.no_grad()
    def clip_critic(self) -> None:
        if self.lipschitz == "clip":
            for param in self.critic.parameters():
                param.clamp_(-self.clip, self.clip)

    def critic_step(self, fs: torch.Tensor, ft: torch.Tensor, optimizer) -> torch.Tensor:
        """One critic update on detached features ``(B, 256)``; returns the estimate before the update."""
        critic_loss = losses.wasserstein_critic_loss(self.critic(fs), self.critic(ft))
        loss = critic_loss
        if self.lipschitz == "gp":
            loss = loss + self.gp_weight * losses.gradient_penalty(self.critic, fs, ft)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.clip_critic()
        return -critic_loss.detach()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        (x, y), (z,) = batch["source"], batch["target"]
        if len(x) < 2 or len(z) < 2:
            return None  # batch normalisation in training mode needs two items
        extractor_opt, critic_opt = self.optimizers()
        extractor = self.model.extractor(self.head)
        with torch.no_grad():
            fs = self.source_extractor(x)
        ft = extractor(z)
        # Critic (Eq. 3): maximise mean C_D(F_S(x)) − mean C_D(F_T(z)).
        for _ in range(self.critic_steps):
            estimate = self.critic_step(fs, ft.detach(), critic_opt)
        # Extractor (Eq. 4): lower the estimate (only the target term depends on F_T) and keep classifying the source.
        self.critic.requires_grad_(False)
        adversarial = -self.critic(ft).mean()
        classification = self.classification_loss(self.model.classifier(self.head)(extractor(x)), y)
        extractor_opt.zero_grad()
        self.manual_backward(adversarial + self.classification_weight * classification)
        extractor_opt.step()
        self.critic.requires_grad_(True)
        self._epoch["wasserstein"].append(float(estimate))
        self._epoch["classification"].append(float(classification.detach()))

    def on_fit_end(self) -> None:
        self.model.classifier(self.head).requires_grad_(True)  # frozen for the run only

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        row: dict[str, Any] = {"epoch": epoch}
        for name, values in self._epoch.items():
            row[name] = sum(values) / len(values) if values else float("nan")
        row |= self._val
        self.history.append(row)
        self._epoch = {"wasserstein": [], "classification": []}
        target_uar = self._val.get("target_uar")
        if target_uar is not None and target_uar > self.best_target_uar:
            self.best_target_uar, self.best_target_epoch = target_uar, epoch
            self.best_target_state = _state(self.model)
        if self.stop_on_saturation and saturated([r["wasserstein"] for r in self.history], *self.saturation):
            self.trainer.should_stop = True
