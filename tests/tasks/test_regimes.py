"""The training regimes beyond classification, on real corpora: regression (CCC) of a dimensional head, transfer by
layer groups, WDA critic adaptation, the best state across a Lightning resume, and ``sermodels train`` running an
EmoNet and a Deep Spectrum recipe through the same code path and export."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from conftest import REPO, corpus_root

import sermodels
from sermodels.checkpoint import save_pretrained
from sermodels.data import SERDataModule
from sermodels.data.adaptation import AdaptationDataModule
from sermodels.models.emonet import EmoNet
from sermodels.tasks import AdaptationTask, ClassificationTask, MultitaskTask, RegressionTask, TransferTask

TINY = {"stem": 4, "widths": [8, 8, 16], "attention_units": 8, "hidden": 8}
MODEL = {"arch": "emonet_wrn", **TINY}
EMODB = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
URDU = ["angry", "happy", "neutral", "sad"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(steps: int, val_batches: int = 2, **options) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        max_steps=steps,
        limit_train_batches=steps,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**(defaults | options))


def _base(tmp_path, heads=None) -> tuple[EmoNet, str]:
    torch.manual_seed(1)
    base = EmoNet(heads or {"emodb": EMODB, "urdu": URDU}, **TINY)
    return base, str(save_pretrained(base.eval(), tmp_path / "base"))


def test_regression_trains_a_dimensional_head_with_ccc_on_emodb():
    L.seed_everything(0, verbose=False)
    data = SERDataModule(
        ["emodb"], {"emodb": str(corpus_root("emodb"))}, label_space="av_values", batch_size=8, max_duration=1.0
    )
    task = RegressionTask(MODEL)
    task.configure_from(data)
    spec = task.net.output_spec("av_values")
    assert spec.kind == "dimensions" and spec.names == ("arousal", "valence")
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    _trainer(3).fit(task, datamodule=data)
    after = task.net.state_dict()
    assert not torch.equal(before["classifiers.av_values.4.weight"], after["classifiers.av_values.4.weight"])
    (record,) = task.history
    assert -1.0 <= record["val_score"] <= 1.0 and math.isfinite(record["emodb"])
    # The sequence-level CCC needs frame-level outputs and traces.
    sequence = RegressionTask(MODEL, loss="sequence_ccc")
    sequence.configure_from(data)
    with pytest.raises(ValueError, match="frame-level"):
        sequence.batch_loss(next(iter(data.train_dataloader())))
    with pytest.raises(ValueError, match="dimensional heads"):
        RegressionTask(MODEL).configure_from(SERDataModule(["emodb"], {"emodb": str(corpus_root("emodb"))}))


def test_multitask_refuses_a_reconstruction_the_model_cannot_make():
    data = SERDataModule(["urdu"], {"urdu": str(corpus_root("urdu"))}, batch_size=4, max_duration=0.5)
    with pytest.raises(TypeError, match="reconstruct"):
        MultitaskTask(MODEL, weights={"reconstruction": 1.0}).configure_from(data)
    with pytest.raises(ValueError, match="does not have"):
        MultitaskTask(MODEL, weights={"nope": 1.0}).configure_from(data)


def test_transfer_by_layer_groups_freezes_up_to_a_cut_off_and_reinitialises(tmp_path):
    base, folder = _base(tmp_path)
    L.seed_everything(0, verbose=False)
    data = SERDataModule(["urdu"], {"urdu": str(corpus_root("urdu"))}, batch_size=4, max_duration=0.5)
    task = TransferTask(folder, mode="groups", freeze_upto="block3", reinit=["heads"])
    task.configure_from(data)
    assert list(task.net.layer_groups())[:4] == ["stem", "block1", "block2", "block3"]
    start = {k: v.clone() for k, v in task.net.state_dict().items()}
    assert not torch.equal(start["classifiers.urdu.4.weight"], base.state_dict()["classifiers.urdu.4.weight"])
    _trainer(2, val_batches=0).fit(task, datamodule=data)
    end = task.net.state_dict()
    frozen = [k for k in end if k.startswith(("stem.", "blocks.0.", "blocks.1.", "blocks.2.")) and "weight" in k]
    assert frozen and all(torch.equal(end[k], start[k]) for k in frozen if "bns" not in k)
    assert not torch.equal(end["blocks.5.conv2.conv.weight"], start["blocks.5.conv2.conv.weight"])
    with pytest.raises(ValueError, match="no layer groups"):
        TransferTask(folder, mode="groups", freeze=["nope"]).configure_from(data)


def test_wda_updates_critic_and_extractor_without_target_labels(tmp_path):
    base, folder = _base(tmp_path, {"emodb": EMODB})
    L.seed_everything(0, verbose=False)
    data = AdaptationDataModule(
        source={"corpora": ["emodb"], "roots": {"emodb": str(corpus_root("emodb"))}, "batch_size": 4,
                "max_duration": 0.5},
        target={"corpora": ["emovo"], "roots": {"emovo": str(corpus_root("emovo"))}},
    )  # fmt: skip
    task = AdaptationTask(folder, critic_steps=2)
    seen = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((sorted(batch), sorted(batch["target"]), set(batch["target"]["corpus"])))

    task.configure_from(data)
    critic_before = {k: v.clone() for k, v in task.critic.state_dict().items()}
    net_before = {k: v.clone() for k, v in task.net.state_dict().items()}
    source_before = {k: v.clone() for k, v in task.source_net.state_dict().items()}
    # Manual optimisation counts every optimiser step (critic and extractor): bound the run by batches instead.
    _trainer(2, val_batches=1, max_steps=-1, callbacks=[Probe()]).fit(task, datamodule=data)
    assert [s[0] for s in seen] == [["source", "target"]] * 2
    assert all("labels" not in keys and corpora == {"emovo"} for _, keys, corpora in seen)
    assert any(not torch.equal(critic_before[k], v) for k, v in task.critic.state_dict().items())
    assert not torch.equal(net_before["stem.conv.weight"], task.net.state_dict()["stem.conv.weight"])
    assert all(torch.equal(source_before[k], v) for k, v in task.source_net.state_dict().items())  # F_S fixed
    assert task.history and math.isfinite(task.history[0]["val_score"])


def test_best_state_and_history_survive_a_lightning_resume(tmp_path):
    data = SERDataModule(["urdu"], {"urdu": str(corpus_root("urdu"))}, batch_size=8, max_duration=0.5)
    L.seed_everything(0, verbose=False)
    first = ClassificationTask(MODEL)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    options = dict(max_steps=-1, limit_train_batches=2, enable_checkpointing=True, callbacks=[checkpoint])
    _trainer(2, **options).fit(first, datamodule=data)
    assert len(first.history) == 1
    resumed = ClassificationTask(MODEL)
    _trainer(2, **(options | {"max_epochs": 2})).fit(resumed, datamodule=data, ckpt_path=tmp_path / "last.ckpt")
    assert len(resumed.history) == 2 and resumed.history[0] == first.history[0]
    assert resumed.best_score == max(h["val_score"] for h in resumed.history)
    assert resumed.best_state is not None


def _files(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_train_runs_an_emonet_and_a_deep_spectrum_recipe_through_one_export(tmp_path, capsys):
    from sermodels.cli import main

    roots = {name: str(corpus_root(name)) for name in ("emodb", "urdu")}
    emonet = [
        "train", "--config", str(REPO / "recipes/emonet/multi4.yaml"),
        "--data.corpora", "[emodb, urdu]", "--data.roots", json.dumps(roots), "--data.batch_size", "4",
        "--data.max_duration", "0.5", "--model.model", json.dumps(MODEL), "--trainer.max_steps", "2",
        "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.precision", "32",
        "--trainer.enable_progress_bar", "false", "--evaluate_splits", "[dev]", "--output", str(tmp_path / "emonet"),
    ]  # fmt: skip
    small_ds = {"arch": "deep_spectrum", "backbone": "mobilenetv2_100", "layer": "pre_logits",
                "image": {"kind": "mel", "n_mels": 32, "size": [64, 64]}, "classifier": "linear"}  # fmt: skip
    deep_spectrum = [
        "train", "--config", str(REPO / "recipes/deep_spectrum/mobilenetv2.emodb.yaml"),
        "--data.roots", json.dumps({"emodb": roots["emodb"]}), "--model.model", json.dumps(small_ds),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--evaluate_splits", "[dev]", "--output", str(tmp_path / "ds"),
    ]  # fmt: skip
    for argv in (emonet, deep_spectrum):
        assert main(argv) == 0
    made = {"config.json", "model.safetensors", "recipe_resolved.yaml", "training_log.json", "metrics.json"}
    for name, task, heads in (
        ("emonet", "MultiDomainTask", ["emodb", "urdu"]),
        ("ds", "ClassificationTask", ["emodb"]),
    ):
        folder = tmp_path / name
        assert made | {"README.md"} == _files(folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["training"]["task"] == f"sermodels.tasks.classification.{task}"
        assert sorted(config["outputs"]) == heads and all(o["kind"] == "categories" for o in config["outputs"].values())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert sorted(metrics) == [f"{h}/dev" for h in heads] and all(0 <= m["uar"] <= 1 for m in metrics.values())
        model = sermodels.load(str(folder))
        assert sorted(model.heads) == heads
        log = json.loads((folder / "training_log.json").read_text())
        assert log["history"] and "val_score" in log["history"][0]


def test_emonet_dimensional_heads_keep_their_declared_range():
    from sermodels.outputs import dimensions

    cls = sermodels.get_model_class("emonet_wrn")
    heads = {"free": dimensions(["score"], range=None), "rated": dimensions(["score"], range=(1.0, 5.0))}
    model = cls.from_specs(heads, **TINY).eval()
    rebuilt = cls(**model.config())
    assert rebuilt.output_specs() == model.output_specs() == heads
    with torch.no_grad():
        model.classifiers["free"][-1].bias.fill_(50.0)
        model.classifiers["rated"][-1].bias.fill_(50.0)
        wave = torch.randn(1, 8000)
        assert model(wave, head="free").item() > 5.0  # unbounded: linear
        assert 1.0 <= model(wave, head="rated").item() <= 5.0  # squashed into its range


def test_regimes_pick_the_loss_by_head_kind_and_skip_one_clip_batches(tmp_path):
    """A transfer onto numeric targets trains with the regression loss (no class weights for dimensions); a one-clip
    batch (URDU's 286 training clips in batches of 15) is skipped, as BatchNorm cannot train on it."""
    urdu = {"urdu": str(corpus_root("urdu"))}
    data = SERDataModule(["urdu"], urdu, label_space="av_values", batch_size=15, max_duration=0.3)
    L.seed_everything(0, verbose=False)
    task = RegressionTask(MODEL)
    sizes, states = [], []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sizes.append(len(batch["waveforms"]))
            states.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})

    _trainer(None, val_batches=0, max_steps=-1, limit_train_batches=1.0, callbacks=[Probe()]).fit(task, data)
    assert sizes[-1] == 1 and sizes[:-1] == [15] * 19
    after = task.net.state_dict()
    assert all(torch.equal(states[-1][k], after[k]) for k in after)  # the one-clip batch changed nothing
    folder = save_pretrained(task.net.eval(), tmp_path / "regressor")
    transfer = TransferTask(str(folder), mode="adapters")
    transfer.configure_from(data)
    assert transfer.class_weights == {} and transfer.net.output_spec("av_values").kind == "dimensions"
    batch = next(iter(data.train_dataloader()))
    assert torch.isfinite(transfer.batch_loss(batch))


def test_a_model_whose_head_does_not_fit_the_targets_is_refused():
    import toy_models  # noqa: F401  registers the test-only frame-level model

    data = SERDataModule(["emodb"], {"emodb": str(corpus_root("emodb"))}, label_space="av_values", batch_size=4)
    with pytest.raises(ValueError, match="the data's targets need"):
        RegressionTask({"arch": "toy_frame"}).configure_from(data)


def test_groups_transfer_reinitialises_like_a_fresh_model_and_drops_stale_heads(tmp_path):
    base, folder = _base(tmp_path)
    with torch.no_grad():
        base.blocks[5].conv2.adapters["urdu"].fill_(0.5)
    folder = str(save_pretrained(base.eval(), tmp_path / "base2"))
    data = SERDataModule(["urdu"], {"urdu": str(corpus_root("urdu"))}, batch_size=4, max_duration=0.5)
    task = TransferTask(folder, mode="groups", freeze_upto="block5", reinit=["block6"])
    task.configure_from(data)
    net = task.net
    assert sorted(net.heads) == ["urdu"]  # the emodb head would be stale once block 6 trains
    assert torch.count_nonzero(net.blocks[5].conv2.adapters["urdu"]) == 0  # a fresh adapter is zero
    torch.manual_seed(5)
    fresh_std = EmoNet({"urdu": URDU}, **TINY).blocks[5].conv2.conv.weight.detach().std()
    assert float(net.blocks[5].conv2.conv.weight.detach().std()) == pytest.approx(float(fresh_std), rel=0.3)  # Kaiming
    with pytest.raises(ValueError, match="keep_base_domains"):
        TransferTask(folder, mode="groups", keep_base_domains=True)


def test_a_pretrained_feature_standardiser_is_kept(tmp_path):
    """Deep Spectrum's z-score is fitted for a fresh model only; a transfer from a trained one keeps its own."""
    from sermodels.outputs import categories

    cls = sermodels.get_model_class("deep_spectrum")
    small = {"backbone": "test_efficientnet", "image": {"size": [64, 64]}}
    model = cls.from_specs({"urdu": categories(URDU)}, **small)
    model.fit_feature_statistics(torch.randn(10, model.extractor.dim) * 3 + 1)
    folder = save_pretrained(model.eval(), tmp_path / "ds")
    data = SERDataModule(["urdu"], {"urdu": str(corpus_root("urdu"))}, batch_size=8, max_duration=None)
    task = TransferTask(str(folder), mode="groups", freeze=[], optimizer={"name": "adam", "lr": 1e-3})
    _trainer(1, val_batches=0).fit(task, datamodule=data)
    torch.testing.assert_close(task.net.standardizer.mean, model.standardizer.mean)
    assert not any(p.requires_grad for p in task.net.extractor.parameters())  # the extractor stays frozen
    fresh = ClassificationTask({"arch": "deep_spectrum", **small}, optimizer={"name": "adam", "lr": 1e-3})
    _trainer(1, val_batches=0).fit(fresh, datamodule=data)
    assert fresh.net.feature_statistics_fitted


def test_train_resumes_from_a_lightning_checkpoint(tmp_path):
    """``sermodels train --ckpt_path``: the second run continues the first (its validation history included)."""
    from sermodels.cli import main

    roots = {"urdu": str(corpus_root("urdu"))}
    common = [
        "train", "--config", str(REPO / "recipes/emonet/arousal.yaml"), "--data.corpora", "[urdu]",
        "--data.roots", json.dumps(roots), "--data.batch_size", "8", "--data.max_duration", "0.5",
        "--model.model", json.dumps(MODEL), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--trainer.max_steps", "-1", "--trainer.precision", "32", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "true", "--trainer.default_root_dir", str(tmp_path),
        "--evaluate_splits", "[]",
    ]  # fmt: skip
    assert main([*common, "--trainer.max_epochs", "1", "--output", str(tmp_path / "first")]) == 0
    (checkpoint,) = (tmp_path / "checkpoints").glob("*.ckpt")
    argv = [*common, "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "second")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "first" / "training_log.json").read_text())["history"]
    second = json.loads((tmp_path / "second" / "training_log.json").read_text())["history"]
    assert len(first) == 1 and len(second) == 2 and second[0] == first[0]
