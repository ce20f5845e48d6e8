"""The ImageNet-initialised multi-domain CNN (``adapted_cnn``): its one-channel stem, its per-domain adapters and BN
layers, batch invariance, reserved domain names and adapter transfer, on real EMO-DB clips."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import corpus_root

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import load_folder, save_pretrained
from sermodels.models.adapted_cnn import AdaptedCNN, DomainConv, DomainNorm, one_channel_stem
from sermodels.tasks.transfer import prepare_domains

EMODB = ["anger", "neutral", "sadness"]
SMALL = {"backbone": "test_efficientnet", "adapter_rank": 2, "hidden": 8, "frontend": {"n_mels": 32}}


def _model(**kwargs) -> AdaptedCNN:
    torch.manual_seed(0)
    return AdaptedCNN({"emodb": EMODB, "urdu": ["angry", "happy"]}, **(SMALL | kwargs)).eval()


def _clips() -> tuple[torch.Tensor, torch.Tensor]:
    root = corpus_root("emodb") / "wav"
    waves = [load_audio(root / name) for name in ("03a01Wa.flac", "08a01Na.flac", "09a01Fa.flac")]
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])


def test_the_one_channel_stem_sees_a_grey_image_as_the_rgb_network_does():
    torch.manual_seed(0)
    rgb = timm.create_model("test_efficientnet").eval()
    grey = timm.create_model("test_efficientnet").eval()
    grey.load_state_dict(rgb.state_dict())
    one_channel_stem(grey)
    image = torch.randn(2, 1, 32, 48)
    assert grey.conv_stem.weight.shape[1] == 1
    torch.testing.assert_close(grey.forward_features(image), rgb.forward_features(image.expand(-1, 3, -1, -1)))


def test_imagenet_weights_load_and_every_conv_and_bn_is_per_domain(imagenet_weights):
    model = AdaptedCNN({"emodb": EMODB}, pretrained=str(imagenet_weights))
    convs = [m for m in model.backbone.modules() if isinstance(m, DomainConv)]
    norms = [m for m in model.backbone.modules() if isinstance(m, DomainNorm)]
    assert len(convs) == 52 and len(norms) == 52  # MobileNetV2: stem, 17 blocks, head convolution
    plain = [m for m in model.backbone.modules() if type(m) is torch.nn.Conv2d]
    assert {id(m) for m in plain} == {id(c.conv) for c in convs}  # every convolution sits inside an adapted one
    reference = timm.create_model("mobilenetv2_100")
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(str(imagenet_weights)))
    torch.testing.assert_close(model.backbone.conv_head.conv.weight, reference.conv_head.weight)
    torch.testing.assert_close(model.backbone.conv_stem.conv.weight, reference.conv_stem.weight.sum(1, keepdim=True))
    counts = model.parameter_counts()
    assert counts["total"] == counts["shared"] + sum(counts["per_domain"].values())


def test_a_new_domain_starts_as_the_domain_it_copies_and_then_trains_only_its_own_parameters():
    model = _model()
    waves, lengths = _clips()
    model.add_domain("train", ["a", "b"], like="emodb")  # a Module attribute name: stored as train__domain
    with torch.no_grad():
        torch.testing.assert_close(model.embed(waves, lengths, "train"), model.embed(waves, lengths, "emodb"))
    own = {id(p) for p in model.domain_parameters("train")}
    assert own.isdisjoint(id(p) for p in model.domain_parameters("emodb"))
    assert own.isdisjoint(id(p) for p in model.shared_parameters())
    model.train()
    loss = model(waves, lengths, "train").logsumexp(-1).sum()
    loss.backward()
    touched = {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched <= own | {id(p) for p in model.shared_parameters()}
    assert not touched & {id(p) for p in model.domain_parameters("urdu")}


def test_a_clip_scores_the_same_alone_as_in_a_padded_batch():
    model = _model()
    waves, lengths = _clips()
    with torch.no_grad():
        batch = model(waves, lengths, "emodb")
        alone = torch.cat([model(waves[i : i + 1, : lengths[i]], None, "emodb") for i in range(len(waves))])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)


def test_spectrogram_augment_runs_in_training_mode_only():
    model = _model()
    waves, lengths = _clips()
    calls = []

    def blank(spec, valid):
        calls.append(spec.shape)
        return torch.zeros_like(spec)

    model.set_spectrogram_augment(blank)
    with torch.no_grad():
        model(waves, lengths)
        assert not calls
        model.train()
        blanked = model.embed(waves[:1], lengths[:1])
    assert calls
    model.set_spectrogram_augment(None)
    with torch.no_grad():
        assert not torch.allclose(model.embed(waves[:1], lengths[:1]), blanked)


def test_reserved_domain_names_round_trip_through_save_and_load(tmp_path):
    model = _model()
    model.add_domain("eval", ["x", "y"], like="urdu")
    model.add_domain("to", ["x", "y", "z"])
    waves, lengths = _clips()
    folder = save_pretrained(model, tmp_path / "m")
    loaded = load_folder(folder)
    assert loaded.heads == model.heads
    with torch.no_grad():
        for head in ("eval", "to", "emodb"):
            torch.testing.assert_close(loaded(waves, lengths, head), model(waves, lengths, head))
    loaded.remove_domain("eval")
    assert "eval" not in loaded.heads and not any("eval__domain" in k for k in loaded.state_dict())


def test_adapter_transfer_freezes_everything_but_the_new_domain():
    base = _model()
    net = prepare_domains(base, {"train": sermodels.outputs.categories(["a", "b", "c"])}, "adapters", like="emodb")
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in net.domain_parameters("train")}
    assert list(net.heads) == ["train"]


def test_layers_that_cannot_be_adapted_are_named_in_a_warning():
    with pytest.warns(UserWarning, match="shared by every domain"):
        AdaptedCNN({"emodb": EMODB}, backbone="tf_efficientnet_b0")  # its Conv2dSame layers stay shared


def test_transfer_uses_the_family_optimizer_unless_one_is_given(tmp_path):
    from sermodels.data import SERDataModule
    from sermodels.tasks import TransferTask

    folder = save_pretrained(_model(), tmp_path / "base")
    data = SERDataModule(["urdu"], {"urdu": str(corpus_root("urdu"))}, batch_size=4, max_duration=1.0)
    family = TransferTask(str(folder))
    family.configure_from(data)
    assert family.optimizer_options == AdaptedCNN.transfer_optimizer
    chosen = TransferTask(str(folder), optimizer={"name": "sgd", "lr": 0.05})
    chosen.configure_from(data)
    assert chosen.optimizer_options["name"] == "sgd" and chosen.optimizer_options["lr"] == 0.05
    rate = TransferTask(str(folder), optimizer={"lr": 3e-4})
    rate.configure_from(data)
    assert rate.optimizer_options == AdaptedCNN.transfer_optimizer | {"lr": 3e-4}
