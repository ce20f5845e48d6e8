"""The timm backbone wrapper: layers by name, pooling, weights from a file or none, offline behaviour, gradients for
fine-tuning, and modes. Small nets (MobileNetV2, ResNet-18) at small image sizes keep every build cheap on CPU; the
VGG16 fc6/fc7 layers are checked against timm's VGG by hand in tests/features/test_deepspectrum.py.
"""

from __future__ import annotations

import socket

import pytest
import torch

from sermodels.layers.backbone import BackboneFeatures, default_layer, layer_output, resolve_layer

SMALL_NET = "mobilenetv2_100"  # 3.5 M parameters


def test_layer_and_backbone_errors():
    with pytest.raises(ValueError, match="'fc7' names a VGG layer; 'mobilenetv2_100' is not a VGG net"):
        BackboneFeatures(SMALL_NET, layer="fc7")
    with pytest.raises(ValueError, match=r"no module 'block\.6'.*'blocks\.6'"):
        BackboneFeatures(SMALL_NET, layer="block.6")
    with pytest.raises(ValueError, match="unknown timm model 'vgg17'"):
        BackboneFeatures("vgg17")
    with pytest.raises(ValueError, match="unknown pool 'max'"):
        BackboneFeatures(SMALL_NET, pool="max")


def test_weights_file_errors(tmp_path):
    import timm
    from safetensors.torch import save_file

    pickled = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, pickled)
    with pytest.raises(ValueError, match=r"weights\.pt: backbone weights must be a \.safetensors file \(pickled"):
        BackboneFeatures(SMALL_NET, pretrained=pickled)
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors: backbone weights file not found"):
        BackboneFeatures(SMALL_NET, pretrained=missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a readable safetensors file"):
        BackboneFeatures(SMALL_NET, pretrained=junk)
    resnet = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(resnet))
    with pytest.raises(
        ValueError, match=r"resnet18\.safetensors: weights do not fit timm model 'mobilenetv2_100'"
    ) as err:
        BackboneFeatures(SMALL_NET, pretrained=resnet)
    message = str(err.value)
    assert "missing ['blocks.0" in message and "unexpected ['conv1.weight'" in message


def test_weights_of_another_width_name_the_file(tmp_path):
    """Same key names, other shapes (MobileNetV2 0.5 into 1.0): a ValueError naming the file and the keys, like
    missing keys get (currently torch's bare ``RuntimeError: Error(s) in loading state_dict for EfficientNet``;
    resnet18 weights above hit the same, as both nets have ``bn1.*``)."""
    import timm
    from safetensors.torch import save_file

    narrow = tmp_path / "mobilenetv2_050.safetensors"
    save_file(timm.create_model("mobilenetv2_050").state_dict(), str(narrow))
    with pytest.raises(ValueError, match=r"mobilenetv2_050\.safetensors: weights do not fit timm model") as err:
        BackboneFeatures(SMALL_NET, pretrained=narrow)
    assert "shape" in str(err.value) and "blocks.0.0.bn1.bias" in str(err.value)


def test_pretrained_without_the_hub_is_a_clear_error(tmp_path, monkeypatch):
    """``pretrained=True`` offline with an empty cache: a RuntimeError naming the model and the local-weights way
    out, and not one connection attempted."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time: set the live value too
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(RuntimeError) as err:
        BackboneFeatures(SMALL_NET, pretrained=True)
    message = str(err.value)
    assert "'mobilenetv2_100'" in message and "Hugging Face Hub" in message
    assert "pretrained='weights.safetensors'" in message and "--weights" in message and "--random-init" in message
    assert attempts == []


def test_named_layer_is_captured_before_inplace_ops():
    """resnet18's ``bn1`` is followed by an in-place ReLU: its captured output keeps its negative values (a copy is
    taken when the layer has run) and equals the layer applied by hand."""
    torch.manual_seed(0)
    wrapper = BackboneFeatures("resnet18", layer="bn1", pool="flatten").eval()
    images = torch.rand(2, 3, 32, 48)
    with torch.inference_mode():
        ours = wrapper(images)
        net = wrapper.backbone
        expected = net.bn1(net.conv1(wrapper.normalise(images))).flatten(1)
    assert ours.min() < 0
    torch.testing.assert_close(ours, expected)


def test_named_layers_pool_or_flatten_and_say_their_size():
    """MobileNetV2's ``blocks.6`` is (320, 4, 4) for 112 x 112 images: 320 features pooled, 5120 flattened, the
    pooled ones the mean of the flattened ones; the default layer is timm's 1280-d pre-logits."""
    torch.manual_seed(0)
    avg = BackboneFeatures(SMALL_NET, layer="blocks.6").eval()
    flat = BackboneFeatures(SMALL_NET, layer="blocks.6", pool="flatten").eval()
    flat.load_state_dict(avg.state_dict())
    assert avg.output_dim(112, 112) == 320 and flat.output_dim(112, 112) == 320 * 16
    images = torch.rand(3, 3, 112, 112)
    with torch.inference_mode():
        pooled, flattened = avg(images), flat(images)
    assert pooled.shape == (3, 320) and flattened.shape == (3, 320 * 16)
    torch.testing.assert_close(pooled, flattened.view(3, 320, 16).mean(-1), rtol=1e-5, atol=1e-6)
    default = BackboneFeatures(SMALL_NET)
    assert default.layer == default_layer(SMALL_NET) == "pre_logits" and default.output_dim(64, 64) == 1280
    assert default_layer("vgg16") == "fc7"


def test_layer_output_stops_at_the_layer():
    """The layers above the requested one never run (the forward is stopped once it has its output)."""
    torch.manual_seed(0)
    net = BackboneFeatures(SMALL_NET, layer="blocks.2").eval()
    ran: list[str] = []
    for name in ("blocks.1", "blocks.3", "conv_head"):
        dict(net.backbone.named_modules())[name].register_forward_hook(lambda *_args, n=name: ran.append(n))
    with torch.inference_mode():
        out = layer_output(net.backbone, resolve_layer(net.backbone, SMALL_NET, "blocks.2"), torch.rand(1, 3, 64, 64))
    assert out.dim() == 4 and ran == ["blocks.1"]


def test_trainable_backbone_gets_gradients_below_the_layer_only():
    """Fine-tuning up to a cut-off: a loss on ``blocks.3`` features gives finite, non-zero gradients to the stem and
    the blocks below, and none to the layers above (they never ran)."""
    torch.manual_seed(0)
    net = BackboneFeatures(SMALL_NET, layer="blocks.3").train()
    images = torch.rand(4, 3, 64, 64, requires_grad=True)
    net(images).square().mean().backward()
    stem = net.backbone.conv_stem.weight.grad
    assert stem is not None and torch.isfinite(stem).all() and stem.abs().sum() > 0
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert all(p.grad is None for p in net.backbone.conv_head.parameters())
    assert all(p.grad is None for p in net.backbone.blocks[4].parameters())


def test_output_dim_keeps_each_modules_mode():
    """The dry run of ``output_dim`` runs in eval mode and gives every module its own mode back."""
    net = BackboneFeatures(SMALL_NET).train()
    net.backbone.blocks[0].eval()
    before = {name: m.training for name, m in net.named_modules()}
    assert net.output_dim(64, 64) == 1280
    assert {name: m.training for name, m in net.named_modules()} == before


def test_state_dict_is_the_timm_models_under_backbone():
    """The timm weights are ``backbone.<timm name>``: the names of released Deep Spectrum checkpoints
    (``extractor.backbone.*``); the input normalisation buffers are not saved (they are in the config)."""
    net = BackboneFeatures(SMALL_NET)
    timm_keys = {f"backbone.{key}" for key in net.backbone.state_dict()}
    assert set(net.state_dict()) == timm_keys


def test_input_normalisation_defaults_and_checks():
    net = BackboneFeatures("resnet18")
    assert net.config() == {
        "backbone": "resnet18",
        "layer": "pre_logits",
        "pool": "avg",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    other = BackboneFeatures("resnet18", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert torch.equal(other.normalise(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 2.0))
    with pytest.raises(ValueError, match="three values"):
        BackboneFeatures("resnet18", mean=[0.5], std=[0.25])
    with pytest.raises(ValueError, match="std > 0"):
        BackboneFeatures("resnet18", std=[0.25, 0.0, 0.25])
