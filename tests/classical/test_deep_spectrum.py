"""The Deep Spectrum paper's SVM head on real EMO-DB audio: ImageNet weights beat random ones under the SVM
protocol, the feature cache, the head copied from scikit-learn, the flat recipe, and ``sermodels fit-deep-spectrum``
for both recipe formats (the Lightning linear head is tests/test_deep_spectrum_task.py's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATA, REPO, SHARED

import sermodels
from sermodels.audio import load_audio
from sermodels.classical import deep_spectrum as classical_ds
from sermodels.classical.deep_spectrum import extract_features, fit_svm, load_recipe, release_target
from sermodels.classical.svm import LINEAR_C_GRID, run_fixed
from sermodels.cli import main
from sermodels.data import load_corpus
from sermodels.features.deepspectrum import DeepSpectrum
from sermodels.runtime import weights_digest

TORCHSCRIPT = SHARED / "weights" / "mobilenet_v2_imagenet_int8_torchscript.pt"
IMAGE = {"colormap": "magma"}  # EmoNet paper §4.2
SVM_RECIPE = REPO / "recipes" / "deep_spectrum" / "mobilenetv2_svm.emodb.yaml"
LINEAR_RECIPE = REPO / "recipes" / "deep_spectrum" / "mobilenetv2.emodb.yaml"
DIM = 1280  # MobileNetV2 pre-logits features


@pytest.fixture(scope="module")
def emodb():
    from conftest import corpus_root

    corpus = load_corpus("emodb", corpus_root("emodb"))
    return corpus, corpus.split("fixed")


def test_imagenet_features_beat_random_weights_on_emodb(imagenet_weights, emodb, tmp_path):
    """The same MobileNetV2 with ImageNet weights vs random weights, same images, same SVM protocol (C on dev from 1
    to 1e-9, refit on train + dev, fixed-split test UAR). Measured: ImageNet 50 %, random 37 % (chance 14 %)."""
    corpus, split = emodb
    torch.manual_seed(0)
    extractors = {
        "imagenet": DeepSpectrum("mobilenetv2_100", pretrained=imagenet_weights, image=IMAGE),
        "random": DeepSpectrum("mobilenetv2_100", pretrained=False, image=IMAGE),
    }
    renderer = extractors["imagenet"].images  # identical images for both networks: rendered once
    feats = {name: [] for name in extractors}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(corpus.items), 32):
            waves = [load_audio(it.path, 16000) for it in corpus.items[start : start + 32]]
            lengths = torch.tensor([len(w) for w in waves])
            images = renderer(torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths)
            for name, extractor in extractors.items():
                feats[name].append(extractor.features_of_images(images).float().numpy())
    results = {}
    for name, rows in feats.items():
        matrix = np.concatenate(rows)
        assert matrix.shape == (len(corpus.items), 1280) and np.isfinite(matrix).all()
        results[name] = run_fixed("linear", matrix, corpus.items, split)["uar"]
    assert results["imagenet"] > results["random"] + 0.05, results
    assert results["imagenet"] > 0.40, results


def test_feature_cache_is_keyed_on_weights(imagenet_weights, emodb, tmp_path):
    corpus, _ = emodb
    paths = [it.path for it in corpus.items[:3]]
    torch.manual_seed(0)
    pretrained = DeepSpectrum("mobilenetv2_100", pretrained=imagenet_weights, image=IMAGE)
    random = DeepSpectrum("mobilenetv2_100", pretrained=False, image=IMAGE)
    assert weights_digest(pretrained) != weights_digest(random)
    first = extract_features(pretrained, paths, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("deepspectrum-*.npy"))) == 1
    again = extract_features(pretrained, paths, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, again)
    other = extract_features(random, paths, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("deepspectrum-*.npy"))) == 2
    assert not np.allclose(first, other)


# ---------------------------------------------------------------------------------------------------- fit_svm


def _svm_model(labels: list[str], classifier: str = "svm"):
    torch.manual_seed(0)
    return sermodels.create_model(
        "deep_spectrum", labels=labels, backbone="mobilenetv2_100", image={"size": [64, 64]}, classifier=classifier
    )


def _partitions(labels: list[str], seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Separable Gaussian classes in the feature space ``(N, 1280)``, offset and scaled unlike a z-score."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(len(labels), DIM))
    feats, ys = {}, {}
    for name, n in (("train", 12), ("dev", 6), ("test", 6)):
        rows = [rng.normal(means[i], 1.5, size=(n, DIM)) * 3.0 + 5.0 for i in range(len(labels))]
        feats[name] = np.concatenate(rows).astype(np.float32)
        ys[name] = np.repeat(np.array(labels), n)
    return feats, ys


@pytest.mark.parametrize("labels", [["anger", "neutral", "sadness"], ["negative", "positive"]])
def test_fit_svm_copies_scikit_learns_head(labels):
    model = _svm_model(labels)
    feats, ys = _partitions(labels)
    fit = fit_svm(model, feats, ys)
    assert fit.params["C"] in LINEAR_C_GRID and len(fit.selection) == len(LINEAR_C_GRID)
    # The z-score was fitted with the SVM, on train + dev.
    np.testing.assert_allclose(
        model.standardizer.mean.numpy(), np.concatenate([feats["train"], feats["dev"]]).mean(0), rtol=1e-4, atol=1e-3
    )
    with torch.inference_mode():
        logits = model.classifier(model.standardizer(torch.from_numpy(feats["test"]))).double().numpy()
    decision = fit.pipeline.decision_function(feats["test"])
    if len(labels) == 2:
        decision = np.stack([-decision, decision], axis=1)
    np.testing.assert_allclose(logits, decision, rtol=1e-3, atol=1e-3)
    assert [labels[i] for i in logits.argmax(-1)] == fit.predict(feats["test"]).tolist()


def test_fit_svm_refuses_a_wrong_model_and_catches_a_wrong_copy(monkeypatch):
    labels = ["anger", "neutral", "sadness"]
    feats, ys = _partitions(labels)
    with pytest.raises(ValueError, match="classifier='svm'"):
        fit_svm(_svm_model(labels, classifier="linear"), feats, ys)
    with pytest.raises(ValueError, match="differ from the fitted classes"):
        fit_svm(_svm_model(["anger", "boredom", "sadness"]), feats, ys)
    model = _svm_model(labels)
    copy = model.set_linear_svm
    monkeypatch.setattr(model, "set_linear_svm", lambda mean, std, coef, bias: copy(mean, std, coef, bias + 1.0))
    with pytest.raises(RuntimeError, match="differ from scikit-learn's"):
        fit_svm(model, feats, ys)


# ---------------------------------------------------------------------------------------------------- recipes


def test_recipe_defaults_and_errors(tmp_path):
    recipe = load_recipe(SVM_RECIPE, ["batch_size=4"])
    assert recipe["id"] == "deep_spectrum_mobilenetv2_svm.emodb" and recipe["batch_size"] == 4
    assert recipe["image"]["colormap"] == "magma" and recipe["classifier"] == "svm"
    assert recipe["output"].startswith("runs/")  # the paper's head is not a release
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ncorpus: emodb\nroot: r\n")
    with pytest.raises(ValueError, match="lacks"):
        load_recipe(bad)
    bad.write_text("id: x\ncorpus: emodb\nroot: r\noutput: o\narch: emonet_wrn\n")
    with pytest.raises(ValueError, match="deep_spectrum"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="sermodels train"):
        load_recipe(SVM_RECIPE, ["classifier=linear"])
    with pytest.raises(ValueError, match="weights must be 'hub', 'random' or a .safetensors file"):
        load_recipe(SVM_RECIPE, ["weights=backbone.pt"])
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        load_recipe(SVM_RECIPE, ["precision=fp16"])


def test_release_target_reads_either_recipe_format():
    flat = release_target(SVM_RECIPE, ["output=runs/svm", "root=/corpora/EMODB"])
    assert flat == {
        "output": "runs/svm",
        "id": "deep_spectrum_mobilenetv2_svm.emodb",
        "corpus": "emodb",
        "root": "/corpora/EMODB",
    }
    lightning = release_target(LINEAR_RECIPE, ["output=runs/linear"])
    assert lightning["output"] == "runs/linear" and lightning["corpus"] == "emodb"
    assert lightning["id"] == "deep_spectrum_mobilenetv2.emodb"


def test_fit_deep_spectrum_sends_a_lightning_recipe_to_train(monkeypatch, tmp_path):
    import sermodels.training.train as training

    seen = []
    monkeypatch.setattr(training, "train", lambda argv: seen.append(argv) or tmp_path)
    monkeypatch.setattr(classical_ds, "release", lambda recipe: pytest.fail("a Lightning recipe went to the SVM fit"))
    argv = ["fit-deep-spectrum", "--config", str(LINEAR_RECIPE), "trainer.max_epochs=2", f"output={tmp_path}"]
    assert main(argv) == 0
    assert seen == [["--config", str(LINEAR_RECIPE), "--trainer.max_epochs=2", f"--output={tmp_path}"]]
    assert main(["fit-deep-spectrum", "--config", str(LINEAR_RECIPE), "trainer.max_epochs"]) == 2
    assert len(seen) == 1


def test_fit_deep_spectrum_fits_a_flat_recipe_with_the_svm(monkeypatch, tmp_path):
    import sermodels.training.train as training

    seen = []
    monkeypatch.setattr(classical_ds, "release", lambda recipe: seen.append(recipe) or tmp_path)
    monkeypatch.setattr(training, "train", lambda argv: pytest.fail("a flat recipe went to sermodels train"))
    assert main(["fit-deep-spectrum", "--config", str(SVM_RECIPE), "weights=random", "batch_size=8"]) == 0
    assert len(seen) == 1 and seen[0]["classifier"] == "svm"
    assert seen[0]["weights"] == "random" and seen[0]["batch_size"] == 8


@pytest.mark.slow
def test_fit_deep_spectrum_cli_releases_the_svm_head(imagenet_weights, tmp_path):
    """The paper's head end to end: a folder with the SVM copied in, its provenance and test metrics, that loads."""
    out = tmp_path / "ds_svm"
    overrides = [
        f"weights={imagenet_weights}",
        f"root={DATA / 'EMODB'}",
        f"output={out}",
        "batch_size=32",
        "precision=bf16",
    ]
    assert main(["fit-deep-spectrum", "--config", str(SVM_RECIPE), *overrides]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["classifier"] == "svm"
    assert config["training"]["classifier"]["kind"] == "linear_svm"
    assert config["training"]["backbone_weights"]["source_sha256"]
    assert json.loads((out / "training_log.json").read_text())["history"] == config["training"]["selection"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["emodb/test"]["n"] == 107 and metrics["emodb/test"]["uar"] > 0.4
    assert (out / "README.md").is_file()
    model = sermodels.load(out)
    assert model.score_kind == "decision"
    wave = load_audio(DATA / "EMODB" / "wav" / "03a01Wa.flac")
    with torch.inference_mode():
        assert model(wave[None]).shape == (1, 7)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_extraction_matches_cpu(imagenet_weights, emodb, precision):
    """On a GPU the images are rendered in float32 and the backbone runs under autocast: features close to CPU fp32."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    corpus, _ = emodb
    paths = [it.path for it in corpus.items[:8]]
    extractor = DeepSpectrum("mobilenetv2_100", pretrained=imagenet_weights, image=IMAGE)
    cpu = extract_features(extractor, paths, batch_size=4)
    gpu = extract_features(extractor, paths, batch_size=4, device="cuda", precision=precision)
    cosine = (cpu * gpu).sum(1) / (np.linalg.norm(cpu, axis=1) * np.linalg.norm(gpu, axis=1))
    assert cosine.min() > (0.9999 if precision == "fp32" else 0.99), cosine
