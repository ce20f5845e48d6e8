"""The CNN+LSTM transfer study's training loop on cached inputs (Marczewski et al., ACM MM Thematic Workshops 2017,
§3.2, §4.3): pre-train, apply a transfer setting (A1–A8), fine-tune, score.

The study trains hundreds of networks (settings × scenarios × folds × corpora), so it runs on tensors computed
once: the standardised network inputs of every clip (the front-end has no weights), and, for a setting that freezes
C1, C1's output (:func:`stage_outputs`), which every such setting of the same pre-trained network reuses. Training
from C1's cached output is the same computation as training the whole network with C1 frozen: C1 has no dropout
before it and is deterministic, and :meth:`~sermodels.models.cnn_lstm.CNNLSTM.run` replays everything after it, the
other frozen stages included, with the dropout that follows each stage (as a frozen Keras layer or ``sermodels
finetune --setting`` in training mode does). With the same seed both give the same weights (a test checks this).
What differs from ``sermodels finetune --setting`` (the Lightning regime on audio files): a fixed centre window per
clip instead of random crops, and no selection of the best epoch (a fixed number of epochs, chosen on the training
loss).

Optimisation (§3.1): AdaDelta (rate 1.0), cross-entropy weighted by inverse class frequency of the training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sermodels.layer_groups import group_parameters, reinitialise, setting_plan
from sermodels.losses import inverse_frequency
from sermodels.models.cnn_lstm import CNNLSTM, STAGE_INPUT

BATCH_SIZE = 32
OPTIMIZER = {"lr": 1.0}  # AdaDelta, §3.1 (Keras's default rate)


@dataclass
class FitLog:
    """Mean training loss and accuracy per epoch."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def network_inputs(model: CNNLSTM, waveforms: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """The standardised input ``(N, channels, steps)`` of every clip (float32; the front-end has no weights)."""
    rows = []
    with torch.inference_mode():
        for start in range(0, len(waveforms), batch_size):
            chunk = waveforms[start : start + batch_size]
            lengths = torch.tensor([len(w) for w in chunk])
            padded = torch.zeros(len(chunk), int(lengths.max()))
            for row, wave in enumerate(chunk):
                padded[row, : len(wave)] = wave
            rows.append(model.standardised_input(padded, lengths))
    return torch.cat(rows)


def stage_outputs(model: CNNLSTM, inputs: torch.Tensor, stage: str, batch_size: int = 128) -> torch.Tensor:
    """Outputs of ``stage`` (before its dropout) for ``inputs`` in evaluation mode: what a frozen stage gives."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model.run(inputs[i : i + batch_size], stop=stage) for i in range(0, len(inputs), batch_size)])
    model.train(was_training)
    return out


def class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """The task regimes' class weights (:func:`sermodels.losses.inverse_frequency`) of class indices ``labels``."""
    return inverse_frequency(torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=classes))


def fit(
    model: CNNLSTM,
    x: torch.Tensor,
    labels: np.ndarray,
    *,
    start: str = STAGE_INPUT,
    epochs: int,
    seed: int,
    head: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> FitLog:
    """Train the parameters of ``model`` that require a gradient on ``x`` (the output of stage ``start``) for
    ``epochs`` epochs of shuffled batches. ``seed`` draws the batch order and the dropout masks (the global CPU
    random state is forked, so on the CPU the result depends on ``seed`` only, not on what ran before; cuDNN kernels
    are not bit-reproducible). Returns the training curve."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no parameter requires a gradient: nothing to train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _fit(model, params, x, labels, start, epochs, seed, head, batch_size)


def _fit(model, params, x, labels, start, epochs, seed, head, batch_size) -> FitLog:
    head = model.resolve_head(head)
    optimiser = torch.optim.Adadelta(params, **OPTIMIZER)
    y = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    weights = class_weights(np.asarray(labels), len(model.heads[head])).to(x.device)
    generator = torch.Generator().manual_seed(seed)
    log = FitLog()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator).to(x.device)
        total, correct, seen = 0.0, 0, 0
        for i in range(0, len(order), batch_size):
            index = order[i : i + batch_size]
            if len(index) < 2 and seen:  # a batch of one adds noise and nothing else
                continue
            logits = model.run(x[index], start=start, head=head)
            loss = F.cross_entropy(logits, y[index], weight=weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(-1) == y[index]).sum())
            seen += len(index)
        log.loss.append(total / seen)
        log.accuracy.append(correct / seen)
    model.eval()
    return log


def predict(model: CNNLSTM, x: torch.Tensor, *, start: str = STAGE_INPUT, head: str | None = None) -> np.ndarray:
    """Class indices for ``x`` (the output of stage ``start``), evaluation mode."""
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model.run(x[i : i + 256], start=start, head=head) for i in range(0, len(x), 256)])
    return logits.argmax(-1).cpu().numpy()


def prepare(model: CNNLSTM, setting: str, seed: int) -> tuple[CNNLSTM, str]:
    """``model`` (modified in place) ready for fine-tuning in ``setting``: its frozen groups without gradients, the
    groups after them re-initialised (A6–A8) from ``seed``. Returns it with the stage whose cached output it trains
    from: the first group when it is frozen (the frozen groups after it are replayed with their dropout), else the
    input."""
    plan = setting_plan(model, setting)
    model.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reinitialise(model, plan.reinit)
    for _, param in group_parameters(model, plan.freeze):
        param.requires_grad_(False)
    return model, (plan.freeze[0] if plan.freeze else STAGE_INPUT)


def fresh(config: dict, seed: int) -> CNNLSTM:
    """A newly initialised network of ``config`` drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CNNLSTM(**config)
