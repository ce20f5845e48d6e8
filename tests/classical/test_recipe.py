"""Classical recipes: the flat format and its overrides, telling a LightningCLI recipe apart, and the release folder
written through the one export (config, weights, training log, metrics scored by the evaluation code, card)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sermodels
from sermodels.classical.recipe import (
    is_lightning_recipe,
    lightning_release_target,
    merge_recipe,
    write_recipe_release,
)
from sermodels.data import load_corpus
from sermodels.evaluation import evaluate_items
from sermodels.models.svm import LogMelSVM

REPO = Path(__file__).resolve().parents[2]
DEEP_SPECTRUM = REPO / "recipes" / "deep_spectrum"


def test_merge_recipe_layers_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("id: x\ncorpus: emodb\nroot: r\noutput: o\nbatch: 4\n")
    recipe = merge_recipe(path, {"batch": 16, "split": "fixed"}, ["batch=8", "evaluate_splits=[dev,test]"])
    assert recipe["batch"] == 8 and recipe["split"] == "fixed" and recipe["output"] == "o"
    assert recipe["evaluate_splits"] == ["dev", "test"] and recipe["description"] is None
    assert recipe["recipe_path"] == str(path)
    with pytest.raises(ValueError, match="not partitions"):
        merge_recipe(path, {}, ["evaluate_splits=[holdout]"])
    path.write_text("id: x\ncorpus: emodb\n")
    with pytest.raises(ValueError, match=r"lacks \['root', 'output'\]"):
        merge_recipe(path, {})


def test_lightning_recipes_are_told_apart(tmp_path):
    assert is_lightning_recipe(DEEP_SPECTRUM / "mobilenetv2.emodb.yaml")
    assert not is_lightning_recipe(DEEP_SPECTRUM / "mobilenetv2_svm.emodb.yaml")
    assert not is_lightning_recipe(REPO / "recipes" / "baselines" / "logmel_svm.emodb.yaml")
    flat_model = tmp_path / "flat.yaml"
    flat_model.write_text("model: deep_spectrum\n")
    assert not is_lightning_recipe(flat_model)


def test_lightning_release_target_reads_output_and_the_one_corpus(tmp_path):
    recipe = DEEP_SPECTRUM / "mobilenetv2.emodb.yaml"
    target = lightning_release_target(recipe, ["output=runs/ds", "data.roots.emodb=/corpora/EMODB"])
    assert target == {
        "output": "runs/ds",
        "id": "deep_spectrum_mobilenetv2.emodb",
        "corpus": "emodb",
        "root": "/corpora/EMODB",
    }
    subclass = tmp_path / "subclass.yaml"
    subclass.write_text(
        "output: o\nid: i\nmodel: {class_path: t}\n"
        "data: {class_path: d, init_args: {corpora: [ravdess], roots: {ravdess: /r}}}\n"
    )
    assert lightning_release_target(subclass)["root"] == "/r"
    subclass.write_text("output: o\nmodel: {class_path: t}\ndata: {corpora: [emodb, ravdess]}\n")
    with pytest.raises(ValueError, match="one corpus"):
        lightning_release_target(subclass)


@pytest.fixture(scope="module")
def emodb():
    from conftest import corpus_root

    return load_corpus("emodb", corpus_root("emodb"))


def _toy_svm(labels: list[str]) -> LogMelSVM:
    """A log-mel SVM with seeded random hyperplanes (what the release writes does not depend on a fit)."""
    model = LogMelSVM(labels=labels, head="emodb")
    rng = np.random.default_rng(0)
    dim = model.classifier.in_features
    model.set_linear_svm(rng.normal(size=dim), rng.uniform(0.5, 2, size=dim), rng.normal(size=(7, dim)), np.zeros(7))
    return model.eval()


def test_recipe_release_writes_the_whole_folder(emodb, tmp_path):
    split = {name: items[:6] for name, items in emodb.split("fixed").items()}
    model = _toy_svm(sorted({it.label for it in emodb.items}))
    recipe = {
        "id": "toy.emodb",
        "output": str(tmp_path / "toy.emodb"),
        "corpus": "emodb",
        "split": "fixed",
        "recipe_path": "recipes/toy.yaml",
        "evaluate_splits": ["test"],
        "description": "A toy release.",
    }
    history = [{"C": 1.0, "uar": 0.5}, {"C": 0.1, "uar": 0.6}]
    folder = write_recipe_release(model, recipe, emodb, split, ["train", "dev"], history=history, classifier={"C": 0.1})
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "training_log.json",
        "metrics.json",
        "README.md",
    }
    config = json.loads((folder / "config.json").read_text())
    training = config["training"]
    assert config["id"] == "toy.emodb" and config["description"] == "A toy release."
    assert training["recipe"] == "recipes/toy.yaml" and training["split"] == "fixed"
    assert training["corpora"][0]["name"] == "emodb" and "root" not in training["corpora"][0]
    assert training["partitions"] == {"select": "dev", "fit": ["train", "dev"]}
    assert training["files"] == {"train": 6, "dev": 6, "test": 6} and training["classifier"] == {"C": 0.1}
    assert json.loads((folder / "training_log.json").read_text())["history"] == history
    # metrics.json: the test partition scored by the evaluation command's code, through the corpus's head.
    metrics = json.loads((folder / "metrics.json").read_text())
    report = evaluate_items(model, split["test"], head="emodb")
    assert metrics["emodb/test"]["uar"] == report["uar"] and metrics["emodb/test"]["n"] == 6
    assert "toy.emodb" in (folder / "README.md").read_text()
    loaded = sermodels.load(folder)
    wave = torch.randn(1, 16000)
    with torch.inference_mode():
        assert torch.equal(loaded(wave), model(wave))


def test_recipe_release_without_evaluate_splits_leaves_metrics_to_the_evaluate_command(emodb, tmp_path):
    split = {name: items[:2] for name, items in emodb.split("fixed").items()}
    recipe = {"id": "toy", "output": str(tmp_path / "toy"), "corpus": "emodb", "split": "fixed", "evaluate_splits": []}
    folder = write_recipe_release(_toy_svm(sorted({it.label for it in emodb.items})), recipe, emodb, split, ["train"])
    assert not (folder / "metrics.json").exists() and (folder / "README.md").is_file()
