"""Masks and valid lengths of padded batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sermodels.layers.masks import conv_lengths, halve, sequence_mask, time_mask


def test_sequence_mask_marks_the_valid_steps():
    mask = sequence_mask(torch.tensor([3, 0, 5]), 5)
    assert mask.dtype == torch.bool and mask.shape == (3, 5)
    assert mask.tolist() == [
        [True, True, True, False, False],
        [False] * 5,
        [True] * 5,
    ]


def test_time_mask_broadcasts_over_channels_and_frequency():
    mask = time_mask(torch.tensor([2, 4]), 4)
    assert mask.shape == (2, 1, 1, 4) and mask.dtype == torch.float32
    assert mask[:, 0, 0].tolist() == [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation"), [(3, 2, 1, 1), (1, 2, 0, 1), (5, 1, 0, 1), (4, 3, 2, 2), (80, 4, 0, 1)]
)
def test_conv_lengths_is_the_convolutions_own_output_size(kernel, stride, padding, dilation):
    """Each length against the width a real ``conv1d`` gives an input of that many steps."""
    lengths = torch.arange(1, 120)
    got = conv_lengths(lengths, kernel, stride, padding, dilation)
    for n, out in zip(lengths.tolist(), got.tolist()):
        span = dilation * (kernel - 1) + 1
        if n + 2 * padding < span:
            assert out == 0
            continue
        y = F.conv1d(torch.zeros(1, 1, n), torch.zeros(1, 1, kernel), stride=stride, padding=padding, dilation=dilation)
        assert out == y.shape[-1], (n, kernel, stride, padding, dilation)


def test_halve_is_a_stride_two_kernel_three_convolution():
    lengths = torch.arange(1, 50)
    assert torch.equal(halve(lengths), conv_lengths(lengths, 3, 2, 1))
    assert torch.equal(halve(lengths), conv_lengths(lengths, 1, 2, 0))
    assert halve(torch.tensor([1, 2, 7, 8])).tolist() == [1, 1, 4, 4]
