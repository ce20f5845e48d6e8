"""The "deep_spectrum" model: checkpoint round trip, score kinds, a frozen extractor, the SVM export rule, real audio.

MobileNetV2 (random init, seeded) stands in for VGG16 to keep every build and forward cheap on CPU; the extractor's
VGG layers are tested in tests/features/test_deepspectrum.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.models.deep_spectrum import DeepSpectrumModel

BACKBONE = "mobilenetv2_100"
DIM = 1280  # MobileNetV2 pre-logits features
LABELS = ["anger", "neutral", "sadness"]
SMALL_IMAGE = {"size": [112, 112]}  # a quarter of the CNN work; the paper's 224 x 224 in the real-file test


def _model(labels: list[str] = LABELS, seed: int = 0, image: dict | None = SMALL_IMAGE, **kwargs) -> DeepSpectrumModel:
    torch.manual_seed(seed)
    return sermodels.create_model("deep_spectrum", labels=labels, backbone=BACKBONE, image=image, **kwargs)


@pytest.fixture(scope="module")
def emodb_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real EMO-DB clips (anger, neutral; different speakers) as a padded batch."""
    from conftest import corpus_root

    root = corpus_root("emodb") / "wav"
    waves = [load_audio(root / "03a01Wa.flac"), load_audio(root / "08a01Na.flac")]
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])


def _fitted_statistics(dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=dim), rng.uniform(0.5, 2.0, size=dim)


def test_save_load_round_trip(tmp_path, emodb_batch):
    """Backbone weights from a local file, non-default image/layer options: the checkpoint alone (the weights file
    deleted) rebuilds a model with equal outputs; config.json keeps no ``pretrained``."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    weights = tmp_path / "backbone.safetensors"
    save_file(timm.create_model(BACKBONE).state_dict(), str(weights))
    image = {"kind": "linear", "scale": "log", "colormap": "magma", "size": [112, 160]}
    model = _model(classifier="svm", layer="blocks.6", image=image, pretrained=weights).eval()
    assert model.classifier.in_features == 320
    mean, std = _fitted_statistics(320)
    coef, intercept = np.random.default_rng(1).normal(size=(3, 320)), np.array([0.1, -0.2, 0.3])
    model.set_linear_svm(mean, std, coef, intercept)
    folder = save_pretrained(model, tmp_path / "deep_spectrum")
    weights.unlink()

    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "deep_spectrum" and config["heads"] == {"default": LABELS}
    assert "pretrained" not in config["model_args"] and "pretrained" not in model.config()
    assert config["model_args"]["image"]["colormap"] == "magma" and config["model_args"]["layer"] == "blocks.6"
    assert config["model_args"]["image"]["size"] == [112, 160]

    loaded = sermodels.load(folder)
    assert isinstance(loaded, DeepSpectrumModel) and loaded.config() == model.config()
    assert loaded.score_kind == "decision" and not loaded.training
    batch, lengths = emodb_batch
    with torch.inference_mode():
        want, got = model(batch, lengths), loaded(batch, lengths)
    assert want.shape == (2, 3)
    assert torch.equal(got, want)


def test_score_kind_follows_the_classifier(emodb_batch):
    batch, lengths = emodb_batch
    svm, linear = _model(classifier="svm").eval(), _model(classifier="linear").eval()
    assert svm.score_kind == "decision" and linear.score_kind == "probability"
    with torch.inference_mode():
        logits = linear(batch[:1, : int(lengths[0])])
    assert torch.equal(svm.scores(logits), logits)
    torch.testing.assert_close(linear.scores(logits).sum(-1), torch.ones(1))


def test_train_mode_keeps_the_extractor_frozen(emodb_batch):
    batch, lengths = emodb_batch
    model = _model(classifier="linear")
    model.set_standardizer(*_fitted_statistics(DIM))
    before = {k: v.clone() for k, v in model.extractor.state_dict().items()}
    with torch.inference_mode():
        eval_logits = model.eval()(batch, lengths)
    model.train()
    assert model.training and model.classifier.training
    assert not model.extractor.training and not any(m.training for m in model.extractor.backbone.modules())
    assert all(not p.requires_grad for p in model.extractor.parameters())
    logits = model(batch, lengths)
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    assert model.classifier.bias.grad is not None
    assert all(p.grad is None for p in model.extractor.parameters())
    after = model.extractor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics untouched
    torch.testing.assert_close(logits.detach(), eval_logits, rtol=0, atol=0)


def test_two_class_svm_is_stored_as_minus_and_plus_w(emodb_batch):
    batch, lengths = emodb_batch
    model = _model(labels=["negative", "positive"]).eval()
    mean, std = _fitted_statistics(DIM)
    rng = np.random.default_rng(3)
    coef, intercept = rng.normal(size=(1, DIM)) * 0.05, np.array([0.02])
    model.set_linear_svm(mean, std, coef, intercept)
    assert torch.equal(model.classifier.weight, torch.tensor(np.concatenate([-coef, coef]), dtype=torch.float32))
    assert torch.equal(model.classifier.bias, torch.tensor([-0.02, 0.02], dtype=torch.float32))
    with torch.inference_mode():
        features = model.features(batch, lengths).double().numpy()
        logits = model(batch, lengths).double().numpy()
    decision = ((features - mean) / std) @ coef[0] + intercept[0]  # scikit-learn's binary decision_function
    np.testing.assert_allclose(logits[:, 1], decision, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[:, 0], -decision, rtol=1e-4, atol=1e-4)
    assert logits.argmax(-1).tolist() == (decision > 0).astype(int).tolist()


def test_multiclass_svm_and_shape_errors():
    model = _model()
    mean, std = _fitted_statistics(DIM)
    coef, intercept = np.ones((3, DIM)), np.zeros(3)
    model.set_linear_svm(mean, std, coef, intercept)
    assert torch.equal(model.classifier.weight, torch.ones(3, DIM))
    with pytest.raises(ValueError, match=r"SVM coefficients of shape \(1, 1280\) do not fit 3 classes"):
        model.set_linear_svm(mean, std, np.ones((1, DIM)), np.zeros(1))
    with pytest.raises(ValueError, match=r"SVM coefficients of shape \(3, 1279\) do not fit 3 classes"):
        model.set_linear_svm(mean, std, np.ones((3, DIM - 1)), np.zeros(3))
    with pytest.raises(ValueError, match=r"must have shape \(1280,\)"):
        model.set_linear_svm(mean[:10], std, coef, intercept)
    with pytest.raises(ValueError, match="finite and std > 0"):
        model.set_linear_svm(mean, np.zeros(DIM), coef, intercept)


def test_runs_on_a_real_emodb_file(emodb_root):
    model = _model(image=None).eval()  # the paper's image: 128 mel bands, 224 x 224
    assert model.extractor.images.size == (224, 224) and model.extractor.images.n_mels == 128
    model.set_standardizer(*_fitted_statistics(DIM))
    wave = load_audio(emodb_root / "wav" / "03a01Fa.flac", min_duration=model.min_duration)
    with torch.inference_mode():
        logits = model(wave[None])
        features = model.features(wave[None])
        shortest = model(wave[None, : int(model.min_duration * model.sample_rate)])
    assert logits.shape == (1, 3) and torch.isfinite(logits).all() and torch.isfinite(shortest).all()
    assert features.shape == (1, DIM) and model.label_names() == LABELS
    mean, std = _fitted_statistics(DIM)
    expected = model.classifier(((features.double() - torch.from_numpy(mean)) / torch.from_numpy(std)).float())
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_constructor_errors():
    with pytest.raises(ValueError, match="at least two labels"):
        DeepSpectrumModel(labels=["anger"])
    with pytest.raises(ValueError, match="unknown classifier 'forest'"):
        DeepSpectrumModel(labels=LABELS, classifier="forest")
    with pytest.raises(ValueError, match="image sample_rate 8000 differs from the model's 16000"):
        DeepSpectrumModel(labels=LABELS, image={"sample_rate": 8000})
