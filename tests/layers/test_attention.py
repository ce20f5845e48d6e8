"""EmoNet's 2D attention pooling (Eq. 1-4): the equations by hand, padding masked, gradients."""

from __future__ import annotations

import torch

from sermodels.layers.attention import EMONET_SMOOTHING, AttentionPooling


def test_pooling_follows_equations_1_to_4():
    torch.manual_seed(0)
    pool = AttentionPooling(6, units=5)
    features = torch.randn(2, 6, 3, 4)
    pooled, weights = pool(features, torch.tensor([4, 4]))
    assert pooled.shape == (2, 6) and weights.shape == (2, 3, 4)
    x = features[1].flatten(1).T  # (F*T, C), frequency-major
    energy = torch.tanh(x @ pool.project.weight.T + pool.project.bias) @ pool.context.weight[0]
    alpha = torch.softmax(EMONET_SMOOTHING * energy, dim=0)
    torch.testing.assert_close(weights[1].flatten(), alpha)
    torch.testing.assert_close(pooled[1], alpha @ x)


def test_padded_positions_get_no_weight_and_clips_pool_as_alone():
    """Two clips of 5 and 2 time steps in one batch; the padding holds large values that would dominate if read."""
    torch.manual_seed(0)
    pool = AttentionPooling(4, units=8)
    long, short = torch.randn(4, 3, 5), torch.randn(4, 3, 2)
    batch = torch.zeros(2, 4, 3, 5)
    batch[0], batch[1, :, :, :2] = long, short
    batch[1, :, :, 2:] = 100.0
    pooled, weights = pool(batch, torch.tensor([5, 2]))
    assert (weights[1, :, 2:] == 0).all()
    torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2))
    alone_long, _ = pool(long[None], torch.tensor([5]))
    alone_short, _ = pool(short[None], torch.tensor([2]))
    torch.testing.assert_close(pooled[0], alone_long[0])
    torch.testing.assert_close(pooled[1], alone_short[0])


def test_gradients_reach_the_parameters_and_the_valid_features_only():
    torch.manual_seed(0)
    pool = AttentionPooling(4, units=8)
    features = torch.randn(2, 4, 3, 5, requires_grad=True)
    pooled, _ = pool(features, torch.tensor([5, 3]))
    pooled.square().sum().backward()
    for param in pool.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0
    assert (features.grad[1, :, :, 3:] == 0).all() and features.grad[1, :, :, :3].abs().sum() > 0
