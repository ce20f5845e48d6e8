"""The WDA model (NICU paper §4.2.3): shapes, gradients, heads, standardiser, padded batches and the checkpoint round
trip on real EMO-DB audio. Training is tested in tests/tasks/test_wda.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import corpus_root

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import load_folder, save_pretrained
from sermodels.models.wda import EXTRACTOR_UNITS, NICU_HEADS, WDAMLP
from sermodels.outputs import categories

pytestmark = pytest.mark.usefixtures("one_thread")

CLIPS = ("03a01Wa.flac", "08a01Na.flac", "11a01Ld.flac")  # three speakers, three lengths


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    root = corpus_root("emodb") / "wav"
    return [load_audio(root / name) for name in CLIPS]


def _padded(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])


def _fitted(seed: int = 0) -> WDAMLP:
    """A model with non-trivial standardiser statistics and batch-norm buffers."""
    torch.manual_seed(seed)
    model = WDAMLP(NICU_HEADS)
    rng = np.random.default_rng(seed)
    model.set_standardizer(rng.normal(size=600), rng.uniform(0.5, 2.0, size=600))
    with torch.no_grad():
        model.train()
        for head in model.heads:
            model.forward_features(torch.randn(8, 600), head)
    return model.eval()


def test_registered_and_built_by_name():
    model = sermodels.create_model("wda_mlp", heads=NICU_HEADS)
    assert isinstance(model, WDAMLP) and model.arch == "wda_mlp"
    assert model.default_head == "arousal" and model.label_names("valence") == ["non-positive", "positive"]


def test_shapes_and_backward_through_every_head():
    model = WDAMLP(NICU_HEADS).train()
    waves = torch.randn(3, 16000, requires_grad=True)
    lengths = torch.tensor([16000, 12000, 8000])
    loss = 0
    for head in model.heads:
        logits = model(waves, lengths, head)
        assert logits.shape == (3, 2)
        assert model.embed(waves, lengths, head).shape == (3, EXTRACTOR_UNITS[-1])
        loss = loss + logits.square().mean()
    loss.backward()
    assert waves.grad is not None and torch.isfinite(waves.grad).all()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.features(waves, lengths).shape == (3, 600)


def test_heads_have_their_own_extractor_and_classifier():
    model = WDAMLP({"a": ["x", "y"], "b": ["p", "q", "r"]})
    assert model.extractor("a") is not model.extractor("b")
    assert model.forward_features(torch.randn(4, 600), "b").shape == (4, 3)
    assert model.layer_groups() == {
        "extractor_a": ["extractors.a"],
        "classifier_a": ["classifiers.a"],
        "extractor_b": ["extractors.b"],
        "classifier_b": ["classifiers.b"],
    }
    with pytest.raises(KeyError, match="no head"):
        model.embed_features(torch.randn(2, 600), "c")


def test_layers_follow_section_4_2_3():
    model = WDAMLP({"arousal": ["low", "high"]})
    extractor = [type(m).__name__ for m in model.extractor()]
    assert extractor == ["Linear", "BatchNorm1d", "LeakyReLU", "Dropout"] * 2 + ["Linear", "BatchNorm1d"]
    assert [m.out_features for m in model.extractor() if isinstance(m, torch.nn.Linear)] == [512, 512, 256]
    assert [m.p for m in model.extractor() if isinstance(m, torch.nn.Dropout)] == [0.4, 0.4]
    classifier = [type(m).__name__ for m in model.classifier()]
    assert classifier == ["Linear", "LeakyReLU", "Dropout"] * 2 + ["Linear"]
    assert [m.out_features for m in model.classifier() if isinstance(m, torch.nn.Linear)] == [256, 256, 2]
    assert [m.p for m in model.classifier() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]


def test_scores_are_probabilities_and_eval_is_deterministic(clips):
    model = _fitted()
    waves, lengths = _padded(clips)
    with torch.inference_mode():
        first, second = model(waves, lengths, "valence"), model(waves, lengths, "valence")
    assert torch.equal(first, second)
    probs = model.scores(first, "valence")
    assert torch.allclose(probs.sum(-1), torch.ones(3))


def test_standardizer_is_applied_and_validated():
    model = WDAMLP(NICU_HEADS)
    waves = torch.randn(2, 8000)
    raw = model.functionals(waves)
    mean, std = torch.linspace(-1, 1, 600), torch.linspace(0.5, 2, 600)
    model.set_standardizer(mean, std)
    assert torch.allclose(model.features(waves), (raw - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="std > 0"):
        model.set_standardizer(np.zeros(600), np.zeros(600))


def test_padded_batch_equals_each_clip_alone(clips):
    model = _fitted()
    waves, lengths = _padded(clips)
    with torch.inference_mode():
        batch = {head: model(waves, lengths, head) for head in model.heads}
        for index, wave in enumerate(clips):
            for head, logits in batch.items():
                alone = model(wave[None], None, head)
                torch.testing.assert_close(logits[index : index + 1], alone, rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_on_real_audio(clips, tmp_path):
    model = _fitted()
    folder = save_pretrained(model, tmp_path / "wda")
    torch.manual_seed(123)
    loaded = load_folder(folder)
    assert isinstance(loaded, WDAMLP) and loaded.config() == model.config()
    assert torch.equal(loaded.standardizer.mean, model.standardizer.mean)
    waves, lengths = _padded(clips)
    with torch.inference_mode():
        for head in model.heads:
            assert torch.equal(loaded(waves, lengths, head), model(waves, lengths, head)), head
            assert torch.equal(loaded.embed(waves, lengths, head), model.embed(waves, lengths, head)), head


def test_from_specs_and_bad_heads():
    model = WDAMLP.from_specs({"arousal": categories(["low", "high"])}, extractor_units=[32, 16])
    assert model.heads == {"arousal": ["low", "high"]} and model.embed_features(torch.randn(2, 600)).shape == (2, 16)
    with pytest.raises(ValueError, match="at least two classes"):
        WDAMLP({"a": ["x"]})
    with pytest.raises(ValueError, match="at least one head"):
        WDAMLP({})
