"""The FFT convolution against torch's direct one: outputs and both gradients, odd and even kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sermodels.layers.fftconv import FFTConv1d, fast_fft_size


@pytest.mark.parametrize("taps", [1, 2, 7, 80, 401])
def test_matches_conv1d_same_and_its_gradients(taps):
    torch.manual_seed(taps)
    conv = FFTConv1d(3, 5, taps).double()
    x = torch.randn(2, 3, 500, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    grads = x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()
    x.grad = None
    conv.zero_grad()
    left = (taps - 1) // 2
    reference = F.conv1d(F.pad(x, (left, taps - 1 - left)), conv.weight, conv.bias)
    (reference * upstream).sum().backward()
    # the transform runs in float32
    assert out.shape == reference.shape
    torch.testing.assert_close(out.double(), reference, atol=2e-5, rtol=1e-4)
    for mine, theirs in zip(grads, (x.grad, conv.weight.grad, conv.bias.grad)):
        torch.testing.assert_close(mine.double(), theirs, atol=5e-4, rtol=1e-3)


def test_initialisation_matches_conv1d():
    torch.manual_seed(0)
    reference = torch.nn.Conv1d(4, 6, 9)
    torch.manual_seed(0)
    mine = FFTConv1d(4, 6, 9)
    assert torch.equal(mine.weight, reference.weight) and torch.equal(mine.bias, reference.bias)


def test_fast_sizes():
    assert fast_fft_size(51999) == 52488  # 2^3 * 3^8
    assert fast_fft_size(1) == 1 and fast_fft_size(7) == 8 and fast_fft_size(11) == 12
    for n in (13, 97, 1000, 4001):
        size = fast_fft_size(n)
        assert size >= n
        for p in (2, 3, 5):
            while size % p == 0:
                size //= p
        assert size == 1


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="expected \\(batch, 3, time\\)"):
        FFTConv1d(3, 2, 5)(torch.zeros(1, 4, 10))
    with pytest.raises(ValueError, match="kernel_size"):
        FFTConv1d(3, 2, 0)
