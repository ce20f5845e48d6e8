"""Training losses against hand-computed values and numpy: the CCC family (total and per sequence, masks, degenerate
series), cross-entropy (weights, frames, autocast), MSE/reconstruction, the Wasserstein critic and its gradient
penalty; gradients finite (and checked numerically where the formula has a division)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sermodels import losses, metrics


def _numpy_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's CCC with population moments, written out in numpy."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def _frames(seed: int = 0, lengths=(9, 4, 6, 1)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correlated frame-level predictions and targets ``(B, T, 2)`` with NaN in the padding, and the mask."""
    gen = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    target = torch.randn(len(lengths), steps, 2, generator=gen, dtype=torch.float64)
    pred = 0.7 * target + 0.3 + 0.5 * torch.randn(target.shape, generator=gen, dtype=torch.float64)
    mask = torch.arange(steps)[None] < torch.tensor(lengths)[:, None]
    pred[~mask], target[~mask] = float("nan"), float("nan")
    return pred, target, mask


# ---------------------------------------------------------------------------------------------------- CCC


def test_ccc_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert losses.ccc(x, x).item() == pytest.approx(1.0, abs=1e-6)
    # y = 2x: means 2 and 4, variances 2/3 and 8/3, covariance 4/3 -> (8/3) / (2/3 + 8/3 + 4) = 8 / 22
    assert losses.ccc(x, 2 * x).item() == pytest.approx(8 / 22, abs=1e-6)
    # y = x + 1: (4/3) / (4/3 + 1) = 4 / 7
    assert losses.ccc(x, x + 1).item() == pytest.approx(4 / 7, abs=1e-6)
    # y = -x: covariance -2/3, means 2 and -2 -> (-4/3) / (4/3 + 16) = -1/13; centred, exactly -1
    assert losses.ccc(x, -x).item() == pytest.approx(-1 / 13, abs=1e-6)
    assert losses.ccc(x - 2, 2 - x).item() == pytest.approx(-1.0, abs=1e-6)
    both = losses.ccc(torch.stack([x, x], 1), torch.stack([2 * x, x + 1], 1))
    assert both.shape == (2,) and both.tolist() == pytest.approx([8 / 22, 4 / 7], abs=1e-6)
    assert losses.ccc_loss(torch.stack([x, x], 1), torch.stack([2 * x, x + 1], 1)).item() == pytest.approx(
        1 - (8 / 22 + 4 / 7) / 2, abs=1e-6
    )


def test_total_ccc_pools_every_valid_frame_like_numpy_and_metrics():
    pred, target, mask = _frames()
    got = losses.ccc(pred, target, mask)
    assert got.shape == (2,) and got.dtype == torch.float64
    for d in range(2):
        x, y = pred[..., d][mask].numpy(), target[..., d][mask].numpy()
        assert got[d].item() == pytest.approx(_numpy_ccc(x, y), rel=1e-7)
        assert got[d].item() == pytest.approx(metrics.ccc(x, y), rel=1e-7)
    assert losses.ccc_loss(pred, target, mask).item() == pytest.approx(1 - got.mean().item(), rel=1e-12)


def test_utterance_level_rows_with_and_without_a_mask():
    pred, target, mask = _frames()
    rows_pred, rows_true = pred[:, 0], target[:, 0]  # (B, 2), every row valid
    full = losses.ccc(rows_pred, rows_true)
    for d in range(2):
        assert full[d].item() == pytest.approx(_numpy_ccc(rows_pred[:, d], rows_true[:, d]), rel=1e-7)
    keep = torch.tensor([True, False, True, True])
    partial = losses.ccc(rows_pred, rows_true, keep)
    torch.testing.assert_close(partial, losses.ccc(rows_pred[keep], rows_true[keep]))


def test_sequence_ccc_is_the_mean_of_each_sequences_own_ccc():
    pred, target, mask = _frames()
    per_sequence = [
        [_numpy_ccc(pred[i, : int(n), d], target[i, : int(n), d]) for d in range(2)]
        for i, n in enumerate(mask.sum(1))
        if n > 1
    ]
    # the one-frame sequence: prediction and target differ, the variances are 0 -> CCC 0 (a term of the mean)
    per_sequence.append([0.0, 0.0])
    want = 1 - float(np.mean(per_sequence))
    assert losses.sequence_ccc_loss(pred, target, mask).item() == pytest.approx(want, rel=1e-7)


def test_sequence_ccc_differs_from_total_ccc_on_per_sequence_means():
    """D4.2 Fig. 5.2's point: predicting each sequence's mean scores ΣCCC 0 (loss 1) but a high total CCC.
    Targets (0, 1, 2) and (4, 5, 6), predictions 1 and 5: total CCC = 2·4 / (4 + 14/3) = 12/13."""
    target = torch.tensor([[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]])[..., None]
    pred = torch.tensor([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]])[..., None]
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert losses.sequence_ccc_loss(pred, target, mask).item() == pytest.approx(1.0, abs=1e-6)
    assert losses.ccc(pred, target, mask).item() == pytest.approx(12 / 13, abs=1e-6)
    assert losses.ccc_loss(pred, target).item() == pytest.approx(1 / 13, abs=1e-6)


def test_sequences_without_frames_are_left_out():
    pred, target, mask = _frames()
    emptied = mask.clone()
    emptied[2] = False
    want = losses.sequence_ccc_loss(pred[[0, 1, 3]], target[[0, 1, 3]], mask[[0, 1, 3]])
    torch.testing.assert_close(losses.sequence_ccc_loss(pred, target, emptied), want)
    with pytest.raises(ValueError, match="at least one sequence"):
        losses.sequence_ccc_loss(pred, target, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="at least one valid value"):
        losses.ccc(pred, target, torch.zeros_like(mask))


def test_degenerate_series():
    varying = torch.tensor([0.0, 1.0, 3.0])
    assert losses.ccc(torch.full((3,), 2.0), varying).item() == 0.0  # constant prediction: no covariance
    assert losses.ccc(varying, torch.full((3,), 2.0)).item() == 0.0
    assert losses.ccc(torch.full((3,), 0.5), torch.full((3,), -0.5)).item() == 0.0  # constants, different values
    assert losses.ccc(torch.full((3,), 0.5), torch.full((3,), 0.5)).item() == 1.0  # 0/0: perfect agreement
    assert metrics.ccc([0.5] * 3, [0.5] * 3) == 1.0
    pred = torch.full((2, 3, 1), 0.5, requires_grad=True)
    loss = losses.sequence_ccc_loss(pred, torch.full((2, 3, 1), 0.5), torch.ones(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_ccc_gradients_are_finite_and_exact():
    """Masked NaN padding gives finite gradients (zero in the padding); float64 gradcheck of both objectives."""
    pred, target, mask = _frames()
    pred = pred.clone().requires_grad_(True)
    (losses.ccc_loss(pred, target, mask) + losses.sequence_ccc_loss(pred, target, mask)).backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~mask] == 0).all() and pred.grad[mask].abs().sum() > 0
    clean_pred, clean_target, _ = _frames(seed=1, lengths=(5, 3, 4))
    clean_pred, clean_target = clean_pred.nan_to_num(0.0), clean_target.nan_to_num(0.0)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 4])[:, None]
    x = clean_pred.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: losses.ccc_loss(p, clean_target, mask), (x,))
    assert torch.autograd.gradcheck(lambda p: losses.sequence_ccc_loss(p, clean_target, mask), (x,))


def test_ccc_runs_in_float32_under_autocast():
    pred, target, mask = _frames()
    half, half_target = pred.nan_to_num(0.0).bfloat16(), target.nan_to_num(0.0).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = losses.ccc(half, half_target, mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, losses.ccc(half.float(), half_target.float(), mask))


def test_ccc_shape_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        losses.ccc(torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        losses.ccc(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        losses.sequence_ccc_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------------- cross-entropy


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0], [0.0, 0.0]])  # p1 = 3/4, p0 = 4/5, 1/2
    labels = torch.tensor([1, 0, 1])
    nll = [-math.log(3 / 4), -math.log(4 / 5), -math.log(1 / 2)]
    assert losses.weighted_cross_entropy(logits, labels).item() == pytest.approx(sum(nll) / 3, rel=1e-6)
    weight = torch.tensor([2.0, 0.5])
    want = (0.5 * nll[0] + 2.0 * nll[1] + 0.5 * nll[2]) / (0.5 + 2.0 + 0.5)
    assert losses.weighted_cross_entropy(logits, labels, weight).item() == pytest.approx(want, rel=1e-6)


def test_frame_level_cross_entropy_reads_valid_frames_only():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, generator=gen)
    labels = torch.randint(0, 3, (2, 4), generator=gen)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    logits[~mask] = float("nan")
    got = losses.weighted_cross_entropy(logits, labels, torch.tensor([1.0, 2.0, 3.0]), mask=mask)
    want = losses.weighted_cross_entropy(logits[mask], labels[mask], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="frame-level labels"):
        losses.weighted_cross_entropy(logits, labels[:, :2])


def test_cross_entropy_is_float32_under_autocast_with_finite_gradients():
    logits = torch.randn(6, 4, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    weight = torch.tensor([1.0, 2.0, 1.0, 0.5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = losses.weighted_cross_entropy(logits, labels, weight)
    assert loss.dtype == torch.float32
    want = nn.functional.cross_entropy(logits.detach().float(), labels, weight=weight)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad.float()).all()


# ---------------------------------------------------------------------------------------------------- squared errors


def test_mse_and_reconstruction_over_valid_frames():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (1, 3, 2), the last frame is padding
    target = torch.tensor([[[0.0, 2.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # squared errors of the valid values: 1, 0, 4, 9 -> 14 / 4
    assert losses.mse_loss(pred, target, mask).item() == pytest.approx(3.5)
    assert losses.reconstruction_loss(pred, target, mask).item() == pytest.approx(3.5)
    assert losses.mse_loss(pred, target).item() == pytest.approx((14 + 81 + 81) / 6)
    rows = torch.tensor([[1.0], [5.0], [float("nan")]])
    assert losses.mse_loss(rows, torch.zeros(3, 1), torch.tensor([True, True, False])).item() == pytest.approx(13.0)


def test_reconstruction_of_spectrogram_images_with_a_broadcast_time_mask():
    gen = torch.Generator().manual_seed(0)
    recon, target = torch.randn(2, 1, 4, 6, generator=gen), torch.randn(2, 1, 4, 6, generator=gen)
    valid = torch.tensor([6, 2])
    mask = (torch.arange(6)[None] < valid[:, None])[:, None, None, :]  # (B, 1, 1, T)
    recon[1, ..., 2:] = float("nan")
    want = torch.cat([(recon[0] - target[0]).flatten(), (recon[1, ..., :2] - target[1, ..., :2]).flatten()])
    got = losses.reconstruction_loss(recon, target, mask)
    assert got.item() == pytest.approx(want.square().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="neither covers"):
        losses.reconstruction_loss(recon, target, torch.ones(2, 5, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------------- adaptation


def test_wasserstein_critic_loss_by_hand():
    source, target = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[0.0], [-1.0]])
    assert losses.wasserstein_estimate(source, target).item() == pytest.approx(2.5)
    assert losses.wasserstein_critic_loss(source, target).item() == pytest.approx(-2.5)


def test_critic_loss_trains_the_critic_to_separate_the_domains():
    """A few steps on the critic loss alone raise the estimate between two shifted clouds."""
    torch.manual_seed(0)
    critic = nn.Linear(2, 1)
    source, target = torch.randn(64, 2) + 1.0, torch.randn(64, 2) - 1.0
    optimiser = torch.optim.SGD(critic.parameters(), lr=0.1)
    before = losses.wasserstein_estimate(critic(source), critic(target)).item()
    for _ in range(10):
        optimiser.zero_grad()
        loss = losses.wasserstein_critic_loss(critic(source), critic(target))
        (loss + 10.0 * losses.gradient_penalty(critic, source, target)).backward()
        optimiser.step()
    assert losses.wasserstein_estimate(critic(source), critic(target)).item() > before + 0.5


def test_gradient_penalty_of_a_linear_critic_by_hand():
    """``C(x) = w·x + b`` has gradient ``w`` everywhere: penalty ``(‖w‖ − 1)² = 16`` for w = (3, 4), and its
    gradient with respect to w is ``2 (‖w‖ − 1) w / ‖w‖ = (4.8, 6.4)``; the features get none (detached)."""
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    source = torch.randn(5, 2, requires_grad=True)
    penalty = losses.gradient_penalty(critic, source, torch.randn(3, 2))
    assert penalty.item() == pytest.approx(16.0, rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(critic.weight.grad, torch.tensor([[4.8, 6.4]]))
    assert source.grad is None


def test_gradient_penalty_at_the_interpolates_matches_finite_differences():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    source, target = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    got = losses.gradient_penalty(critic, source, target, generator=torch.Generator().manual_seed(5))
    alpha = torch.rand((4, 1), generator=torch.Generator().manual_seed(5)).double()
    points = target + alpha * (source - target)
    step, norms = 1e-6, []
    with torch.no_grad():
        for point in points:
            grad = [
                (critic(point + step * e) - critic(point - step * e)).item() / (2 * step)
                for e in torch.eye(3, dtype=torch.float64)
            ]
            norms.append(np.linalg.norm(grad))
    assert got.item() == pytest.approx(float(np.mean((np.array(norms) - 1) ** 2)), rel=1e-6)


def test_gradient_penalty_of_a_flat_critic_is_one_with_finite_gradients():
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.zero_()
    penalty = losses.gradient_penalty(critic, torch.randn(3, 2), torch.randn(3, 2))
    penalty.backward()
    assert penalty.item() == pytest.approx(1.0) and torch.isfinite(critic.weight.grad).all()
    with pytest.raises(ValueError, match="differ in shape"):
        losses.gradient_penalty(critic, torch.randn(3, 2), torch.randn(3, 4))
