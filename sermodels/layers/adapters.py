"""Parallel residual adapters (Rebuffi et al., NeurIPS 2017) as EmoNet uses them, and the Wide-ResNet block built
from them.

Provenance: Gerczuk, Amiriparian, Ottl, Schuller, "EmoNet: A Transfer Learning Framework for Multi-Corpus Speech
Emotion Recognition", IEEE Trans. Affective Computing, §5.2 / Fig. 6: every 3×3 convolution of the shared network
has a domain-specific 1×1 convolution with the same stride and filters in parallel; the sum feeds a domain-specific
BN. §5.2 / Fig. 5: a residual block is two such convolutions; the first block of a stack halves the resolution with
stride 2 and its shortcut is a 2×2 average pooling of the block input, zero-padded along the channels.

A *domain* here is one set of adapters + BN layers (a corpus or a label space of a multi-domain model). Departures
(documented in :mod:`sermodels.models.emonet` as well):

- The 1×1 adapter is linear in the same input as the 3×3 convolution, so the two are one 3×3 convolution whose
  centre tap is ``W[:, :, 1, 1] + A``: the same function and the same gradients for both weights.
- New adapters start at zero (the paper does not say how adapters are initialised), so a new domain starts as the
  shared network seen through its BN.
- In a padded batch, every feature map is zeroed beyond each clip's valid time steps after each block.

Parameter names (``conv.weight``, ``adapters.<domain>``, ``bns.<domain>.*``, ``conv1``/``conv2``) are those of the
released EmoNet checkpoints: renaming them would break loading. A domain named like a module attribute (``train``,
``eval``, ``to``, ...) is stored under ``<domain>__domain`` (:func:`~sermodels.layers.domains.domain_key`); the methods
take domain names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels.layers.domains import domain_key
from sermodels.layers.masks import halve, time_mask


class AdaptedConv(nn.Module):
    """Shared 3×3 convolution + a domain's parallel 1×1 adapter + the domain's BN (EmoNet Fig. 6).

    ``x (B, C_in, F, T)`` -> ``(B, C_out, ceil(F / stride), ceil(T / stride))`` under the named domain. Without
    ``adapters`` only the BN layers are per domain (the plain ResNet of the EmoNet ablations).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, domains: list[str], adapters: bool):
        super().__init__()
        self.stride = stride
        self.use_adapters = adapters
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.adapters = nn.ParameterDict()
        self.bns = nn.ModuleDict()
        for domain in domains:
            self.add_domain(domain)

    def add_domain(self, domain: str, like: str | None = None, copy_adapter: bool = False) -> None:
        """New adapter (zeros, so the domain starts as the shared network, or a copy of ``like``'s) and BN (a copy
        of ``like``'s, or fresh). An existing ``domain`` is replaced (``like`` may name it)."""
        out_channels, in_channels = self.conv.weight.shape[:2]
        device, dtype = self.conv.weight.device, self.conv.weight.dtype
        if self.use_adapters:
            if copy_adapter and like is not None:
                weight = self.adapters[domain_key(like)].detach().clone()
            else:
                weight = torch.zeros(out_channels, in_channels, 1, 1, device=device, dtype=dtype)
            adapter = nn.Parameter(weight)
        bn = nn.BatchNorm2d(out_channels).to(device=device, dtype=dtype).train(self.training)
        if like is not None:
            bn.load_state_dict(self.bns[domain_key(like)].state_dict())
        key = domain_key(domain)
        if self.use_adapters:
            self.adapters[key] = adapter
        self.bns[key] = bn

    def remove_domain(self, domain: str) -> None:
        key = domain_key(domain)
        if self.use_adapters:
            del self.adapters[key]
        del self.bns[key]

    def domain_parameters(self, domain: str) -> list[nn.Parameter]:
        """The domain's adapter (with adapters) and BN parameters."""
        key = domain_key(domain)
        adapter = [self.adapters[key]] if self.use_adapters else []
        return [*adapter, *self.bns[key].parameters()]

    def forward(self, x: Tensor, domain: str) -> Tensor:
        key = domain_key(domain)
        weight = self.conv.weight
        if self.use_adapters:
            weight = weight + F.pad(self.adapters[key], (1, 1, 1, 1))
        return self.bns[key](F.conv2d(x, weight, stride=self.stride, padding=1))


class ResidualBlock(nn.Module):
    """Two adapted 3×3 convolutions; a stride-2 block pools and zero-pads its shortcut (Wide-ResNet, type A).

    ``x (B, C_in, F, T)`` with ``valid (B,)`` time steps -> ``(B, C_out, F', T')`` zeroed beyond the new valid
    steps, and those steps (``ceil(valid / 2)`` for a stride-2 block).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, domains: list[str], adapters: bool):
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.conv1 = AdaptedConv(in_channels, out_channels, stride, domains, adapters)
        self.conv2 = AdaptedConv(out_channels, out_channels, 1, domains, adapters)

    def forward(self, x: Tensor, valid: Tensor, domain: str) -> tuple[Tensor, Tensor]:
        out_valid = halve(valid) if self.stride == 2 else valid
        h = F.relu(self.conv1(x, domain))
        mask = time_mask(out_valid, h.shape[-1])
        h = self.conv2(h * mask, domain)
        shortcut = x
        if self.stride == 2:
            # An odd width is padded by one zero column, so the pooled shortcut covers ceil(T/2) steps like the conv.
            shortcut = F.avg_pool2d(F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2)), 2)
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(h + shortcut) * mask, out_valid
