"""EmoNet: a Wide-ResNet on log-mel spectrograms with parallel residual adapters and 2D self-attention pooling.

Provenance: Gerczuk, Amiriparian, Ottl, Schuller, "EmoNet: A Transfer Learning Framework for Multi-Corpus Speech
Emotion Recognition", IEEE Trans. Affective Computing.

- §5.1: 64-band log-mel spectrograms; segments are at most 5 s long (the random training crop lives in
  :class:`sermodels.data.SERDataModule`, ``max_duration=5``).
- §5.2 / Fig. 5: a Wide-ResNet: 3×3 stem convolution with 32 filters, three stacks of two residual blocks with 64,
  128 and 256 filters. The first block of a stack halves the resolution with a stride-2 3×3 convolution; its
  shortcut is a 2×2 average pooling of the block input, zero-padded along the channels. Final BN + ReLU.
- §5.2 / Fig. 6: parallel residual adapters (Rebuffi et al., NeurIPS 2017): every 3×3 convolution of the shared
  network has a domain-specific 1×1 convolution with the same stride and filters in parallel; the sum feeds a
  domain-specific BN. All BN layers are domain-specific.
- §5.2, Eq. (1)–(4): 2D self-attention over the (frequency × time) positions of the last feature map,
  ``e_i = uᵀ tanh(W x_i + b)``, ``α = softmax(λ e)`` with λ = 0.3, output ``Σ α_i x_i`` (256-d). It is shared by all
  domains (§7.2.2: sharing it costs little, so the multi-domain model shares it).
- §5.2: per domain a classifier head: fully connected layer → BN → dropout → softmax layer.

The adapted convolutions, residual blocks, attention pooling and heads are shared blocks in :mod:`sermodels.layers`
(``adapters``, ``attention``, ``heads``, ``masks``); this file assembles them.

A *domain* is a corpus (multi-corpus training, §6.1) or an aggregated label space (``arousal``/``valence``, §6.2);
each domain owns its adapters, its BN layers and its head, and the head of a domain carries the domain's name. Its
layers are stored under the domain's name, or under ``<name>__domain`` for a name that is a module attribute
(``train``, ``eval``, ``to``, ...; :mod:`sermodels.layers.domains`), so any folder name can name a domain.

Departures, all documented:

- Padded frames of a zero-padded batch receive no attention weight: the softmax is masked to each clip's valid
  positions, every feature map is zeroed beyond the valid frames after each block, and each clip of a batch is
  continued past its end by reflection before the STFT (as the centred STFT pads a clip that is alone), so that in
  evaluation mode a clip scores the same alone as inside a padded batch. The paper pads to the longest sample
  without masking. (In training mode the BN batch statistics still include the padded positions.)
- The log-mel input is standardised per utterance (mean and standard deviation over its valid time-frequency bins);
  the paper does not say how its spectrograms were scaled.
- The head's FC layer is followed by ReLU (the paper lists FC, BN and dropout without naming an activation); its
  width (128) and the dropout rate (0.3) are not given in the paper.
- A parallel 1×1 adapter is linear in the same input as the 3×3 convolution it accompanies, so the two are computed
  as one 3×3 convolution whose centre tap is ``W[:, :, 1, 1] + A``: the same function and the same gradients for
  both weights, one convolution instead of two.
- The stem's BN is followed by a ReLU (§5.2 lists convolution and BN only). The released weights were trained so.
- New adapters start at zero, so a new domain starts as the shared network seen through the BN it copies; the
  paper does not say how adapters are initialised.
- A head may also be dimensional (``head_specs={"av_values": <dimensions OutputSpec as JSON>}``): the same
  FC-BN-ReLU-dropout head with one linear output per dimension, squashed by tanh into the declared range of a
  bounded dimension (arousal/valence in [-1, 1]), linear when the spec has no range; trained with the CCC loss by
  :class:`~sermodels.tasks.regression.RegressionTask`. The paper's heads
  are all categorical.
- Only training clips are cropped to 5 s (§5.1 caps segments at 5 s); evaluation scores whole clips, and
  ``sermodels predict`` scores long files in 30 s windows (``default_chunk_seconds``) whose logits it averages.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sermodels._registry import register_model
from sermodels.features import AmplitudeToDB, MelSpectrogram
from sermodels.layers.adapters import AdaptedConv, ResidualBlock
from sermodels.layers.attention import AttentionPooling
from sermodels.layers.domains import domain_key
from sermodels.layers.frontend import standardised_log_mel
from sermodels.layers.heads import DenseHead
from sermodels.layers.masks import time_mask
from sermodels.models.base import MultiDomainModel, valid_lengths
from sermodels.outputs import OutputSpec, specs_to_json

#: §5.1: 512-point FFT, hop 256, 64 mel bands at 16 kHz.
DEFAULT_FRONTEND: dict[str, Any] = {"n_fft": 512, "hop_length": 256, "n_mels": 64}
#: Shortest clip the network accepts: one STFT frame gives a 64 × 1 input, enough for every layer.
MIN_DURATION_S = 0.05


@register_model("emonet_wrn")
class EmoNet(MultiDomainModel):
    """Waveforms ``(B, T)`` at 16 kHz -> log-mel -> adapted WRN -> 2D attention -> the chosen domain's head.

    Args:
        domains: domain (= head) name -> class names in logit order, e.g. ``{"emodb": [...], "ravdess": [...]}``.
        default_head: the head used when none is named (default: the first domain).
        widths: filters of the three residual stacks; ``stem``: filters of the stem convolution.
        adapters: with parallel residual adapters (``False``: the plain ResNet, still with per-domain BN).
        attention_units / attention_smoothing: size of ``W`` and λ of the attention (§5.2: 256 and 0.3).
        hidden / dropout: the head's FC width and dropout rate.
        frontend: :class:`sermodels.features.MelSpectrogram` arguments (§5.1 defaults).
    """

    family = "EmoNet"
    min_duration = MIN_DURATION_S
    supports_spectrogram_augment = True
    # Long recordings are scored in 30 s windows (length-weighted mean of the window logits): memory stays bounded
    # on hour-long files while every utterance of the four corpora (at most ~14 s) is still scored whole.
    default_chunk_seconds = 30.0

    def __init__(
        self,
        domains: dict[str, list[str]],
        default_head: str | None = None,
        sample_rate: int = 16000,
        stem: int = 32,
        widths: tuple[int, ...] | list[int] = (64, 128, 256),
        blocks_per_stack: int = 2,
        adapters: bool = True,
        attention_units: int = 256,
        attention_smoothing: float = 0.3,
        hidden: int = 128,
        dropout: float = 0.3,
        frontend: dict[str, Any] | None = None,
        head_specs: dict[str, dict[str, Any]] | None = None,
    ):
        super().__init__()
        names = self.init_heads(domains, default_head, head_specs)
        self.sample_rate = sample_rate
        self.stem_channels = stem
        self.widths = [int(w) for w in widths]
        self.blocks_per_stack = blocks_per_stack
        self.use_adapters = adapters
        self.hidden = hidden
        self.dropout = dropout
        self.melspec = MelSpectrogram(**({"sample_rate": sample_rate} | DEFAULT_FRONTEND | (frontend or {})))
        self.to_db = AmplitudeToDB(stype="power", top_db=None)
        self.stem = AdaptedConv(1, stem, 1, names, adapters)
        blocks = []
        channels = stem
        for width in self.widths:
            for index in range(blocks_per_stack):
                blocks.append(ResidualBlock(channels, width, 2 if index == 0 else 1, names, adapters))
                channels = width
        self.blocks = nn.ModuleList(blocks)
        self.final_bns = nn.ModuleDict({domain_key(name): nn.BatchNorm2d(channels) for name in names})
        self.embedding_dim = channels
        self.attention = AttentionPooling(channels, attention_units, attention_smoothing)
        self.classifiers = nn.ModuleDict(
            {domain_key(name): DenseHead(channels, hidden, len(labels), dropout) for name, labels in self.heads.items()}
        )

    # ---- configuration ---------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        mel = self.melspec.config()
        return {
            "domains": {name: list(labels) for name, labels in self.heads.items()},
            "default_head": self.default_head,
            "sample_rate": self.sample_rate,
            "stem": self.stem_channels,
            "widths": list(self.widths),
            "blocks_per_stack": self.blocks_per_stack,
            "adapters": self.use_adapters,
            "attention_units": self.attention.project.out_features,
            "attention_smoothing": self.attention.smoothing,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "frontend": {key: value for key, value in mel.items() if key != "sample_rate"},
        } | ({"head_specs": specs_to_json(self.head_specs)} if self.head_specs else {})

    # ---- domains ---------------------------------------------------------------------------------------------------
    def _adapted_convs(self) -> Iterator[AdaptedConv]:
        yield self.stem
        for block in self.blocks:
            yield block.conv1
            yield block.conv2

    def add_domain(
        self,
        name: str,
        labels: list[str] | OutputSpec,
        like: str | None = None,
        copy_adapters: bool = False,
        replace: bool = False,
    ) -> None:
        """A new domain with a fresh head. Its adapters are zeros (it starts as the shared network) or, with
        ``copy_adapters``, copies of ``like``'s; its BN layers are copies of ``like``'s (their running statistics are
        a better start than fresh ones) or fresh when ``like`` is None. ``replace`` re-initialises an existing domain
        (``like`` may then name that same domain: it is copied before it is overwritten)."""
        labels, spec = self.new_domain(name, labels, like, copy_adapters, replace)
        device, dtype = self.attention.project.weight.device, self.attention.project.weight.dtype
        for conv in self._adapted_convs():
            conv.add_domain(name, like, copy_adapters)
        # New layers take the model's mode: a model in eval mode must not score the new domain with batch statistics.
        bn = nn.BatchNorm2d(self.embedding_dim).to(device=device, dtype=dtype).train(self.training)
        if like is not None:
            bn.load_state_dict(self.final_bns[domain_key(like)].state_dict())
        self.final_bns[domain_key(name)] = bn
        head = DenseHead(self.embedding_dim, self.hidden, len(labels), self.dropout)
        self.classifiers[domain_key(name)] = head.to(device=device, dtype=dtype).train(self.training)
        self.register_head(name, labels, spec)

    def remove_domain(self, name: str) -> None:
        self.resolve_head(name)
        if len(self.heads) == 1:
            raise ValueError("cannot remove the only domain")
        for conv in self._adapted_convs():
            conv.remove_domain(name)
        del self.final_bns[domain_key(name)]
        del self.classifiers[domain_key(name)]
        self.forget_head(name)

    def domain_parameters(self, name: str) -> list[nn.Parameter]:
        """Adapters, BN and head of one domain (what adapter transfer trains)."""
        self.resolve_head(name)
        params: list[nn.Parameter] = []
        for conv in self._adapted_convs():
            params.extend(conv.domain_parameters(name))
        params.extend(self.final_bns[domain_key(name)].parameters())
        params.extend(self.classifiers[domain_key(name)].parameters())
        return params

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        """The classifier head of one domain (what a new head on a frozen base trains)."""
        return list(self.classifiers[domain_key(self.resolve_head(name))].parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters used by every domain: the 3×3 convolutions and the attention."""
        params = [conv.conv.weight for conv in self._adapted_convs()]
        params.extend(self.attention.parameters())
        return params

    def layer_groups(self) -> dict[str, list[str]]:
        """Input to output: the stem, each residual block, the final BN, the attention and the heads."""
        groups = {"stem": ["stem"]}
        groups.update({f"block{index + 1}": [f"blocks.{index}"] for index in range(len(self.blocks))})
        groups.update({"final_bn": ["final_bns"], "attention": ["attention"], "heads": ["classifiers"]})
        return groups

    # ---- forward ---------------------------------------------------------------------------------------------------
    def log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None):
        """Standardised log-mel ``(B, 1, n_mels, frames)`` zeroed beyond each clip, and the valid frame counts
        (:func:`sermodels.layers.frontend.standardised_log_mel`: each clip continued past its end by reflection, as
        the centred STFT pads a clip that is alone, so a clip gets the same input alone and in a padded batch)."""
        lengths = valid_lengths(waveforms, lengths)
        return standardised_log_mel(self.melspec, self.to_db, waveforms, lengths, "EmoNet", self.min_duration)

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        """Last feature map ``(B, C, F', T')`` of a domain's network and its valid time steps."""
        domain = self.resolve_head(head)
        x, valid = self.log_mel(waveforms, lengths)
        x = self.augment_spectrogram(x, valid)
        x = F.relu(self.stem(x, domain)) * time_mask(valid, x.shape[-1])
        for block in self.blocks:
            x, valid = block(x, valid, domain)
        x = F.relu(self.final_bns[domain_key(domain)](x)) * time_mask(valid, x.shape[-1])
        return x, valid

    def attend(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        """Pooled embedding ``(B, C)`` and attention weights ``(B, F', T')`` under a domain's adapters."""
        x, valid = self.features(waveforms, lengths, head)
        return self.attention(x, valid)

    def embed(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        """The 256-d attention output (the shared embedding as seen through ``head``'s adapters and BN)."""
        return self.attend(waveforms, lengths, head)[0]

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, head: str | None = None):
        domain = self.resolve_head(head)
        pooled, _ = self.attend(waveforms, lengths, domain)
        return self.bounded(self.classifiers[domain_key(domain)](pooled), domain)

    def flops(self, seconds: float) -> float:
        """Multiply-accumulates ×2 of the convolutions, attention and the default head for one clip of ``seconds``."""
        frames = int(seconds * self.sample_rate) // self.melspec.spectrogram.hop_length + 1
        freq, steps = self.melspec.n_mels, frames
        total = 2 * 9 * self.stem_channels * freq * steps
        channels = self.stem_channels
        for block in self.blocks:
            if block.stride == 2:
                freq, steps = math.ceil(freq / 2), math.ceil(steps / 2)
            width = block.conv1.conv.out_channels
            total += 2 * 9 * (channels * width + width * width) * freq * steps
            channels = width
        units = self.attention.project.out_features
        total += 2 * (channels * units + units) * freq * steps + 2 * channels * freq * steps
        total += 2 * (channels * self.hidden + self.hidden * len(self.heads[self.default_head]))
        return float(total)
