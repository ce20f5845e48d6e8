"""The feature autoencoder of medoid-based active learning (MAL): 600 log-mel functionals -> 32-d codes.

Paper: the NICU paper (Vaaras et al., Interspeech 2021: SER for daylong child-centred NICU recordings; our copy,
../shared/papers/nicu_ser_cross_corpus_wda_active_learning.txt, has no title page),
§2.1 (a six-layer DNN autoencoder compresses the 600-d features of
§4.1 to 32 dimensions, whose Pearson distances feed k-medoids) and §4.2.1 (the architecture and its training):

* encoder FC512-ELU, FC512-ELU, FC32-ELU; decoder FC512-ELU, FC512-ELU and a linear FC600 reconstruction layer;
  "the first two AE layers had a dropout of 0.1" (§4.2.1);
* MSE loss, Adam with lr 1e-4, batch size 1024, early stopping with a patience of 300 on a random 80:20
  train/validation split of the utterances; the best model by validation loss encodes the data (§4.2.1).

Choices made here, and where this departs from the paper:

* Dropout 0.1 follows each 512-unit layer of the encoder **and** of the decoder (our issue's spec, mirroring the
  encoder); the paper's "first two AE layers" names only the encoder's.
* Inputs are z-scored with statistics of the whole pool before training (the paper z-scores each corpus's features,
  §4.1); the fitted :class:`~sermodels.features.Standardizer` lives inside the model, so :func:`encode` takes raw
  features. The loss compares the reconstruction with the z-scored input.
* The default patience is :data:`DEFAULT_PATIENCE` (ours), not the paper's 300 (:data:`NICU_AE_PATIENCE`): the paper
  counted epochs of 81k utterances (~80 steps each), while a pool of a few thousand utterances makes a handful of
  steps per epoch. :data:`DEFAULT_MAX_EPOCHS` (ours) bounds the run; the paper gives no maximum.
* Deterministic for a given ``seed``: a ``torch.Generator`` draws the initial weights (PyTorch's default ``nn.Linear``
  scheme), the validation split and the batch order; dropout masks come from the global generator seeded inside
  ``torch.random.fork_rng``, so the caller's random state is left untouched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..features import Standardizer

# Defaults from the NICU paper.
NICU_FEATURE_DIM = 600  # §4.1: 7 x 40 + 4 x 40 x 2 log-mel functionals
NICU_AE_HIDDEN = (512, 512)  # §4.2.1: encoder "512, 512, and 32 units", decoder "two 512-unit ELU layers"
NICU_AE_CODE_DIM = 32  # §2.1 / §4.2.1: "32-dimensional latent representation"
NICU_AE_DROPOUT = 0.1  # §4.2.1: "a dropout of 0.1"
NICU_AE_LR = 1e-4  # §4.2.1: Adam, "lr = 10^-4"
NICU_AE_BATCH_SIZE = 1024  # §4.2.1
NICU_AE_VAL_FRACTION = 0.2  # §4.2.1: "a random split of the training set using a ratio of 80:20"
NICU_AE_PATIENCE = 300  # §4.2.1, in epochs of ~81k utterances; not our default, see the module docstring
# Ours (the paper gives no maximum, and its patience assumes a large pool):
DEFAULT_MAX_EPOCHS = 300
DEFAULT_PATIENCE = 20


class FeatureAutoencoder(nn.Module):
    """Raw features ``(B, input_dim)`` -> z-scored reconstruction ``(B, input_dim)``; :meth:`encode` -> ``(B, 32)``.

    ``standardizer`` holds the z-score statistics of the pool (fitted by :func:`fit_autoencoder`); both
    :meth:`encode` and :meth:`forward` apply it first.
    """

    def __init__(
        self,
        input_dim: int = NICU_FEATURE_DIM,
        hidden: tuple[int, ...] = NICU_AE_HIDDEN,
        code_dim: int = NICU_AE_CODE_DIM,
        dropout: float = NICU_AE_DROPOUT,
    ):
        super().__init__()
        self.standardizer = Standardizer(input_dim)
        self.encoder = _mlp([input_dim, *hidden, code_dim], dropout, last_activation=True)
        self.decoder = _mlp([code_dim, *reversed(hidden), input_dim], dropout, last_activation=False)

    @property
    def input_dim(self) -> int:
        return self.standardizer.dim

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw every Linear layer with PyTorch's default scheme, from ``generator`` (reproducible)."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def encode(self, features: Tensor) -> Tensor:
        """Raw features ``(B, input_dim)`` -> codes ``(B, code_dim)``."""
        return self.encoder(self.standardizer(features))

    def forward(self, features: Tensor) -> Tensor:
        """Raw features ``(B, input_dim)`` -> reconstruction of the z-scored features ``(B, input_dim)``."""
        return self.decoder(self.encode(features))


@dataclass
class TrainingHistory:
    """Mean MSE per epoch on the training and validation rows, and the epoch (0-based) whose weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def epochs(self) -> int:
        return len(self.train_loss)


def fit_autoencoder(
    features: np.ndarray | Tensor,
    *,
    seed: int = 0,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    batch_size: int = NICU_AE_BATCH_SIZE,
    lr: float = NICU_AE_LR,
    val_fraction: float = NICU_AE_VAL_FRACTION,
    hidden: tuple[int, ...] = NICU_AE_HIDDEN,
    code_dim: int = NICU_AE_CODE_DIM,
    dropout: float = NICU_AE_DROPOUT,
    device: torch.device | str = "cpu",
) -> tuple[FeatureAutoencoder, TrainingHistory]:
    """Train a :class:`FeatureAutoencoder` on ``features (N, D)`` (N >= 2) and return it (eval mode) and its history.

    A random ``val_fraction`` of the rows (at least one, at most N - 1) is held out; training stops after
    ``patience`` epochs without a lower validation loss, or after ``max_epochs``, and the weights of the best
    validation epoch are restored.
    """
    data = as_feature_matrix(features)
    n_rows, dim = data.shape
    if n_rows < 2:
        raise ValueError(f"the autoencoder needs at least 2 rows (one to train, one to validate), got {n_rows}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_epochs < 1 or patience < 1 or batch_size < 1:
        raise ValueError(
            f"max_epochs, patience and batch_size must be >= 1, got {max_epochs}, {patience}, {batch_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    model = FeatureAutoencoder(dim, hidden, code_dim, dropout)
    model.reset_parameters(generator)
    model.standardizer.fit(data)
    n_val = min(max(1, round(val_fraction * n_rows)), n_rows - 1)
    permutation = torch.randperm(n_rows, generator=generator)
    val, train = data[permutation[:n_val]].to(device), data[permutation[n_val:]].to(device)
    model.to(device)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global CPU generator
        torch.manual_seed(seed)
        history = _train(model, train, val, generator, max_epochs, patience, batch_size, lr)
    return model.eval(), history


@torch.no_grad()
def encode(model: FeatureAutoencoder, features: np.ndarray | Tensor, batch_size: int = 8192) -> np.ndarray:
    """Raw features ``(N, D)`` -> codes ``(N, code_dim)`` float32 numpy, in eval mode (no dropout)."""
    data = as_feature_matrix(features)
    if data.shape[1] != model.input_dim:
        raise ValueError(f"the autoencoder takes {model.input_dim} features, got {data.shape[1]}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    codes = [model.encode(chunk.to(device)).cpu() for chunk in data.split(batch_size)]
    model.train(was_training)
    return torch.cat(codes).numpy()


def as_feature_matrix(features: np.ndarray | Tensor) -> Tensor:
    """``(N, D)`` array or tensor -> float32 CPU tensor; a NaN/Inf raises, naming the first offending rows."""
    data = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
    if data.dim() != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"features must be a non-empty (N, D) matrix, got shape {tuple(data.shape)}")
    if not (data.is_floating_point() or data.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"features must be numeric, got {data.dtype}")
    data = data.detach().to("cpu", torch.float32)
    bad = (~torch.isfinite(data)).any(dim=1).nonzero().flatten()
    if len(bad):
        rows = bad[:10].tolist()
        raise ValueError(f"features contain NaN/Inf in {len(bad)} row(s); first rows: {rows}")
    return data


def _mlp(sizes: list[int], dropout: float, last_activation: bool) -> nn.Sequential:
    """Linear-ELU-Dropout blocks between consecutive ``sizes``; the last block has ELU only if ``last_activation``
    and never dropout."""
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        last = index == len(sizes) - 2
        if not last or last_activation:
            layers.append(nn.ELU())
        if not last and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _train(
    model: FeatureAutoencoder,
    train: Tensor,
    val: Tensor,
    generator: torch.Generator,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
) -> TrainingHistory:
    """Adam on the MSE between the reconstruction and the z-scored input, with early stopping on ``val``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_targets, val_targets = model.standardizer(train), model.standardizer(val)
    history = TrainingHistory()
    best_loss, best_state = math.inf, copy.deepcopy(model.state_dict())
    for epoch in range(max_epochs):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(train), generator=generator).split(batch_size):
            loss = nn.functional.mse_loss(model(train[batch]), train_targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.train_loss.append(total / len(train))
        model.eval()
        with torch.no_grad():
            history.val_loss.append(nn.functional.mse_loss(model(val), val_targets).item())
        if history.val_loss[-1] < best_loss:
            best_loss, history.best_epoch = history.val_loss[-1], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return history
