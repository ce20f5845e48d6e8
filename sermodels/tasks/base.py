"""The base LightningModule of every training regime.

A task owns a plain :class:`~sermodels.models.base.SERModel` (``self.net``), built from the registry by name once the
data module has said which heads it needs (:meth:`SERModel.from_specs`), or loaded from a pretrained checkpoint by a
transfer regime. What the base does for every regime:

- **Heads from the data.** A :class:`~sermodels.data.SERDataModule` serves one or more *streams* (a corpus, or a
  corpus in one label space); each stream is scored through one head of the model: the corpus's own head
  (categories per corpus, trained round-robin), or the head named after a pooled label space (``arousal``,
  ``valence``, the numeric ``av_values`` dimensions, ...). ``stream_head`` maps stream -> head. Batches of
  :class:`~sermodels.data.spaces.SpacesDataModule` name their head in ``batch["domain"]``.
- **Optimiser and schedule from the config**: ``optimizer={"name": "sgd"|"adam"|"adamw", "lr": ..., ...}`` over the
  parameters that require gradients; ``schedule={"name": "none"|"plateau"|"steps"|"cosine"|"onecycle", ...}``
  (plateau: ×0.1 after ``patience`` validations without improvement down to ``min_lr``, then stop; steps: ×0.1
  every ``stage_steps`` rounds, a round being one batch of every stream in round-robin order).
- **Validation scored by head kind**: UAR for categories, mean CCC over dimensions for dimensional heads (frame-level
  heads over all valid frames); the score of an epoch is the mean over streams, logged as ``val/score`` (and
  ``val/uar`` when every head is a categories head). Under DDP each rank scores its own shard and the predictions
  are gathered, so every rank sees the whole dev set's score.
- **The best state** (weights of the best validation score) is kept, restored at the end of fitting, and saved in
  Lightning checkpoints with the validation history, so a resumed run keeps comparing against the best so far.
  Validation runs whenever the Trainer says (every epoch, or every ``val_check_interval`` steps with
  ``check_val_every_n_epoch: null``).
- **Training-time augmentation** (``augment``, :mod:`sermodels.augment`): waveform augmentations on every training
  batch, SpecAugment on the model's own spectrogram (models with ``supports_spectrogram_augment``), mixup within a
  batch (one corpus per batch in round-robin training); never at validation or prediction. Every regime with
  automatic optimisation applies it; WDA (:class:`~sermodels.tasks.adaptation.AdaptationTask`) takes none.
- **EMA of the weights** (``ema``: the decay, e.g. 0.999; Polyak averaging): validation, model selection and the
  released weights use the averaged parameters (BN statistics are the live ones). The decay ramps up as
  ``min(ema, (1 + step) / (10 + step))`` so the early average does not hold the random start.

Regimes subclass it and implement :meth:`batch_loss` (and, for manual optimisation, ``training_step``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from sermodels import losses
from sermodels.augment import Augmentation
from sermodels.metrics import uar
from sermodels.models.base import SERModel
from sermodels.outputs import OutputSpec, categories

SCHEDULES = ("none", "plateau", "steps", "cosine", "onecycle")
#: EmoNet §5.2.2: SGD with momentum 0.9 and L2 1e-6, learning rate 0.1.
DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-6}
#: EmoNet §5.2.2: ×0.1 when the dev UAR has not improved for 50 epochs, down to 0.001.
DEFAULT_SCHEDULE: dict[str, Any] = {"name": "plateau", "patience": 50, "min_lr": 1e-3, "stage_steps": 2500}
#: What every schedule reads (a schedule given by name starts from these, not from another schedule's settings).
SCHEDULE_SETTINGS: dict[str, Any] = {"patience": 50, "min_lr": 0.0, "stage_steps": 2500}
STATE_KEY = "sermodels_task"
REGRESSION_LOSSES = ("ccc", "sequence_ccc", "mse")


def build_model(spec: Mapping[str, Any] | None, heads: dict[str, OutputSpec], sample_rate: int) -> SERModel:
    """A fresh model from ``{"arch": NAME, **constructor arguments}`` with ``heads`` (name -> output spec)."""
    from sermodels._registry import get_model_class

    args = dict(spec or {})
    arch = args.pop("arch", None)
    if not arch:
        raise ValueError("model needs an 'arch' (a registered architecture, see `sermodels models`)")
    return get_model_class(arch).from_specs(heads, sample_rate=sample_rate, **args)


def optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """Every optimiser of ``torch.optim`` by its lower-case name (sgd, adam, adamw, adadelta, rmsprop, ...)."""
    found = {}
    for name in dir(torch.optim):
        value = getattr(torch.optim, name)
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) and value is not torch.optim.Optimizer:
            found[name.lower()] = value
    return found


def optimizer_for(params: list[torch.nn.Parameter], options: Mapping[str, Any]) -> torch.optim.Optimizer:
    args = dict(options)
    name = str(args.pop("name", "sgd")).lower()
    known = optimizers()
    if name not in known:
        raise ValueError(f"optimizer name must be one of torch.optim's {sorted(known)}, got {name!r}")
    if not params:
        raise ValueError("no parameter requires a gradient: nothing to train")
    return known[name](params, **args)


def merge_options(given: Mapping[str, Any] | None, default: Mapping[str, Any], base: Mapping[str, Any] = {}) -> dict:
    """``given`` over the task's ``default`` when it names the same thing (or no name); a ``given`` with another name
    starts afresh from ``base`` (Adam's options never inherit SGD's momentum, a cosine schedule no plateau)."""
    given = dict(given or {})
    if given.get("name", default["name"]) != default["name"]:
        return dict(base) | given
    return dict(default) | given


def frozen_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm layer with parameters, none of which trains: its running statistics must stay as they are."""
    params = list(module.parameters(recurse=False))
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and bool(params)
        and not any(p.requires_grad for p in params)
    )


def has_trainable_batchnorm(net: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters())
        for m in net.modules()
    )


class SERTask(L.LightningModule):
    """Base of the training regimes (module docstring).

    Args:
        model: ``{"arch": NAME, **constructor arguments}`` of a fresh model (heads come from the data).
        optimizer / schedule: see the module docstring (defaults: EmoNet §5.2.2, or the regime's
            ``default_optimizer``/``default_schedule``); a partial setting is merged over the default of its name.
        restore_best: end fitting with the weights of the best validation score.
        augment: training-time augmentation (:meth:`sermodels.augment.Augmentation.from_config`), e.g.
            ``{"noise": {"p": 0.5, "snr_db": [5, 30]}, "spec": {}, "mixup": {"p": 0.5, "alpha": 0.4}}``.
        ema: decay of an exponential moving average of the weights (``None``: off).
    """

    default_optimizer: dict[str, Any] = DEFAULT_OPTIMIZER
    default_schedule: dict[str, Any] = DEFAULT_SCHEDULE
    #: The loss of dimensional heads (``ccc``, ``sequence_ccc`` or ``mse``); regimes that train them may change it.
    regression_loss: str = "ccc"

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        restore_best: bool = True,
        augment: dict[str, Any] | None = None,
        ema: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.augmentation = Augmentation.from_config(augment) if augment else None
        if ema is not None and not 0.0 < ema < 1.0:
            raise ValueError(f"ema is the averaging decay, in (0, 1), got {ema}")
        self.ema = ema
        self.ema_state: dict[str, torch.Tensor] | None = None
        self._live: dict[str, torch.Tensor] | None = None
        self._ema_step = -1
        self.model_spec = dict(model or {})
        self.optimizer_options = merge_options(optimizer, self.default_optimizer)
        self.schedule = merge_options(schedule, self.default_schedule, SCHEDULE_SETTINGS)
        if self.schedule["name"] not in SCHEDULES:
            raise ValueError(f"schedule name must be one of {SCHEDULES}, got {self.schedule['name']!r}")
        if self.schedule["patience"] < 1 or self.schedule["stage_steps"] < 1:
            raise ValueError("schedule patience and stage_steps must be positive")
        self.restore_best = restore_best
        self.net: SERModel | None = None
        self.stream_head: dict[str, str] = {}
        self.streams: list[str] = []
        self.round_robin = False
        self.best_score = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.history: list[dict[str, float]] = []
        self._skip_single = False
        self._val: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = {}

    # ---- building from the data ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        data = self.trainer.datamodule
        if data is None:
            raise ValueError(f"{type(self).__name__} needs a data module passed to the Trainer (datamodule=...)")
        self.configure_from(data)

    def configure_from(self, data) -> None:
        """Streams, heads and the network from a data module (set up here)."""
        data.setup("fit")
        heads = self.heads_from_data(data)
        self.net = self.make_net(heads, data)
        self.install_augmentation()
        missing = sorted(set(self.stream_head.values()) - set(self.net.heads))
        if missing:
            raise ValueError(f"the model has no head {missing} for the data's streams {self.streams}")
        for head, wanted in heads.items():
            check_spec(head, self.net.output_spec(head), wanted)
        self.after_net(data)
        # A BatchNorm layer in training mode cannot normalise one clip: such batches are skipped.
        self._skip_single = has_trainable_batchnorm(self.net)

    def heads_from_data(self, data) -> dict[str, OutputSpec]:
        """Head name -> output spec for the data's streams; fills ``streams``, ``stream_head``, ``round_robin``."""
        names = data.label_names
        spaces = getattr(data, "spaces", None)
        self.round_robin = getattr(data, "multi_corpus", "concat") == "round_robin" and len(data.corpus_names) > 1
        if spaces:
            self.streams = [f"{space}/{corpus}" for space, corpus in data.streams]
            self.stream_head = {stream: stream.split("/", 1)[0] for stream in self.streams}
            return {space: _target_spec(data.parts[space], None, labels) for space, labels in dict(names).items()}
        self.streams = list(data.corpus_names)
        if isinstance(names, dict):
            if len(names) > 1 and not self.round_robin:
                raise ValueError(
                    "per-corpus categories with several corpora need multi_corpus='round_robin' (one head per "
                    "corpus, every batch from one corpus); use an arousal/valence label space to pool corpora"
                )
            self.stream_head = {corpus: corpus for corpus in names}
            return {corpus: _target_spec(data, corpus, labels) for corpus, labels in names.items()}
        self.stream_head = {corpus: data.label_space for corpus in self.streams}
        return {data.label_space: _target_spec(data, None, list(names))}

    def make_net(self, heads: dict[str, OutputSpec], data) -> SERModel:
        return build_model(self.model_spec, heads, data.sample_rate)

    def install_augmentation(self) -> None:
        """Hand SpecAugment to a model that computes its own spectrogram (it applies it in training mode only)."""
        aug = self.augmentation
        if aug is None or aug.spec is None:
            return
        if not getattr(self.net, "supports_spectrogram_augment", False):
            raise ValueError(
                f"augment.spec masks the model's own spectrogram; {type(self.net).__name__} has no spectrogram hook "
                "(supports_spectrogram_augment)"
            )
        self.net.set_spectrogram_augment(aug.spec)

    def on_train_start(self) -> None:
        # Each DDP rank draws its own augmentations (rank 0 keeps the recipe's seed).
        aug = self.augmentation
        if aug is not None and self.trainer.global_rank:
            aug.reseed(aug.seed + 7919 * self.trainer.global_rank)

    @property
    def waveform_augmented(self) -> bool:
        """Whether training batches differ from the stored clips (no frozen-feature caching then)."""
        aug = self.augmentation
        return aug is not None and (aug.waveform is not None or aug.mixup is not None)

    def after_net(self, data) -> None:
        """Regime-specific set-up once ``self.net`` exists (class weights, frozen groups, ...)."""

    # ---- steps -----------------------------------------------------------------------------------------------------
    def forward(self, waveforms, lengths=None, head=None):
        return self.net(waveforms, lengths, head)

    def head_of(self, batch: dict[str, Any]) -> str:
        """The one head a batch trains or is scored through."""
        tags = batch.get("domain")
        heads = set(tags) if tags is not None else {self.stream_head[corpus] for corpus in batch["corpus"]}
        if len(heads) != 1:
            raise RuntimeError(f"a batch mixes heads {sorted(heads)}; use multi_corpus='round_robin'")
        return heads.pop()

    def head_output(self, batch: dict[str, Any], head: str) -> torch.Tensor:
        """The head's output for a batch (regimes may compute it from cached features)."""
        return self.net(batch["waveforms"], batch["lengths"], head)

    def loss_for(self, batch: dict[str, Any], head: str) -> torch.Tensor:
        """The loss of one head on one batch, by the head's kind: (class-weighted) cross-entropy for categories, the
        regime's ``regression_loss`` for dimensions."""
        output = self.head_output(batch, head)
        return self.loss_of_output(output, batch, head)

    def loss_of_output(self, output: torch.Tensor, batch: dict[str, Any], head: str) -> torch.Tensor:
        if self.net.output_spec(head).kind == "categories":
            return losses.weighted_cross_entropy(output, batch["labels"], self.class_weights_of(head))
        target, mask = targets_of(batch, head, output, self.net)
        return regression_loss(self.regression_loss, output.float(), target, mask)

    def augmented(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with the waveform augmentations applied (training only)."""
        aug = self.augmentation
        if aug is None or aug.waveform is None:
            return batch
        waveforms, lengths = aug.waveform(batch["waveforms"], batch["lengths"], batch.get("speakers"))
        return {**batch, "waveforms": waveforms, "lengths": lengths}

    def augmented_loss(self, batch: dict[str, Any], head: str) -> torch.Tensor:
        """The loss of a training batch after augmentation (waveforms, then mixup)."""
        return self.mixed_loss(self.augmented(batch), head)

    def mixed_loss(self, batch: dict[str, Any], head: str) -> torch.Tensor:
        """The loss of ``head`` on a batch; with mixup (Zhang et al., ICLR 2018) two clips of the batch are mixed and
        the losses of their two labels weighed by lambda (categories heads; other heads train unmixed)."""
        spec = self.net.output_spec(head)
        aug = self.augmentation
        mixed = None
        if aug is not None and aug.mixup is not None and spec.kind == "categories" and len(batch["waveforms"]) > 1:
            mixed = aug.mix(batch["waveforms"], batch["lengths"], batch["labels"])
        if mixed is None:
            return self.loss_for(batch, head)
        waveforms, lengths, labels_a, labels_b, lam = mixed
        batch = {**batch, "waveforms": waveforms, "lengths": lengths}
        output = self.head_output(batch, head)
        first = self.loss_of_output(output, {**batch, "labels": labels_a}, head)
        second = self.loss_of_output(output, {**batch, "labels": labels_b}, head)
        return lam * first + (1.0 - lam) * second

    def class_weights_of(self, head: str) -> torch.Tensor | None:
        return None

    def batch_loss(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """The loss of a single-head batch (``None`` for a one-clip batch the BatchNorm layers cannot train on)."""
        if self._skip_single and len(batch["waveforms"]) < 2:
            return None
        head = self.head_of(batch)
        loss = self.augmented_loss(batch, head)
        self.log(f"train/{head}/loss", loss, batch_size=len(batch["waveforms"]))
        return loss

    def on_train_epoch_start(self) -> None:
        # BatchNorm layers whose parameters are frozen keep their running statistics (transfer of a frozen base).
        for module in self.net.modules():
            if frozen_batchnorm(module):
                module.eval()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        parts = [batch] if "waveforms" in batch else list(batch.values())
        # SpacesDataModule gives one batch of every space per step: the step's loss is the sum of their losses.
        found = [loss for part in parts if (loss := self.batch_loss(part)) is not None]
        if not found:
            return None
        total = torch.stack(found).sum()
        size = sum(len(part["waveforms"]) for part in parts)
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        return total

    # ---- validation ------------------------------------------------------------------------------------------------
    def stream_of(self, batch: dict[str, Any]) -> str:
        corpus = batch["corpus"][0]
        return f"{batch['domain'][0]}/{corpus}" if "domain" in batch else corpus

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        head = self.head_of(batch)
        output = self.head_output(batch, head)
        spec = self.net.output_spec(head)
        target, mask = targets_of(batch, head, output, self.net)
        pred = output.argmax(-1) if spec.kind == "categories" else output.float()
        self._val.setdefault(self.stream_of(batch), []).append((pred.detach(), target.detach(), mask))

    def on_validation_epoch_start(self) -> None:
        self._val = {}
        self.swap_in_ema()

    # ---- EMA of the weights ----------------------------------------------------------------------------------------
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Once per optimiser step (not per accumulated micro-batch).
        if self.ema is None or self.global_step == self._ema_step:
            return
        self._ema_step = self.global_step
        params = dict(self.net.named_parameters())
        with torch.no_grad():
            if self.ema_state is None:
                self.ema_state = {k: p.detach().clone() for k, p in params.items() if p.requires_grad}
                return
            decay = min(self.ema, (1 + self.global_step) / (10 + self.global_step))
            for name, average in self.ema_state.items():
                live = params[name].detach()
                if average.device != live.device:  # a checkpoint is loaded onto the CPU
                    average = self.ema_state[name] = average.to(live.device)
                average.lerp_(live.to(average.dtype), 1.0 - decay)

    def swap_in_ema(self) -> None:
        """Validate (and select) with the averaged weights; the live ones come back after validation."""
        if self.ema_state is None or self._live is not None:
            return
        params = dict(self.net.named_parameters())
        with torch.no_grad():
            self._live = {name: params[name].detach().clone() for name in self.ema_state}
            for name, average in self.ema_state.items():
                params[name].copy_(average.to(params[name].device))

    def swap_out_ema(self) -> None:
        if self._live is None:
            return
        params = dict(self.net.named_parameters())
        with torch.no_grad():
            for name, live in self._live.items():
                params[name].copy_(live)
        self._live = None

    def on_validation_epoch_end(self) -> None:
        try:
            self.score_validation()
        finally:
            self.swap_out_ema()

    def score_validation(self) -> None:
        scores = {}
        for stream in self.streams:
            score = self._stream_score(stream)
            if score is not None:
                scores[stream] = score
                self.log(f"val/{stream}/score", score, sync_dist=False)
        if not scores:
            return
        mean = sum(scores.values()) / len(scores)
        self.log("val/score", mean, prog_bar=True, sync_dist=False)
        if all(self.net.output_spec(self.stream_head[s]).kind == "categories" for s in scores):
            self.log("val/uar", mean, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        self.history.append({"epoch": self.current_epoch, "step": self.global_step, "val_score": mean, **scores})
        self.after_validation(mean)

    def gathered(self, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
        """This validation's predictions and targets of ``stream`` from every rank: class indices ``(N,)`` for a
        categories head, ``(N, D)`` values of every valid utterance or frame for a dimensional head. A collective
        call under DDP: every rank must make it."""
        parts = self._val.get(stream, [])
        spec = self.net.output_spec(self.stream_head[stream])
        if spec.kind == "categories":
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            pred = torch.cat([p for p, _, _ in parts]) if parts else empty
            true = torch.cat([t for _, t, _ in parts]) if parts else empty
            return gather_rows(self, pred), gather_rows(self, true)
        rows_pred, rows_true = [], []
        for pred, true, mask in parts:
            if mask is not None:
                pred, true = pred[mask], true[mask]
            rows_pred.append(pred.reshape(-1, spec.dim).float())
            rows_true.append(true.reshape(-1, spec.dim).float())
        empty = torch.empty(0, spec.dim, device=self.device)
        pred = gather_rows(self, torch.cat(rows_pred) if rows_pred else empty)
        return pred, gather_rows(self, torch.cat(rows_true) if rows_true else empty)

    def _stream_score(self, stream: str) -> float | None:
        """UAR (categories) or the mean CCC over dimensions of one stream's whole dev partition."""
        pred, true = self.gathered(stream)
        if self.net.output_spec(self.stream_head[stream]).kind == "categories":
            return uar(true.cpu(), pred.cpu()) if true.numel() else None
        return float(losses.ccc(pred.cpu(), true.cpu()).mean()) if len(true) > 1 else None

    def after_validation(self, score: float) -> None:
        if score > self.best_score:
            self.best_score = score
            self.stale = 0
            if self.restore_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}
            return
        self.stale += 1
        if self.schedule["name"] != "plateau" or self.stale < self.schedule["patience"]:
            return
        self.stale = 0
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        current = optimizer.param_groups[0]["lr"]
        if current <= self.schedule["min_lr"] * (1 + 1e-9):
            self.trainer.should_stop = True
            return
        for group in optimizer.param_groups:
            group["lr"] = max(current * 0.1, self.schedule["min_lr"])

    def on_fit_end(self) -> None:
        if self.restore_best and self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        elif self.ema_state is not None:
            self.swap_in_ema()
            self._live = None
        # The released weights are in place: a later trainer.validate/test must not swap an average over them.
        self.ema_state = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed fit keeps comparing against the best score so far and restores those weights at the end.
        checkpoint[STATE_KEY] = {
            "best_score": self.best_score,
            "best_state": self.best_state,
            "history": self.history,
            "stale": self.stale,
            "ema_state": self.ema_state,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY, {})
        self.best_score = state.get("best_score", self.best_score)
        self.best_state = state.get("best_state", self.best_state)
        self.history = list(state.get("history", self.history))
        self.stale = state.get("stale", self.stale)
        self.ema_state = state.get("ema_state", self.ema_state)

    # ---- optimisation ----------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    @property
    def lr(self) -> float:
        return float(self.optimizer_options["lr"])

    def configure_optimizers(self):
        optimizer = optimizer_for(self.trainable_parameters(), self.optimizer_options)
        name = self.schedule["name"]
        if name in ("none", "plateau"):
            return optimizer
        if name == "steps":
            # EmoNet §5.2.2: "one round is considered as one step": one batch of every corpus (round-robin order).
            stage = self.schedule["stage_steps"] * (len(self.streams) if self.round_robin else 1)
            floor = self.schedule["min_lr"] / self.lr

            def factor(step: int) -> float:
                return max(0.1 ** (step // stage), floor)

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        else:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                raise ValueError(f"schedule {name!r} needs a finite run: set trainer max_steps or max_epochs")
            if name == "cosine":
                eta_min = self.schedule["min_lr"]
                scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, int(total), eta_min=eta_min)
            else:
                scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- what the card and training log say ------------------------------------------------------------------------
    def regime(self) -> str:
        return type(self).__name__

    def training_summary(self) -> dict[str, Any]:
        counts = self.net.parameter_counts() if hasattr(self.net, "parameter_counts") else {}
        counts = {"total": sum(p.numel() for p in self.net.parameters()), **counts}
        return {
            "regime": self.regime(),
            "task": f"{type(self).__module__}.{type(self).__qualname__}",
            "optimizer": dict(self.optimizer_options),
            "schedule": dict(self.schedule),
            "best_val_score": None if self.best_score == -math.inf else self.best_score,
            "augment": None if self.augmentation is None else self.augmentation.config(),
            "ema": self.ema,
            "parameters": {**counts, "trainable": sum(p.numel() for p in self.trainable_parameters())},
            "history": self.history,
        }


#: Output frames and trace frames of one clip may differ by this much (edge frames of a convolution or an STFT).
FRAME_TOLERANCE = 1


def check_spec(head: str, has: OutputSpec, wanted: OutputSpec) -> None:
    """The model's head must output what the data's targets are: kind, names, level and frame rate (the value range
    and the score kind are the model's own business)."""
    fields = ("kind", "names", "level", "frame_rate")
    if any(getattr(has, f) != getattr(wanted, f) for f in fields):
        raise ValueError(f"head {head!r} outputs {has.to_json()}, the data's targets need {wanted.to_json()}")


def regression_loss(name: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """1 − CCC over everything pooled (``ccc``), 1 − the mean per-sequence CCC (``sequence_ccc``), or MSE."""
    if name == "ccc":
        return losses.ccc_loss(output, target, mask)
    if name == "mse":
        return losses.mse_loss(output, target, mask)
    if name != "sequence_ccc":
        raise ValueError(f"regression loss must be one of {REGRESSION_LOSSES}, got {name!r}")
    if mask is None:
        raise ValueError("the sequence_ccc loss needs frame-level outputs and traces")
    return losses.sequence_ccc_loss(output, target, mask)


def _target_spec(data, corpus: str | None, names: list[str]) -> OutputSpec:
    """What a head must output to learn a data module's targets (its ``target_spec``; class names otherwise)."""
    if hasattr(data, "target_spec"):
        return data.target_spec(corpus)
    return categories(names)


def gather_rows(module: L.LightningModule, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows`` ``(N, ...)`` concatenated in rank order, on every rank (the rows themselves on one
    process). Under DDP each rank scores a disjoint, unpadded shard of the dev set, so the shards differ in length:
    they are padded to a common length to gather, and the padding is dropped again."""
    if module._trainer is None or module.trainer.world_size <= 1:
        return rows
    counts = module.all_gather(torch.tensor([len(rows)], device=module.device)).flatten().tolist()
    width = max(counts)
    padded = torch.zeros((width, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    gathered = module.all_gather(padded).reshape(len(counts), width, *rows.shape[1:])
    return torch.cat([gathered[rank, :count] for rank, count in enumerate(counts)])


def targets_of(
    batch: dict[str, Any], head: str, output: torch.Tensor, net: SERModel
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's targets for a head's ``output`` and, for frame-level heads, the mask of frames that count.

    Categories: ``batch["labels"]`` ``(B,)``. Utterance-level dimensions: ``batch["targets"]`` ``(B, D)``.
    Frame-level dimensions: ``batch["traces"]`` ``(B, T, D)`` cropped to the output's frames, the mask being the
    frames valid in both the trace (``trace_mask``) and the output (``net.output_lengths``)."""
    spec = net.output_spec(head)
    if spec.kind == "categories" and spec.level == "utterance":
        return batch["labels"], None
    if spec.kind == "dimensions" and spec.level == "utterance":
        if "targets" not in batch:
            raise KeyError("a dimensional head needs batch['targets'] (a numeric label space such as av_values)")
        return batch["targets"].float(), None
    if spec.kind == "dimensions":
        if "traces" not in batch:
            raise KeyError("a frame-level head needs batch['traces'] and batch['trace_mask']")
        frames = min(output.shape[1], batch["traces"].shape[1])
        valid = net.output_lengths(batch["lengths"], head).to(output.device)
        gap = (valid - batch["trace_lengths"].to(output.device)).abs()
        if (gap > FRAME_TOLERANCE).any():
            row = int(gap.argmax())
            raise ValueError(
                f"head {head!r} outputs {int(valid[row])} frames for {batch['paths'][row]}, its trace has "
                f"{int(batch['trace_lengths'][row])}: more than {FRAME_TOLERANCE} frame apart (different frame rates?)"
            )
        steps = torch.arange(frames, device=output.device)
        mask = batch["trace_mask"][:, :frames].bool() & (steps[None] < valid[:, None])
        padded = F.pad(batch["traces"][:, :frames], (0, 0, 0, output.shape[1] - frames))
        full_mask = F.pad(mask, (0, output.shape[1] - frames), value=False)
        return padded.float(), full_mask
    raise ValueError(f"no training target for a {spec.level}-level {spec.kind} head")
