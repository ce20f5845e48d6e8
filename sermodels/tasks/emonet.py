"""Training EmoNet: one LightningModule for every regime of the paper (Gerczuk et al., IEEE TAC, §5.2.2, §6).

Regimes (``transfer``), each a recipe under ``recipes/emonet/``:

- ``none``: a fresh network. With one corpus this is the from-scratch baseline (§5.2.2); with several corpora and
  ``SERDataModule(multi_corpus="round_robin")`` it is the shared multi-domain model (§6.1): one batch per corpus in
  turn, shared convolutions and attention, adapters + BN + head per corpus. With an arousal/valence label space and
  ``multi_corpus="concat"`` it is aggregated training (§6.2): every corpus feeds the one head named after the space.
- ``adapters``: from a pretrained base (``init_from``), new zero adapters, BN (copied from the base's ``like``
  domain) and head per target domain; the shared network is frozen (§5.2.2/§6.1, "adapters and classifier are
  reinitialized"). Table 4's protocol, applied here also to a corpus the base was trained on (its adapters and
  head start afresh; BN starts as a copy of the base's for that corpus when ``like`` names it).
- ``head``: only a new head is trained on top of the frozen base as seen through its ``like`` domain (adapters and BN
  copied, frozen, BN in evaluation mode).
- ``full``: the ``head`` start, then every parameter is trained.

Optimisation (§5.2.2): SGD with momentum 0.9, L2 1e-6 (as SGD weight decay on every trainable parameter; the
paper's per-iteration learning-rate decay of 1e-6, under 3 % over 30 000 steps, is left out), class-weighted
cross-entropy. Learning rate 0.1 (0.01 for ``head`` and ``full``, §5.2.2) and either

- ``schedule="plateau"``: ×0.1 whenever the validation UAR (mean over the corpora) has not improved for
  ``patience`` epochs, down to ``min_lr``; after that, training stops at the next ``patience`` epochs without
  improvement (the paper: patience 50, two decays, 0.1 → 0.001);
- ``schedule="steps"``: ×0.1 after each of ``stage_steps`` round-robin steps (one batch of every corpus; the paper
  uses 2500 per stage for multi-domain training), the run lasting ``Trainer(max_steps=...)``.

The weights with the best validation UAR are restored at the end of fitting (``restore_best``), as the paper
evaluates the model that was best on the development partition (§7.1).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F

from sermodels.metrics import uar
from sermodels.models.emonet import EmoNet
from sermodels.tasks.common import gather_predictions

TRANSFER_MODES = ("none", "adapters", "head", "full")
SCHEDULES = ("plateau", "steps")


def load_base(init_from: str | EmoNet) -> EmoNet:
    """A pretrained EmoNet by id, folder or instance (deep-copied)."""
    if isinstance(init_from, EmoNet):
        return copy.deepcopy(init_from)
    import sermodels

    model = sermodels.load(init_from)
    if not isinstance(model, EmoNet):
        raise TypeError(f"{init_from}: a {type(model).__name__}, not an EmoNet; transfer needs an EmoNet base")
    return model


def prepare_transfer(
    base: EmoNet, domains: dict[str, list[str]], mode: str, like: str | None = None, keep_base_domains: bool = False
) -> EmoNet:
    """The base with the target domains added (or re-initialised) for ``mode`` and its parameters frozen or not."""
    if mode not in TRANSFER_MODES[1:]:
        raise ValueError(f"transfer mode must be one of {TRANSFER_MODES[1:]}, got {mode!r}")
    like = base.resolve_head(like)
    if keep_base_domains and mode == "full":
        raise ValueError("full fine-tuning changes the shared network, so the base's other heads would be invalid")
    model = base
    for name, labels in domains.items():
        model.add_domain(name, labels, like=like, copy_adapters=mode != "adapters", replace=True)
    if not keep_base_domains:
        for name in list(model.heads):
            if name not in domains:
                model.remove_domain(name)
    model.default_head = next(iter(domains))
    for param in model.parameters():
        param.requires_grad_(mode == "full")
    if mode != "full":
        trainable = []
        for name in domains:
            trainable += (
                model.domain_parameters(name) if mode == "adapters" else list(model.classifiers[name].parameters())
            )
        for param in trainable:
            param.requires_grad_(True)
    return model


class EmoNetTask(L.LightningModule):
    """Lightning wrapper of :class:`EmoNet` for every regime (module docstring).

    Args:
        model: :class:`EmoNet` keyword arguments other than ``domains`` (which come from the data module).
        transfer: ``none``, ``adapters``, ``head`` or ``full``.
        init_from: pretrained id or folder for the transfer regimes.
        like: the base domain whose BN (and, for ``head``/``full``, adapters) a new domain starts from.
        keep_base_domains: keep the base's other heads (``adapters``/``head`` only; their weights are unchanged).
        lr: initial learning rate (``None``: 0.1, or 0.01 for ``head``/``full``).
        schedule / patience / min_lr / stage_steps: see the module docstring.
        class_weighted: weight the cross-entropy by inverse class frequency of each corpus's training partition.
        restore_best: end fitting with the weights of the best validation UAR.
    """

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        transfer: Literal["none", "adapters", "head", "full"] = "none",
        init_from: str | None = None,
        like: str | None = None,
        keep_base_domains: bool = False,
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        schedule: Literal["plateau", "steps"] = "plateau",
        patience: int = 50,
        min_lr: float = 1e-3,
        stage_steps: int = 2500,
        class_weighted: bool = True,
        restore_best: bool = True,
    ):
        super().__init__()
        if transfer not in TRANSFER_MODES:
            raise ValueError(f"transfer must be one of {TRANSFER_MODES}, got {transfer!r}")
        if (transfer == "none") != (init_from is None):
            raise ValueError("init_from is needed by (and only by) the transfer regimes adapters/head/full")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if patience < 1 or stage_steps < 1:
            raise ValueError("patience and stage_steps must be positive")
        self.save_hyperparameters()
        self.model_args = dict(model or {})
        if "domains" in self.model_args:
            raise ValueError("model.domains comes from the data module's corpora and label space; do not set it")
        self.transfer = transfer
        self.init_from = init_from
        self.lr = lr if lr is not None else (0.01 if transfer in ("head", "full") else 0.1)
        self.net: EmoNet | None = None
        self.domain_of: dict[str, str] = {}
        self.corpus_order: list[str] = []
        self.round_robin = False
        self.best_uar = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale_epochs = 0
        self.history: list[dict[str, float]] = []
        self._val: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # ---- building from the data ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        data = self.trainer.datamodule
        if data is None:
            raise ValueError("EmoNetTask needs a SERDataModule passed to the Trainer (datamodule=...)")
        self.configure_from(data)

    def configure_from(self, data) -> None:
        """Domains, class weights and the network from a set-up ``SERDataModule``."""
        data.setup("fit")
        names = data.label_names
        self.corpus_order = list(data.corpus_names)
        self.round_robin = data.multi_corpus == "round_robin" and len(self.corpus_order) > 1
        spaces = getattr(data, "spaces", None)
        if spaces:
            # Several aggregated spaces (A+V, §6.2): one domain per space; batches name their space.
            domains = dict(names)
            self.domain_of = {}
            self.corpus_order = [f"{space}/{corpus}" for space, corpus in data.streams]
        elif isinstance(names, dict):
            if len(names) > 1 and data.multi_corpus != "round_robin":
                raise ValueError(
                    "per-corpus categories with several corpora need multi_corpus='round_robin' (one head per "
                    "corpus, every batch from one corpus); use an arousal/valence label space to pool corpora"
                )
            domains = dict(names)
            self.domain_of = {corpus: corpus for corpus in names}
        else:
            domains = {data.label_space: list(names)}
            self.domain_of = {corpus: data.label_space for corpus in data.corpus_names}
        if self.transfer == "none":
            self.net = EmoNet(domains, **self.model_args)
        else:
            if self.model_args:
                raise ValueError("model arguments come from the base checkpoint in a transfer regime")
            base = load_base(self.init_from)
            self.net = prepare_transfer(base, domains, self.transfer, self.hparams.like, self.hparams.keep_base_domains)
            # A loaded checkpoint is in eval mode and Lightning does not call train(): without this the new domain's
            # BN layers would never see batch statistics nor update their running statistics (dropout off too).
            self.net.train()
        weights = {}
        if spaces:
            self.class_weights = {space: data.class_weights(space) for space in spaces}
            if not self.hparams.class_weighted:
                self.class_weights = {}
            return
        for corpus in self.corpus_order:
            domain = self.domain_of[corpus]
            if not self.hparams.class_weighted:
                continue
            if domain in weights:
                continue
            weights[domain] = data.class_weights(corpus if domain == corpus else None)
        self.class_weights = weights

    # ---- steps -----------------------------------------------------------------------------------------------------
    def forward(self, waveforms, lengths=None, head=None):
        return self.net(waveforms, lengths, head)

    def on_train_epoch_start(self) -> None:
        if self.transfer == "head":
            self.net.eval()  # frozen BN statistics; only the head's BN and dropout train
            for name in self.net.heads:
                self.net.classifiers[name].train()

    def _domain(self, batch: dict[str, Any]) -> str:
        tags = batch.get("domain")  # SpacesDataModule names each batch's space; otherwise the corpus decides
        domains = set(tags) if tags is not None else {self.domain_of[corpus] for corpus in batch["corpus"]}
        if len(domains) != 1:
            raise RuntimeError(f"a batch mixes domains {sorted(domains)}; use multi_corpus='round_robin'")
        return domains.pop()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "waveforms" not in batch:
            # One batch of every space (SpacesDataModule): the step's loss is the sum of the domains' losses.
            # (The paper updates once per batch; one step per pair of batches keeps DDP ranks in lockstep.)
            losses = [loss for part in batch.values() if (loss := self._batch_loss(part)) is not None]
            if not losses:
                return None
            total = torch.stack(losses).sum()
            self.log("train/loss", total, prog_bar=True, batch_size=sum(len(p["labels"]) for p in batch.values()))
            return total
        loss = self._batch_loss(batch)
        if loss is not None:
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _batch_loss(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Class-weighted cross-entropy of one single-domain batch (None for a one-clip batch)."""
        if len(batch["labels"]) < 2:
            # The head's BatchNorm1d cannot normalise a single clip in training mode; such a batch (the last one of an
            # epoch or corpus cycle when the partition is one more than a multiple of the batch size) is skipped.
            return None
        domain = self._domain(batch)
        logits = self.net(batch["waveforms"], batch["lengths"], domain)
        weight = self.class_weights.get(domain)
        loss = F.cross_entropy(
            logits.float(), batch["labels"], weight=None if weight is None else weight.to(logits.device)
        )
        self.log(f"train/{domain}/loss", loss, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        corpus = batch["corpus"][0]
        domain = self._domain(batch)
        key = f"{domain}/{corpus}" if "domain" in batch else corpus
        logits = self.net(batch["waveforms"], batch["lengths"], domain)
        self._val.setdefault(key, []).append((logits.argmax(-1).detach(), batch["labels"].detach()))

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def on_validation_epoch_end(self) -> None:
        uars = {}
        for corpus in self.corpus_order:
            pred, true = self._gathered(corpus)
            if true.numel() == 0:
                continue
            uars[corpus] = uar(true, pred)
            self.log(f"val/{corpus}/uar", uars[corpus], sync_dist=False)
        if not uars:
            return
        mean = sum(uars.values()) / len(uars)
        self.log("val/uar", mean, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        self.history.append({"epoch": self.current_epoch, "step": self.global_step, "val_uar": mean, **uars})
        self._after_validation(mean)

    def _gathered(self, corpus: str) -> tuple[torch.Tensor, torch.Tensor]:
        parts = self._val.get(corpus, [])
        pred = torch.cat([p for p, _ in parts]) if parts else torch.empty(0, dtype=torch.long, device=self.device)
        true = torch.cat([t for _, t in parts]) if parts else torch.empty(0, dtype=torch.long, device=self.device)
        return gather_predictions(self, pred, true)

    def _after_validation(self, uar: float) -> None:
        if uar > self.best_uar:
            self.best_uar = uar
            self.stale_epochs = 0
            if self.hparams.restore_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
            return
        self.stale_epochs += 1
        if self.hparams.schedule != "plateau" or self.stale_epochs < self.hparams.patience:
            return
        self.stale_epochs = 0
        optimizer = self.optimizers().optimizer if hasattr(self.optimizers(), "optimizer") else self.optimizers()
        current = optimizer.param_groups[0]["lr"]
        if current <= self.hparams.min_lr * (1 + 1e-9):
            self.trainer.should_stop = True
            return
        for group in optimizer.param_groups:
            group["lr"] = max(current * 0.1, self.hparams.min_lr)

    def on_fit_end(self) -> None:
        if self.hparams.restore_best and self.best_state is not None:
            self.net.load_state_dict(self.best_state)

    # ---- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params, lr=self.lr, momentum=self.hparams.momentum, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.schedule == "plateau":
            return optimizer
        # §5.2.2: "one round is considered as one step": a round is one batch of every corpus (round-robin data
        # order, whether the corpora have their own heads or share an arousal/valence head).
        per_round = len(self.corpus_order) if self.round_robin else 1
        stage = self.hparams.stage_steps * per_round
        floor = self.hparams.min_lr / self.lr

        def factor(step: int) -> float:
            return max(0.1 ** (step // stage), floor)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_summary(self) -> dict[str, Any]:
        """What a model card needs about this run."""
        counts = self.net.parameter_counts()
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        return {
            "regime": self.transfer,
            "init_from": self.init_from,
            "optimizer": {
                "kind": "SGD",
                "lr": self.lr,
                "momentum": self.hparams.momentum,
                "weight_decay": self.hparams.weight_decay,
                "schedule": self.hparams.schedule,
                "patience": self.hparams.patience,
                "min_lr": self.hparams.min_lr,
                "stage_steps": self.hparams.stage_steps,
            },
            "class_weighted": self.hparams.class_weighted,
            "best_val_uar": None if self.best_uar == -math.inf else self.best_uar,
            "parameters": {**counts, "trainable": trainable},
            "history": self.history,
        }


def quiet_trainer(**options: Any) -> L.Trainer:
    """A Trainer for fits run from code (finetune, benchmarks): no logger, no Lightning checkpoints (weights leave
    as safetensors through ``export``), no model summary, no sanity validation; ``options`` override or extend."""
    defaults = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    defaults["num_sanity_val_steps"] = 0
    return L.Trainer(**(defaults | options))
