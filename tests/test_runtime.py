"""Precision names and the weights digest."""

from __future__ import annotations

import pytest
import torch

from sermodels.runtime import (
    PreparedModel,
    autocast,
    autocast_dtype,
    keep_front_ends_fp32,
    prepare_for_inference,
    weights_digest,
)


def test_precision_names():
    assert autocast_dtype("fp32", "cpu") is None and autocast_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast_dtype("fp8", "cpu")
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16


def test_weights_digest_follows_every_tensor():
    """Equal weights, equal digest; another seed, one changed weight or one BN running statistic: another digest."""
    import timm

    nets = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        nets.append(timm.create_model("resnet18"))
    digests = [weights_digest(net) for net in nets]
    assert digests[0] == digests[1] != digests[2] and len(digests[0]) == 64
    net = nets[2]
    with torch.no_grad():
        net.fc.weight[0, 0] += 1e-6
    changed = weights_digest(net)
    net.bn1.running_mean[0] += 1e-6
    assert len({digests[2], changed, weights_digest(net)}) == 3


def tiny_emonet():
    """A small EmoNet (log-mel front-end inside, 2-D convolutions, BN, attention): what the fast path prepares."""
    import sermodels

    torch.manual_seed(0)
    model = sermodels.create_model("emonet_wrn", domains={"a": ["x", "y", "z"], "b": ["u", "v"]}, stem=4)
    return model.eval()


def speech_like(batch: int = 3, seconds: float = 0.5) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, int(16000 * seconds)) * 0.1


def test_default_preparation_computes_exactly_what_the_model_computes():
    model = tiny_emonet()
    x, lengths = speech_like(), torch.tensor([8000, 6000, 4000])
    with torch.inference_mode():
        expected = model(x, lengths, head="b")
    prepared = prepare_for_inference(model)
    assert isinstance(prepared, PreparedModel) and prepared.model is model and prepared.network is model
    assert torch.equal(prepared(x, lengths, head="b"), expected)
    # Everything else is the model's own: the engine can use the prepared model where it used the model.
    assert prepared.heads == model.heads and prepared.sample_rate == 16000 and not prepared.training
    assert "precision=fp32" in repr(prepared)


def test_bf16_keeps_the_front_end_in_fp32_and_the_weights_unchanged():
    model = tiny_emonet()
    digest = weights_digest(model)
    x = speech_like()
    with torch.inference_mode():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.melspec(x).dtype == torch.bfloat16  # the filterbank matmul under autocast, before
    prepared = prepare_for_inference(model, precision="bf16", channels_last=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.melspec(x).dtype == torch.float32
        assert model.melspec(x.bfloat16()).dtype == torch.float32  # a bf16 input is taken up to fp32
    assert keep_front_ends_fp32(model) == []  # already wrapped: idempotent
    conv = model.stem.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert weights_digest(model) == digest  # same values, only the memory layout changed
    out = prepared(x)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.5


def test_preparation_refuses_what_the_device_cannot_do():
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        prepare_for_inference(tiny_emonet(), precision="fp16")
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        prepare_for_inference(tiny_emonet(), compile=True, cuda_graphs=True)


@pytest.mark.slow
def test_compiled_fast_path_agrees_with_eager():
    """inductor with frozen weights (BN folded, weights pre-packed) computes what the eager model computes."""
    model = tiny_emonet()
    x = speech_like()
    with torch.inference_mode():
        expected = model(x, head="a")
    torch._dynamo.reset()
    prepared = prepare_for_inference(model, compile=True, dynamic=False)
    assert prepared.compiled and prepared.network is not model
    torch.testing.assert_close(prepared(x, head="a"), expected, rtol=1e-3, atol=1e-3)
    # The weights were frozen: the convolutions run as oneDNN's pre-packed, fused ops; the setting did not leak.
    from torch._inductor import config as inductor_config

    with torch.profiler.profile() as profile:
        prepared(x, head="a")
    assert any(event.key.startswith("mkldnn::_convolution_pointwise") for event in profile.key_averages())
    assert inductor_config.freezing is False


def test_a_prepared_model_still_copies_and_pickles():
    """The fp32 front-end wrapper travels with its module: a deep copy's front-end runs the copy, pickling works."""
    import copy
    import pickle

    import sermodels
    from sermodels.runtime import prepare_for_inference

    model = sermodels.load("emonet_wrn.arousal")
    prepare_for_inference(model, precision="bf16")
    clone = copy.deepcopy(model)
    front_ends = [m for m in clone.modules() if getattr(m, "_fp32_front_end", False)]
    assert front_ends and all(m.forward.module is m for m in front_ends)
    restored = pickle.loads(pickle.dumps(model))
    waveforms = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        assert torch.equal(restored(waveforms), model(waveforms))
