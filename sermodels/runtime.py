"""How a network runs: mixed precision by name, and the digest of the weights that actually run.

Used by everything that runs a model over data (feature extraction, training tasks that cache features, the batch
pipelines): ``fp32``, ``bf16`` (CPU or GPU) and ``fp16`` (GPU only) name an autocast dtype; :func:`weights_digest`
keys a feature cache or refuses to resume an extraction with other weights; :func:`prepare_for_inference` sets a
loaded model up to predict fast (bf16 with an fp32 front-end, channels-last, ``torch.compile`` with frozen weights).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: inductor settings of the compiled fast path: weights frozen into constants (BN folded into the convolutions,
#: oneDNN weight pre-packing and conv + pointwise fusion on the CPU).
FREEZING = {"freezing": True}


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


# ------------------------------------------------------------------------------------------- fast inference


def _is_front_end(module: nn.Module) -> bool:
    """A feature front-end of :mod:`sermodels.features` (STFT, mel filterbank, dB, MFCC, ...) inside a model."""
    return type(module).__module__.startswith("sermodels.features")


def keep_front_ends_fp32(model: nn.Module) -> list[nn.Module]:
    """Run every outermost :mod:`sermodels.features` front-end of ``model`` in fp32, outside any autocast, in place.

    Under bf16 autocast the mel filterbank (a matmul) would otherwise run in bf16 (8 significant bits) on power
    values spanning ~10 orders of magnitude, before the log. Keeping it in fp32 costs little time (its FFT and
    complex magnitude run in fp32 under autocast anyway) and keeps the network's input as the fp32 model sees it
    (on EmoNet it cut the largest logit difference to fp32 about threefold: the ablation of benchmarks/speed.py).
    The module's values and parameters do not change: its ``forward`` is wrapped on the instance
    (``autocast(enabled=False)`` and a float32 input). Returns the wrapped modules; a module already wrapped is left
    as it is."""
    wrapped = []
    seen: set[int] = set()
    for module in model.modules():
        if id(module) in seen or not _is_front_end(module):
            continue
        seen.update(id(inner) for inner in module.modules())  # wrap the outermost front-end only
        if getattr(module, "_fp32_front_end", False):
            continue
        module.forward = Fp32Forward(module)
        module._fp32_front_end = True
        wrapped.append(module)
    return wrapped


class Fp32Forward:
    """A front-end's own ``forward`` run in fp32 outside autocast, set on the instance. An object that holds its
    module, not a closure: ``copy.deepcopy`` of the model copies it with the module (the copy's front-end calls the
    copy, e.g. in ONNX export after a bf16 run), and the model still pickles."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return type(self.module).forward(self.module, x.float() if x.is_floating_point() else x, *args, **kwargs)


class PreparedModel:
    """A model set up for fast inference: call it like the model (``prepared(waveforms, lengths, head=...)``); it
    runs under ``torch.inference_mode()`` and the autocast of its precision, through the compiled network when
    compiled. Any other attribute (``heads``, ``sample_rate``, ``default_chunk_seconds``, ...) is the model's own.

    Attributes: ``model`` (the ``nn.Module``, on ``device``, in eval mode), ``network`` (what is called: the
    model or its ``torch.compile`` wrapper), ``device``, ``precision``, ``channels_last``, ``compiled``.
    """

    def __init__(self, model: nn.Module, network: Callable, device: torch.device, precision: str, **flags: bool):
        self.model, self.network, self.device, self.precision = model, network, device, precision
        self.channels_last = flags.get("channels_last", False)
        self.compiled = flags.get("compiled", False)

    def __call__(self, waveforms: Tensor, lengths: Tensor | None = None, **kwargs: Any) -> Tensor:
        with torch.inference_mode(), autocast(self.device, self.precision), self._compile_settings():
            return self.network(waveforms, lengths, **kwargs)

    def _compile_settings(self) -> contextlib.AbstractContextManager:
        """inductor's ``freezing`` for the calls that compile: it is read when a graph is compiled, outside the
        ``options`` of ``torch.compile`` (passing it there has no effect), and it must not leak to other compiled
        modules of the process (a frozen graph keeps the weights it saw)."""
        if not self.compiled:
            return contextlib.nullcontext()
        import torch._inductor.config

        return torch._inductor.config.patch(FREEZING)

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return (
            f"PreparedModel({type(self.model).__name__}, device={self.device}, precision={self.precision}, "
            f"channels_last={self.channels_last}, compiled={self.compiled})"
        )


def prepare_for_inference(
    model: nn.Module,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    dynamic: bool | None = None,
    cuda_graphs: bool = False,
) -> PreparedModel:
    """``model`` set up to predict fast on ``device``; returns a :class:`PreparedModel` to call instead of it.

    - ``precision`` (``fp32``, ``bf16``, ``fp16`` on CUDA): the network runs under that autocast; for bf16/fp16 the
      :mod:`sermodels.features` front-ends stay in fp32 (:func:`keep_front_ends_fp32`). The weights stay fp32:
      autocast casts them per call (cheap), while converting them to bf16 would make the models' fp32 masks
      promote activations back to fp32 in front of bf16 BatchNorm weights, which PyTorch's CPU BatchNorm rejects.
    - ``channels_last``: 4-D weights stored NHWC (same values), so that oneDNN / cuDNN pick their NHWC kernels and
      the 2-D CNNs' activations stay NHWC.
    - ``compile``: ``torch.compile`` (inductor) with ``freezing``: in inference the weights become constants, BN
      folds into the convolutions and oneDNN pre-packs the weights (on the CPU the largest single gain for the CNNs);
      ``dynamic`` is ``torch.compile``'s (``None``: recompile with dynamic shapes once a second shape is seen).
      ``cuda_graphs`` (CUDA only) compiles with ``mode="reduce-overhead"`` (CUDA graphs: one graph per shape,
      which removes the launch overhead of the many small kernels of a batch).
      The first call of each shape and head compiles (seconds to a minute); freezing snapshots the weights, so
      prepare again after changing them.

    With the defaults (fp32, no layout change, no compile) the result computes exactly what ``model`` computes.
    ``model`` is moved to ``device``, put in eval mode and, with bf16/fp16 or ``channels_last``, changed in place
    (front-end wrapping, weight layout); its parameter values never change.
    """
    device = torch.device(device)
    autocast_dtype(precision, device)  # an unknown precision, or fp16 off CUDA, fails here
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, got {device}")
    model = model.to(device).eval()
    if precision != "fp32":
        keep_front_ends_fp32(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    network: Callable = model
    if compile:
        mode = "reduce-overhead" if cuda_graphs else None
        network = torch.compile(model, dynamic=dynamic, mode=mode)
    return PreparedModel(model, network, device, precision, channels_last=channels_last, compiled=compile)
