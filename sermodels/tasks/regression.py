"""Regression regime: dimensional heads (arousal, valence, ...) trained with the CCC family of losses.

The end-to-end conv-BLSTM (MixedEmotions deliverable D4.2, §4 "CCC objectives", §5 end-to-end model) trains
time-continuous arousal/valence by maximising the concordance correlation coefficient directly: the loss is
``1 - CCC``. We offer the variants that differ in what one CCC is computed over (:mod:`sermodels.losses`):

- ``ccc``: every valid frame (or utterance) of the batch pooled into one series per dimension ("total CCC");
- ``sequence_ccc``: the mean over the batch's sequences of each sequence's CCC (frame-level heads only);
- ``mse``: mean squared error, the usual baseline.

Utterance-level heads read ``batch["targets"]`` ``(B, D)``; frame-level heads ``batch["traces"]`` with
``batch["trace_mask"]``, cropped to the frames the head outputs. Validation scores the mean CCC over dimensions.
"""

from __future__ import annotations

from typing import Any, Literal

from sermodels.tasks.base import REGRESSION_LOSSES, SERTask

#: D4.2 §5: "Adam optimisation method, and a fixed learning rate of 2 · 10−3 throughout all experiments".
D42_OPTIMIZER = {"name": "adam", "lr": 2e-3}


class RegressionTask(SERTask):
    """Dimensional heads trained with ``loss`` (``ccc``, ``sequence_ccc`` or ``mse``).

    Args:
        model / optimizer / schedule / restore_best: see :class:`~sermodels.tasks.base.SERTask` (the optimiser
            defaults to Adam at 2e-3 with a fixed rate here, D4.2 §5's end-to-end setting).
    """

    default_optimizer = D42_OPTIMIZER
    default_schedule = {"name": "none", "patience": 50, "min_lr": 0.0, "stage_steps": 2500}

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        loss: Literal["ccc", "sequence_ccc", "mse"] = "ccc",
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        restore_best: bool = True,
        augment: dict[str, Any] | None = None,
        ema: float | None = None,
    ):
        if loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {loss!r}")
        super().__init__(model, optimizer, schedule, restore_best, augment=augment, ema=ema)
        self.regression_loss = loss

    def after_net(self, data) -> None:
        kinds = {head: self.net.output_spec(head).kind for head in set(self.stream_head.values())}
        wrong = sorted(head for head, kind in kinds.items() if kind != "dimensions")
        if wrong:
            raise ValueError(f"RegressionTask trains dimensional heads; {wrong} are not (use a numeric label space)")

    def regime(self) -> str:
        return f"regression/{self.regression_loss}"
