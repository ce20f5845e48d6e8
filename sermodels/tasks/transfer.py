"""Transfer regimes: start from a pretrained checkpoint, freeze or re-initialise parts of it, train the rest.

Two ways to say what is trained:

- ``mode`` for multi-domain models (EmoNet, Gerczuk et al., IEEE TAC, §5.2.2/§6.1, Table 4): ``adapters`` — new
  zero adapters, BN (copied from the base's ``like`` domain) and head per target domain, the shared network frozen
  ("adapters and classifier are reinitialized"); ``head`` — only a new head on the frozen base as seen through its
  ``like`` domain (adapters and BN copied, frozen, BN in evaluation mode); ``full`` — the ``head`` start, then every
  parameter trained.
- ``freeze`` / ``reinit`` for any model: names of its :meth:`~sermodels.models.base.SERModel.layer_groups`
  (input to output) whose parameters are frozen or re-initialised; ``freeze_upto`` freezes every group up to and
  including the one named (the freeze cut-offs A1–A8 of the CNN+LSTM transfer study). The heads the data needs are
  added or replaced through ``add_domain`` when the base has no such head.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from sermodels.layer_groups import SETTINGS, group_parameters, reinitialise, setting_plan
from sermodels.models.base import SERModel
from sermodels.outputs import OutputSpec
from sermodels.tasks.classification import ClassificationTask

MODES = ("adapters", "head", "full", "groups")
#: EmoNet §5.2.2/§6.1: adapters train at 0.1, a new head on a frozen base and full fine-tuning at 0.01.
MODE_LR = {"adapters": 0.1, "head": 0.01, "full": 0.01, "groups": 0.01}


def load_base(init_from: str | SERModel) -> SERModel:
    """A pretrained model by id, folder or instance (deep-copied)."""
    if isinstance(init_from, SERModel):
        return copy.deepcopy(init_from)
    from sermodels.hub import load

    return load(init_from)


def prepare_domains(
    base: SERModel,
    heads: dict[str, OutputSpec],
    mode: str,
    like: str | None = None,
    keep_base_domains: bool = False,
) -> SERModel:
    """The base with the target heads added (or re-initialised) for ``mode`` (adapters / head / full) and its
    parameters frozen or not."""
    if mode not in MODES[:3]:
        raise ValueError(f"transfer mode for domains must be one of {MODES[:3]}, got {mode!r}")
    missing = [
        m for m in ("add_domain", "remove_domain", "domain_parameters", "head_parameters") if not hasattr(base, m)
    ]
    if missing:
        raise TypeError(f"mode {mode!r} needs a multi-domain model; {type(base).__name__} lacks {missing}")
    like = base.resolve_head(like)
    if keep_base_domains and mode == "full":
        raise ValueError("full fine-tuning changes the shared network, so the base's other heads would be invalid")
    for name, spec in heads.items():
        base.add_domain(name, spec, like=like, copy_adapters=mode != "adapters", replace=True)
    if not keep_base_domains:
        for name in list(base.heads):
            if name not in heads:
                base.remove_domain(name)
    base.default_head = next(iter(heads))
    base.requires_grad_(mode == "full")
    if mode != "full":
        for name in heads:
            params = base.domain_parameters(name) if mode == "adapters" else base.head_parameters(name)
            for param in params:
                param.requires_grad_(True)
    return base


def same_output(a: OutputSpec, b: OutputSpec) -> bool:
    """Whether two heads output the same thing (kind, names, level, frame rate)."""
    return all(getattr(a, f) == getattr(b, f) for f in ("kind", "names", "level", "frame_rate"))


class TransferTask(ClassificationTask):
    """Fine-tune a pretrained model (module docstring).

    Args:
        init_from: pretrained id or checkpoint folder.
        mode: ``adapters``, ``head``, ``full`` (multi-domain models) or ``groups`` (``freeze``/``reinit``).
        like: the base head whose BN (and, for ``head``/``full``, adapters) a new head starts from.
        keep_base_domains: keep the base's other heads (``adapters``/``head`` only; their weights are unchanged).
        freeze / freeze_upto / reinit: layer groups (``groups`` mode).
        setting / cutoffs: a transfer setting A2–A8 of :data:`SETTINGS` (``groups`` mode, instead of ``freeze`` /
            ``reinit``), with the model's cut-offs or three given group names (:func:`setting_plan`). A1 trains
            nothing: ``sermodels finetune --setting A1`` scores the base as it is.
        optimizer: defaults to the base family's ``transfer_optimizer`` (AdaptedCNN: AdamW 1e-3), else SGD at the
            mode's learning rate (0.1 adapters, 0.01 otherwise); a given ``lr`` alone keeps the default optimiser.
        augment / ema: see :class:`~sermodels.tasks.base.SERTask`.
    """

    def __init__(
        self,
        init_from: str,
        mode: Literal["adapters", "head", "full", "groups"] = "adapters",
        like: str | None = None,
        keep_base_domains: bool = False,
        freeze: list[str] | None = None,
        freeze_upto: str | None = None,
        reinit: list[str] | None = None,
        setting: str | None = None,
        cutoffs: list[str] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        restore_best: bool = True,
        class_weighted: bool = True,
        cache_features: bool = True,
        augment: dict[str, Any] | None = None,
        ema: float | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"transfer mode must be one of {MODES}, got {mode!r}")
        if mode != "groups" and (freeze or freeze_upto or reinit):
            raise ValueError("freeze / freeze_upto / reinit belong to mode='groups'")
        if setting is not None and (mode != "groups" or freeze or freeze_upto or reinit):
            raise ValueError("a transfer setting belongs to mode='groups' and replaces freeze / freeze_upto / reinit")
        if setting is not None and setting not in SETTINGS:
            raise ValueError(f"transfer setting must be one of {SETTINGS}, got {setting!r}")
        if cutoffs is not None and setting is None:
            raise ValueError("cutoffs belong to a transfer setting (setting='A3', ...)")
        if mode == "groups" and keep_base_domains:
            raise ValueError("keep_base_domains belongs to the adapters and head modes (groups trains shared layers)")
        options = {"lr": MODE_LR[mode]} | dict(optimizer or {})
        super().__init__(None, options, schedule, restore_best, class_weighted, cache_features, augment, ema)
        self.given_optimizer = dict(optimizer or {})
        self.init_from = init_from
        self.mode = mode
        self.like = like
        self.keep_base_domains = keep_base_domains
        self.freeze = list(freeze or [])
        self.freeze_upto = freeze_upto
        self.reinit = list(reinit or [])
        self.setting = setting
        self.cutoffs = None if cutoffs is None else list(cutoffs)

    def make_net(self, heads: dict[str, OutputSpec], data) -> SERModel:
        base = load_base(self.init_from)
        if base.sample_rate != data.sample_rate:
            raise ValueError(f"{self.init_from} runs at {base.sample_rate} Hz, the data at {data.sample_rate} Hz")
        family = getattr(base, "transfer_optimizer", None)
        if family and "name" not in self.given_optimizer:
            # The family's own optimiser (e.g. AdamW for the adapted ImageNet CNNs); a given lr still wins.
            self.optimizer_options = dict(family) | self.given_optimizer
        if self.mode != "groups":
            net = prepare_domains(base, heads, self.mode, self.like, self.keep_base_domains)
        else:
            net = self._prepare_groups(base, heads)
        # A loaded checkpoint is in eval mode and Lightning does not call train(): without this the new heads' BN
        # layers would never see batch statistics nor update their running statistics (dropout off too).
        return net.train()

    def _prepare_groups(self, base: SERModel, heads: dict[str, OutputSpec]) -> SERModel:
        for name, spec in heads.items():
            if name in base.heads and same_output(base.output_spec(name), spec):
                continue
            if not hasattr(base, "add_domain"):
                raise ValueError(
                    f"{self.init_from} has no head {name!r} with {spec.to_json()} and cannot add one; train a head "
                    "it has, or use a model with add_domain"
                )
            base.add_domain(name, spec, like=base.resolve_head(self.like), replace=True)
        frozen, reinit = list(self.freeze), list(self.reinit)
        if self.setting is not None:
            plan = setting_plan(base, self.setting, self.cutoffs)
            frozen, reinit = plan.freeze, plan.reinit
            self.plan = {"frozen": plan.freeze, "reinitialised": plan.reinit}
        if self.freeze_upto is not None:
            order = list(base.layer_groups())
            if self.freeze_upto not in order:
                raise ValueError(f"freeze_upto {self.freeze_upto!r} is not a layer group of {order}")
            frozen += order[: order.index(self.freeze_upto) + 1]
        # The base's other heads would be invalid once shared layers train: they go (as in prepare_domains).
        for name in [h for h in base.heads if h not in heads]:
            if not hasattr(base, "remove_domain"):
                raise ValueError(f"{self.init_from} has heads {sorted(base.heads)}; the data trains only {list(heads)}")
            base.remove_domain(name)
        reinitialise(base, reinit)
        # Parameters the architecture keeps frozen itself (a Deep Spectrum extractor) stay frozen.
        for _, param in group_parameters(base, frozen):
            param.requires_grad_(False)
        if self.setting == "A1":  # no fine-tuning: nothing may train
            base.requires_grad_(False)
        base.default_head = next(iter(heads))
        return base

    def configure_optimizers(self):
        if self.setting == "A1":
            raise ValueError(
                "transfer setting A1 trains nothing: score the base with `sermodels finetune --setting A1`"
            )
        return super().configure_optimizers()

    def regime(self) -> str:
        return f"transfer/{self.mode}"

    def training_summary(self) -> dict[str, Any]:
        summary = super().training_summary()
        summary |= {"init_from": str(self.init_from), "mode": self.mode, "like": self.like}
        if self.mode == "groups":
            summary |= {"freeze": self.freeze, "freeze_upto": self.freeze_upto, "reinit": self.reinit}
            if self.setting is not None:
                summary |= {"setting": self.setting, "cutoffs": self.cutoffs} | getattr(self, "plan", {})
        return summary
