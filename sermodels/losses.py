"""Training losses shared by the task regimes: weighted cross-entropy, the CCC family, MSE and reconstruction, and the
Wasserstein critic with its gradient penalty.

Provenance
- Concordance correlation coefficient (Lin, Biometrics 1989) as a training objective: MixedEmotions deliverable
  D4.2, §4.3, Eq. (2)–(3) ("ΣCCC", the CCC of each training sequence, summed over the mini-batch's sequences and
  target dimensions; and the "total" CCC of all frames taken as one sequence) and §5.2.2 (the end-to-end conv +
  BLSTM model trained with the same objective); ``ρc = 2 Cov(x, y) / (Var x + Var y + (E x − E y)²)`` with the
  sample moments of the sequence (population, 1/N). AV-SpNET (Lu, Li, Lee, AVEC 2018, §2.3) trains its front-end on
  a reconstruction MSE plus a proxy-label cross-entropy.
- Reconstruction: D4.2 §3.3, Eq. (9), the MSE between enhanced and clean features over all frames; AV-SpNET's
  ``L_m``.
- Wasserstein critic: the NICU paper (Interspeech), §2.2, Eq. (3)–(4), following WDGRL (Shen et al., AAAI 2018, its
  ref. [18]): a critic ``C_D`` estimates the Wasserstein-1 distance between source and target features; the critic
  and the feature extractor are updated in turns. WDGRL keeps the critic 1-Lipschitz with a gradient penalty on
  random interpolates of source and target features (Gulrajani et al., NeurIPS 2017); the NICU paper does not state
  the penalty or its weight (the task takes the weight as an argument).

Conventions and departures
- Means, not sums: D4.2 Eq. (2) and NICU Eq. (3)–(4) sum over sequences or samples; every loss here averages, so
  its scale does not depend on the batch size (the same minimiser, a learning rate that transfers between batches).
- Signs of the critic: we follow WDGRL, the critic *maximises* ``mean C(source) − mean C(target)``, so
  :func:`wasserstein_critic_loss` returns its negative, and the feature extractor minimises the estimate (for a
  frozen source branch: maximises ``mean C(target)``). NICU Eq. (3) writes the same game with the critic's sign
  flipped (the critic minimises ``Σ C(source) − Σ C(target)``, the extractor minimises ``Σ C(target)``), which is
  the same training with ``C`` replaced by ``−C``.
- Masks: a ``mask`` has the shape of the prediction without its last (dimension) axis — ``(B, T)`` for frame-level
  ``(B, T, D)`` outputs, ``(B,)`` for utterance-level ``(B, D)`` ones — and True marks valid rows/frames. Masked
  values never reach a loss, even NaN ones.
- Degenerate CCC: a constant prediction of a varying target (or the reverse) has zero covariance and CCC 0, as Lin
  defines it. When prediction and target are both constant and equal the coefficient is 0/0; we define it as 1
  (perfect agreement), as :func:`sermodels.metrics.ccc` does, with zero gradient. Otherwise the denominator gets
  ``CCC_EPS``: a relative change below 1e-6 for series with a standard deviation above 0.1, and a bounded gradient
  when a sequence barely varies (D4.2 §4.3 notes that ΣCCC is hard to optimise on low-variance sequences).
- Precision: every loss is computed in float32 (float64 inputs stay float64) with autocast disabled, so a bf16 or
  fp16 forward still gets a full-precision loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: Added to the CCC denominator (see the module docstring); far below the variance of any target that is learnt.
CCC_EPS = 1e-8


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _float(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ---------------------------------------------------------------------------------------------------- categories


def inverse_frequency(counts: Tensor) -> Tensor:
    """Class weights ``w_c = N / (C · n_c)`` from class counts ``(classes,)``: N items, C classes present; the
    sample-weighted mean weight is 1, a balanced set gets all ones, an absent class gets 0 (float32)."""
    counts = counts.to(torch.float64)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def weighted_cross_entropy(
    logits: Tensor, labels: Tensor, weight: Tensor | None = None, *, mask: Tensor | None = None
) -> Tensor:
    """Cross-entropy of logits ``(N, C)`` and class indices ``(N,)``, or frame-level logits ``(B, T, C)`` and labels
    ``(B, T)`` with an optional ``mask (B, T)`` of valid frames. ``weight (C,)``: class weights (e.g. inverse class
    frequencies for imbalanced corpora); the mean is weighted as :func:`torch.nn.functional.cross_entropy` weights
    it (divided by the summed weights of the samples' classes). Float32 under autocast."""
    with _full_precision(logits.device):
        logits = _float(logits)
        if logits.dim() == 3:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"frame-level labels must be {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
            if mask is not None:
                _check_mask(mask, logits)
                logits, labels = logits[mask], labels[mask]
            logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        elif mask is not None:
            _check_mask(mask, logits)
            logits, labels = logits[mask], labels[mask]
        if weight is not None:
            weight = weight.to(device=logits.device, dtype=logits.dtype)
        return F.cross_entropy(logits, labels, weight=weight)


# ---------------------------------------------------------------------------------------------------- CCC family


def ccc(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Concordance correlation coefficient per dimension, ``(D,)``, of everything pooled: utterance-level
    ``(B, D)`` rows (``mask (B,)`` optional), or all valid frames of frame-level ``(B, T, D)`` outputs
    (``mask (B, T)``; without it every frame counts). A 1-D input is one dimension. Differentiable."""
    pred, target = _as_rows(pred, target)
    with _full_precision(pred.device):
        x, y = _float(pred), _float(target).to(_float(pred).dtype)
        weights = _mask_weights(mask, x)  # (..., 1)
        count = weights.flatten().sum()
        if not bool(count > 0):
            raise ValueError("ccc needs at least one valid value; the mask selects none")
        dims = tuple(range(x.dim() - 1))
        return _concordance(x, y, weights, dims)


def ccc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``mean_d (1 − CCC_d)`` over everything pooled (the "total CCC" objective, D4.2 §4.3): every valid frame of
    the batch is one series per dimension. Shapes as :func:`ccc`."""
    return (1.0 - ccc(pred, target, mask)).mean()


def sequence_ccc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``1 − mean_{i, d} CCC_{i, d}``: each sequence ``i``'s own CCC per dimension ``d`` (D4.2 §4.3, Eq. (2)–(3),
    "ΣCCC", averaged instead of summed). ``pred``/``target (B, T, D)``, ``mask (B, T)`` of valid frames (None: all).
    Sequences without a valid frame are left out of the mean; a batch without any is an error."""
    if pred.dim() != 3 or pred.shape != target.shape:
        raise ValueError(
            f"sequence_ccc_loss needs frame-level pred and target of one shape (B, T, D), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    with _full_precision(pred.device):
        x, y = _float(pred), _float(target).to(_float(pred).dtype)
        weights = _mask_weights(mask, x)  # (B, T, 1)
        frames = weights.sum(dim=1)  # (B, 1)
        present = (frames > 0).to(x.dtype)
        sequences = present.sum()
        if not bool(sequences > 0):
            raise ValueError("sequence_ccc_loss needs at least one sequence with a valid frame")
        per_sequence = _concordance(x, y, weights, dims=(1,))  # (B, D)
        return 1.0 - (per_sequence * present).sum() / (sequences * x.shape[-1])


def _concordance(x: Tensor, y: Tensor, weights: Tensor, dims: tuple[int, ...]) -> Tensor:
    """CCC over ``dims`` with 0/1 ``weights`` (broadcast over the last axis); masked values are zeroed first, so a
    NaN in the padding cannot reach the result or its gradient."""
    keep = weights > 0
    x, y = torch.where(keep, x, 0.0), torch.where(keep, y, 0.0)
    count = weights.sum(dim=dims).clamp(min=1.0)
    mean_x, mean_y = (x * weights).sum(dim=dims) / count, (y * weights).sum(dim=dims) / count
    dx = (x - mean_x.view(_kept_shape(x, dims))) * weights
    dy = (y - mean_y.view(_kept_shape(y, dims))) * weights
    var_x, var_y = dx.square().sum(dim=dims) / count, dy.square().sum(dim=dims) / count
    cov = (dx * dy).sum(dim=dims) / count
    denominator = var_x + var_y + (mean_x - mean_y).square()
    defined = denominator > 0
    value = 2.0 * cov / torch.where(defined, denominator + CCC_EPS, torch.ones_like(denominator))
    return torch.where(defined, value, torch.ones_like(value))  # both constant and equal: perfect agreement


def _kept_shape(x: Tensor, dims: tuple[int, ...]) -> list[int]:
    return [1 if axis in dims else size for axis, size in enumerate(x.shape)]


# ---------------------------------------------------------------------------------------------------- squared errors


def mse_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the valid values: ``(B, D)`` with ``mask (B,)``, or ``(B, T, D)`` with ``mask (B, T)``
    (the mean over valid frames and dimensions). D4.2 §4.3, Eq. (1) (as a mean)."""
    return _masked_mean_square(pred, target, mask, "mse_loss")


def reconstruction_loss(recon: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared reconstruction error over valid frames (D4.2 §3.3 Eq. (9); AV-SpNET's ``L_m``): ``(B, T, F)``
    features with ``mask (B, T)``, or any shape with a mask over its leading axes (``(B, T)`` for ``(B, T, ...)``)
    or one that broadcasts to it (``(B, 1, 1, T)`` for ``(B, C, F, T)`` spectrogram images)."""
    return _masked_mean_square(recon, target, mask, "reconstruction_loss")


def _masked_mean_square(pred: Tensor, target: Tensor, mask: Tensor | None, name: str) -> Tensor:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ, {tuple(pred.shape)} and {tuple(target.shape)}")
    with _full_precision(pred.device):
        x, y = _float(pred), _float(target).to(_float(pred).dtype)
        if mask is None:
            return F.mse_loss(x, y)
        keep = _expand_mask(mask, x, name)
        count = keep.sum()
        if not bool(count > 0):
            raise ValueError(f"{name} needs at least one valid value; the mask selects none")
        error = torch.where(keep, x - y, 0.0)
        return error.square().sum() / count


def _expand_mask(mask: Tensor, like: Tensor, name: str) -> Tensor:
    mask = mask.to(device=like.device, dtype=torch.bool)
    if mask.dim() <= like.dim() and mask.shape == like.shape[: mask.dim()]:
        return mask.reshape(*mask.shape, *([1] * (like.dim() - mask.dim()))).expand_as(like)
    try:
        return mask.expand_as(like)
    except RuntimeError:
        raise ValueError(
            f"{name}: mask of shape {tuple(mask.shape)} neither covers the leading axes of nor broadcasts to "
            f"{tuple(like.shape)}"
        ) from None


# ---------------------------------------------------------------------------------------------------- adaptation


def wasserstein_estimate(critic_source: Tensor, critic_target: Tensor) -> Tensor:
    """The critic's estimate of the Wasserstein-1 distance, ``mean C(source) − mean C(target)`` (WDGRL; NICU §2.2):
    what the critic maximises and the feature extractor minimises."""
    with _full_precision(critic_source.device):
        return _float(critic_source).mean() - _float(critic_target).mean()


def wasserstein_critic_loss(critic_source: Tensor, critic_target: Tensor) -> Tensor:
    """The critic's loss to minimise: ``mean C(target) − mean C(source)``, the negative of
    :func:`wasserstein_estimate` (NICU §2.2 Eq. (3) up to the critic's sign, see the module docstring). Critic
    outputs of any shape (``(N,)`` or ``(N, 1)``); the two batches may differ in size."""
    return -wasserstein_estimate(critic_source, critic_target)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], source: Tensor, target: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP (Gulrajani et al., 2017) as WDGRL trains its critic: ``mean (‖∇ C(x̂)‖₂ − 1)²`` at
    ``x̂ = α source + (1 − α) target``, one ``α ~ U(0, 1)`` per pair.

    ``source (N, ...)`` and ``target (M, ...)`` features are paired row by row (the first ``min(N, M)`` of each) and
    detached: the penalty trains the critic only (WDGRL's extractor step has no penalty term). The gradient is taken
    with ``create_graph`` so that the penalty itself can be back-propagated into the critic's parameters."""
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source and target features differ in shape: {tuple(source.shape)}, {tuple(target.shape)}")
    rows = min(len(source), len(target))
    if rows == 0:
        raise ValueError("gradient_penalty needs at least one source and one target row")
    src, tgt = _float(source[:rows].detach()), _float(target[:rows].detach()).to(_float(source).dtype)
    shape = (rows,) + (1,) * (src.dim() - 1)
    alpha = torch.rand(shape, generator=generator, device=generator.device if generator else src.device)
    mixed = (tgt + alpha.to(device=src.device, dtype=src.dtype) * (src - tgt)).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(mixed)
        (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    with _full_precision(grad.device):
        norms = _float(grad).flatten(1).norm(dim=1)
        return (norms - 1.0).square().mean()


# ---------------------------------------------------------------------------------------------------- helpers


def _as_rows(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() == 1:
        return pred[:, None], target[:, None]
    if pred.dim() not in (2, 3):
        raise ValueError(f"expected (B, D) or (B, T, D) values, got shape {tuple(pred.shape)}")
    return pred, target


def _check_mask(mask: Tensor, values: Tensor) -> None:
    if mask.dtype != torch.bool or mask.shape != values.shape[:-1]:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(values.shape[:-1])} (the values without their last axis), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


def _mask_weights(mask: Tensor | None, values: Tensor) -> Tensor:
    """``(..., 1)`` 0/1 weights in ``values``' dtype: ones without a mask."""
    if mask is None:
        return torch.ones((*values.shape[:-1], 1), device=values.device, dtype=values.dtype)
    _check_mask(mask, values)
    return mask.to(device=values.device, dtype=values.dtype).unsqueeze(-1)
