"""Padded batches: :func:`pad_collate` stacks the samples of :class:`~sermodels.data.datasets.WaveformDataset`.

A batch is a dict::

    waveforms      (B, T) float32     zero-padded to the longest clip of the batch
    lengths        (B,)   long        valid samples per row
    labels         (B,)   long        index into label_names (per corpus for "categories", shared for arousal/valence);
                                      for numeric label spaces the category in the corpus's classes, -1 without one
    domains        (B,)   long        index into corpus_names
    corpus         list[str]          corpus name per row
    paths          list[str]
    speakers       list[str | None]   speaker id per row (None when the corpus has none)

and, when the samples carry numeric targets (:mod:`sermodels.data.targets`):

    targets        (B, D) float32     utterance-level dimensions ("av_values", "dimensions" label spaces)
    traces         (B, F, D) float32  frame-level traces at the data module's frame rate, zero-padded to the
                                      longest trace of the batch ("trace" label space)
    trace_lengths  (B,)   long        valid trace frames per row
    trace_mask     (B, F) bool        True on valid frames

A trace row may be shorter than the model's output for its clip (the trace ends a little before the audio); the
task compares the first ``min(output frames, trace_lengths)`` frames (:func:`sermodels.data.targets.aligned_length`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def pad_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch padded with zeros to the longest waveform (and trace), keys as above."""
    lengths = torch.tensor([s["waveform"].shape[0] for s in samples], dtype=torch.long)
    waveforms = torch.zeros(len(samples), int(lengths.max()) if len(samples) else 0, dtype=torch.float32)
    for row, sample in enumerate(samples):
        waveforms[row, : sample["waveform"].shape[0]] = sample["waveform"]
    batch = {
        "waveforms": waveforms,
        "lengths": lengths,
        "labels": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "domains": torch.tensor([s["domain"] for s in samples], dtype=torch.long),
        "corpus": [s["corpus"] for s in samples],
        "paths": [s["path"] for s in samples],
        "speakers": [s.get("speaker") for s in samples],
    }
    if _carried(samples, "values"):
        batch["targets"] = torch.stack([torch.as_tensor(s["values"], dtype=torch.float32) for s in samples])
    if _carried(samples, "trace"):
        batch.update(pad_traces([torch.as_tensor(s["trace"], dtype=torch.float32) for s in samples]))
    return batch


def pad_traces(traces: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """``traces`` ``(F_i, D)`` -> ``{"traces" (B, F, D), "trace_lengths" (B,), "trace_mask" (B, F)}``, zero-padded."""
    sizes = {int(trace.shape[-1]) for trace in traces}
    if len(sizes) > 1 or any(trace.dim() != 2 for trace in traces):
        raise ValueError(
            f"traces must all be (frames, dims) with the same dims, got {[tuple(t.shape) for t in traces]}"
        )
    lengths = torch.tensor([trace.shape[0] for trace in traces], dtype=torch.long)
    longest = int(lengths.max()) if len(traces) else 0
    padded = torch.zeros(len(traces), longest, sizes.pop() if sizes else 0, dtype=torch.float32)
    for row, trace in enumerate(traces):
        padded[row, : trace.shape[0]] = trace
    mask = torch.arange(longest)[None, :] < lengths[:, None]
    return {"traces": padded, "trace_lengths": lengths, "trace_mask": mask}


def _carried(samples: Sequence[dict[str, Any]], key: str) -> bool:
    """Whether the samples carry ``key``: all of them or none (a mixed batch is an error)."""
    having = sum(key in sample for sample in samples)
    if 0 < having < len(samples):
        raise ValueError(f"{having} of {len(samples)} samples carry {key!r}: a batch needs it in all or none")
    return bool(samples) and having == len(samples)


__all__ = ["pad_collate", "pad_traces"]
