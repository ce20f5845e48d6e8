"""`sermodels finetune --setting A1..A8` (the CNN+LSTM transfer study's settings, §3.2) on real EMO-DB files: which
layer groups stay as pretrained, which are re-initialised, which train; the base's head is kept when the classes
match; any model with layer groups (EmoNet too)."""

from __future__ import annotations

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
from sermodels.layer_groups import SETTINGS, setting_plan, transfer_cutoffs
from sermodels.metrics import uar
from sermodels.models.cnn_lstm import CNNLSTM
from sermodels.models.emonet import EmoNet
from sermodels.training.finetune import finetune

REPO = Path(__file__).resolve().parents[1]
BASIC4 = ["anger", "happiness", "neutral", "sadness"]
FILES_PER_CLASS = 10
SMALL = {"filters": 8, "lstm_units": 6, "dense_units": 12}
SMALL_ARCH = {"arch": "cnn_lstm", "frontend": "logmel", **SMALL}
FAST = {"epochs": 1, "batch_size": 8, "progress": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """``<tmp>/target/<class>/<file>.flac``: 10 EMO-DB files per basic4 class, spread over the speakers."""
    emodb = load_corpus("emodb", corpus_root("emodb"))
    root = tmp_path_factory.mktemp("user") / "target"
    for label in BASIC4:
        items = sorted((it for it in emodb.items if it.label == label), key=lambda it: (it.id[2:], it.speaker))
        (root / label).mkdir(parents=True)
        for item in items[:FILES_PER_CLASS]:
            (root / label / Path(item.path).name).symlink_to(item.path)
    return root


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = CNNLSTM({"basic4": BASIC4}, **SMALL)
    return save_pretrained(net, tmp_path_factory.mktemp("base") / "tiny_cnn_lstm", extra={"id": "tiny_cnn_lstm"})


def _groups(model) -> dict[str, dict[str, torch.Tensor]]:
    plan = model.layer_groups()
    state = model.state_dict()
    return {
        group: {k: v for k, v in state.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}
        for group, prefixes in plan.items()
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("setting", ["A4", "A7"])
def test_setting_freezes_and_reinitialises_the_named_groups(setting, corpus_dir, base_dir, tmp_path):
    out = finetune(base_dir, corpus_dir, tmp_path / setting, setting=setting, **FAST)
    base, tuned = sermodels.load(base_dir), sermodels.load(out)
    assert tuned.heads == {"basic4": BASIC4}  # the base's head, kept: the folders are its classes
    before, after = _groups(base), _groups(tuned)
    frozen = {"A4": ["C1", "C2"], "A7": ["C1", "C2"]}[setting]
    for group in before:
        assert _same(before[group], after[group]) == (group in frozen), group
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["setting"] == setting
    assert config["training"]["frozen"] == frozen
    assert config["training"]["reinitialised"] == ({"A4": [], "A7": ["L", "F"]}[setting])
    assert config["training"]["regime"] == "transfer/groups"
    assert json.loads((out / "metrics.json").read_text())  # scored on the data's test partition


def test_a7_starts_the_rest_from_fresh_weights_a4_from_the_pretrained(corpus_dir, base_dir, tmp_path):
    """With no training step (lr 0) A4 keeps L as pretrained and A7 replaces it with a new initialisation."""
    base = sermodels.load(base_dir)
    outs = {
        s: sermodels.load(finetune(base_dir, corpus_dir, tmp_path / s, setting=s, lr=0.0, **FAST))
        for s in SETTINGS[3::3]
    }
    lstm = "lstm.lstm.weight_hh_l0"
    assert torch.equal(outs["A4"].state_dict()[lstm], base.state_dict()[lstm])
    assert not torch.equal(outs["A7"].state_dict()[lstm], base.state_dict()[lstm])


def test_a1_scores_the_base_unchanged(corpus_dir, base_dir, tmp_path):
    out = finetune(base_dir, corpus_dir, tmp_path / "A1", setting="A1", **FAST)
    base, same = sermodels.load(base_dir), sermodels.load(out)
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in base.state_dict().items())
    metrics = json.loads((out / "metrics.json").read_text())
    test = next(v for k, v in metrics.items() if k.endswith("/test"))
    assert test["n"] > 0 and 0.0 <= test["uar"] <= 1.0
    assert "unchanged" in json.loads((out / "config.json").read_text())["training"]["selection"]
    # the same UAR as the base scored here, clip by clip, on the data's test partition
    items = load_corpus("folder", corpus_dir, name="target").split("fixed")["test"]
    base.eval()
    with torch.inference_mode():
        predicted = [int(base(load_audio(it.path, 16000)[None]).argmax()) for it in items]
    assert test["uar"] == pytest.approx(uar([BASIC4.index(it.label) for it in items], predicted, 4), abs=1e-6)
    assert test["n"] == len(items)


def test_a1_needs_a_head_with_the_data_classes(base_dir, tmp_path):
    emodb = load_corpus("emodb", corpus_root("emodb"))
    root = tmp_path / "other"
    for label in ("boredom", "fear"):
        (root / label).mkdir(parents=True)
        for item in [it for it in emodb.items if it.label == label][:6]:
            (root / label / Path(item.path).name).symlink_to(item.path)
    with pytest.raises(ValueError, match="A1 .*none predicts the data's classes"):
        finetune(base_dir, root, tmp_path / "x", setting="A1", **FAST)
    # A2-A8 add a new head for other classes.
    out = finetune(base_dir, root, tmp_path / "a2", setting="A2", **FAST)
    assert sermodels.load(out).heads == {"other": ["boredom", "fear"]}


def test_cli_setting_and_regime_are_exclusive(corpus_dir, base_dir, tmp_path, capsys):
    args = ["finetune", "--from", str(base_dir), "--data", str(corpus_dir), "--out", str(tmp_path / "o")]
    assert main([*args, "--setting", "A2", "--regime", "head"]) == 2
    assert "--setting replaces --regime" in capsys.readouterr().err


def test_cli_runs_a_setting_on_emonet_with_its_first_three_groups(corpus_dir, tmp_path, capsys):
    torch.manual_seed(0)
    net = EmoNet({"basic4": BASIC4}, stem=4, widths=(8, 8, 8), attention_units=8, hidden=8)
    assert transfer_cutoffs(net) == ("stem", "block1", "block2")
    base = save_pretrained(net, tmp_path / "tiny_emonet", extra={"id": "tiny_emonet"})
    out = tmp_path / "tuned"
    code = main(
        ["finetune", "--from", str(base), "--data", str(corpus_dir), "--out", str(out), "--setting", "A5"]
        + ["--epochs", "1", "--batch-size", "8", "--max-duration", "1", "--no-progress", "--accelerator", "cpu"]
    )
    assert code == 0, capsys.readouterr().err
    before, after = _groups(sermodels.load(base)), _groups(sermodels.load(out))
    assert [g for g in before if _same(before[g], after[g])] == ["stem", "block1", "block2"]


def test_setting_plans():
    model = CNNLSTM({"basic4": BASIC4}, **SMALL)
    plans = {s: setting_plan(model, s) for s in SETTINGS}
    assert not plans["A1"].train and plans["A2"].freeze == [] and plans["A2"].reinit == []
    assert [plans[s].freeze for s in ("A3", "A4", "A5")] == [["C1"], ["C1", "C2"], ["C1", "C2", "L"]]
    assert [plans[s].freeze for s in ("A6", "A7", "A8")] == [["C1"], ["C1", "C2"], ["C1", "C2", "L"]]
    assert [plans[s].reinit for s in ("A6", "A7", "A8")] == [["C2", "L", "F"], ["L", "F"], ["F"]]
    cnn = CNNLSTM({"basic4": BASIC4}, recurrent=False, **SMALL)
    with pytest.raises(ValueError, match="A5 freezes up to 'L', which CNNLSTM lacks"):
        setting_plan(cnn, "A5")
    with pytest.raises(ValueError, match="transfer setting must be one of"):
        setting_plan(model, "A9")
    assert setting_plan(model, "A4", cutoffs=["C1", "L", "F"]).freeze == ["C1", "C2", "L"]
    with pytest.raises(ValueError, match="input-to-output order"):
        setting_plan(model, "A3", cutoffs=["L", "C1", "C2"])
    assert setting_plan(cnn, "A2").train  # A1/A2 need no cut-offs


def test_a1_task_refuses_to_train():
    from sermodels.tasks.transfer import TransferTask

    task = TransferTask(init_from="unused", mode="groups", setting="A1")
    with pytest.raises(ValueError, match="A1 trains nothing"):
        task.configure_optimizers()


def test_recipe_pretrains_on_basic4_and_finetune_a1_scores_it(corpus_dir, tmp_path):
    """The study end to end through the Lightning regimes: `sermodels train` pools EMO-DB and URDU in the basic4
    classes (EMO-DB's other classes dropped), then `sermodels finetune --setting A1` scores that head as it is and
    A5 trains F on a new corpus."""
    from sermodels.cli import main

    roots = {name: str(corpus_root(name)) for name in ("emodb", "urdu")}
    out = tmp_path / "pretrained"
    argv = [
        "train", "--config", str(REPO / "recipes/cnn_lstm/basic4_all.yaml"), "--data.corpora", "[emodb, urdu]",
        "--data.roots", json.dumps(roots), "--data.batch_size", "8", "--model.model", json.dumps(SMALL_ARCH),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
        "--evaluate_splits", "[dev]", "--output", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["heads"] == {"basic4": BASIC4}
    assert config["training"]["label_space"] == "basic4"
    dropped = {c["name"]: c.get("outside_label_set") for c in config["training"]["corpora"]}
    assert dropped["emodb"] == {"boredom": 81, "disgust": 46, "fear": 69} and not dropped["urdu"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k.split("/")[1] for k in metrics} == {"dev"} and all(m["n"] > 0 for m in metrics.values())
    a1 = finetune(out, corpus_dir, tmp_path / "a1", setting="A1", **FAST)
    assert sermodels.load(a1).heads == {"basic4": BASIC4}
    a5 = finetune(out, corpus_dir, tmp_path / "a5", setting="A5", **FAST)
    before, after = _groups(sermodels.load(out)), _groups(sermodels.load(a5))
    assert [g for g in before if not _same(before[g], after[g])] == ["F"]


def test_evaluate_scores_a_basic4_head_on_the_corpus_items_of_its_classes(base_dir, tmp_path):
    """`sermodels evaluate` on EMO-DB: the head named basic4 is scored on the test items of its four classes; the
    others (boredom, disgust, fear) are left out, not mis-scored."""
    from sermodels.cli import main

    out = tmp_path / "report.json"
    root = corpus_root("emodb")
    assert (
        main(["evaluate", "--model", str(base_dir), "--corpus", "emodb", "--root", str(root), "--out", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    test = load_corpus("emodb", root).split("fixed")["test"]
    kept = [it for it in test if it.label in BASIC4]
    assert 0 < len(kept) < len(test)
    assert report["n"] == len(kept)
