"""AV-SpNET pre-training (Table 2 objectives) on real proxy labels, recognition heads, and ``sermodels finetune``."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import corpus_root

from sermodels import create_model, load
from sermodels.cli import main as cli_main
from sermodels.data.proxy import proxy_table
from sermodels.training.av_spnet import (
    PROXY_CORPUS,
    fit_segment_head,
    fit_whole_network,
    nested_fractions,
    network_vote,
    objective_weights,
    pretrain,
    release,
    vote,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_objective_weights_are_table_2():
    assert objective_weights("av_spnet", 0.3) == {PROXY_CORPUS: 0.7, "reconstruction": 0.3}
    assert objective_weights("proxy") == {PROXY_CORPUS: 1.0, "reconstruction": 0.0}
    assert objective_weights("autoencoder") == {PROXY_CORPUS: 0.0, "reconstruction": 1.0}
    with pytest.raises(ValueError, match="objective"):
        objective_weights("valence")
    with pytest.raises(ValueError, match="alpha"):
        objective_weights("av_spnet", 1.5)


def test_fractions_are_nested_and_stratified():
    labels = np.array([0] * 40 + [1] * 20 + [2] * 8)
    picks = nested_fractions(labels, (0.25, 0.5, 0.75, 1.0), seed=3)
    for small, large in [(0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]:
        assert set(picks[small]) <= set(picks[large])
    assert np.bincount(labels[picks[0.25]]).tolist() == [10, 5, 2]
    assert np.array_equal(picks[1.0], np.arange(len(labels)))
    assert not np.array_equal(picks[0.5], nested_fractions(labels, (0.5,), seed=4)[0.5])
    with pytest.raises(ValueError, match="fractions"):
        nested_fractions(labels, (0.0,), seed=0)


def test_segment_head_learns_and_votes_deterministically():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(60)
    centres = torch.randn(3, 64, generator=generator) * 2
    features = centres[labels] + torch.randn(180, 64, generator=generator)
    head = fit_segment_head(features, labels, 3, seed=1, epochs=5, batch_size=32)
    again = fit_segment_head(features, labels, 3, seed=1, epochs=5, batch_size=32)
    for a, b in zip(head.parameters(), again.parameters()):
        assert torch.equal(a, b)
    owner = torch.arange(180) // 3  # 60 "utterances" of 3 segments, each of one class
    decided = vote(head, features, owner, 60)
    assert (decided == labels[::3].numpy()).mean() > 0.9


def test_trainable_encoder_learns_with_its_head():
    torch.manual_seed(0)
    net = create_model("av_spnet", domains={"t": ["a", "b"]}, channels=4, n_bins=40, segment_frames=20)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    labels = torch.arange(2).repeat_interleave(40)
    segments = torch.randn(80, 1, 40, 20) + labels[:, None, None, None] * torch.linspace(-1, 1, 40)[:, None]
    fit_whole_network(net, segments, labels, "t", seed=0, epochs=4, batch_size=16)
    assert not torch.equal(before["stage1.0.weight"], net.stage1[0].weight)
    assert torch.equal(before["decoder_fc.0.weight"], net.decoder_fc[0].weight)  # the decoder is not trained
    decided = network_vote(net, segments, torch.arange(80) // 2, 40, "t")
    assert (decided == labels[::2].numpy()).mean() > 0.9


@pytest.fixture(scope="module")
def emodb_proxy(tmp_path_factory):
    """A proxy table of 60 EMO-DB files (a few per speaker and partition) with labels from pitch and intensity."""
    folder = tmp_path_factory.mktemp("proxy")
    full = proxy_table(["emodb"], {"emodb": corpus_root("emodb")}, folder / "full.csv")
    rows = list(csv.DictReader(full.open()))
    kept = [row for i, row in enumerate(rows) if i % 9 == 0]
    table = folder / "small.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return table


def test_pretrain_objectives_write_loadable_front_ends(emodb_proxy, tmp_path):
    joint = pretrain(emodb_proxy, tmp_path / "av", objective="av_spnet", steps=2, batch_size=4)
    ae = pretrain(emodb_proxy, tmp_path / "ae", objective="autoencoder", steps=2, batch_size=4)
    ae_then_proxy = pretrain(emodb_proxy, tmp_path / "waea", objective="proxy", steps=2, batch_size=4, init_from=ae)
    summary = json.loads((joint / "pretraining.json").read_text())
    assert summary["steps"] == 2 and summary["weights"] == {PROXY_CORPUS: 0.5, "reconstruction": 0.5}
    assert 0 < summary["test_reconstruction_mse"] < 10
    assert "proxy/test" in json.loads((joint / "metrics.json").read_text())
    first, second = load(ae), load(ae_then_proxy)
    assert bool(first.statistics_fitted)
    torch.testing.assert_close(first.input_mean, second.input_mean)  # continued, not refitted
    assert not torch.equal(first.stage1[0].weight, second.stage1[0].weight)  # the proxy phase trained the encoder
    torch.testing.assert_close(first.decoder_fc[0].weight, second.decoder_fc[0].weight)  # no loss reaches it
    with pytest.raises(ValueError, match="init_from"):
        pretrain(emodb_proxy, tmp_path / "x", objective="av_spnet", init_from=ae)
    small = release(joint, tmp_path / "release", store_dtype="float16")
    config = json.loads((small / "config.json").read_text())
    assert config["weights_dtype"] == "float16" and any("Proxy labels" in x for x in config["limitations"])
    assert (small / "model.safetensors").stat().st_size < 0.6 * (joint / "model.safetensors").stat().st_size
    wave = torch.randn(1, 16000)
    with torch.no_grad():
        close = load(small).eval()(wave), load(joint).eval()(wave)
    torch.testing.assert_close(close[0], close[1], atol=5e-3, rtol=5e-3)


def test_finetune_trains_a_head_on_the_frozen_encoder(emodb_proxy, tmp_path, capsys):
    front = pretrain(emodb_proxy, tmp_path / "front", objective="av_spnet", steps=1, batch_size=4)
    data = tmp_path / "mine"
    wanted = {"W": "anger", "T": "sadness"}
    for path in sorted(corpus_root("emodb").rglob("*.flac")):
        if path.stem[5] in wanted and len(list((data / wanted[path.stem[5]]).glob("*"))) < 12:
            (data / wanted[path.stem[5]]).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, data / wanted[path.stem[5]] / path.name)
    out = tmp_path / "tuned"
    code = cli_main(["finetune", "--from", str(front), "--data", str(data), "--out", str(out), "--epochs", "1",
                     "--no-progress"])  # fmt: skip
    assert code == 0 and "fine-tuned" in capsys.readouterr().out
    base, tuned = load(front), load(out)
    assert tuned.heads["mine"] == ["anger", "sadness"] and tuned.default_head == "mine"
    torch.testing.assert_close(base.stage1[0].weight, tuned.stage1[0].weight)  # the encoder stayed frozen
    torch.testing.assert_close(base.shared_fc[0].weight, tuned.shared_fc[0].weight)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["optimizer"]["name"] == "adam"  # the family's transfer optimiser
    assert config["training"]["max_duration"] == 0.81  # one random segment per clip and epoch: per-segment training
