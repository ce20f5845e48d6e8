"""Precision names and the weights digest."""

from __future__ import annotations

import pytest
import torch

from sermodels.runtime import autocast, autocast_dtype, weights_digest


def test_precision_names():
    assert autocast_dtype("fp32", "cpu") is None and autocast_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast_dtype("fp8", "cpu")
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16


def test_weights_digest_follows_every_tensor():
    """Equal weights, equal digest; another seed, one changed weight or one BN running statistic: another digest."""
    import timm

    nets = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        nets.append(timm.create_model("resnet18"))
    digests = [weights_digest(net) for net in nets]
    assert digests[0] == digests[1] != digests[2] and len(digests[0]) == 64
    net = nets[2]
    with torch.no_grad():
        net.fc.weight[0, 0] += 1e-6
    changed = weights_digest(net)
    net.bn1.running_mean[0] += 1e-6
    assert len({digests[2], changed, weights_digest(net)}) == 3
