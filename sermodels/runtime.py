"""How a network runs: mixed precision by name, and the digest of the weights that actually run.

Used by everything that runs a model over data (feature extraction, training tasks that cache features, the batch
pipelines): ``fp32``, ``bf16`` (CPU or GPU) and ``fp16`` (GPU only) name an autocast dtype; :func:`weights_digest`
keys a feature cache or refuses to resume an extraction with other weights.
"""

from __future__ import annotations

import contextlib
import hashlib

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision name: fp32 (none), bf16 (CPU or GPU), fp16 (GPU only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision fp16 needs a CUDA device (got {device}); on the CPU use bf16 (bfloat16 autocast) or fp32"
        )
    return PRECISIONS[precision]


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the backbone (see :func:`autocast_dtype`); a no-op for fp32."""
    dtype = autocast_dtype(precision, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)


def weights_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): the weights that actually run, e.g. to key
    a feature cache or to refuse resuming an extraction with other weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
