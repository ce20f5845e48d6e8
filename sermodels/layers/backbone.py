"""A timm image backbone cut at a named layer: RGB images in, one feature vector per image out.

Deep Spectrum (Amiriparian et al., Interspeech 2017; the EmoNet paper's baseline, §4.2) reads the activations of one
layer of an ImageNet CNN (VGG16 ``fc7``); the CNN+LSTM transfer study freezes or fine-tunes a network up to a named
cut-off. Both need the same thing: a timm model, its weights from the Hugging Face Hub (timm), a local safetensors
file or random, the ImageNet input normalisation it was trained with, and the output of one of its layers, pooled
over space or flattened.

How the layer is read: ``"pre_logits"`` is timm's pooled representation before the classifier
(``forward_head(..., pre_logits=True)``); any other name is a module of the timm model, whose output a forward hook
copies before the forward is stopped (the layers above it never run). ``"fc6"``/``"fc7"`` name VGG's fully connected
layers (timm's ``pre_logits.act1`` and ``pre_logits``). 4-D activations of a named module are average-pooled over
space (``pool="avg"``) or flattened (``pool="flatten"``, the Deep Spectrum toolkit's choice, long vectors for
convolutional layers).

The timm model is the ``backbone`` attribute, so its parameters are ``backbone.<timm name>`` wherever the wrapper
sits (the released Deep Spectrum checkpoint's ``extractor.backbone.*``). Weights files are never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

POOLS = ("avg", "flatten")
#: timm's VGG: ``pre_logits`` = fc6 -> ReLU -> fc7 -> ReLU.
VGG_LAYERS = {"fc7": "pre_logits", "fc6": "pre_logits.act1"}
#: timm's default ImageNet input normalisation, for a backbone whose ``pretrained_cfg`` names none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_backbone(name: str, pretrained: bool | str | Path = False) -> nn.Module:
    """A timm model by name. ``pretrained``: False (random init), True (timm's weights from the Hugging Face Hub) or
    a local ``.safetensors`` file with the model's state dict."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models()")
    if pretrained is True:
        try:
            return timm.create_model(name, pretrained=True)
        except Exception as err:  # noqa: BLE001 - network, cache and Hub errors all mean the same thing here
            raise RuntimeError(
                f"could not get pretrained weights for {name!r} through timm from the Hugging Face Hub ({err}); "
                "offline, pass a local weights file (pretrained='weights.safetensors', CLI --weights FILE), or "
                "pretrained=False (CLI --random-init) for random weights"
            ) from err
    model = timm.create_model(name, pretrained=False)
    if pretrained:
        load_backbone_weights(model, pretrained, name)
    return model


def load_backbone_weights(model: nn.Module, path: str | Path, name: str = "") -> None:
    """Load a ``.safetensors`` state dict into ``model`` strictly; errors name the file and what does not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone weights file not found")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: backbone weights must be a .safetensors file (pickled checkpoints are not loaded)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in reshaped]
        raise ValueError(
            f"{path}: weights do not fit timm model {name!r}: missing {_some(missing)}, unexpected "
            f"{_some(unexpected)}, wrong shape (file vs model) {_some(shapes)}"
        )
    model.load_state_dict(state, strict=True)


def _some(names: list[str], count: int = 5) -> str:
    return f"{names[:count]}{'...' if len(names) > count else ''}"


def default_layer(backbone: str) -> str:
    """``fc7`` for VGG nets (the Deep Spectrum default), else the pooled pre-logits features."""
    return "fc7" if backbone.startswith("vgg") else "pre_logits"


def resolve_layer(model: nn.Module, backbone: str, layer: str) -> str:
    """The timm module name that ``layer`` stands for (``fc6``/``fc7`` of a VGG, ``pre_logits`` or a module name);
    an unknown name is an error listing modules with a similar name."""
    name = layer
    if name in VGG_LAYERS:
        if not backbone.startswith("vgg"):
            raise ValueError(f"layer {name!r} names a VGG layer; {backbone!r} is not a VGG net")
        name = VGG_LAYERS[name]
    if name == "pre_logits":
        return name
    modules = dict(model.named_modules())
    if name not in modules:
        close = [m for m in modules if name.split(".")[-1] in m][:8]
        raise ValueError(f"{backbone!r} has no module {name!r}; modules with a similar name: {close}")
    return name


class _LayerReached(Exception):
    """Raised by the forward hook once the requested layer has produced its output."""


def layer_output(model: nn.Module, target: str, x: Tensor) -> Tensor:
    """The output of ``model``'s module ``target`` (or timm's ``pre_logits`` features) for the input ``x``; the
    forward stops at that module. Differentiable: gradients flow back to ``x`` and to the layers below ``target``."""
    if target == "pre_logits":
        return model.forward_head(model.forward_features(x), pre_logits=True)
    captured: list[Tensor] = []

    def capture(_module, _inputs, output):
        # A copy: a later in-place op (ReLU(inplace=True)) would overwrite the module's output tensor. The forward
        # stops here, the layers above are not needed.
        captured.append(output.clone())
        raise _LayerReached

    module = dict(model.named_modules())[target]
    handle = module.register_forward_hook(capture)
    try:
        model(x)
    except _LayerReached:
        pass
    finally:
        handle.remove()
    return captured[-1]


class BackboneFeatures(nn.Module):
    """Images ``(B, 3, H, W)`` in [0, 1] -> features ``(B, D)`` of one layer of a timm backbone.

    Args:
        backbone: a timm model name (``timm.list_models()``).
        layer: ``"pre_logits"``, ``"fc6"``/``"fc7"`` (VGG), or any module name of the timm model; default
            :func:`default_layer`.
        pretrained: False (random init; seed torch first for reproducible weights), True (timm's weights from the
            Hub) or a local ``.safetensors`` file. Not part of :meth:`config`: a saved model carries the weights.
        pool: ``"avg"`` (mean over space of 4-D activations) or ``"flatten"``.
        mean / std: the RGB input normalisation; default the backbone's ``pretrained_cfg`` (stored in the config so
            that a change of timm's defaults cannot change a saved model).

    The wrapper neither freezes nor fixes BN statistics: a frozen feature extractor (Deep Spectrum) keeps the
    backbone in eval mode itself, a fine-tuned one (transfer regimes) trains it.
    """

    def __init__(
        self,
        backbone: str,
        layer: str | None = None,
        pretrained: bool | str | Path = False,
        pool: str = "avg",
        mean: list[float] | tuple[float, ...] | None = None,
        std: list[float] | tuple[float, ...] | None = None,
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {list(POOLS)}")
        self.backbone_name, self.pool = backbone, pool
        self.layer = layer or default_layer(backbone)
        self.backbone = create_backbone(backbone, pretrained)
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        mean = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", IMAGENET_MEAN)))
        std = tuple(float(v) for v in (std if std is not None else cfg.get("std", IMAGENET_STD)))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need three values (RGB) and std > 0, got mean={mean}, std={std}")
        self.input_mean, self.input_std = list(mean), list(std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None], persistent=False)
        self._target = resolve_layer(self.backbone, backbone, self.layer)

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone_name,
            "layer": self.layer,
            "pool": self.pool,
            "mean": self.input_mean,
            "std": self.input_std,
        }

    def output_dim(self, height: int, width: int) -> int:
        """Feature size ``D`` for images of ``height x width`` pixels (a dry run in eval mode, without gradients)."""
        modes = {module: module.training for module in self.modules()}
        self.eval()
        try:
            with torch.no_grad():
                return int(self.features_of_images(torch.zeros(1, 3, height, width, device=self.mean.device)).shape[-1])
        finally:
            for module, mode in modes.items():  # each module's own mode back (a frozen backbone stays in eval)
                module.training = mode

    def normalise(self, images: Tensor) -> Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def features_of_images(self, images: Tensor) -> Tensor:
        """RGB images ``(B, 3, H, W)`` in [0, 1] -> features ``(B, D)``."""
        out = layer_output(self.backbone, self._target, self.normalise(images))
        # timm's pre_logits are already pooled as the model pools them (VGG's 1 x 1 map): taken as they are.
        if self._target != "pre_logits" and out.dim() == 4 and self.pool == "avg":
            return out.mean(dim=(2, 3))
        return out.flatten(1)

    def forward(self, images: Tensor) -> Tensor:
        return self.features_of_images(images)
