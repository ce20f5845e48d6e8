"""Adaptation regime: Wasserstein distance-based domain adaptation (WDA) with a critic, by manual optimisation.

NICU paper (SER for daylong NICU recordings, Interspeech), §2.2 and Fig. 1, after Shen et al.'s WDGRL (its ref.
[18]): a source model ``M = C_L ∘ F_S`` trained on labelled source data is adapted to an unlabelled target corpus.
The adapted extractor ``F_T`` starts as a copy of ``F_S``; a domain critic ``C_D`` estimates the Wasserstein-1
distance between the source features ``F_S(x)`` and the target features ``F_T(z)``, and the two are updated in
turns:

- critic (Eq. 3): maximise ``mean C_D(F_S(x)) − mean C_D(F_T(z))`` (we minimise its negative,
  :func:`sermodels.losses.wasserstein_critic_loss`), with WDGRL's gradient penalty on random interpolates keeping
  ``C_D`` 1-Lipschitz;
- extractor (Eq. 4): minimise the critic's estimate, i.e. ``−mean C_D(F_T(z))`` in this sign convention, plus
  ``classification_weight`` × the source cross-entropy of ``C_L(F_T(x))`` (``L_M``).

Sizes and optimisers from §4.2: ``C_D`` has fully connected layers of 512, 512, 256 and 1 units, ReLU after the
first three; RMSProp for ``C_D`` and Adam for ``F_T``, learning rates 5e-5 to 7e-5 (:data:`NICU_LR`). The
extractor is the model's ``embed`` (its utterance representation) and ``C_L`` the head the source stream trains.
Batches come from :class:`sermodels.data.adaptation.AdaptationDataModule`: ``{"source": labelled batch, "target":
batch}``; target labels are never read. With ``frozen_source=False`` (WDGRL's one shared extractor) the source
features come from ``F_T`` too and the extractor's loss is the whole estimate ``mean C(F(x)) − mean C(F(z))``.

Manual optimisation: Lightning counts every optimiser step, so one batch is ``critic_steps + 1`` steps of
``trainer.max_steps`` (bound runs by ``max_epochs`` or ``limit_train_batches``). Under DDP, give
``strategy=ddp_find_unused_parameters_true``: the critic and the extractor are stepped in separate backward passes.

Validation scores the source dev partition, so ``restore_best`` keeps the epoch that classifies the source best,
which need not be the best adapted one: the unsupervised variant of §4.2 trains "until the first term in Eq. 4 was
saturated" and the target has no labels to select on; pass ``restore_best=False`` to keep the last weights.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn

from sermodels import losses
from sermodels.tasks.transfer import TransferTask

#: §4.2: "C_D consisted of four FC layers of 512, 512, 256, and 1 units. The first three layers were followed by ReLU".
CRITIC_UNITS = (512, 512, 256)
#: §4.2: lr 5e-5 in the 1-to-1 settings (7e-5 and 6e-5 for some 4-to-1 settings).
NICU_LR = 5e-5
#: WDGRL's gradient-penalty weight and critic iterations per extractor update.
GP_WEIGHT = 10.0
CRITIC_STEPS = 5


def critic_network(dim: int, units: tuple[int, ...] = CRITIC_UNITS) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = dim
    for size in units:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class AdaptationTask(TransferTask):
    """WDA of a pretrained model to a target corpus (module docstring).

    Args:
        init_from: the source model ``M`` (pretrained id or folder); its head for the source stream is ``C_L``.
        critic_steps: critic updates per extractor update; gp_weight: gradient-penalty weight.
        critic_lr / extractor_lr: RMSProp and Adam learning rates (§4.2: 5e-5).
        classification_weight: weight of the source cross-entropy ``L_M`` in the extractor's loss (Eq. 4: 1).
        frozen_source: source features from a frozen copy of ``F_S`` (Eq. 3) rather than from ``F_T``.
    """

    def __init__(
        self,
        init_from: str,
        critic_steps: int = CRITIC_STEPS,
        gp_weight: float = GP_WEIGHT,
        critic_lr: float = NICU_LR,
        extractor_lr: float = NICU_LR,
        classification_weight: float = 1.0,
        frozen_source: bool = True,
        like: str | None = None,
        restore_best: bool = True,
        class_weighted: bool = True,
    ):
        if critic_steps < 1:
            raise ValueError(f"critic_steps must be at least 1, got {critic_steps}")
        super().__init__(
            init_from,
            mode="groups",
            like=like,
            optimizer={"name": "adam", "lr": extractor_lr},
            schedule={"name": "none"},
            restore_best=restore_best,
            class_weighted=class_weighted,
            cache_features=False,
        )
        self.automatic_optimization = False
        self.critic_steps = critic_steps
        self.gp_weight = gp_weight
        self.critic_lr = critic_lr
        self.classification_weight = classification_weight
        self.frozen_source = frozen_source
        self.critic: nn.Module | None = None
        self.source_net: nn.Module | None = None

    def after_net(self, data) -> None:
        super().after_net(data)
        if len(set(self.stream_head.values())) != 1:
            raise ValueError(f"WDA adapts one source head; the data has streams {self.stream_head}")
        self.source_head = next(iter(self.stream_head.values()))
        with torch.no_grad():
            was = self.net.training
            probe = torch.zeros(1, self.net.sample_rate)
            dim = self.embed(self.net.eval(), probe, torch.tensor([probe.shape[1]])).shape[-1]
            self.net.train(was)
        self.critic = critic_network(dim)
        if self.frozen_source:
            self.source_net = copy.deepcopy(self.net).eval().requires_grad_(False)

    def embed(self, net: nn.Module, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The model's utterance representation (through the source head's domain for multi-domain models)."""
        if "head" in inspect.signature(net.embed).parameters:
            return net.embed(waveforms, lengths, head=getattr(self, "source_head", None))
        return net.embed(waveforms, lengths)

    def configure_optimizers(self):
        extractor = torch.optim.Adam(self.trainable_parameters(), lr=self.lr)
        critic = torch.optim.RMSprop(self.critic.parameters(), lr=self.critic_lr)
        return [extractor, critic]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        source, target = batch["source"], batch["target"]
        if self._skip_single and len(target["waveforms"]) < 2:
            return None  # BatchNorm layers in training mode cannot normalise a one-clip target batch
        extractor_opt, critic_opt = self.optimizers()
        # F_T(z), once per step: the critic reads it detached, the extractor's loss through the graph.
        ft = self.embed(self.net, target["waveforms"], target["lengths"]).float()
        shared = self.source_net is None  # WDGRL's shared extractor: the source features train too
        if shared:
            fs = self.embed(self.net, source["waveforms"], source["lengths"]).float()
        else:
            with torch.no_grad():
                fs = self.embed(self.source_net, source["waveforms"], source["lengths"]).float()
        # Critic (Eq. 3): maximise the Wasserstein estimate between the source and target features.
        for _ in range(self.critic_steps):
            critic_loss = losses.wasserstein_critic_loss(self.critic(fs.detach()), self.critic(ft.detach()))
            penalty = losses.gradient_penalty(self.critic, fs.detach(), ft.detach())
            critic_opt.zero_grad()
            self.manual_backward(critic_loss + self.gp_weight * penalty)
            critic_opt.step()
        # Extractor (Eq. 4): lower the estimate (target features towards the source) and keep classifying.
        self.critic.requires_grad_(False)
        adversarial = -self.critic(ft).mean()
        if shared:
            adversarial = adversarial + self.critic(fs).mean()
        loss = adversarial
        classification = None
        if self.classification_weight and not (self._skip_single and len(source["waveforms"]) < 2):
            logits = self.net(source["waveforms"], source["lengths"], self.source_head)
            classification = losses.weighted_cross_entropy(
                logits, source["labels"], self.class_weights_of(self.source_head)
            )
            loss = loss + self.classification_weight * classification
        extractor_opt.zero_grad()
        self.manual_backward(loss)
        extractor_opt.step()
        self.critic.requires_grad_(True)
        size = len(target["waveforms"])
        self.log("train/wasserstein", -critic_loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/adversarial", adversarial.detach(), batch_size=size)
        if classification is not None:
            self.log("train/classification", classification.detach(), batch_size=len(source["waveforms"]))

    def regime(self) -> str:
        return "adaptation/wda"

    def training_summary(self) -> dict[str, Any]:
        return {
            **super().training_summary(),
            "critic": {"units": list(CRITIC_UNITS), "optimizer": "RMSprop", "lr": self.critic_lr},
            "critic_steps": self.critic_steps,
            "gp_weight": self.gp_weight,
            "classification_weight": self.classification_weight,
            "frozen_source": self.frozen_source,
        }
