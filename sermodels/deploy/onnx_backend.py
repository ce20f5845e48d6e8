"""``sermodels predict --backend onnx``: the model's network run by onnxruntime, everything else unchanged.

:class:`OnnxBackend` stands in for a loaded model in :func:`sermodels.pipelines.predict.run_predictions`: heads,
output specs, frame counts, chunk sizes and post-processing come from the model (so chunking, the combination of
chunks and the written table are exactly those of the torch backend), and only ``forward`` runs the exported graph.
The graph takes whole clips (:mod:`sermodels.deploy.onnx`), so a padded batch runs as one session call per distinct
length, each clip cut to its own length; a frame-level head's outputs are padded back to the batch's frame count.

The graph comes from an export folder or ``.onnx`` file the user names (``--onnx``), or is exported once per
weights into the cache (``$SERMODELS_CACHE/onnx``, default ``~/.cache/sermodels/onnx``). Either way its stored
weights digest must match the model's: a graph exported from other weights is refused, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sermodels._version import __version__
from sermodels.deploy.onnx import EXPORT_FORMAT, INPUT_NAME, MODEL_FILE, export_onnx, read_export_info
from sermodels.models.base import SERModel
from sermodels.runtime import weights_digest

CACHE_ENV = "SERMODELS_CACHE"


def cache_root() -> Path:
    """Where exported graphs are cached: ``$SERMODELS_CACHE/onnx``, else ``~/.cache/sermodels/onnx``."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "sermodels") / "onnx"


def cached_export(model: SERModel, model_id: str | None = None) -> Path:
    """``model.onnx`` of ``model`` (all heads) in the cache, exported on first use; keyed by :func:`export_key`, so
    other weights, another configuration or another exporter never reuse an old graph."""
    folder = cache_root() / f"{model.arch}-{export_key(model)}"
    path = folder / MODEL_FILE
    if not path.is_file():
        export_onnx(model, folder, model_id=model_id)
    return path


def export_key(model: SERModel) -> str:
    """24 hex digits of sha256 over what decides the graph: the weights digest, the configuration, the export
    format and the sermodels and torch versions (a fix of a traced path comes with a new version)."""
    what = {
        "weights": weights_digest(model),
        "config": model.config(),
        "format": EXPORT_FORMAT,
        "sermodels": __version__,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


class OnnxBackend(nn.Module):
    """``model`` with its forward on onnxruntime (module docstring). ``path``: an export folder or ``.onnx`` file
    (default: :func:`cached_export`); ``threads``: onnxruntime's intra-op threads (default: its own choice)."""

    def __init__(
        self,
        model: SERModel,
        path: str | os.PathLike | None = None,
        *,
        model_id: str | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
    ):
        super().__init__()
        import onnxruntime

        object.__setattr__(self, "model", model)  # not a submodule: moving the backend must not move the model
        path = cached_export(model, model_id) if path is None else Path(path)
        file = path / MODEL_FILE if path.is_dir() else path
        info = read_export_info(file)
        digest = weights_digest(model)
        if info.get("weights_sha256") != digest:
            raise ValueError(
                f"{file} was exported from other weights (sha256 {str(info.get('weights_sha256'))[:12]}...) than "
                f"the model given ({digest[:12]}...): export this model (sermodels export onnx) or drop --onnx"
            )
        if json.loads(json.dumps(info.get("config"))) != json.loads(json.dumps(model.config())):
            raise ValueError(f"{file} was exported from a model of another configuration than the model given")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.path, self.info = file, info
        self.session = onnxruntime.InferenceSession(str(file), options, providers=providers or ["CPUExecutionProvider"])
        self.exported_heads = [output.name for output in self.session.get_outputs()]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["model"], name)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, head: str | None = None) -> Tensor:
        """Like the model's forward: ``(B, samples)`` zero-padded with ``lengths`` -> ``(B, size)`` or
        ``(B, frames, size)`` (zero beyond a clip's frames), on the waveforms' device."""
        head = self.model.resolve_head(head)
        if head not in self.exported_heads:
            raise KeyError(f"{self.path} was exported without head {head!r} (it has {self.exported_heads})")
        batch, width = waveforms.shape
        if batch == 0:
            raise ValueError("an empty batch: nothing to run")
        sizes = [width] * batch if lengths is None else [int(n) for n in lengths.tolist()]
        host = waveforms.detach().float().cpu().numpy()
        rows: list[np.ndarray | None] = [None] * batch
        for size in sorted(set(sizes), reverse=True):
            index = [i for i, n in enumerate(sizes) if n == size]
            clips = np.ascontiguousarray(host[index, :size])
            (out,) = self.session.run([head], {INPUT_NAME: clips})
            for i, row in zip(index, out):
                rows[i] = row
        if rows[0].ndim == 2:  # frame-level: pad every clip's frames to the batch's longest
            frames = max(row.shape[0] for row in rows)
            rows = [np.pad(row, ((0, frames - row.shape[0]), (0, 0))) for row in rows]
        return torch.from_numpy(np.stack(rows)).to(waveforms.device)
