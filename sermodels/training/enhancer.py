"""Training of the BLSTM feature enhancer (MixedEmotions D4.2 §3.4.2) on paired noisy/clean MFCC frames.

>>> model, history = fit_enhancer(noisy_train, clean_train, noisy_dev, clean_dev)  # doctest: +SKIP
>>> feature_mse(model, noisy_dev, clean_dev, enhance=False)  # the unenhanced baseline of the dev MSE  # doctest: +SKIP

Inputs are lists of ``(frames, n_mfcc)`` float32 arrays: the MFCCs of the degraded audio and of the same clean
audio, frame for frame (e.g. :meth:`~sermodels.models.enhancer.BLSTMEnhancer.features` of both, computed once and
cached: the model is tiny and the features fit in memory).

A plain PyTorch loop, not a Lightning task: there is one loss on cached tensors, one optimiser and early stopping on
one number, which a ``LightningModule`` plus a ``DataModule`` would only wrap. What it does:

- fits the standardisation statistics of the model (§3.4.2: global means and variances of the noisy inputs and of
  the clean targets) on the training lists;
- trains with the frame-wise MSE (§3.3, Eq. 9) between the prediction and the standardised clean target over the
  valid frames of padded mini-batches of ``batch_size`` sequences (§3.4.2: 8), with Gaussian input noise in training
  (the model's ``input_noise``, §3.4.2: 0.1);
- keeps the weights of the best validation MSE and stops after ``patience`` epochs without a better one, or after
  ``max_epochs`` (§3.4.2: 20 and 200);
- optimiser: Adam at :data:`~sermodels.models.enhancer.ADAM_LR` by default, or the paper's SGD
  (``optimizer="sgd"``: learning rate 1e-6 and momentum 0.9 unless ``lr`` is given); see the model's docstring;
- not in the paper, for speed: each epoch a training sequence longer than ``max_frames`` (500 frames = 5 s by
  default) is cut to a random window of that many frames, a new window every epoch; validation uses whole sequences;
- deterministic for a seed: ``torch.manual_seed(seed)`` before the model is built (its initial weights) and a
  ``torch.Generator`` seeded with ``seed`` for the batch order, the crops and the input noise.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from sermodels.layers.masks import sequence_mask
from sermodels.models.enhancer import (
    ADAM_LR,
    PAPER_BATCH_SIZE,
    PAPER_LR,
    PAPER_MAX_EPOCHS,
    PAPER_MOMENTUM,
    PAPER_PATIENCE,
    BLSTMEnhancer,
)

Frames = Sequence[np.ndarray | Tensor]

#: Not in the paper: the longest training window per sequence and epoch (500 frames of 10 ms = 5 s).
MAX_TRAIN_FRAMES = 500
#: Sequences per forward pass when measuring the MSE (no gradients, so larger than a training batch).
EVAL_BATCH_SIZE = 64
OPTIMIZERS = ("adam", "sgd")


def as_tensors(frames: Frames, dim: int | None, what: str) -> list[Tensor]:
    """Float32 ``(T_i, dim)`` tensors, each with at least one frame."""
    tensors = [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in frames]
    if not tensors:
        raise ValueError(f"{what} is empty")
    dim = tensors[0].shape[-1] if dim is None else dim
    for i, x in enumerate(tensors):
        if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] != dim:
            raise ValueError(f"{what}[{i}] must be (frames >= 1, {dim}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what}[{i}] holds NaN or Inf values")
    return tensors


def paired(noisy: Frames, clean: Frames, dim: int | None, what: str) -> tuple[list[Tensor], list[Tensor]]:
    """The two lists as tensors, checked to pair up frame for frame."""
    noisy_t, clean_t = as_tensors(noisy, dim, f"noisy_{what}"), as_tensors(clean, dim, f"clean_{what}")
    if len(noisy_t) != len(clean_t):
        raise ValueError(f"noisy_{what} has {len(noisy_t)} sequences but clean_{what} has {len(clean_t)}")
    for i, (x, y) in enumerate(zip(noisy_t, clean_t)):
        if x.shape != y.shape:
            raise ValueError(f"sequence {i} of {what}: noisy {tuple(x.shape)} and clean {tuple(y.shape)} differ")
    return noisy_t, clean_t


def padded(sequences: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """``(B, T_max, dim)`` zero-padded batch and the lengths ``(B,)``."""
    lengths = torch.tensor([len(x) for x in sequences], dtype=torch.long, device=device)
    return pad_sequence(sequences, batch_first=True).to(device), lengths


def masked_mse(predicted: Tensor, target: Tensor, lengths: Tensor) -> tuple[Tensor, int]:
    """Mean squared error over the valid frames and all features, and the number of values it averages."""
    mask = sequence_mask(lengths, predicted.shape[1]).unsqueeze(-1).to(predicted.dtype)
    count = int(lengths.sum()) * predicted.shape[-1]
    return ((predicted - target).square() * mask).sum() / count, count


def random_crop(noisy: Tensor, clean: Tensor, max_frames: int | None, generator: torch.Generator):
    """The same random window of at most ``max_frames`` frames of both sequences."""
    if max_frames is None or len(noisy) <= max_frames:
        return noisy, clean
    start = int(torch.randint(len(noisy) - max_frames + 1, (1,), generator=generator))
    return noisy[start : start + max_frames], clean[start : start + max_frames]


@torch.no_grad()
def feature_mse(
    model: BLSTMEnhancer, noisy: Frames, clean: Frames, *, enhance: bool = True, device: str | torch.device = "cpu"
) -> float:
    """Frame-weighted MSE in the model's standardised clean space between the clean MFCCs and the model's enhanced
    MFCCs of ``noisy`` (``enhance=False``: the noisy MFCCs as they are, the identity baseline)."""
    noisy_t, clean_t = paired(noisy, clean, model.n_mfcc, "eval")
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(noisy_t), EVAL_BATCH_SIZE):
        x, lengths = padded(noisy_t[start : start + EVAL_BATCH_SIZE], torch.device(device))
        y, _ = padded(clean_t[start : start + EVAL_BATCH_SIZE], torch.device(device))
        z = model.enhance_standardised(model.noisy_stats(x), lengths) if enhance else model.clean_stats(x)
        loss, n = masked_mse(z, model.clean_stats(y), lengths)
        total, count = total + float(loss) * n, count + n
    return total / count


def make_optimizer(model: BLSTMEnhancer, name: str, lr: float | None) -> torch.optim.Optimizer:
    """Adam (default lr :data:`ADAM_LR`) or the paper's SGD with momentum 0.9 (default lr 1e-6)."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=ADAM_LR if lr is None else lr)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=PAPER_LR if lr is None else lr, momentum=PAPER_MOMENTUM)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def train_epoch(
    model: BLSTMEnhancer,
    optimizer: torch.optim.Optimizer,
    data: tuple[list[Tensor], list[Tensor]],
    batch_size: int,
    max_frames: int | None,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    """One pass over the training pairs in a random order; returns the frame-weighted training MSE."""
    model.train()
    noisy, clean = data
    total, count = 0.0, 0
    order = torch.randperm(len(noisy), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        pairs = [random_crop(noisy[i], clean[i], max_frames, generator) for i in order[start : start + batch_size]]
        x, lengths = padded([p[0] for p in pairs], device)
        y, _ = padded([p[1] for p in pairs], device)
        predicted = model.enhance_standardised(model.noisy_stats(x), lengths, generator)
        loss, n = masked_mse(predicted, model.clean_stats(y), lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * n, count + n
    return total / count


def fit_enhancer(
    noisy_train: Frames,
    clean_train: Frames,
    noisy_dev: Frames,
    clean_dev: Frames,
    *,
    max_epochs: int = PAPER_MAX_EPOCHS,
    patience: int = PAPER_PATIENCE,
    batch_size: int = PAPER_BATCH_SIZE,
    optimizer: str = "adam",
    lr: float | None = None,
    seed: int = 0,
    input_noise: float | None = None,
    max_frames: int | None = MAX_TRAIN_FRAMES,
    model_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[BLSTMEnhancer, list[dict[str, float]]]:
    """Train a :class:`~sermodels.models.enhancer.BLSTMEnhancer` on paired ``(T_i, n_mfcc)`` MFCC arrays.

    ``model_kwargs`` are the model's constructor arguments (its front-end must give ``n_mfcc`` features like the
    arrays); ``input_noise`` overrides the model's (§3.4.2: 0.1). Returns the model with the weights of the best
    validation MSE, in eval mode on ``device``, and one record per epoch: ``epoch``, ``train_mse``, ``dev_mse``
    (both in the standardised clean space).
    """
    if max_epochs < 1 or patience < 1 or batch_size < 1:
        raise ValueError(
            f"max_epochs, patience and batch_size must be >= 1, got {max_epochs}, {patience}, {batch_size}"
        )
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    kwargs = dict(model_kwargs or {})
    if input_noise is not None:
        kwargs["input_noise"] = input_noise
    torch.manual_seed(seed)
    model = BLSTMEnhancer(**kwargs).to(device)
    train = paired(noisy_train, clean_train, model.n_mfcc, "train")
    paired(noisy_dev, clean_dev, model.n_mfcc, "dev")
    model.noisy_stats.fit(torch.cat(train[0]).to(device))
    model.clean_stats.fit(torch.cat(train[1]).to(device))
    generator = torch.Generator().manual_seed(seed)
    optim = make_optimizer(model, optimizer, lr)
    history: list[dict[str, float]] = []
    best, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, max_epochs + 1):
        train_mse = train_epoch(model, optim, train, batch_size, max_frames, generator, torch.device(device))
        dev_mse = feature_mse(model, noisy_dev, clean_dev, device=device)
        history.append({"epoch": epoch, "train_mse": train_mse, "dev_mse": dev_mse})
        if dev_mse < best:
            best, best_state, stale = dev_mse, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), history
