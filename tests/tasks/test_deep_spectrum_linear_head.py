"""Deep Spectrum's Lightning linear head as a configuration of the classification regime, on real EMO-DB audio: it
trains on the frozen extractor (features cached, z-score fitted on train), and the release recipe runs through
``sermodels train``. (The paper's SVM head, its features and recipe: tests/classical/test_deep_spectrum.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED, corpus_root
from safetensors.torch import load_file

import sermodels
from sermodels.cli import main
from sermodels.data import SERDataModule
from sermodels.tasks import ClassificationTask
from sermodels.training.train import quiet_trainer

TORCHSCRIPT = SHARED / "weights" / "mobilenet_v2_imagenet_int8_torchscript.pt"
IMAGE = {"colormap": "magma"}  # EmoNet paper §4.2


def _model(weights: Path) -> dict:
    return {"arch": "deep_spectrum", "backbone": "mobilenetv2_100", "pretrained": str(weights), "image": IMAGE}


def test_linear_head_trains_on_the_frozen_extractor(imagenet_weights):
    torch.manual_seed(0)
    data = SERDataModule(["emodb"], {"emodb": str(corpus_root("emodb"))}, batch_size=32, max_duration=None, seed=0)
    task = ClassificationTask(_model(imagenet_weights), optimizer={"name": "adam", "lr": 3e-3, "weight_decay": 1e-4})
    trainer = quiet_trainer(
        max_epochs=4, accelerator="cpu", precision="bf16-mixed", enable_progress_bar=False, deterministic=True
    )
    trainer.fit(task, datamodule=data)
    model = task.net
    backbone = load_file(str(imagenet_weights))
    for name, tensor in model.extractor.backbone.state_dict().items():
        torch.testing.assert_close(tensor, backbone[name], msg=f"frozen backbone tensor {name} changed")
    assert model.standardizer.fitted
    # The extractor ran once per clip: later epochs read the cached features of the 368 train + 81 dev files.
    assert len(task._features) == len(data.datasets["emodb"]["train"]) + len(data.datasets["emodb"]["dev"])
    assert len(task.history) == 4
    assert task.best_score == max(h["val_score"] for h in task.history)
    assert task.best_score > 0.45, task.history  # chance is 1/7
    assert model.output_spec().score == "probability" and model.label_names()[0] == "anger"


@pytest.mark.slow
def test_release_recipe_trains_through_sermodels_train(imagenet_weights, tmp_path):
    """The released recipe on a short schedule: a folder that loads and predicts, made by the one train command."""
    out = tmp_path / "ds"
    recipe = REPO / "recipes" / "deep_spectrum" / "mobilenetv2.emodb.yaml"
    argv = [
        "train", "--config", str(recipe), "--model.model.pretrained", str(imagenet_weights),
        "--data.roots", json.dumps({"emodb": str(corpus_root("emodb"))}), "--data.batch_size", "32",
        "--trainer.max_epochs", "2", "--trainer.precision", "bf16-mixed", "--output", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["classifier"] == "linear"
    assert config["training"]["task"] == "sermodels.tasks.classification.ClassificationTask"
    assert config["outputs"]["emodb"] == {"kind": "categories", "level": "utterance", "names": config["heads"]["emodb"],
                                          "score": "probability"}  # fmt: skip
    assert (out / "README.md").is_file() and (out / "metrics.json").is_file()
    model = sermodels.load(out)
    wave = torch.from_numpy(np.zeros(16000, dtype=np.float32)) + 0.01 * torch.randn(16000)
    with torch.inference_mode():
        probs = model.scores(model(wave[None]))
    assert probs.shape == (1, 7) and torch.allclose(probs.sum(), torch.tensor(1.0))
