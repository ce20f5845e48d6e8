"""`sermodels finetune` end to end: a class-folder corpus of real EMOVO files, a small EmoNet base, the checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from conftest import corpus_root

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.cli import main
from sermodels.data import load_corpus
from sermodels.models.emonet import EmoNet
from sermodels.pipelines.predict import predict_files
from sermodels.training.finetune import corpus_name_for, default_patience, finetune

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("anger", "neutral", "sadness")
FILES_PER_CLASS = 12
# A narrow network: the test is about the command, not about accuracy (the released base is the full width).
SMALL = {"stem": 4, "widths": (8, 8, 8), "attention_units": 8, "hidden": 8}
FAST = ["--max-duration", "1", "--epochs", "1", "--batch-size", "4", "--no-progress", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """``<tmp>/my corpus!/<class>/<file>.flac`` symlinks: 12 EMOVO files per class, two per speaker."""
    emovo = load_corpus("emovo", corpus_root("emovo"))
    root = tmp_path_factory.mktemp("user") / "my corpus!"
    for label in CLASSES:
        by_speaker: dict[str, list] = {}
        for item in sorted(emovo.items, key=lambda it: it.id):
            if item.label == label:
                by_speaker.setdefault(item.speaker, []).append(item)
        chosen = [items[k] for k in range(2) for items in by_speaker.values()]
        assert len(chosen) == FILES_PER_CLASS
        (root / label).mkdir(parents=True)
        for item in chosen:
            (root / label / Path(item.path).name).symlink_to(item.path)
    return root


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = EmoNet({"emodb": ["anger", "happiness", "sadness"], "urdu": ["angry", "sad"]}, **SMALL)
    return save_pretrained(net, tmp_path_factory.mktemp("base") / "tiny_emonet", extra={"id": "tiny_emonet"})


@pytest.fixture(scope="module")
def finetuned(corpus_dir, base_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out") / "mine"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["finetune", "--from", str(base_dir), "--data", str(corpus_dir), "--out", str(out), *FAST])
    assert code == 0
    return out, printed.getvalue()


def test_checkpoint_loads_with_the_new_head_and_predicts(finetuned, corpus_dir):
    out, printed = finetuned
    model = sermodels.load(out)
    assert isinstance(model, EmoNet)
    assert model.heads == {"my_corpus": list(CLASSES)}  # the folder name, sanitised; class folders in sorted order
    assert model.default_head == "my_corpus"
    clip = next((corpus_dir / "sadness").iterdir())
    with torch.inference_mode():
        logits = model(load_audio(clip, model.sample_rate)[None])
    assert logits.shape == (1, len(CLASSES)) and torch.isfinite(logits).all()
    result = predict_files(model, [clip], progress=False)
    assert not result.failures and result.rows[0]["label"] in CLASSES
    for name in ("config.json", "model.safetensors", "metrics.json", "training_log.json", "README.md"):
        assert (out / name).is_file(), name
    assert "test UAR" in printed and str(out) in printed


def test_metrics_are_the_corpus_test_partition(finetuned, corpus_dir):
    out, printed = finetuned
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["my_corpus/test"]
    expected_n = len(load_corpus("folder", corpus_dir, name="my_corpus").split("fixed")["test"])
    assert test["n"] == expected_n > 0 and test["head"] == "my_corpus"
    assert 0.0 <= test["uar"] <= 1.0
    assert f"test UAR {test['uar']:.3f}" in printed
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert (
        training["regime"] == "transfer/adapters"
        and training["mode"] == "adapters"
        and training["max_duration"] == 1.0
        and training["batch_size"] == 4
    )
    assert training["schedule_run"]["epochs_run"] == 1 and training["schedule_run"]["optimizer_steps"] > 0
    assert training["schedule"]["patience"] == default_patience(1)
    assert training["corpora"][0]["speaker_independent"] is False  # class folders carry no speakers
    assert "my_corpus" in (out / "README.md").read_text()


def test_adapters_regime_keeps_the_shared_network_and_trains_the_adapters(finetuned, base_dir):
    out, _ = finetuned
    base, tuned = sermodels.load(base_dir), sermodels.load(out)
    shared = list(zip(base.shared_parameters(), tuned.shared_parameters(), strict=True))
    assert shared and all(torch.equal(a, b) for a, b in shared)
    # New adapters start at zero (EmoNet §6.1); one epoch of SGD at lr 0.1 moves them.
    adapters = [conv.adapters["my_corpus"] for conv in tuned._adapted_convs()]
    assert any(a.abs().sum() > 0 for a in adapters)
    # The new BN layers trained on batch statistics (a loaded base is in eval mode: they must be switched to train),
    # so the fresh head's running variance left its initial ones and the outputs are finite.
    head_bn = tuned.classifiers["my_corpus"][1]
    assert not torch.allclose(head_bn.running_var, torch.ones_like(head_bn.running_var))
    assert all(torch.isfinite(p).all() for p in tuned.domain_parameters("my_corpus"))
    counts = json.loads((out / "config.json").read_text())["training"]["parameters"]
    assert counts["trainable"] == counts["per_domain"]["my_corpus"] < counts["total"]


def test_head_regime_from_python_keeps_base_adapters(corpus_dir, base_dir, tmp_path):
    out = finetune(
        base_dir,
        corpus_dir,
        tmp_path / "head_only",
        regime="head",
        like="urdu",
        name="custom",
        epochs=1,
        batch_size=8,
        max_duration=0.5,
        accelerator="cpu",
        progress=False,
    )
    base, tuned = sermodels.load(base_dir), sermodels.load(out)
    assert tuned.heads == {"custom": list(CLASSES)}
    for before, after in zip(base._adapted_convs(), tuned._adapted_convs(), strict=True):
        assert torch.equal(before.adapters["urdu"], after.adapters["custom"])  # copied from `like`, frozen
    assert json.loads((out / "metrics.json").read_text())["custom/test"]["n"] > 0


def test_missing_data_folder_is_exit_2(base_dir, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["finetune", "--from", str(base_dir), "--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such data folder" in err
    assert not (tmp_path / "o").exists()


def test_output_inside_the_data_folder_is_exit_2(corpus_dir, base_dir, capsys):
    inside = corpus_dir / "model"
    assert main(["finetune", "--from", str(base_dir), "--data", str(corpus_dir), "--out", str(inside)]) == 2
    assert "inside the data folder" in capsys.readouterr().err
    assert not inside.exists()


def test_baseline_svm_is_not_a_base(corpus_dir, tmp_path, capsys):
    args = ["finetune", "--from", "logmel_svm.emodb", "--data", str(corpus_dir), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "logmel_svm.emodb" in err and "not a multi-domain model" in err and "add_domain" in err


def test_unknown_base_and_single_class_are_exit_2(corpus_dir, base_dir, tmp_path, capsys):
    args = ["finetune", "--from", "no_such_model.x", "--data", str(corpus_dir), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "no_such_model.x" in capsys.readouterr().err
    one = tmp_path / "one_class"
    (one / "anger").mkdir(parents=True)
    for clip in sorted((corpus_dir / "anger").iterdir())[:6]:
        (one / "anger" / clip.name).symlink_to(clip.resolve())
    assert main(["finetune", "--from", str(base_dir), "--data", str(one), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(one) in err and "at least two class" in err


def test_head_name_from_folder_or_table():
    assert corpus_name_for("/data/my corpus!") == "my_corpus"
    assert corpus_name_for("/data/labels.v2.csv") == "labels_v2"
    assert corpus_name_for("/data/???") == "custom"
