"""The residual-adapter blocks on their own: a clip's feature map in a padded batch equals the clip alone, output
sizes, the dense head. (EmoNet's layer table, fused adapters and domains are tested in tests/test_emonet_model.py.)"""

from __future__ import annotations

import torch
from torch import nn

from sermodels.layers.adapters import AdaptedConv, ResidualBlock
from sermodels.layers.heads import DenseHead
from sermodels.layers.masks import time_mask


def _trained_looking(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            if isinstance(m, AdaptedConv):
                for adapter in m.adapters.values():
                    adapter.copy_(0.1 * torch.randn(adapter.shape, generator=gen))
    return module.eval()


def test_residual_block_on_a_padded_batch_equals_each_clip_alone():
    """Clips of 9 and 4 steps; in eval mode every valid step of the padded batch's output is the clip's own."""
    torch.manual_seed(0)
    block = _trained_looking(ResidualBlock(3, 6, 2, ["a", "b"], adapters=True))
    long, short = torch.randn(1, 3, 5, 9), torch.randn(1, 3, 5, 4)
    batch = torch.zeros(2, 3, 5, 9)
    batch[0], batch[1, ..., :4] = long[0], short[0]
    out, valid = block(batch, torch.tensor([9, 4]), "b")
    assert out.shape == (2, 6, 3, 5) and valid.tolist() == [5, 2]
    alone_long, _ = block(long, torch.tensor([9]), "b")
    alone_short, _ = block(short, torch.tensor([4]), "b")
    torch.testing.assert_close(out[0], alone_long[0])
    torch.testing.assert_close(out[1, ..., :2], alone_short[0])
    assert (out[1, ..., 2:] == 0).all()


def test_adapted_conv_uses_the_named_domains_adapter_and_bn():
    torch.manual_seed(0)
    conv = _trained_looking(AdaptedConv(2, 4, 1, ["a", "b"], adapters=True))
    x = torch.randn(1, 2, 6, 6)
    assert not torch.allclose(conv(x, "a"), conv(x, "b"))
    conv.add_domain("c", like="b", copy_adapter=True)
    conv.eval()
    torch.testing.assert_close(conv(x, "c"), conv(x, "b"))
    plain = AdaptedConv(2, 4, 2, ["a"], adapters=False)
    assert len(plain.adapters) == 0 and plain(x, "a").shape == (1, 4, 3, 3)


def test_residual_block_gradients_reach_every_parameter():
    torch.manual_seed(0)
    block = ResidualBlock(2, 2, 1, ["a"], adapters=True).train()
    x = (torch.randn(2, 2, 4, 6) * time_mask(torch.tensor([6, 3]), 6)).requires_grad_(True)
    out, _ = block(x, torch.tensor([6, 3]), "a")
    out.sum().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_dense_head_shapes_and_layout():
    head = DenseHead(8, 5, 3, dropout=0.2)
    assert head(torch.randn(4, 8)).shape == (4, 3)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    assert sorted(head.state_dict())[:2] == ["0.bias", "0.weight"] and "4.weight" in head.state_dict()
