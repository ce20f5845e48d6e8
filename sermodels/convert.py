"""Offline conversion of third-party pretrained weights into float safetensors for timm models.

The only ImageNet-pretrained CNN available offline here is torchvision's MobileNetV2, int8-quantized and saved as
TorchScript (``../shared/weights/mobilenet_v2_imagenet_int8_torchscript.pt``; see ``../shared/data/README.md``).
Deep Spectrum (Amiriparian et al., Interspeech 2017) needs an ImageNet CNN as its frozen feature extractor, so
``convert_mobilenet_v2_int8`` turns that archive into a float state dict of timm's ``mobilenetv2_100``:

- every packed conv / linear is unpacked and dequantized (weights per-tensor or per-channel, whatever the file
  holds; the bias is float already in PyTorch's quantized modules, dequantized too if it is not);
- torchvision's module paths are mapped onto timm's from both models' structure, block by block (see
  ``_layer_pairs``), and every conv's shape, stride, padding, dilation and groups is checked against timm's;
- batch norm was folded into the quantized convs (they carry a bias) while timm's convs have none and are followed
  by a BatchNorm: that BatchNorm becomes the identity plus the folded bias (weight 1, running_mean 0, bias = the
  conv bias, running_var = float32(1 - eps) = 1 - 168 * 2**-24 for timm's eps 1e-5, for which sqrt(var + eps) is
  exactly 1 both in float32 and computed in float64 and rounded to float32, so eval-mode BN adds the bias and
  scales by exactly 1.0).

Departures from the int8 model: the float model does not round activations to uint8, and timm clips with ReLU6
where torchvision's quantizable MobileNetV2 uses ReLU (clipped only by each layer's uint8 output range). Measured in
tests/test_convert.py: on photos the top-1 class is the same and the logits differ by at most ~1.6 on ranges of
19-28; on low-confidence synthetic images the top-1 class flips about half the time (max difference up to ~4.4 on
ranges of 8-14). With the activation rounding emulated, the float weights reproduce the int8 logits within a few
output quanta, so the differences are the int8 model's activation rounding, not the conversion.

Security: ``torch.jit.load`` executes the TorchScript code stored in the archive. Only convert files you trust. It
is used here once, offline, for this one torchvision file; the result is safetensors, the only format sermodels
loads weights from.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from sermodels.checkpoint import safetensors_bytes

TIMM_MOBILENET_V2 = "mobilenetv2_100"
# torchvision's quantized MobileNetV2 packs its weights for the QNNPACK backend (../shared/data/README.md).
QUANTIZED_ENGINE = "qnnpack"
# TorchScript's conv-packed-params hoisting pass lifts ``features.0.0._packed_params`` to a top-level attribute
# named ``_jit_pass_hoist_conv_packed_params.features.0.0._packed_params.<n>``.
_HOISTED = re.compile(r"^_jit_pass_hoist_conv_packed_params\.(?P<path>.+)\._packed_params\.\d+$")
_CONV_PACKED = "Conv2dPackedParamsBase"
_LINEAR_PACKED = "LinearPackedParamsBase"


def convert_mobilenet_v2_int8(src: str | Path, dst: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Float state dict of timm's ``mobilenetv2_100`` from torchvision's int8 TorchScript MobileNetV2 ``src``.

    The result loads with ``strict=True`` into ``timm.create_model("mobilenetv2_100")``. With ``dst``, it is also
    written there as safetensors, with metadata naming the source file and its sha256. Only convert trusted files:
    ``torch.jit.load`` runs the archive's code.
    """
    from sermodels._io import sha256_of

    src = Path(src)
    with _quantized_engine(QUANTIZED_ENGINE):
        archive = _load_torchscript(src)
        hoisted = _hoisted_packed_params(archive)
        model = _timm_mobilenet_v2()
        state: dict[str, torch.Tensor] = {}
        schemes: set[str] = set()
        used: set[str] = set()
        for timm_layer, timm_bn, tv_path in _layer_pairs(model):
            layer = _find_packed(archive, hoisted, tv_path, src)
            used.add(tv_path)
            weight, bias, scheme = _unpack(layer, tv_path, src)
            schemes.add(scheme)
            _check_geometry(model.get_submodule(timm_layer), weight, layer, tv_path, timm_layer, src)
            _assign(state, f"{timm_layer}.weight", weight, src)
            if timm_bn is None:
                _assign(state, f"{timm_layer}.bias", bias, src)
            else:
                for name, value in _identity_batch_norm(model.get_submodule(timm_bn), bias).items():
                    _assign(state, f"{timm_bn}.{name}", value, src)
    unused = sorted(set(hoisted) - used)
    if unused:
        raise ValueError(f"{src}: unexpected structure, int8 layers without a timm {TIMM_MOBILENET_V2} match: {unused}")
    _check_keys(state, model, src)
    if dst is not None:
        _save(state, Path(dst), src, sha256_of(src), schemes)
    return state


def _timm_mobilenet_v2() -> nn.Module:
    import timm

    return timm.create_model(TIMM_MOBILENET_V2, pretrained=False)


@contextmanager
def _quantized_engine(name: str) -> Iterator[None]:
    """Switch PyTorch's quantized backend for the block (the packed weights are unpacked by it), then restore."""
    if name not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"this PyTorch build lacks the {name} quantized engine needed to read the int8 weights")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _load_torchscript(src: Path) -> torch.jit.ScriptModule:
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file")
    if not src.is_file():
        raise ValueError(f"{src}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": deliberate, see above
            return torch.jit.load(str(src), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        reason = str(err).split(". ")[0]
        raise ValueError(f"{src}: not a TorchScript archive ({reason})") from None


def _hoisted_packed_params(archive: torch.jit.ScriptModule) -> dict[str, str]:
    """torchvision module path -> name of its hoisted packed-params attribute, read off the forward graph."""
    found = {}
    for node in archive.graph.nodes():
        if node.kind() == "prim::GetAttr" and (match := _HOISTED.match(node.s("name"))):
            found[match["path"]] = node.s("name")
    return found


def _find_packed(archive: torch.jit.ScriptModule, hoisted: dict[str, str], path: str, src: Path):
    """The packed params of torchvision module ``path``: a hoisted attribute, else ``<path>._packed_params`` (a
    quantized Linear wraps its packed params in one more ``_packed_params`` module)."""
    if path in hoisted:
        return archive._c.getattr(hoisted[path])
    node = archive._c
    for part in [*path.split("."), "_packed_params"]:
        if not node.hasattr(part):
            raise ValueError(
                f"{src}: unexpected structure, no packed parameters for torchvision module {path!r} "
                f"(expected torchvision's quantized MobileNetV2)"
            )
        node = node.getattr(part)
    if isinstance(node, torch._C.ScriptModule) and node.hasattr("_packed_params"):
        node = node.getattr("_packed_params")
    return node


def _unpack(packed, path: str, src: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Dequantized float32 (weight, bias) of a packed conv or linear, and the weight's quantization scheme."""
    kind = packed._type().qualified_name().rsplit(".", 1)[-1] if hasattr(packed, "_type") else type(packed).__name__
    if kind == _CONV_PACKED:
        weight, bias = torch.ops.quantized.conv2d_unpack(packed)
    elif kind == _LINEAR_PACKED:
        weight, bias = torch.ops.quantized.linear_unpack(packed)
    else:
        raise ValueError(f"{src}: torchvision module {path!r} holds a {kind}, not a quantized conv or linear")
    scheme = str(weight.qscheme()).removeprefix("torch.") if weight.is_quantized else "float"
    if bias is None:
        bias = torch.zeros(weight.shape[0])
    return _to_float(weight), _to_float(bias), scheme


def _to_float(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 contiguous copy; quantized tensors (per-tensor or per-channel) are dequantized."""
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    return tensor.detach().to(torch.float32).contiguous().clone()


def _layer_pairs(model: nn.Module) -> Iterator[tuple[str, str | None, str]]:
    """(timm conv/linear, timm BatchNorm after it or None, torchvision module path) in forward order.

    torchvision ``features`` = [stem conv-BN-ReLU, 17 inverted residual blocks, head conv-BN-ReLU]; each block
    ``features.i.conv`` = [pw conv-BN-ReLU, dw conv-BN-ReLU, pw-linear conv, BN], without the first pw when its
    expansion is 1 (``features.1``: [dw conv-BN-ReLU, pw-linear conv, BN]). timm groups the same 17 blocks into
    stages ``blocks[s][j]``: a DepthwiseSeparableConv (conv_dw/bn1, conv_pw/bn2) for the expansion-1 block, then
    InvertedResiduals (conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3). Matching them in order is checked by the conv
    geometry of each pair in ``_check_geometry``.
    """
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    yield "conv_stem", "bn1", "features.0.0"
    index = 0
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            index += 1
            at, tv = f"blocks.{s}.{j}", f"features.{index}.conv"
            if isinstance(block, DepthwiseSeparableConv):
                yield f"{at}.conv_dw", f"{at}.bn1", f"{tv}.0.0"
                yield f"{at}.conv_pw", f"{at}.bn2", f"{tv}.1"
            elif isinstance(block, InvertedResidual):
                yield f"{at}.conv_pw", f"{at}.bn1", f"{tv}.0.0"
                yield f"{at}.conv_dw", f"{at}.bn2", f"{tv}.1.0"
                yield f"{at}.conv_pwl", f"{at}.bn3", f"{tv}.2"
            else:
                raise TypeError(f"timm {TIMM_MOBILENET_V2}: unexpected block {at} of type {type(block).__name__}")
    yield "conv_head", "bn2", f"features.{index + 1}.0"
    yield "classifier", None, "classifier.1"


def _check_geometry(target: nn.Module, weight: torch.Tensor, layer, path: str, timm_layer: str, src: Path) -> None:
    """The int8 layer must have the shape (and, for convs, stride/padding/dilation/groups) of the timm layer."""
    problem = None
    if tuple(weight.shape) != tuple(target.weight.shape):
        problem = f"weight shape {tuple(weight.shape)} != timm {tuple(target.weight.shape)}"
    elif isinstance(target, nn.Conv2d):
        ours = {
            "stride": tuple(torch.ops.quantized.conv2d_stride(layer)),
            "padding": tuple(torch.ops.quantized.conv2d_padding(layer)),
            "dilation": tuple(torch.ops.quantized.conv2d_dilation(layer)),
            "groups": int(torch.ops.quantized.conv2d_groups(layer)),
        }
        theirs = {name: getattr(target, name) for name in ours}
        theirs = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in theirs.items()}
        if ours != theirs:
            problem = f"conv {ours} != timm {theirs}"
    if problem:
        raise ValueError(f"{src}: unexpected structure at torchvision module {path!r} -> timm {timm_layer}: {problem}")


def unit_running_var(eps: float) -> float:
    """The float32 running_var v closest to 1 - eps with sqrt(v + eps) == 1 exactly, in float32 arithmetic and in
    float64 rounded to float32 (PyTorch's CPU BatchNorm), so that an eval-mode BatchNorm with weight 1 and mean 0
    is the identity plus its bias."""
    start = torch.tensor(1.0 - eps, dtype=torch.float32)
    candidates = [start, torch.nextafter(start, torch.tensor(2.0)), torch.nextafter(start, torch.tensor(0.0))]
    for var in candidates:
        in_f32 = torch.sqrt(var + torch.tensor(eps, dtype=torch.float32)) == 1.0
        in_f64 = (1.0 / torch.sqrt(var.double() + eps)).float() == 1.0
        if in_f32 and in_f64:
            return float(var)
    raise ValueError(f"no float32 running_var near 1 - {eps} gives sqrt(var + eps) == 1 exactly")


def _identity_batch_norm(bn: nn.Module, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """BatchNorm buffers and parameters that reduce eval-mode BN to ``x + bias`` (batch norm is already folded into
    the conv weights)."""
    channels = bn.num_features
    if bias.shape != (channels,):
        raise ValueError(f"folded bias of shape {tuple(bias.shape)} for a BatchNorm of {channels} channels")
    return {
        "weight": torch.ones(channels),
        "bias": bias,
        "running_mean": torch.zeros(channels),
        "running_var": torch.full((channels,), unit_running_var(bn.eps)),
        "num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def _assign(state: dict[str, torch.Tensor], key: str, value: torch.Tensor, src: Path) -> None:
    if key in state:
        raise ValueError(f"{src}: timm key {key} would be assigned twice")
    state[key] = value


def _check_keys(state: dict[str, torch.Tensor], model: nn.Module, src: Path) -> None:
    """Every timm tensor assigned exactly once, with timm's shape and dtype."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{src}: keys differ from timm {TIMM_MOBILENET_V2}'s: missing {missing}, extra {extra}")
    for key, value in expected.items():
        if state[key].shape != value.shape or state[key].dtype != value.dtype:
            raise ValueError(
                f"{src}: {key} converted as {state[key].dtype}{tuple(state[key].shape)}, "
                f"timm has {value.dtype}{tuple(value.shape)}"
            )


def _save(state: dict[str, torch.Tensor], dst: Path, src: Path, sha256: str, schemes: set[str]) -> None:
    """Write ``state`` as safetensors, atomically, byte-for-byte the same on every run."""
    metadata = {
        "format": "pt",
        "source": src.name,
        "source_sha256": sha256,
        "source_quantization": ",".join(sorted(schemes)),
        "timm_model": TIMM_MOBILENET_V2,
        "converter": "sermodels.convert.convert_mobilenet_v2_int8",
        # The shared weights file comes from pytorch/ios-demo-app (BSD licence): the licence travels with the weights
        # into every model card that uses them.
        "source_licence": "BSD (torchvision ImageNet MobileNetV2, int8 TorchScript from pytorch/ios-demo-app)",
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(safetensors_bytes(state, metadata))
    tmp.replace(dst)
