"""The log-mel SVM baseline: export from scikit-learn is exact, shapes, gradients, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sermodels.audio import load_audio
from sermodels.data import load_corpus
from sermodels.models.svm import LogMelSVM
from sermodels.tasks.svm import extract_features, fit_fixed
from sermodels.tasks.svm_release import export_linear


@pytest.fixture(scope="module")
def emodb_small(request):
    from conftest import corpus_root

    corpus = load_corpus("emodb", corpus_root("emodb"))
    split = corpus.split("fixed")
    # A balanced handful per partition keeps this fast while staying real data.
    pick = {name: items[:: max(1, len(items) // 60)] for name, items in split.items()}
    feats = {name: extract_features([it.path for it in items]) for name, items in pick.items()}
    return pick, feats


def test_shapes_and_backward():
    model = LogMelSVM(labels=["a", "b", "c"])
    wave = torch.randn(2, 16000, requires_grad=True)
    logits = model(wave, torch.tensor([16000, 9000]))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert wave.grad is not None and torch.isfinite(wave.grad).all()
    assert model.classifier.weight.grad is not None


def test_export_matches_sklearn_on_real_audio(emodb_small):
    pick, feats = emodb_small
    y = {name: np.array([it.label for it in items]) for name, items in pick.items()}
    fit = fit_fixed("linear", feats["train"], y["train"], feats["dev"], y["dev"])
    model = export_linear(fit)
    # End to end from waveforms, padded batch, against scikit-learn on the features of the same files.
    waves = [load_audio(it.path) for it in pick["test"][:8]]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.inference_mode():
        logits = model(batch, lengths)
    ours = [model.label_names()[i] for i in logits.argmax(-1).tolist()]
    assert ours == fit.predict(feats["test"][:8]).tolist()
    decision = fit.pipeline.decision_function(feats["test"][:8])
    np.testing.assert_allclose(logits.numpy(), decision, rtol=1e-3, atol=1e-3)


def test_binary_svm_keeps_decision():
    model = LogMelSVM(labels=["neg", "pos"])
    dim = model.classifier.in_features
    rng = np.random.default_rng(0)
    coef, intercept = rng.normal(size=(1, dim)), np.array([0.3])
    model.set_linear_svm(np.zeros(dim), np.ones(dim), coef, intercept)
    x = torch.randn(5, dim)
    logits = model.classifier(model.standardizer(x))
    margin = x.double().numpy() @ coef[0] + intercept[0]
    assert (logits.argmax(-1).numpy() == (margin > 0)).all()


def test_wrong_coef_shape_is_an_error():
    model = LogMelSVM(labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="do not fit 3 classes"):
        model.set_linear_svm(np.zeros(600), np.ones(600), np.zeros((2, 600)), np.zeros(2))


def test_set_linear_svm_validates_the_standardiser():
    model = LogMelSVM(labels=["a", "b", "c"])
    coef, bias = np.zeros((3, 600)), np.zeros(3)
    with pytest.raises(ValueError, match=r"shape \(600,\)"):
        model.set_linear_svm(np.zeros(1), np.ones(1), coef, bias)
    std = np.ones(600)
    std[7] = 0.0
    with pytest.raises(ValueError, match="std > 0"):
        model.set_linear_svm(np.zeros(600), std, coef, bias)


def test_feature_cache_follows_the_extractor_settings(tmp_path, emodb_root):
    paths = sorted(str(p) for p in (emodb_root / "wav").glob("03a01*.flac"))
    default = extract_features(paths, cache_dir=tmp_path)
    other = extract_features(paths, frontend={"log_eps": 1e-2}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.allclose(default, other)
    np.testing.assert_array_equal(extract_features(paths, cache_dir=tmp_path), default)


def test_too_short_file_is_named(tmp_path):
    import soundfile as sf

    short = tmp_path / "blip.wav"
    sf.write(short, np.zeros(400, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="blip.wav: too short"):
        extract_features([str(short)])
