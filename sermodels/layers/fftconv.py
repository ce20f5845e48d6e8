"""A 1-D convolution computed through the FFT, for kernels far longer than the usual 3–9 taps.

The end-to-end model of the MixedEmotions deliverable D4.2 (§5.2.1) convolves a 40-channel 8 kHz signal with 40
filters of 500 ms, i.e. 4000 taps: computed directly that is 40 · 40 · 4000 multiply-adds per output sample,
about 3 · 10¹¹ for one 6 s sequence, which no CPU trains in reasonable time. The same linear map computed through
the FFT costs O(N log N) per channel plus one ``in × out`` complex product per frequency bin, a few hundred times
less at these sizes. :class:`FFTConv1d` is a drop-in for ``nn.Conv1d(in, out, k, padding="same")`` (same weight
and bias shapes and initialisation, cross-correlation as PyTorch defines it); the tests check it against
``torch.nn.functional.conv1d``.

Numerics: the transform runs in float32 (autocast is disabled inside; a bf16 FFT would lose the precision a 4000-tap
sum needs). The FFT length is the smallest 2^a·3^b·5^c ≥ N + K − 1, so the circular correlation equals the linear
one on the N outputs (no wrap-around).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels._tracing import tracing


def fast_fft_size(n: int) -> int:
    """The smallest 2^a · 3^b · 5^c >= ``n`` (sizes pocketfft and cuFFT transform fastest)."""
    best = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


class FFTConv1d(nn.Module):
    """``x (B, in_channels, N)`` -> ``(B, out_channels, N)``: ``Conv1d(..., padding="same")`` through the FFT.

    "same" pads ``(K - 1) // 2`` zeros on the left and the rest on the right, as PyTorch does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be positive, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv1d's initialisation: Kaiming-uniform weights (a = √5), bias uniform in ±1/√fan_in."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (batch, {self.in_channels}, time), got {tuple(x.shape)}")
        with _no_autocast(x.device):
            return self._correlate(x.float())

    def _correlate(self, x: Tensor) -> Tensor:
        weight = self.weight.float()
        traced = tracing() and not self.training  # compiled training keeps the written-out backward
        out = traced_correlate(x, weight) if traced else _FFTCorrelate.apply(x, weight)
        return out if self.bias is None else out + self.bias.float()[:, None]


def traced_correlate(x: Tensor, weight: Tensor) -> Tensor:
    """The forward of :class:`_FFTCorrelate` in real arithmetic, for a traced graph (ONNX export): ONNX has no
    complex tensors, so the spectra are (real, imaginary) pairs and the product over input channels is written out,
    ``Σ_i X · conj(W) = Σ_i (Xr Wr + Xi Wi) + j (Xi Wr − Xr Wi)``. The transform length is a power of two (the
    lengths onnxruntime's DFT transforms fast); the time length of ``x (B, in, N)`` must be a fixed number (it is
    in conv_blstm, whose sequences have a fixed length)."""
    samples, taps = int(x.shape[-1]), weight.shape[-1]
    left = (taps - 1) // 2
    size = 1 << (samples + taps - 2).bit_length()  # the smallest power of two >= samples + taps - 1
    spectrum = torch.view_as_real(torch.fft.rfft(F.pad(x, (left, size - samples - left)), n=size))  # (B, in, bins, 2)
    kernel = torch.view_as_real(torch.fft.rfft(weight, n=size))  # (out, in, bins, 2)
    x_re, x_im = spectrum[..., 0].permute(2, 0, 1), spectrum[..., 1].permute(2, 0, 1)  # (bins, B, in)
    w_re, w_im = kernel[..., 0].permute(2, 1, 0), kernel[..., 1].permute(2, 1, 0)  # (bins, in, out)
    product = torch.complex(x_re @ w_re + x_im @ w_im, x_im @ w_re - x_re @ w_im)  # (bins, B, out)
    return torch.fft.irfft(product.permute(1, 2, 0), n=size)[..., :samples]


def _bins_first(spectrum: Tensor) -> Tensor:
    """``(A, C, bins)`` -> contiguous ``(bins, A, C)``: a batched matmul over strided complex views is about ten
    times slower on CPU."""
    return spectrum.permute(2, 0, 1).contiguous()


class _FFTCorrelate(torch.autograd.Function):
    """``y[b, o, n] = Σ_i Σ_k w[o, i, k] · x_pad[b, i, n + k]`` with x zero-padded "same", in the frequency domain.

    The backward is written out rather than left to autograd, whose real-FFT backward does per-bin work on CPU:
    with ``X``, ``W``, ``G`` the spectra of the padded input, the kernel and the output gradient,
    ``∂x_pad = irfft(Σ_o G · W)`` (a convolution) and ``∂w = irfft(Σ_b conj(G) · X)[:K]`` (a correlation).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        samples, taps = x.shape[-1], weight.shape[-1]
        left = (taps - 1) // 2
        size = fast_fft_size(samples + taps - 1)
        spectrum = _bins_first(torch.fft.rfft(F.pad(x, (left, size - samples - left)), n=size))  # (bins, B, in)
        kernel = _bins_first(torch.fft.rfft(weight, n=size))  # (bins, out, in)
        product = torch.matmul(spectrum, kernel.transpose(1, 2).conj())  # (bins, B, out)
        ctx.save_for_backward(spectrum, kernel)
        ctx.sizes = (samples, taps, left, size)
        return torch.fft.irfft(product.permute(1, 2, 0), n=size)[..., :samples]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        spectrum, kernel = ctx.saved_tensors
        samples, taps, left, size = ctx.sizes
        gradient = _bins_first(torch.fft.rfft(grad.float(), n=size))  # (bins, B, out)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            padded = torch.fft.irfft(torch.matmul(gradient, kernel).permute(1, 2, 0), n=size)  # (B, in, size)
            grad_x = padded[..., left : left + samples]
        if ctx.needs_input_grad[1]:
            cross = torch.matmul(gradient.transpose(1, 2).conj().contiguous(), spectrum)  # (bins, out, in)
            grad_w = torch.fft.irfft(cross.permute(1, 2, 0), n=size)[..., :taps]
        return grad_x, grad_w


def _no_autocast(device: torch.device):
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cpu", enabled=False)


__all__ = ["FFTConv1d", "fast_fft_size"]
