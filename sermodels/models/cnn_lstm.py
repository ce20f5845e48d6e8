"""CNN+LSTM multi-domain network: two 1-D convolutions, an LSTM and two dense layers, built to study which layers
transfer between emotion corpora.

Provenance: Marczewski, Veloso, Ziviani, "Learning Transferable Features for Speech Emotion Recognition", ACM
Multimedia Thematic Workshops 2017, DOI 10.1145/3126686.3126735
(``../shared/papers/cnn_lstm_transferable_features_ser.txt``).

- §3.1, footnote 1: the input is 54 000 samples of audio (3.375 s at 16 kHz), padded to that size, standardised to
  zero mean and unit standard deviation.
- §3.1: five hidden layers: two 1-D convolutions with 128 kernels, each with ReLU and dropout 0.3; an LSTM that
  reads 128-dimensional inputs and "returns two 500 dimensional vector outputs which are then flattened into a
  single 1,000 dimensional output"; two fully connected layers of 1 000 units with tanh and dropout 0.3; a softmax
  output trained with cross-entropy by AdaDelta.
- §3.2: the layers are named here as the transfer study names them: ``C1`` and ``C2`` (the convolutions), ``L`` (the
  LSTM) and ``F`` (the dense layers with the output layer). The transfer settings A1–A8 freeze or re-initialise
  these groups (:mod:`sermodels.tasks.transfer`, ``sermodels finetune --setting``).
- §4.4, Table 2: the "CNN" model is the same network without the LSTM layer (``recurrent=False``).

Two front-ends (``frontend``):

- ``raw`` (the paper's): the waveform itself, z-scored per clip. The paper gives neither kernel sizes, strides nor
  pooling: C1 is a strided convolution of 64 samples (4 ms) with stride 4 and max-pooling by 8; C2 a convolution of
  8 steps with max-pooling by 8, so that the LSTM reads 211 steps of 128 channels (one per 16 ms). About 1.7 GFLOP
  per clip: meant for a GPU.
- ``logmel`` (ours, cheap enough for a CPU): 64 log-mel bands (25 ms Hann window, 10 ms hop) over the same 3.375 s
  window, z-scored per clip over its valid frames; C1 and C2 are convolutions of 5 frames, each followed by
  max-pooling by 4, so that the LSTM reads 21 steps (one per 160 ms). About 0.15 GFLOP per clip.

Departures, all documented:

- The LSTM's "two 500 dimensional vector outputs" are read as a bidirectional LSTM of 500 units per direction whose
  two final states are concatenated (1 000). The text also fits a one-directional LSTM returning a sequence of two
  steps, which would tie the network to one input length.
- Clips longer than 3.375 s: the paper does not say; the centre 3.375 s are used (training through the task
  regimes draws random 3.375 s crops, :attr:`CNNLSTM.training_crop_seconds`). Shorter clips are padded with zeros
  *after* standardisation (so the padding is the clip's mean) and, for ``logmel``, padded frames are set to the
  mean. Each clip is placed alone into the fixed window, so a clip gets the same output alone and in any batch.
- The paper standardises "features"; here each clip is z-scored on its own (a dataset-wide z-score of raw samples,
  per sample index, would mean nothing).
- Dropout after a convolution is applied to its pooled output (the paper does not give the order).
- Cross-entropy is class-weighted by the task regimes, as everywhere in sermodels (UAR is the metric).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sermodels._registry import register_model
from sermodels._tracing import checking
from sermodels.features import AmplitudeToDB, MelSpectrogram
from sermodels.layers.domains import domain_key
from sermodels.models.base import HeadDomainModel, valid_lengths
from sermodels.outputs import specs_to_json

INPUT_SAMPLES = 54_000  # §3.1: "a 54,000 dimensional input"
SAMPLE_RATE = 16_000
INPUT_SECONDS = INPUT_SAMPLES / SAMPLE_RATE  # 3.375 s
FILTERS = 128  # §3.1: "convolutional layers apply kernels with 128 dimensions"; the LSTM reads 128-d inputs
DROPOUT = 0.3  # §3.1: after the convolutions and after the dense layers
LSTM_UNITS = 500  # §3.1: "two 500 dimensional vector outputs"
DENSE_UNITS = 1000  # §3.1: "two fully connected layers ... composed of 1,000 units"
FRONTENDS = ("raw", "logmel")
#: Kernel, stride and max-pooling of C1 and C2 per front-end (not in the paper; module docstring).
CONV_LAYOUT: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "raw": ((64, 4, 8), (8, 1, 8)),
    "logmel": ((5, 1, 4), (5, 1, 4)),
}
#: The log-mel front-end (ours): 25 ms Hann window, 10 ms hop, 64 bands at 16 kHz.
MEL_FRONTEND: dict[str, Any] = {"n_fft": 400, "win_length": 400, "hop_length": 160, "n_mels": 64}
STD_FLOOR = 1e-5  # a silent clip is divided by this instead of a zero standard deviation
#: The layer groups of §3.2, input to output.
CONV_STAGES = ("C1", "C2")
#: What a per-stage output is: the pooled convolution map (before its dropout), the LSTM's 1 000-d state, the
#: second dense layer's output.
STAGE_INPUT = "input"


class FinalStates(nn.Module):
    """``(B, channels, steps)`` -> the final states of a bidirectional LSTM, concatenated ``(B, 2 · units)``."""

    def __init__(self, channels: int, units: int):
        super().__init__()
        self.lstm = nn.LSTM(channels, units, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor) -> Tensor:
        _, (hidden, _) = self.lstm(x.transpose(1, 2))
        return torch.cat([hidden[0], hidden[1]], dim=-1)


def _conv(cin: int, cout: int, kernel: int, stride: int, pool: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2), nn.ReLU(inplace=True), nn.MaxPool1d(pool)
    )


def conv_steps(steps: int, kernel: int, stride: int, pool: int) -> int:
    """Length of a sequence of ``steps`` after :func:`_conv`."""
    return ((steps + 2 * (kernel // 2) - kernel) // stride + 1) // pool


@register_model("cnn_lstm")
class CNNLSTM(HeadDomainModel):
    """Waveforms ``(B, T)`` -> a fixed 3.375 s window -> C1 -> C2 -> L -> F -> the head's logits (module docstring).

    Args:
        domains: head name -> class names (or dimension names) in output order.
        default_head: the head used when none is named (default: the first).
        frontend: ``raw`` (the paper's waveform input) or ``logmel`` (module docstring).
        recurrent: with the LSTM (``L``); ``False`` is Table 2's "CNN": the C2 map is flattened into ``F``.
        input_samples: the fixed input window (54 000, §3.1).
        filters, lstm_units, dense_units, dropout: §3.1 sizes.
        conv_layout: ``[[kernel, stride, pool], [kernel, stride, pool]]`` of C1 and C2 (default
            :data:`CONV_LAYOUT` of the front-end).
        mel: :class:`sermodels.features.MelSpectrogram` arguments of the ``logmel`` front-end.
        head_specs: heads that are not categories heads (``{name: OutputSpec JSON}``).
    """

    family = "CNN+LSTM"
    training_crop_seconds: ClassVar[float] = INPUT_SECONDS
    default_chunk_seconds = INPUT_SECONDS
    # §3.1: AdaDelta (Keras's default rate 1.0).
    transfer_optimizer = {"name": "adadelta", "lr": 1.0}
    #: The cut-offs of the transfer settings A3–A5 / A6–A8 (§3.2): frozen up to C1, C2, L.
    transfer_cutoffs: ClassVar[tuple[str, ...]] = ("C1", "C2", "L")

    def __init__(
        self,
        domains: dict[str, list[str]],
        default_head: str | None = None,
        sample_rate: int = SAMPLE_RATE,
        frontend: str = "logmel",
        recurrent: bool = True,
        input_samples: int = INPUT_SAMPLES,
        filters: int = FILTERS,
        lstm_units: int = LSTM_UNITS,
        dense_units: int = DENSE_UNITS,
        dropout: float = DROPOUT,
        conv_layout: list[list[int]] | None = None,
        mel: dict[str, Any] | None = None,
        head_specs: dict[str, dict[str, Any]] | None = None,
    ):
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
        self.init_heads(domains, default_head, head_specs)
        self.sample_rate, self.frontend, self.recurrent = sample_rate, frontend, recurrent
        self.input_samples, self.filters = input_samples, filters
        self.lstm_units, self.dense_units, self.dropout = lstm_units, dense_units, dropout
        layout = conv_layout if conv_layout is not None else CONV_LAYOUT[frontend]
        self.conv_layout = [[int(v) for v in layer] for layer in layout]
        if len(self.conv_layout) != 2 or any(len(layer) != 3 or min(layer) < 1 for layer in self.conv_layout):
            raise ValueError(f"conv_layout gives [kernel, stride, pool] of C1 and C2, got {conv_layout}")
        if frontend == "logmel":
            self.melspec = MelSpectrogram(**({"sample_rate": sample_rate} | MEL_FRONTEND | (mel or {})))
            self.to_db = AmplitudeToDB(stype="power", top_db=None)
            channels, steps = self.melspec.n_mels, input_samples // self.melspec.spectrogram.hop_length + 1
        elif mel:
            raise ValueError("mel settings belong to frontend='logmel'")
        else:
            channels, steps = 1, input_samples
        for kernel, stride, pool in self.conv_layout:
            steps = conv_steps(steps, kernel, stride, pool)
        if steps < 1:
            raise ValueError(f"an input of {input_samples} samples is too short for the convolutions {layout}")
        self.steps = steps
        self.conv1 = _conv(channels, filters, *self.conv_layout[0])
        self.conv2 = _conv(filters, filters, *self.conv_layout[1])
        if recurrent:
            self.lstm = FinalStates(filters, lstm_units)
            width = 2 * lstm_units
        else:
            width = filters * steps  # Table 2's CNN: the C2 map flattened
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width, dense_units),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(dense_units, dense_units),
            nn.Tanh(),
            nn.Dropout(dropout),
        )
        self.classifiers = nn.ModuleDict({domain_key(name): self._new_head(name) for name in self.heads})

    def _new_head(self, name: str) -> nn.Linear:
        return nn.Linear(self.dense_units, len(self.heads[name]))

    # ---- configuration ---------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config = {
            "domains": {name: list(labels) for name, labels in self.heads.items()},
            "default_head": self.default_head,
            "sample_rate": self.sample_rate,
            "frontend": self.frontend,
            "recurrent": self.recurrent,
            "input_samples": self.input_samples,
            "filters": self.filters,
            "lstm_units": self.lstm_units,
            "dense_units": self.dense_units,
            "dropout": self.dropout,
            "conv_layout": [list(layer) for layer in self.conv_layout],
        }
        if self.frontend == "logmel":
            config["mel"] = {key: value for key, value in self.melspec.config().items() if key != "sample_rate"}
        return config | ({"head_specs": specs_to_json(self.head_specs)} if self.head_specs else {})

    def layer_groups(self) -> dict[str, list[str]]:
        """§3.2's groups, input to output: C1, C2, L (with the LSTM), F (the dense layers and the output layers)."""
        groups = {"C1": ["conv1"], "C2": ["conv2"]}
        if self.recurrent:
            groups["L"] = ["lstm"]
        groups["F"] = ["dense", "classifiers"]
        return groups

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages :meth:`run` passes through, input to output."""
        return tuple(self.layer_groups())

    # ---- input -----------------------------------------------------------------------------------------------------
    def standardised_input(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The network's input ``(B, channels, steps)``: each clip's centre ``input_samples`` (or all of a shorter
        clip), z-scored and zero-padded (``raw``: ``(B, 1, input_samples)``; ``logmel``: ``(B, 64, 338)``)."""
        whole = lengths is None
        lengths = valid_lengths(waveforms, lengths)
        if waveforms.dim() != 2 or lengths.numel() != waveforms.shape[0]:
            raise ValueError(
                f"waveforms must be (batch, samples) with one length per clip, got {tuple(waveforms.shape)}"
            )
        if checking() and int(lengths.min()) < 1:
            raise ValueError("every clip needs at least one sample")
        size = self.input_samples
        kept = lengths.clamp(max=size)
        if whole:  # every row a whole clip: one centre window, from the shape (the path a traced graph holds)
            samples = waveforms.shape[-1]
            # positions of the centre window in the clip; past a shorter clip's end: zeros (an index of a fixed size)
            positions = torch.arange(size, device=waveforms.device) + torch.sym_max((samples - size) // 2, 0)
            inside = positions < samples
            window = waveforms.index_select(1, positions.clamp(max=samples - 1)) * inside.to(waveforms.dtype)
        else:
            window = waveforms.new_zeros(waveforms.shape[0], size)
            for row, (length, keep) in enumerate(zip(lengths.tolist(), kept.tolist())):
                start = (length - keep) // 2
                window[row, :keep] = waveforms[row, start : start + keep]
        if self.frontend == "raw":
            valid = torch.arange(size, device=window.device) < kept[:, None]
            return _zscore(window, valid).unsqueeze(1)
        mel = self.to_db(self.melspec(window))  # (B, n_mels, frames)
        hop = self.melspec.spectrogram.hop_length
        frames = (kept + hop - 1) // hop  # frames centred inside the clip (the centred STFT's frame k is at k·hop)
        valid = torch.arange(mel.shape[-1], device=mel.device) < frames.clamp(min=1)[:, None]
        return _zscore(mel, valid.unsqueeze(1).expand_as(mel))

    # ---- forward ---------------------------------------------------------------------------------------------------
    def stage(self, name: str) -> nn.Module:
        return {"C1": self.conv1, "C2": self.conv2, "L": getattr(self, "lstm", None), "F": self.dense}[name]

    def run(self, x: Tensor, start: str = STAGE_INPUT, stop: str | None = None, head: str | None = None) -> Tensor:
        """From the output of stage ``start`` (or the standardised input) to the output of stage ``stop`` (or the
        head's logits). A stage's output is taken before the dropout that follows it, so C1's cached output (C1 has
        no dropout before it) passes here the same dropout, and every later stage, as C1's live output does in
        training."""
        stages = self.stages
        for name in (start, stop):
            if name not in (STAGE_INPUT, None, *stages):
                raise ValueError(f"unknown stage {name!r}; the stages are {stages}")
        first = 0 if start == STAGE_INPUT else stages.index(start) + 1
        if start in CONV_STAGES:
            x = F.dropout(x, self.dropout, self.training)
        for name in stages[first:]:
            x = self.stage(name)(x)
            if name == stop:
                return x
            if name in CONV_STAGES:
                x = F.dropout(x, self.dropout, self.training)
        head = self.resolve_head(head)
        return self.bounded(self.classifiers[domain_key(head)](x), head)

    def embed(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The second dense layer's output ``(B, dense_units)``, which every head reads."""
        return self.run(self.standardised_input(waveforms, lengths), stop="F")

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, head: str | None = None) -> Tensor:
        return self.run(self.standardised_input(waveforms, lengths), head=head)


def _zscore(x: Tensor, valid: Tensor) -> Tensor:
    """Each row of ``x`` standardised over its ``valid`` entries (same shape), invalid entries set to 0."""
    dims = tuple(range(1, x.dim()))
    count = valid.sum(dim=dims, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(dim=dims, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(dim=dims, keepdim=True) / count
    return torch.where(valid, (x - mean) / var.sqrt().clamp(min=STD_FLOOR), torch.zeros_like(x))
