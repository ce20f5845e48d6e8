"""Layer groups and the transfer settings over them: which parts of a pretrained model a fine-tuning freezes or
re-initialises.

Every model names its groups, input to output (:meth:`~sermodels.models.base.SERModel.layer_groups`: EmoNet's stem,
blocks, attention and heads; the CNN+LSTM's C1, C2, L, F). The transfer settings A1–A8 are those of the CNN+LSTM
transfer study (Marczewski, Veloso, Ziviani, ACM MM Thematic Workshops 2017, §3.2), defined here for any model with
groups, so that ``sermodels finetune --setting`` (:class:`~sermodels.tasks.transfer.TransferTask`) and the study's
benchmark loop (:mod:`sermodels.training.cnn_lstm`) apply the same plan. Light: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from sermodels.models.base import SERModel


def _prefixes(model: SERModel, groups: list[str]) -> tuple[str, ...]:
    known = model.layer_groups()
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no layer groups {unknown}; its groups are {list(known)}")
    return tuple(prefix for group in groups for prefix in known[group])


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def group_parameters(model: SERModel, groups: list[str]) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every parameter in the named layer groups; an unknown group is an error."""
    prefixes = _prefixes(model, groups)
    return [(name, param) for name, param in model.named_parameters() if _inside(name, prefixes)]


def reinitialise(model: SERModel, groups: list[str]) -> None:
    """Give the named groups the values of a freshly built model of the same configuration (its own initialisation:
    EmoNet's Kaiming convolutions, zero adapters, fresh BN statistics), drawn from the current random state."""
    if not groups:
        return
    prefixes = _prefixes(model, groups)
    fresh = type(model)(**model.config()).state_dict()
    model.load_state_dict({name: fresh[name] for name in fresh if _inside(name, prefixes)}, strict=False)


#: The transfer settings of the CNN+LSTM study (Marczewski et al., ACM MM Thematic Workshops 2017, §3.2):
#: A1 no fine-tuning; A2 every layer fine-tuned; A3–A5 the groups up to the first / second / third cut-off frozen,
#: the rest fine-tuned; A6–A8 the same groups frozen, the rest re-initialised and trained.
SETTINGS = ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8")
SETTING_TEXT = {
    "A1": "no fine-tuning: the pretrained model as it is",
    "A2": "every layer fine-tuned",
    "A3": "frozen up to the first cut-off, the rest fine-tuned",
    "A4": "frozen up to the second cut-off, the rest fine-tuned",
    "A5": "frozen up to the third cut-off, the rest fine-tuned",
    "A6": "frozen up to the first cut-off, the rest re-initialised and trained",
    "A7": "frozen up to the second cut-off, the rest re-initialised and trained",
    "A8": "frozen up to the third cut-off, the rest re-initialised and trained",
}


@dataclass(frozen=True)
class SettingPlan:
    """What a transfer setting does to a model's layer groups."""

    setting: str
    freeze: list[str]
    reinit: list[str]
    train: bool


def transfer_cutoffs(model: SERModel) -> tuple[str, ...]:
    """The three cut-off groups of A3–A5 / A6–A8: the family's ``transfer_cutoffs`` (CNN+LSTM: C1, C2, L), else the
    first three of its :meth:`~sermodels.models.base.SERModel.layer_groups` when it has a fourth to train."""
    order = list(model.layer_groups())
    declared = getattr(model, "transfer_cutoffs", None)
    if declared:
        return tuple(declared)
    if len(order) < 4:
        raise ValueError(f"{type(model).__name__} has the layer groups {order}: too few for three cut-offs")
    return tuple(order[:3])


def setting_plan(model: SERModel, setting: str, cutoffs: Sequence[str] | None = None) -> SettingPlan:
    """The groups frozen and re-initialised by ``setting`` (:data:`SETTINGS`) on ``model``; ``cutoffs`` overrides
    :func:`transfer_cutoffs` (three group names, input to output). A cut-off the model lacks (the CNN without its
    LSTM has no ``L``) is an error naming the model's groups."""
    if setting not in SETTINGS:
        raise ValueError(f"transfer setting must be one of {SETTINGS}, got {setting!r}")
    if setting in ("A1", "A2"):
        return SettingPlan(setting, [], [], setting == "A2")
    order = list(model.layer_groups())
    cuts = tuple(cutoffs) if cutoffs is not None else transfer_cutoffs(model)
    if len(cuts) != 3:
        raise ValueError(f"give three cut-off groups (A3/A6, A4/A7, A5/A8), got {list(cuts)}")
    known = [c for c in cuts if c in order]
    if known != sorted(known, key=order.index) or len(set(cuts)) != 3:
        raise ValueError(f"the cut-offs {list(cuts)} must be three different groups in input-to-output order {order}")
    index = (int(setting[1]) - 3) % 3
    cut = cuts[index]
    if cut not in order:
        raise ValueError(f"{setting} freezes up to {cut!r}, which {type(model).__name__} lacks; its groups: {order}")
    frozen = order[: order.index(cut) + 1]
    if len(frozen) == len(order):
        raise ValueError(f"{setting} would freeze every group of {type(model).__name__} ({order})")
    reinit = order[len(frozen) :] if int(setting[1]) >= 6 else []
    return SettingPlan(setting, frozen, reinit, True)
