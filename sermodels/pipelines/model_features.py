"""``sermodels features av_spnet``: the frozen front-end of a trained AV-SpNET model
(:mod:`sermodels.models.av_spnet`) as a feature extractor of :func:`~sermodels.pipelines.features.extract_to_file`
(what is written, resuming, labels and windows: the module docstring of :mod:`sermodels.pipelines.features`).

A row is :meth:`AVSpNet.embed <sermodels.models.av_spnet.AVSpNet.embed>` of the file (or window): the mean over its
whole 810 ms segments of the flattened conv maps (``conv``, ``model.flat_dim`` = 5376 values with the paper's
settings, the front-end of §2.3) or of the shared FC layer (``shared_fc``, 1024 values). A file, window or crop
shorter than one segment (``ceil(model.min_duration * rate)`` samples) is refused: the model would pad it, and a
feature of mostly padding is not the clip's.

Batches: the model cuts the segments of a zero-padded batch as each clip alone would give them (it continues each
clip past its end by reflection before the STFT); the segments of the whole batch then go through the encoder
together, :data:`SEGMENTS_PER_PASS` at a time (a long file has thousands). The spectrogram is computed in float32;
``precision`` is an autocast of the encoder (and the shared FC) only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from sermodels._io import sha256_of
from sermodels.checkpoint import WEIGHTS_NAME, load_folder
from sermodels.hub import resolve
from sermodels.models.av_spnet import SHARED_FC, AVSpNet, per_clip_mean
from sermodels.pipelines.features import FeatureExtractor

__all__ = ["LAYERS", "AVSpNetFeatures", "load_av_spnet"]

LAYERS = ("conv", "shared_fc")  # the layers AVSpNet.embed reads
SEGMENTS_PER_PASS = 128  # segments per encoder pass: the first stage's maps of 128 segments take about 260 MB


class AVSpNetFeatures(FeatureExtractor):
    """An :class:`AVSpNet` and the layer read (module docstring); the model's weights are not changed."""

    name = "av_spnet"
    unit = "an AV-SpNET segment"
    nonfinite = "the model produced non-finite features (NaN/Inf)"

    def __init__(self, model: AVSpNet, layer: str = "conv"):
        if not isinstance(model, AVSpNet):
            raise TypeError(f"AVSpNetFeatures needs an AVSpNet model, got {type(model).__name__}")
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        self.module, self.layer = model, layer
        self.sample_rate = model.sample_rate
        self.dim = model.flat_dim if layer == "conv" else SHARED_FC

    def min_samples(self) -> int:
        return math.ceil(round(self.module.min_duration * self.sample_rate, 6))  # 0.81 s: 12960 at 16 kHz

    def config(self) -> dict[str, Any]:
        model = self.module
        return {"model": {"architecture": model.arch, "model_args": model.config()}, "layer": self.layer}

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        model = self.module
        segments, owner = model.segments(waveforms, lengths)  # (S, 1, bins, frames), each clip as it is alone
        values = []
        with torch.autocast(waveforms.device.type, dtype=dtype, enabled=dtype is not None):
            for block in segments.split(SEGMENTS_PER_PASS):
                encoded = model.encode(block)
                values.append((model.shared_fc(encoded) if self.layer == "shared_fc" else encoded).float())
        return per_clip_mean(torch.cat(values), owner, waveforms.shape[0])


def load_av_spnet(model: str | os.PathLike, layer: str = "conv") -> tuple[AVSpNetFeatures, str]:
    """The extractor of a pretrained AV-SpNET (an id such as ``av_spnet.<tag>`` or a checkpoint folder, resolved as
    :func:`sermodels.load` does) and its weights' identity for the settings: ``"sha256:<digest of
    model.safetensors>"``, so a resumed run with another model's weights refuses."""
    folder = resolve(model)
    loaded = load_folder(folder).eval()
    if not isinstance(loaded, AVSpNet):
        raise ValueError(f"{model} is a {loaded.arch} model; 'features av_spnet' needs an av_spnet model")
    return AVSpNetFeatures(loaded, layer), f"sha256:{sha256_of(Path(folder) / WEIGHTS_NAME)}"
