"""AV-SpNET: a CNN autoencoder front-end trained jointly with proxy arousal labels, and its recognition heads.

Provenance: Lu, Li, Lee, "Learning an Arousal-Valence Speech Front-End Network using Media Data In-the-Wild for
Emotion Recognition", AVEC 2018, DOI 10.1145/3266302.3266306 (``../shared/papers/av_spnet_proxy_label_front_end.txt``).

- §2.2.1: log-magnitude spectrogram at 16 kHz, 20 ms Hamming window, 10 ms hop, 800-point DFT; the 200 lowest bins
  (0–3980 Hz: the 4 kHz low-pass) are kept; utterances are cut into non-overlapping segments of 80 frames (810 ms),
  each a training sample with its utterance's label; shorter utterances are dropped (``min_duration``).
- §2.2.4, §3.1.1: the encoder is two stages of [3×3 conv, 32 kernels, padded → BN → ReLU → 3×3 conv, 32 kernels,
  unpadded → BN → ReLU → max-pool] (a 200×80 segment becomes 32×21×8 with the literal 3×3 pooling), flattened into a
  fully connected layer of 1024 units shared by the two tasks.
- Reconstruction (the autoencoder): FC 256 (the latent layer) → FC 1024 → FC back to the flattened map → two
  deconvolution stages mirroring the encoder → a convolution with one kernel → 200×80.
- Proxy-label recognition: after the shared FC 1024, FC 512 → FC 128 → the output layer.
- Eq. (5)–(7): loss α·MSE(reconstruction) + (1 − α)·cross-entropy(proxy) (the multitask regime,
  :class:`~sermodels.tasks.multitask.MultitaskTask`, weights ``{reconstruction: α, <proxy head>: 1 − α}``).
- §2.3, §3.1.1: the recognition network stacks three FC layers (1024, 512, 128) and the output layer on the frozen
  convolutional encoder, with dropout before the output layer; training and recognition are per segment and an
  utterance's label is the majority vote of its segments.

Heads: a *proxy* head (named in ``proxy_heads``) reads the shared FC 1024 through FC 512 → FC 128; every other head
is a *recognition* head on the flattened conv maps (FC 1024 → 512 → 128 → dropout → output). ``add_domain`` adds a
recognition head, so ``sermodels finetune --from av_spnet.<tag>`` trains the paper's recognition network on the
frozen encoder (``head``/``adapters`` regimes: only the new head trains).

Departures, all documented:

- The paper gives a single sigmoid output for the binary proxy label; a proxy head here is a categories head with
  two outputs (``low``, ``high``) trained with cross-entropy, which is the same model (the sigmoid of the difference
  of the two logits) and lets every regime, metric and ``predict`` treat it as any categories head.
- Normalisation is not stated: the log spectrogram is standardised per frequency bin with a mean and standard
  deviation fitted on the pre-training audio (:meth:`AVSpNet.fit_input_statistics`) and stored in the checkpoint.
- Readings of §3.1.1 where the text is terse: the pooling stride equals its 3×3 size; the final "convolution
  layer of 1 kernel" is one 1×1 kernel; a recognition head starts a new FC 1024 on the conv maps (§2.3: "stack
  three fully-connected layers" on the frozen encoder) rather than reusing the pre-trained shared FC.
- Loss scales: Eq. (5)–(6) are sums; the multitask regime uses the mean squared error over a segment's 16 000
  values and the batch-mean cross-entropy (class-weighted; the proxy labels are balanced by construction), so an
  α here is not the paper's α on the same scale (it is not reported either).
- Activations of the FC layers are not stated: ReLU. Dropout rate (not stated): 0.5. The deconvolution stages
  upsample to the size before pooling (nearest neighbour) and apply a transposed 3×3 convolution (undoing the
  unpadded one) and a padded 3×3 convolution, each with BN and ReLU, in the encoder's reverse order.
- Utterance output: the recognition network votes per segment (§2.3); the returned scores are the vote shares
  plus the (arithmetic) mean segment probability as a tie-break, renormalised (``pooling="vote"``,
  :func:`vote_shares`; their argmax is the majority vote, ties going to the higher mean probability). In training
  mode, and with ``pooling="mean"``, the output is the mean of the segments' log-probabilities (differentiable).
  Training through the task regimes therefore uses one random 810 ms crop per clip (``max_duration=0.81``, the
  family's :attr:`AVSpNet.training_crop_seconds`, which ``sermodels finetune`` applies): one segment per clip and
  epoch, i.e. per-segment training as §2.3. Segments start at the first frame; the frames after the last whole
  segment are not used. A clip shorter than one segment is padded with the normalised mean (zero) to one segment;
  clips of 25 ms or less are refused. Each clip of a zero-padded batch is continued past its end by reflection
  before the STFT, as the centred STFT pads a clip that is alone, so a clip scores the same alone and in a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels._registry import register_model
from sermodels._tracing import checking
from sermodels.features import Spectrogram
from sermodels.features.spectrogram import reflect_tails
from sermodels.layers.domains import domain_key
from sermodels.models.base import HeadDomainModel, valid_lengths
from sermodels.outputs import specs_to_json

#: §2.2.1: 20 ms Hamming window, 10 ms hop, 800-point DFT at 16 kHz (``avspnet_spec`` in ``../shared/reference``).
FRONTEND: dict[str, Any] = {
    "n_fft": 800,
    "win_length": 320,
    "hop_length": 160,
    "window": "hamming",
    "power": 1.0,
    "center": True,
    "pad_mode": "reflect",
}
N_BINS = 200  # §2.2.1: the 4 kHz low-pass keeps the 200 lowest of 401 bins (20 Hz apart)
SEGMENT_FRAMES = 80  # §2.2.1: 80 frames, (20 − 10) ms × 80 + 10 ms = 810 ms
SEGMENT_SECONDS = 0.81
CHANNELS = 32  # §3.1.1: 32 kernels of 3×3 in every convolution
POOL = 3  # §3.1.1: "the convolution and the pooling layer has 32 kernels of size 3×3" (2 is an option)
SHARED_FC = 1024  # §3.1.1: the fully connected layer after the encoder
LATENT = 256  # §3.1.1: the reconstruction's latent layer
PROXY_HIDDEN = (512, 128)  # §3.1.1: two more layers after the shared FC 1024
HEAD_HIDDEN = (1024, 512, 128)  # §2.3: three fully connected layers of the recognition network
DROPOUT = 0.5  # §2.3: "dropout is used before the output layer" (rate not given)
LOG_EPS = 1e-6  # floor of the magnitude before the logarithm
POOLINGS = ("vote", "mean")


def _stage(cin: int, cout: int) -> nn.Sequential:
    """[3×3 conv padded → BN → ReLU → 3×3 conv unpadded → BN → ReLU] (the pooling is applied by the caller)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _mirror_stage(cin: int, cout: int) -> nn.Sequential:
    """The reverse of :func:`_stage` after upsampling: transposed 3×3 (undoes the unpadded conv) → padded 3×3."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cin, 3, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _mlp(sizes: Sequence[int], outputs: int, dropout: float) -> nn.Sequential:
    """FC → ReLU per hidden size, dropout, then the linear output layer."""
    layers: list[nn.Module] = []
    for cin, cout in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(cin, cout), nn.ReLU(inplace=True)]
    layers += [nn.Dropout(dropout), nn.Linear(sizes[-1], outputs)]
    return nn.Sequential(*layers)


def encoder_shapes(bins: int, frames: int, pool: int) -> list[tuple[int, int]]:
    """Feature-map sizes ``(F, T)`` after each stage's convolutions and after its pooling, input first."""
    shapes = [(bins, frames)]
    size = (bins, frames)
    for _ in range(2):
        size = (size[0] - 2, size[1] - 2)
        shapes.append(size)
        size = (size[0] // pool, size[1] // pool)
        shapes.append(size)
    return shapes


@register_model("av_spnet")
class AVSpNet(HeadDomainModel):
    """Waveforms ``(B, T)`` -> 810 ms log-spectrogram segments -> conv encoder -> a head per segment -> the
    utterance's vote (module docstring).

    Args:
        domains: head name -> class names (or dimension names) in output order.
        default_head: the head used when none is named (default: the first).
        proxy_heads: heads that read the shared FC 1024 (the pre-training proxy-label heads); others are
            recognition heads on the conv encoder.
        pool: max-pooling size and stride of both stages (3: the paper's 3×3; 2 is an option).
        dropout: before every head's output layer.
        pooling: utterance output in evaluation mode, ``vote`` (§2.3) or ``mean`` log-probability.
        frontend: :class:`sermodels.features.Spectrogram` arguments (default :data:`FRONTEND`).
        head_specs: heads that are not categories heads (``{name: OutputSpec JSON}``).
    """

    family = "AV-SpNET"
    min_duration = SEGMENT_SECONDS
    # Per-segment training (§2.3) through the task regimes: one random segment per clip and epoch.
    training_crop_seconds = SEGMENT_SECONDS
    default_chunk_seconds = 60.0
    # §3.1.1 fine-tunes with SGD at 1e-5; on a CPU schedule of a few epochs that does not move the new head (a new
    # head on a frozen encoder trains well with Adam at the pre-training rate, §3.1.1's 1e-3).
    transfer_optimizer = {"name": "adam", "lr": 1e-3}

    def __init__(
        self,
        domains: dict[str, list[str]],
        default_head: str | None = None,
        sample_rate: int = 16000,
        proxy_heads: list[str] | None = None,
        channels: int = CHANNELS,
        pool: int = POOL,
        n_bins: int = N_BINS,
        segment_frames: int = SEGMENT_FRAMES,
        dropout: float = DROPOUT,
        pooling: str = "vote",
        frontend: dict[str, Any] | None = None,
        head_specs: dict[str, dict[str, Any]] | None = None,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pool not in (2, 3):
            raise ValueError(f"pool must be 2 or 3, got {pool}")
        self.init_heads(domains, default_head, head_specs)
        self.proxy_heads = list(proxy_heads or [])
        unknown = sorted(set(self.proxy_heads) - set(self.heads))
        if unknown:
            raise ValueError(f"proxy_heads names heads that are not domains: {unknown}")
        self.sample_rate = sample_rate
        self.channels, self.pool, self.n_bins, self.segment_frames = channels, pool, n_bins, segment_frames
        self.dropout, self.pooling = dropout, pooling
        self.spectrogram = Spectrogram(**(FRONTEND | (frontend or {})))
        if n_bins > self.spectrogram.n_fft // 2 + 1:
            raise ValueError(f"n_bins {n_bins} exceeds the {self.spectrogram.n_fft // 2 + 1} bins of the DFT")
        self.register_buffer("input_mean", torch.zeros(n_bins))
        self.register_buffer("input_std", torch.ones(n_bins))
        self.register_buffer("statistics_fitted", torch.zeros((), dtype=torch.bool))
        self.shapes = encoder_shapes(n_bins, segment_frames, pool)
        if min(min(s) for s in self.shapes) < 1:
            raise ValueError(f"segments of {n_bins}×{segment_frames} are too small for two stages with pool {pool}")
        self.flat_dim = channels * self.shapes[-1][0] * self.shapes[-1][1]
        self.stage1, self.stage2 = _stage(1, channels), _stage(channels, channels)
        self.shared_fc = nn.Sequential(nn.Linear(self.flat_dim, SHARED_FC), nn.ReLU(inplace=True))
        self.decoder_fc = nn.Sequential(
            nn.Linear(SHARED_FC, LATENT),
            nn.ReLU(inplace=True),
            nn.Linear(LATENT, SHARED_FC),
            nn.ReLU(inplace=True),
            nn.Linear(SHARED_FC, self.flat_dim),
            nn.ReLU(inplace=True),
        )
        self.unstage2, self.unstage1 = _mirror_stage(channels, channels), _mirror_stage(channels, channels)
        self.to_input = nn.Conv2d(channels, 1, 1)  # §3.1.1: "one more convolution layer of 1 kernel"
        self.classifiers = nn.ModuleDict({domain_key(name): self._new_head(name) for name in self.heads})

    def _new_head(self, name: str) -> nn.Sequential:
        outputs = len(self.heads[name])
        if name in self.proxy_heads:
            return _mlp((SHARED_FC, *PROXY_HIDDEN), outputs, self.dropout)
        return _mlp((self.flat_dim, *HEAD_HIDDEN), outputs, self.dropout)

    # ---- configuration ---------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "domains": {name: list(labels) for name, labels in self.heads.items()},
            "default_head": self.default_head,
            "sample_rate": self.sample_rate,
            "proxy_heads": list(self.proxy_heads),
            "channels": self.channels,
            "pool": self.pool,
            "n_bins": self.n_bins,
            "segment_frames": self.segment_frames,
            "dropout": self.dropout,
            "pooling": self.pooling,
            "frontend": self.spectrogram.config(),
        } | ({"head_specs": specs_to_json(self.head_specs)} if self.head_specs else {})

    # ---- domains (a new recognition head on the frozen encoder, §2.3) -------------------------------------------
    def _drop_domain(self, name: str) -> None:
        if name in self.proxy_heads:
            self.proxy_heads.remove(name)  # a replaced proxy head becomes a recognition head

    def layer_groups(self) -> dict[str, list[str]]:
        """Input to output: the two encoder stages, the shared FC, the decoder, the heads."""
        return {
            "stage1": ["stage1"],
            "stage2": ["stage2"],
            "shared_fc": ["shared_fc"],
            "decoder": ["decoder_fc", "unstage2", "unstage1", "to_input"],
            "heads": ["classifiers"],
        }

    # ---- input -----------------------------------------------------------------------------------------------------
    def log_spectrogram(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, n_bins, frames)`` log magnitude of the lowest bins (not standardised) and valid frames ``(B,)``.
        Clips of ``n_fft // 2`` samples or fewer (25 ms) are refused: the centred STFT cannot pad them."""
        whole = lengths is None
        lengths = valid_lengths(waveforms, lengths)
        extra = self.spectrogram.n_fft // 2
        if checking() and bool((lengths <= extra).any()):
            raise ValueError(
                f"AV-SpNET needs clips longer than {extra} samples (its segments are {self.min_duration} s); got "
                f"lengths {lengths.tolist()}"
            )
        if not whole and bool((lengths < waveforms.shape[-1]).any()):
            # each clip continued past its end as the centred STFT pads a clip alone: a clip scores the same alone,
            # zero-padded, or in a batch
            waveforms = reflect_tails(waveforms, lengths, extra)
        spec = self.spectrogram(waveforms.float())[:, : self.n_bins]
        valid = self.spectrogram.num_frames(lengths).clamp(max=spec.shape[-1])
        return torch.log(spec + LOG_EPS), valid

    @torch.no_grad()
    def fit_input_statistics(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Per-bin mean and standard deviation of the log spectrogram over the valid frames of ``(waveforms,
        lengths)`` batches (the pre-training audio), stored as the model's input normalisation."""
        total = torch.zeros(self.n_bins, dtype=torch.float64)
        square = torch.zeros(self.n_bins, dtype=torch.float64)
        count = 0
        for waveforms, lengths in batches:
            spec, valid = self.log_spectrogram(waveforms.to(self.input_mean.device), lengths)
            mask = torch.arange(spec.shape[-1], device=spec.device)[None, :] < valid[:, None]
            values = spec.transpose(1, 2)[mask].double().cpu()  # (frames, bins)
            total += values.sum(0)
            square += (values**2).sum(0)
            count += values.shape[0]
        if count == 0:
            raise ValueError("fit_input_statistics: no frames in the batches")
        mean = total / count
        std = (square / count - mean**2).clamp(min=1e-8).sqrt()
        self.input_mean.copy_(mean.float())
        self.input_std.copy_(std.float())
        self.statistics_fitted.fill_(True)

    def segments(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Standardised segments ``(N, 1, n_bins, segment_frames)`` of every clip in time order, and the clip index
        of each ``(N,)``; a clip has ``max(1, valid frames // segment_frames)`` segments."""
        segments, owner = self._segments(waveforms, lengths)
        if owner is None:  # whole rows: each clip owns the same number of consecutive segments
            clips = waveforms.shape[0]
            owner = torch.arange(clips, device=segments.device).repeat_interleave(segments.shape[0] // clips)
        return segments, owner

    def _segments(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """:meth:`segments`, with the index None for whole rows (``lengths=None``: :func:`per_clip_mean`)."""
        spec, valid = self.log_spectrogram(waveforms, lengths)
        spec = (spec - self.input_mean[:, None]) / self.input_std[:, None]
        width = self.segment_frames
        if lengths is None:  # whole rows: the same segments in every row, counted from the shape (a traced graph)
            batch, frames = spec.shape[0], spec.shape[-1]
            count = torch.sym_max(frames // width, 1)
            # cropped to whole segments, or one segment padded with the normalised mean (zero) after a short clip
            pieces = F.pad(spec, (0, count * width - frames)).unflatten(-1, (count, width)).transpose(1, 2)
            return pieces.reshape(batch * count, 1, spec.shape[1], width), None
        counts = torch.div(valid, width, rounding_mode="floor").clamp(min=1)
        need = int(counts.max()) * width
        if spec.shape[-1] < need:
            spec = F.pad(spec, (0, need - spec.shape[-1]))
        short = valid < width  # one segment of the clip's frames and the normalised mean (zero) after them
        if bool(short.any()):
            keep = torch.arange(width, device=spec.device)[None, :] < valid[:, None]
            head = torch.where(short[:, None, None] & ~keep[:, None, :], 0.0, spec[..., :width])
            spec = torch.cat([head, spec[..., width:]], dim=-1)
        pieces = spec[..., :need].unflatten(-1, (-1, width)).permute(0, 2, 1, 3)  # (B, S, bins, width)
        take = torch.arange(pieces.shape[1], device=spec.device)[None, :] < counts[:, None]
        owner = torch.arange(len(counts), device=spec.device)[:, None].expand_as(take)[take]
        return pieces[take][:, None], owner

    # ---- encoder, decoder, heads -----------------------------------------------------------------------------------
    def encode(self, segments: Tensor) -> Tensor:
        """``(N, 1, bins, frames)`` -> flattened conv maps ``(N, flat_dim)`` (the frozen front-end of §2.3)."""
        x = F.max_pool2d(self.stage1(segments), self.pool)
        x = F.max_pool2d(self.stage2(x), self.pool)
        return x.flatten(1)

    def decode(self, shared: Tensor) -> Tensor:
        """The shared FC's output ``(N, 1024)`` -> the reconstructed segment ``(N, 1, bins, frames)``."""
        (f0, t0), (f1, t1), _, (f3, t3), (f4, t4) = self.shapes
        x = self.decoder_fc(shared).unflatten(1, (self.channels, f4, t4))
        x = self.unstage2(F.interpolate(x, size=(f3, t3), mode="nearest"))
        x = self.unstage1(F.interpolate(x, size=(f1, t1), mode="nearest"))
        return self.to_input(x)

    def segment_logits(self, conv: Tensor, head: str | None = None) -> Tensor:
        """Flattened conv maps ``(N, flat_dim)`` -> the head's per-segment outputs ``(N, outputs)``."""
        name = self.resolve_head(head)
        x = self.shared_fc(conv) if name in self.proxy_heads else conv
        return self.classifiers[domain_key(name)](x)

    def reconstruct(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, None]:
        """Reconstruction, target (the standardised segments) and mask (none: every segment is whole) for the
        multitask regime's ``L_m`` (Eq. (5))."""
        segments, _ = self.segments(waveforms, lengths)
        return self.decode(self.shared_fc(self.encode(segments))), segments, None

    def embed(self, waveforms: Tensor, lengths: Tensor | None = None, layer: str = "conv") -> Tensor:
        """Mean over each clip's segments of the flattened conv maps (``conv``, ``(B, flat_dim)``, the frozen
        front-end) or of the shared FC layer (``shared_fc``, ``(B, 1024)``)."""
        if layer not in ("conv", "shared_fc"):
            raise ValueError(f"layer must be 'conv' or 'shared_fc', got {layer!r}")
        segments, owner = self._segments(waveforms, lengths)
        features = self.encode(segments)
        if layer == "shared_fc":
            features = self.shared_fc(features)
        return per_clip_mean(features, owner, waveforms.shape[0])

    def pool_segments(self, logits: Tensor, owner: Tensor, clips: int, head: str | None = None) -> Tensor:
        """Per-segment outputs -> one per clip: the vote (evaluation, ``pooling="vote"``, categories heads:
        :func:`vote_shares` as log-probabilities) or the mean of the log-probabilities (training; values for
        dimensional heads)."""
        if self.output_spec(head).kind != "categories":
            return per_clip_mean(logits, owner, clips)
        logp = logits.float().log_softmax(dim=-1)
        if self.training or self.pooling == "mean":
            return per_clip_mean(logp, owner, clips).to(logits.dtype)
        return vote_shares(logp.exp(), owner, clips).clamp_min(1e-30).log().to(logits.dtype)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, head: str | None = None) -> Tensor:
        name = self.resolve_head(head)
        segments, owner = self._segments(waveforms, lengths)
        logits = self.segment_logits(self.encode(segments), name)
        return self.bounded(self.pool_segments(logits, owner, waveforms.shape[0], name), name)


def vote_shares(probs: Tensor, owner: Tensor | None, clips: int) -> Tensor:
    """Segment probabilities ``(N, C)`` -> per clip ``(clips, C)``: the share of its segments voting for each class
    plus the class's mean probability over the segments divided by (segments + 1), renormalised. The argmax is the
    majority vote (§2.3) and a tie goes to the higher mean probability: one vote (1/n) outweighs any tie-break
    (< 1/(n + 1))."""
    votes = per_clip_mean(F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype), owner, clips)
    counts = segments_per_clip(owner, clips, probs)[:, None]
    share = votes + per_clip_mean(probs, owner, clips) / (counts + 1)
    return share / share.sum(-1, keepdim=True)


def per_clip_mean(values: Tensor, owner: Tensor | None, clips: int) -> Tensor:
    """Mean of the rows of ``values (N, D)`` per clip index ``owner (N,)`` -> ``(clips, D)``; ``owner=None``: every
    clip owns ``N / clips`` consecutive rows (whole rows: a reshape, which a traced graph holds)."""
    if owner is None:
        return values.reshape(clips, -1, values.shape[-1]).mean(dim=1)
    total = torch.zeros(clips, values.shape[-1], dtype=values.dtype, device=values.device)
    total.index_add_(0, owner, values)
    return total / segments_per_clip(owner, clips, values)[:, None]


def segments_per_clip(owner: Tensor | None, clips: int, values: Tensor) -> Tensor:
    """How many of the rows of ``values`` each of ``clips`` owns (at least 1), ``(clips,)`` in their dtype."""
    if owner is None:
        return values.new_full((clips,), values.shape[0] // clips)
    return torch.bincount(owner, minlength=clips).clamp(min=1).to(values.dtype)


def segment_count(samples: int, hop_length: int = FRONTEND["hop_length"], frames: int = SEGMENT_FRAMES) -> int:
    """Whole segments in a clip of ``samples`` (centred frames: ``1 + samples // hop``)."""
    return max(1, (1 + samples // hop_length) // frames)
