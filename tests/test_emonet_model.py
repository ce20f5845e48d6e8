"""EmoNet (Gerczuk et al., IEEE TAC): the architecture of §5.2 checked layer by layer, the fused parallel adapters,
padding invariance on real clips, domain management, save -> load, and input errors."""

from __future__ import annotations

import copy

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from conftest import corpus_root
from torch import nn

import sermodels
from sermodels.audio import AudioError, load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.layers.adapters import AdaptedConv, ResidualBlock
from sermodels.models.emonet import EmoNet
from sermodels.pipelines.predict import run_predictions

RATE = 16_000
EMODB = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
RAVDESS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
EMOVO = ["disgust", "joy", "neutral", "fear", "anger", "surprise", "sadness"]
URDU = ["angry", "happy", "neutral", "sad"]
# Crop lengths (samples) of the real clips: 63, 49, 36 and 29 STFT frames (hop 256, centred), odd and even, so
# that the time axis is odd at several depths of the network (63 -> 32 -> 16 -> 8, 49 -> 25 -> 13 -> 7).
CROPS = (16_000, 12_345, 9_001, 7_400)

# §5.2.1 as a table, written out independently of the module: (in, out, stride) of every 3×3 convolution.
PAPER_CONVS = [(1, 32, 1)] + [
    conv
    for cin, width in ((32, 64), (64, 128), (128, 256))
    for conv in ((cin, width, 2), (width, width, 1), (width, width, 1), (width, width, 1))
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    root = corpus_root("emodb")
    paths = sorted((root / "wav").glob("*.flac"))[:: len(CROPS) * 20][: len(CROPS)]
    return [load_audio(path)[:crop] for path, crop in zip(paths, CROPS)]


def _perturb_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Trained-looking BN statistics and affine parameters (fresh BN layers are the identity in eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))


def _randomise_adapters(model: EmoNet, domain: str, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdaptedConv):
                adapter = module.adapters[domain]
                adapter.copy_(0.05 * torch.randn(adapter.shape, generator=gen))


def _padded(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.shape[0] for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, wave in enumerate(waves):
        batch[row, : wave.shape[0]] = wave
    return batch, lengths


# ---------------------------------------------------------------------------------------------------------------------
# Architecture (§5.2.1).


def _expected_counts(classes: dict[str, int]) -> dict:
    """Parameter counts from the paper's layer table: shared 3×3 convolutions and attention; per domain 1×1
    adapters, a BN after every convolution, the final BN and the head FC(256->128) -> BN -> linear."""
    convs = sum(cin * cout * 9 for cin, cout, _ in PAPER_CONVS)
    attention = 256 * 256 + 256 + 256  # W, b and u of Eq. (2)
    adapters = sum(cin * cout for cin, cout, _ in PAPER_CONVS)
    batch_norms = sum(2 * cout for _, cout, _ in PAPER_CONVS) + 2 * 256
    per_domain = {
        name: adapters + batch_norms + (256 * 128 + 128) + 2 * 128 + (128 * n + n) for name, n in classes.items()
    }
    shared = convs + attention
    return {"total": shared + sum(per_domain.values()), "shared": shared, "per_domain": per_domain}


def test_parameter_counts_match_the_paper_layer_table():
    one = EmoNet({"emodb": EMODB})
    assert one.parameter_counts() == _expected_counts({"emodb": 7})
    assert sum(p.numel() for p in one.parameters()) == _expected_counts({"emodb": 7})["total"]
    four = EmoNet({"emodb": EMODB, "ravdess": RAVDESS, "emovo": EMOVO, "urdu": URDU})
    expected = _expected_counts({"emodb": 7, "ravdess": 8, "emovo": 7, "urdu": 4})
    assert four.parameter_counts() == expected
    # §5.2.1: "around 3 million parameters in total of which 300 000 are domain specific" (one domain)
    assert one.parameter_counts()["total"] == 3_115_143 and one.parameter_counts()["per_domain"]["emodb"] == 339_303


def test_layers_follow_section_5_2(clips):
    model = EmoNet({"emodb": EMODB, "urdu": URDU})
    assert not list(model.melspec.parameters()) and not list(model.to_db.parameters())  # the front-end is fixed
    assert (model.melspec.n_mels, model.melspec.n_fft, model.melspec.hop_length) == (64, 512, 256)  # §5.1
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == PAPER_CONVS
    for conv in convs:
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is None
    adapted = [m for m in model.modules() if isinstance(m, AdaptedConv)]
    assert [a.conv for a in adapted] == convs  # every 3×3 convolution has adapters and BN per domain
    for layer in adapted:
        out_channels, in_channels = layer.conv.weight.shape[:2]
        assert sorted(layer.adapters) == sorted(layer.bns) == ["emodb", "urdu"]
        for domain in ("emodb", "urdu"):
            assert layer.adapters[domain].shape == (out_channels, in_channels, 1, 1)
            assert torch.count_nonzero(layer.adapters[domain]) == 0  # a new domain starts as the shared network
            assert layer.bns[domain].num_features == out_channels
    # Every BN layer of the network belongs to one domain: 13 convolutions + the final BN + the head's BN.
    batch_norms = [name for name, m in model.named_modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(batch_norms) == 2 * (13 + 1 + 1)
    assert all(".emodb" in name or ".urdu" in name for name in batch_norms)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert [b.stride for b in blocks] == [2, 1, 2, 1, 2, 1]
    # 2D attention: a 256-unit tanh layer, the vector u, λ = 0.3 (§5.2.1, Eq. 2-3)
    assert (model.attention.project.in_features, model.attention.project.out_features) == (256, 256)
    assert model.attention.context.weight.shape == (1, 256) and model.attention.context.bias is None
    assert model.attention.smoothing == 0.3
    # Head: FC -> BN -> ReLU -> dropout -> linear, per domain
    head = model.classifiers["urdu"]
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    assert head[0].in_features == 256 and head[-1].out_features == 4

    # Feature map sizes for 1 s (63 frames): stem at full resolution, each stack halves frequency and time.
    shapes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out[0].shape))) for m in blocks]
    model.eval()
    with torch.no_grad():
        stem = model.stem(model.log_mel(clips[0][None])[0], "emodb")
        embedding, weights = model.attend(clips[0][None], head="urdu")
    for hook in hooks:
        hook.remove()
    assert stem.shape == (1, 32, 64, 63)
    assert shapes == [(1, 64, 32, 32)] * 2 + [(1, 128, 16, 16)] * 2 + [(1, 256, 8, 8)] * 2
    assert embedding.shape == (1, 256) and weights.shape == (1, 8, 8)  # N_f = 64 / 8 = 8 bins (§5.2.1)


def test_final_batch_norm_relu_and_attention_equations(clips):
    """features() = ReLU(final BN(last block)); attend() = Eq. (1)-(4) recomputed here by hand."""
    model = EmoNet({"emodb": EMODB, "urdu": URDU}).eval()
    _perturb_batch_norms(model)
    last = []
    hook = model.blocks[-1].register_forward_hook(lambda _m, _i, out: last.append(out[0]))
    with torch.no_grad():
        features, valid = model.features(clips[1][None], head="urdu")
        embedding, weights = model.attend(clips[1][None], head="urdu")
    hook.remove()
    assert torch.allclose(features, F.relu(model.final_bns["urdu"](last[0])), atol=1e-6)
    assert valid.tolist() == [7]
    x = features[0].flatten(1).T  # (N, C), N = N_f * N_t
    with torch.no_grad():
        energy = torch.tanh(x @ model.attention.project.weight.T + model.attention.project.bias)
        energy = energy @ model.attention.context.weight[0]
    alpha = torch.softmax(0.3 * energy, dim=0)
    assert torch.allclose(weights[0].flatten(), alpha, atol=1e-6)
    assert torch.allclose(embedding[0], alpha @ x, atol=1e-5)


def test_flops_count_the_layer_table():
    """2 × multiply-accumulates for 1 s (63 frames): convolutions at 64×63, 32×32, 16×16 and 8×8 (the fused adapters
    add none), attention over the 8×8 positions, the default head."""
    sizes = [64 * 63] + [32 * 32] * 4 + [16 * 16] * 4 + [8 * 8] * 4
    convs = sum(2 * 9 * cin * cout * size for (cin, cout, _), size in zip(PAPER_CONVS, sizes))
    attention = 2 * (256 * 256 + 256) * 64 + 2 * 256 * 64
    for labels in (URDU, RAVDESS):
        head = 2 * (256 * 128 + 128 * len(labels))
        assert EmoNet({"x": labels}).flops(1.0) == convs + attention + head


def test_stride_two_shortcut_is_pooled_and_zero_padded():
    """With the residual branch silenced (its last BN scaled to zero), a first block returns ReLU of the 2×2
    average-pooled input, zero-padded along the channels; odd widths pool a zero column (ceil(T/2) steps)."""
    block = ResidualBlock(32, 64, 2, ["d"], adapters=True).eval()
    with torch.no_grad():
        block.conv2.bns["d"].weight.zero_()
        block.conv2.bns["d"].bias.zero_()
    x = torch.rand(2, 32, 16, 11)
    out, valid = block(x, torch.tensor([11, 11]), "d")
    assert valid.tolist() == [6, 6] and out.shape == (2, 64, 8, 6)
    padded = torch.cat([x, torch.zeros(2, 32, 16, 1)], dim=-1)
    pooled = padded.unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2))
    assert torch.allclose(out[:, :32], pooled, atol=1e-6)
    assert torch.count_nonzero(out[:, 32:]) == 0


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_adapter_equals_a_separate_1x1_convolution(stride):
    """The adapter folded into the 3×3 centre tap = 3×3 conv + a parallel 1×1 conv with the same stride, then BN
    (Fig. 6); both weights receive the gradients of the explicit form."""
    torch.manual_seed(0)
    layer = AdaptedConv(8, 16, stride, ["a", "b"], adapters=True)
    with torch.no_grad():
        layer.adapters["b"].normal_(0, 0.3)
    _perturb_batch_norms(layer)
    layer.eval()
    x = torch.randn(3, 8, 10, 13)
    fused = layer(x, "b")
    fused.square().sum().backward()
    conv_grad, adapter_grad = layer.conv.weight.grad.clone(), layer.adapters["b"].grad.clone()
    assert layer.adapters["a"].grad is None  # another domain's adapter is not touched

    weight = layer.conv.weight.detach().clone().requires_grad_(True)
    adapter = layer.adapters["b"].detach().clone().requires_grad_(True)
    explicit = F.conv2d(x, weight, stride=stride, padding=1) + F.conv2d(x, adapter, stride=stride)
    explicit = layer.bns["b"](explicit)
    assert explicit.shape == fused.shape == (3, 16, -(-10 // stride), -(-13 // stride))
    assert torch.allclose(fused, explicit, atol=1e-5)
    explicit.square().sum().backward()
    assert conv_grad.abs().sum() > 0 and adapter_grad.abs().sum() > 0
    assert torch.allclose(conv_grad, weight.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(adapter_grad, adapter.grad, rtol=1e-4, atol=1e-4)


def test_gradients_reach_shared_and_domain_parameters_of_one_domain_only(clips):
    model = EmoNet({"emodb": EMODB, "urdu": URDU})
    batch, lengths = _padded(clips[:2])
    model(batch, lengths, head="urdu").logsumexp(-1).sum().backward()
    for param in model.shared_parameters() + model.domain_parameters("urdu"):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.domain_parameters("emodb"))


# ---------------------------------------------------------------------------------------------------------------------
# Padding.


def test_padded_batch_scores_like_each_clip_alone(clips):
    model = EmoNet({"emodb": EMODB, "urdu": URDU})
    _perturb_batch_norms(model)
    _randomise_adapters(model, "urdu")
    model.eval()
    batch, lengths = _padded(clips)
    with torch.no_grad():
        for head in ("emodb", "urdu"):
            logits = model(batch, lengths, head)
            embedding, weights = model.attend(batch, lengths, head)
            _, valid = model.features(batch, lengths, head)
            assert valid.tolist() == [8, 7, 5, 4]
            assert torch.allclose(weights.sum(dim=(1, 2)), torch.ones(len(clips)), atol=1e-6)
            for row, clip in enumerate(clips):
                steps = int(valid[row])
                assert torch.all(weights[row, :, steps:] == 0)  # exactly zero on padded steps
                alone_embedding, alone_weights = model.attend(clip[None], head=head)
                assert torch.allclose(model(clip[None], head=head)[0], logits[row], atol=1e-4)
                assert torch.allclose(alone_embedding[0], embedding[row], atol=1e-4)
                assert torch.allclose(alone_weights[0], weights[row, :, :steps], atol=1e-5)
            # lengths=None means the full width: the longest clip needs no lengths
            assert torch.allclose(model(batch[:1], head=head), logits[:1], atol=1e-5)


def test_log_mel_of_a_padded_row_equals_the_clip_alone(clips):
    """The last frames of a shorter clip see its own reflected tail, not the batch's zeros (§5.1 front-end)."""
    model = EmoNet({"emodb": EMODB})
    batch, lengths = _padded(clips)
    spec, valid = model.log_mel(batch, lengths)
    assert valid.tolist() == [63, 49, 36, 29]
    for row, clip in enumerate(clips):
        alone, frames = model.log_mel(clip[None])
        assert int(frames) == int(valid[row])
        assert torch.allclose(alone[0, ..., : int(frames)], spec[row, ..., : int(frames)], atol=1e-5)
        assert torch.count_nonzero(spec[row, ..., int(frames) :]) == 0
        standardised = spec[row, ..., : int(frames)]
        assert abs(float(standardised.mean())) < 1e-4 and abs(float(standardised.std(unbiased=False)) - 1) < 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# Domains.


def test_added_domain_starts_as_its_like_domain(clips):
    model = EmoNet({"emodb": EMODB})
    _perturb_batch_norms(model)
    model.eval()
    wave = clips[0][None]
    with torch.no_grad():
        reference = model.features(wave, head="emodb")[0]
        model.add_domain("ravdess", RAVDESS, like="emodb")  # zero adapters (like emodb's), BN copied
        assert torch.allclose(model.features(wave, head="ravdess")[0], reference, atol=1e-6)
        assert model(wave, head="ravdess").shape == (1, 8) and model.heads["ravdess"] == RAVDESS

        _randomise_adapters(model, "emodb")
        trained = model.features(wave, head="emodb")[0]
        assert not torch.allclose(trained, reference, atol=1e-3)
        model.add_domain("emovo", EMOVO, like="emodb", copy_adapters=True)
        assert torch.allclose(model.features(wave, head="emovo")[0], trained, atol=1e-6)
        model.add_domain("urdu", URDU, like="emodb")  # adapters are not copied: zeros, BN copied
        assert torch.allclose(model.features(wave, head="urdu")[0], reference, atol=1e-6)
        fresh = copy.deepcopy(model)
        fresh.add_domain("plain", ["a", "b"])  # no like: fresh BN
        assert fresh.final_bns["plain"].running_var.eq(1).all() and fresh.stem.bns["plain"].weight.eq(1).all()
    # New layers take the model's mode (they were created in training mode and used batch statistics in eval).
    assert not any(m.training for m in model.modules())
    training = EmoNet({"emodb": EMODB})
    training.add_domain("urdu", URDU, like="emodb")
    assert all(m.training for m in training.modules())
    # the copies are independent parameters
    assert model.stem.adapters["emovo"] is not model.stem.adapters["emodb"]
    assert model.stem.adapters["emovo"].data_ptr() != model.stem.adapters["emodb"].data_ptr()
    assert model.domains == ["emodb", "ravdess", "emovo", "urdu"]


def test_replace_remove_and_domain_errors(clips):
    model = EmoNet({"emodb": EMODB, "urdu": URDU})
    _perturb_batch_norms(model)
    _randomise_adapters(model, "emodb")
    model.eval()
    wave = clips[0][None]
    with torch.no_grad():
        before = model.features(wave, head="emodb")[0]
        old_head = model.classifiers["emodb"][0].weight.clone()
        model.add_domain("emodb", ["neg", "pos"], like="emodb", copy_adapters=True, replace=True)
        assert torch.allclose(model.features(wave, head="emodb")[0], before, atol=1e-6)  # copied before overwriting
        assert model.heads["emodb"] == ["neg", "pos"] and model(wave, head="emodb").shape == (1, 2)
        assert not torch.equal(model.classifiers["emodb"][0].weight, old_head)  # a new head
        model.add_domain("emodb", EMODB, replace=True)  # fresh: zero adapters, fresh BN
        assert torch.count_nonzero(model.stem.adapters["emodb"]) == 0
        assert model.final_bns["emodb"].running_var.eq(1).all()

    with pytest.raises(ValueError, match="exists already"):
        model.add_domain("urdu", URDU)
    for bad in ("bad name", "a.b", "", "ü"):
        with pytest.raises(ValueError, match="letters, digits"):
            model.add_domain(bad, URDU)
    with pytest.raises(ValueError, match="letters, digits"):
        EmoNet({"x/y": URDU})
    with pytest.raises(ValueError, match="at least two classes"):
        model.add_domain("one", ["only"])
    with pytest.raises(ValueError, match="at least two classes"):
        EmoNet({"one": ["only"]})
    with pytest.raises(ValueError, match="at least one domain"):
        EmoNet({})
    with pytest.raises(KeyError, match="no head 'nope'"):
        model.add_domain("new", URDU, like="nope")
    with pytest.raises(ValueError, match="like="):
        model.add_domain("new", URDU, copy_adapters=True)
    with pytest.raises(KeyError, match="no head 'nope'"):
        model(wave, head="nope")
    with pytest.raises(KeyError, match="no head 'nope'"):
        EmoNet({"emodb": EMODB}, default_head="nope")
    assert "new" not in model.heads and "new" not in model.stem.bns  # failed calls left nothing behind

    model.remove_domain("emodb")
    assert model.domains == ["urdu"] and model.default_head == "urdu"
    assert not [key for key in model.state_dict() if ".emodb" in key]
    assert model(wave).shape == (1, 4)
    with pytest.raises(ValueError, match="only domain"):
        model.remove_domain("urdu")
    with pytest.raises(KeyError, match="no head 'emodb'"):
        model.remove_domain("emodb")


def test_domain_and_shared_parameters_partition_the_trainable_parameters():
    model = EmoNet({"emodb": EMODB, "ravdess": RAVDESS, "urdu": URDU})
    groups = [model.shared_parameters()] + [model.domain_parameters(d) for d in model.domains]
    ids = [{id(p) for p in group} for group in groups]
    assert all(len(ids_) == len(group) for ids_, group in zip(ids, groups))  # no duplicates within a group
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            assert not ids[i] & ids[j]
    assert set().union(*ids) == {id(p) for p in model.parameters()}
    counts = model.parameter_counts()
    assert counts["total"] == counts["shared"] + sum(counts["per_domain"].values())


def test_save_and_load_round_trip(tmp_path, clips):
    model = EmoNet({"emodb": EMODB, "urdu": URDU}, default_head="urdu", hidden=64, dropout=0.2)
    model.add_domain("ravdess", RAVDESS, like="emodb")
    model.remove_domain("emodb")
    _perturb_batch_norms(model)
    _randomise_adapters(model, "ravdess")
    model.eval()
    folder = save_pretrained(model, tmp_path / "tiny")
    loaded = sermodels.load(str(folder))
    assert isinstance(loaded, EmoNet) and not loaded.training
    assert loaded.config() == model.config()
    assert loaded.heads == {"urdu": URDU, "ravdess": RAVDESS} and loaded.default_head == "urdu"
    batch, lengths = _padded(clips[:3])
    with torch.no_grad():
        for head in ("urdu", "ravdess"):
            assert torch.equal(loaded(batch, lengths, head), model(batch, lengths, head))


# ---------------------------------------------------------------------------------------------------------------------
# Inputs.


def test_input_errors(tmp_path, clips):
    model = EmoNet({"emodb": EMODB}).eval()
    for bad in (clips[0], clips[0][None, None]):
        with pytest.raises(ValueError, match=r"\(batch, samples\)"):
            model(bad)
    with pytest.raises(ValueError, match=r"rows \[1\].*200"):
        model(torch.stack([clips[0][:1000], clips[0][:1000]]), torch.tensor([1000, 200]))
    for lengths in (torch.tensor([1000, 1001]), torch.tensor([1000])):
        with pytest.raises(ValueError, match="at most the batch width 1000"):
            model(torch.stack([clips[0][:1000], clips[1][:1000]]), lengths)
    shortest = int(EmoNet.min_duration * RATE)
    assert model(clips[0][None, :shortest]).shape == (1, 7)  # the declared minimum runs

    # The real loading path: a file shorter than min_duration is rejected by name, and prediction reports it.
    short = tmp_path / "short.flac"
    sf.write(short, clips[0][: shortest // 2].numpy(), RATE)
    with pytest.raises(AudioError, match="short.flac.*too short"):
        load_audio(short, RATE, min_duration=model.min_duration)
    ok = tmp_path / "ok.flac"
    sf.write(ok, clips[1].numpy(), RATE)
    result = run_predictions(model, [short, ok], progress=False)
    assert [path for path, _ in result.failures] == [str(short)] and "too short" in result.failures[0][1]
    assert result.paths == [str(ok)] and result.logits.shape == (1, 7)
