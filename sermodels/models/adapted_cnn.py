"""An ImageNet CNN (any timm CNN) on log-mel spectrograms with EmoNet's per-domain parallel adapters, BN and heads.

This model goes beyond the EmoNet paper. EmoNet (Gerczuk, Amiriparian, Ottl, Schuller, IEEE Trans. Affective
Computing) trains its Wide-ResNet from scratch on 26 corpora (§6.1: 72.6 % mean UAR); on the four corpora available
here a from-scratch EmoNet overfits (a few hundred clips per corpus). Deep Spectrum (the same paper, §4.2) shows that
ImageNet CNN features transfer to spectrograms, but keeps the CNN frozen. This family fine-tunes an ImageNet CNN end to
end on the log-mel input and gives it EmoNet's multi-domain structure, so that one network serves several corpora and a
new corpus is learnt by adapter transfer (§6.3) exactly as with EmoNet:

- Input (§5.1, departures as EmoNet's): a standardised log-mel spectrogram ``(B, 1, n_mels, frames)``
  (:mod:`sermodels.layers.frontend`); the CNN's first convolution takes one channel: its ImageNet RGB filters are
  summed over the colour channels (a grey image through the RGB network).
- Parallel residual adapters (§5.2 / Fig. 6, Rebuffi et al. 2018): beside every convolution of the CNN a
  domain-specific linear convolution with the same stride, computed as one convolution with the summed weights:
  a ``k×k`` (``k > 1``) convolution gets a 1×1 adapter on its centre tap (with the convolution's groups, so a
  depthwise convolution gets one scale per channel); a 1×1 convolution gets a rank-``adapter_rank`` adapter
  ``U V`` (a full 1×1 adapter beside a 1×1 convolution would duplicate the network per domain). ``U`` starts at
  zero, so a new domain starts as the shared network.
- Every BatchNorm layer of the CNN is domain-specific (§5.2: "all BN layers are domain-specific"), each domain's copy
  starting from the ImageNet statistics. Layers that cannot be adapted this way (timm's ``Conv2dSame`` of the
  ``tf_`` models, GroupNorm or LayerNorm) stay shared, with a warning that names them.
- Pooling: the mean over frequency and the valid time steps of the last feature map (EmoNet uses 2D attention; the
  ImageNet CNNs were trained with average pooling, which fine-tuning keeps).
- Per domain the FC → BN → ReLU → dropout → linear head of EmoNet (:class:`~sermodels.layers.heads.DenseHead`); a
  dimensional head is squashed into its declared range by tanh, as EmoNet's.

The domain a forward pass uses is held by one small shared state object that every per-domain layer reads; a model is
therefore not meant to run two forward passes under different domains at the same time from two threads.

The log-mel input is zero-padded (the standardised mean) to a whole number of ``pad_frames`` frames. The padded
width is then a function of the clip alone, and the CNN meets few distinct input widths: oneDNN, which runs these
convolutions on CPUs, prepares its kernels for each new input shape (about a second per shape for MobileNetV2),
which made unpadded batches of varying width 5-10× slower to train and evaluate. In evaluation mode a batch is
scored one padded width at a time, so that a clip scores the same alone as inside a padded batch (the CNN's
convolutions would otherwise see the padding of longer clips).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels._registry import register_model
from sermodels.features import AmplitudeToDB, MelSpectrogram
from sermodels.layers.backbone import create_backbone
from sermodels.layers.domains import domain_key
from sermodels.layers.frontend import standardised_log_mel
from sermodels.layers.heads import DenseHead
from sermodels.layers.masks import sequence_mask
from sermodels.models.base import MultiDomainModel, valid_lengths
from sermodels.outputs import OutputSpec, specs_to_json

#: 25 ms windows every 10 ms, 64 mel bands at 16 kHz.
DEFAULT_FRONTEND: dict[str, Any] = {"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 64}
MIN_DURATION_S = 0.05


class ActiveDomain:
    """The domain that the per-domain layers of one model use in the current forward pass."""

    def __init__(self) -> None:
        self.key: str | None = None


class DomainConv(nn.Module):
    """A shared convolution with a parallel, domain-specific linear adapter (module docstring); same stride and
    padding, one convolution with the summed weight."""

    def __init__(self, conv: nn.Conv2d, domains: list[str], rank: int, active: ActiveDomain):
        super().__init__()
        if type(conv) is not nn.Conv2d or isinstance(conv.padding, str):
            raise TypeError(f"only plain nn.Conv2d layers with numeric padding can be adapted, got {conv!r}")
        self.conv = conv
        self.centre = conv.kernel_size != (1, 1)
        out_channels, in_per_group = conv.weight.shape[:2]
        self.low_rank = not self.centre and conv.groups == 1 and 0 < rank < min(out_channels, in_per_group)
        self.rank = rank if self.low_rank else 0
        self.adapters = nn.ParameterDict()  # centre-tap or full 1x1 adapters (out, in/groups, 1, 1)
        self.down = nn.ParameterDict()  # low-rank V (rank, in)
        self.up = nn.ParameterDict()  # low-rank U (out, rank), zero at the start
        self._active = [active]  # a list: not a submodule, not a parameter
        for domain in domains:
            self.add_domain(domain)

    def add_domain(self, domain: str, like: str | None = None, copy_adapter: bool = False) -> None:
        weight = self.conv.weight
        out_channels, in_per_group = weight.shape[:2]
        key = domain_key(domain)
        source = domain_key(like) if (copy_adapter and like is not None) else None
        if self.low_rank:
            if source is not None:
                self.down[key] = nn.Parameter(self.down[source].detach().clone())
                self.up[key] = nn.Parameter(self.up[source].detach().clone())
            else:
                down = torch.empty(self.rank, in_per_group, device=weight.device, dtype=weight.dtype)
                nn.init.kaiming_uniform_(down, a=math.sqrt(5))
                self.down[key] = nn.Parameter(down)
                self.up[key] = nn.Parameter(
                    torch.zeros(out_channels, self.rank, device=weight.device, dtype=weight.dtype)
                )
        elif source is not None:
            self.adapters[key] = nn.Parameter(self.adapters[source].detach().clone())
        else:
            zeros = torch.zeros(out_channels, in_per_group, 1, 1, device=weight.device, dtype=weight.dtype)
            self.adapters[key] = nn.Parameter(zeros)

    def remove_domain(self, domain: str) -> None:
        key = domain_key(domain)
        for table in (self.adapters, self.down, self.up):
            if key in table:
                del table[key]

    def domain_parameters(self, domain: str) -> list[nn.Parameter]:
        key = domain_key(domain)
        return [table[key] for table in (self.adapters, self.down, self.up) if key in table]

    def weight_for(self, key: str) -> Tensor:
        weight = self.conv.weight
        if self.low_rank:
            delta = self.up[key] @ self.down[key]
            return weight + delta[:, :, None, None].to(weight.dtype)
        adapter = self.adapters[key]
        if self.centre:
            kh, kw = self.conv.kernel_size
            adapter = F.pad(adapter, (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2))
        return weight + adapter

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        weight = self.weight_for(self._active[0].key)
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class DomainNorm(nn.Module):
    """One copy of a BatchNorm layer (timm's BN + activation layers included) per domain."""

    def __init__(self, norm: nn.Module, domains: list[str], active: ActiveDomain):
        super().__init__()
        self.norms = nn.ModuleDict({domain_key(d): copy.deepcopy(norm) for d in domains})
        self._active = [active]

    def add_domain(self, domain: str, like: str) -> None:
        self.norms[domain_key(domain)] = copy.deepcopy(self.norms[domain_key(like)]).train(self.training)

    def remove_domain(self, domain: str) -> None:
        del self.norms[domain_key(domain)]

    def domain_parameters(self, domain: str) -> list[nn.Parameter]:
        return list(self.norms[domain_key(domain)].parameters())

    def forward(self, x: Tensor) -> Tensor:
        return self.norms[self._active[0].key](x)


def warn_unadapted(net: nn.Module, backbone: str) -> None:
    """Say which layers of ``net`` stay shared by every domain although they are convolutions (subclasses such as
    timm's ``Conv2dSame`` of the ``tf_`` models) or normalisation layers other than BatchNorm (GroupNorm,
    LayerNorm): the model still works, with fewer per-domain parameters than the module docstring describes."""
    inside = {id(m.conv) for m in net.modules() if isinstance(m, DomainConv)}
    inside |= {id(n) for m in net.modules() if isinstance(m, DomainNorm) for n in m.modules()}
    shared = [
        name
        for name, m in net.named_modules()
        if id(m) not in inside and isinstance(m, (nn.Conv2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d))
    ]
    if shared:
        warnings.warn(
            f"{backbone}: {len(shared)} convolution/normalisation layers have no per-domain adapter or copy and are "
            f"shared by every domain: {shared[:5]}{'...' if len(shared) > 5 else ''}",
            stacklevel=3,
        )


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def one_channel_stem(backbone: nn.Module) -> None:
    """Make the CNN's first convolution take one input channel: its filters summed over the input channels."""
    first = (getattr(backbone, "pretrained_cfg", {}) or {}).get("first_conv")
    conv = backbone.get_submodule(first) if first else None
    if not isinstance(conv, nn.Conv2d):
        conv_names = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
        first, conv = conv_names[0], backbone.get_submodule(conv_names[0])
    if conv.in_channels == 1:
        return
    if conv.groups != 1:
        raise ValueError(f"the first convolution {first!r} is grouped; cannot make it take one channel")
    single = nn.Conv2d(
        1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, 1, conv.bias is not None
    )
    with torch.no_grad():
        single.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            single.bias.copy_(conv.bias)
    _replace(backbone, first, single)


@register_model("adapted_cnn")
class AdaptedCNN(MultiDomainModel):
    """Waveforms ``(B, T)`` -> standardised log-mel -> a timm CNN with per-domain adapters and BN -> mean pooling ->
    the domain's head (module docstring).

    Args:
        domains: domain (= head) name -> class names (or dimension names) in output order.
        default_head: the head used when none is named (default: the first domain).
        backbone: a timm CNN name (``mobilenetv2_100``, ``resnet18``, ``efficientnet_b0``, ...).
        pretrained: False (random init; seed torch first), True (timm's ImageNet weights from the Hub) or a local
            ``.safetensors`` file of the timm model's state dict (RGB input). Not part of :meth:`config`: a saved model
            carries its weights.
        adapter_rank: rank of the adapters beside 1×1 convolutions (0: full 1×1 adapters).
        hidden / dropout: the head's FC width and dropout rate.
        frontend: :class:`sermodels.features.MelSpectrogram` arguments.
        pad_frames: the log-mel input is padded to a multiple of this many frames (module docstring).
        head_specs: heads that are not categories heads (``{name: OutputSpec JSON}``), e.g. a dimensional head.
    """

    family = "AdaptedCNN"
    # Transfer fine-tunes with the optimiser the family is trained with (recipes/adapted_cnn/multi4.yaml), not
    # EmoNet's SGD at 0.1: its low-rank adapters and ImageNet BN statistics are tuned at AdamW's scale.
    transfer_optimizer = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}
    min_duration = MIN_DURATION_S
    default_chunk_seconds = 30.0
    supports_spectrogram_augment = True

    def __init__(
        self,
        domains: dict[str, list[str]],
        default_head: str | None = None,
        sample_rate: int = 16000,
        backbone: str = "mobilenetv2_100",
        pretrained: bool | str | Path = False,
        adapter_rank: int = 8,
        hidden: int = 256,
        dropout: float = 0.3,
        frontend: dict[str, Any] | None = None,
        head_specs: dict[str, dict[str, Any]] | None = None,
        pad_frames: int = 32,
    ):
        super().__init__()
        if pad_frames < 1:
            raise ValueError(f"pad_frames must be positive, got {pad_frames}")
        self.pad_frames = pad_frames
        if adapter_rank < 0:
            raise ValueError(f"adapter_rank must be >= 0, got {adapter_rank}")
        names = self.init_heads(domains, default_head, head_specs)
        self.sample_rate = sample_rate
        self.backbone_name = backbone
        self.adapter_rank = adapter_rank
        self.hidden = hidden
        self.dropout = dropout
        self.melspec = MelSpectrogram(**({"sample_rate": sample_rate} | DEFAULT_FRONTEND | (frontend or {})))
        self.to_db = AmplitudeToDB(stype="power", top_db=None)
        self._active = ActiveDomain()
        net = create_backbone(backbone, pretrained)
        if not hasattr(net, "forward_features"):
            raise TypeError(f"timm model {backbone!r} has no forward_features; choose a timm CNN")
        net.reset_classifier(0)
        one_channel_stem(net)
        self.reduction = self._time_reduction(net)
        for name, module in list(net.named_modules()):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                _replace(net, name, DomainNorm(module, names, self._active))
        for name, module in list(net.named_modules()):
            if type(module) is nn.Conv2d:
                _replace(net, name, DomainConv(module, names, adapter_rank, self._active))
        warn_unadapted(net, backbone)
        self.backbone = net
        self.embedding_dim = int(net.num_features)
        self.classifiers = nn.ModuleDict(
            {
                domain_key(name): DenseHead(self.embedding_dim, hidden, len(labels), dropout)
                for name, labels in domains.items()
            }
        )

    @staticmethod
    def _time_reduction(net: nn.Module) -> int:
        info = getattr(net, "feature_info", None)
        if info:
            last = info[-1] if isinstance(info, list) else info.info[-1]
            return int(last["reduction"])
        return 32

    # ---- configuration ---------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        mel = self.melspec.config()
        return {
            "domains": {name: list(labels) for name, labels in self.heads.items()},
            "default_head": self.default_head,
            "sample_rate": self.sample_rate,
            "backbone": self.backbone_name,
            "adapter_rank": self.adapter_rank,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "frontend": {key: value for key, value in mel.items() if key != "sample_rate"},
            "pad_frames": self.pad_frames,
        } | ({"head_specs": specs_to_json(self.head_specs)} if self.head_specs else {})

    # ---- domains ---------------------------------------------------------------------------------------------------
    def _convs(self) -> list[DomainConv]:
        return [m for m in self.backbone.modules() if isinstance(m, DomainConv)]

    def _norms(self) -> list[DomainNorm]:
        return [m for m in self.backbone.modules() if isinstance(m, DomainNorm)]

    def add_domain(
        self,
        name: str,
        labels: list[str] | OutputSpec,
        like: str | None = None,
        copy_adapters: bool = False,
        replace: bool = False,
    ) -> None:
        """A new domain with a fresh head; adapters start at zero (or as copies of ``like``'s with
        ``copy_adapters``); BN layers are copies of ``like``'s (default: of the default head's, whose statistics are
        closer to a new corpus than fresh ones). ``replace`` re-initialises an existing domain."""
        labels, spec = self.new_domain(name, labels, like, copy_adapters, replace)
        template = like if like is not None else self.default_head
        for conv in self._convs():
            conv.add_domain(name, like, copy_adapters)
        for norm in self._norms():
            norm.add_domain(name, template)
        weight = next(iter(self.classifiers.values()))[0].weight
        head = DenseHead(self.embedding_dim, self.hidden, len(labels), self.dropout)
        self.classifiers[domain_key(name)] = head.to(device=weight.device, dtype=weight.dtype).train(self.training)
        self.register_head(name, labels, spec)

    def remove_domain(self, name: str) -> None:
        self.resolve_head(name)
        if len(self.heads) == 1:
            raise ValueError("cannot remove the only domain")
        for layer in [*self._convs(), *self._norms()]:
            layer.remove_domain(name)
        del self.classifiers[domain_key(name)]
        self.forget_head(name)

    def domain_parameters(self, name: str) -> list[nn.Parameter]:
        """Adapters, BN layers and head of one domain (what adapter transfer trains)."""
        self.resolve_head(name)
        params: list[nn.Parameter] = []
        for conv in self._convs():
            params.extend(conv.domain_parameters(name))
        for norm in self._norms():
            params.extend(norm.domain_parameters(name))
        params.extend(self.head_parameters(name))
        return params

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self.classifiers[domain_key(self.resolve_head(name))].parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every domain uses: the CNN's convolutions and any layer that is not per domain."""
        own = {id(p) for name in self.heads for p in self.domain_parameters(name)}
        return [p for p in self.parameters() if id(p) not in own]

    def layer_groups(self) -> dict[str, list[str]]:
        """Input to output: the CNN's top-level parts (each stage of ``blocks`` its own group), then the heads."""
        groups: dict[str, list[str]] = {}
        for name, module in self.backbone.named_children():
            if not any(True for _ in module.parameters()):
                continue
            if name == "blocks" and isinstance(module, nn.Sequential):
                for index, _ in enumerate(module):
                    groups[f"block{index + 1}"] = [f"backbone.blocks.{index}"]
            else:
                groups[name] = [f"backbone.{name}"]
        groups["heads"] = ["classifiers"]
        return groups

    # ---- forward ---------------------------------------------------------------------------------------------------
    def log_mel(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lengths = valid_lengths(waveforms, lengths)
        return standardised_log_mel(self.melspec, self.to_db, waveforms, lengths, "AdaptedCNN", self.min_duration)

    def padded_frames(self, lengths: Tensor) -> Tensor:
        """Input width in frames of clips of ``lengths`` samples: their frames, rounded up to ``pad_frames``."""
        frames = self.melspec.num_frames(lengths)
        return torch.div(frames + self.pad_frames - 1, self.pad_frames, rounding_mode="floor") * self.pad_frames

    def embed(self, waveforms: Tensor, lengths: Tensor | None = None, head: str | None = None) -> Tensor:
        """The pooled CNN features ``(B, num_features)`` as seen through ``head``'s adapters and BN."""
        domain = self.resolve_head(head)
        whole = lengths is None  # every row is a whole clip: one width, known from the shape (a traced graph's path)
        lengths = valid_lengths(waveforms, lengths)
        widths = self.padded_frames(lengths)
        if not whole and not self.training and waveforms.shape[0] > 1 and bool((widths != widths[0]).any()):
            rows: dict[int, Tensor] = {}
            for width in sorted(set(widths.tolist())):
                index = (widths == width).nonzero().flatten()
                longest = int(lengths[index].max())
                pooled = self.embed(waveforms[index, :longest], lengths[index], domain)
                rows.update({int(i): row for i, row in zip(index.tolist(), pooled)})
            return torch.stack([rows[i] for i in range(waveforms.shape[0])])
        x, valid = self.log_mel(waveforms, lengths)
        frames = self.melspec.frame_count(waveforms.shape[-1])
        width = (frames + self.pad_frames - 1) // self.pad_frames * self.pad_frames if whole else int(widths.max())
        x = F.pad(x, (0, width - x.shape[-1]))
        x = self.augment_spectrogram(x, valid)
        self._active.key = domain_key(domain)
        try:
            features = self.backbone.forward_features(x)  # (B, C, F', T')
        finally:
            self._active.key = None
        steps = features.shape[-1]
        valid_out = torch.div(valid + self.reduction - 1, self.reduction, rounding_mode="floor").clamp(1, steps)
        mask = sequence_mask(valid_out, steps).to(features.dtype)[:, None, :]  # (B, 1, T')
        summed = (features.mean(dim=2) * mask).sum(dim=-1)
        return summed / valid_out.to(features.dtype)[:, None]

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, head: str | None = None) -> Tensor:
        domain = self.resolve_head(head)
        pooled = self.embed(waveforms, lengths, domain)
        return self.bounded(self.classifiers[domain_key(domain)](pooled), domain)
