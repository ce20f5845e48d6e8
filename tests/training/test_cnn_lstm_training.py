"""The transfer study's loop (sermodels.training.cnn_lstm) on real EMO-DB clips: it learns, a frozen stage's cached
output trains exactly as the frozen stage itself, settings freeze and re-initialise from a seed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import corpus_root

from sermodels import labels as label_maps
from sermodels.audio import load_audio
from sermodels.data import load_corpus
from sermodels.models.cnn_lstm import CNNLSTM
from sermodels.training.cnn_lstm import class_weights, fit, fresh, network_inputs, predict, prepare, stage_outputs

BASIC4 = list(label_maps.SHARED_SETS["basic4"])
SMALL = {"domains": {"basic4": BASIC4}, "filters": 8, "lstm_units": 8, "dense_units": 16}


@pytest.fixture(scope="module")
def emodb() -> tuple[torch.Tensor, np.ndarray]:
    """Inputs and basic4 labels of 48 EMO-DB clips (12 per class)."""
    corpus = load_corpus("emodb", corpus_root("emodb"))
    chosen = []
    for label in BASIC4:
        chosen += sorted((it for it in corpus.items if it.label == label), key=lambda it: it.id)[:12]
    model = CNNLSTM(**SMALL)
    inputs = network_inputs(model, [load_audio(it.path, 16000) for it in chosen])
    labels = np.array([BASIC4.index(label_maps.map_label(it.label, "basic4")) for it in chosen])
    return inputs, labels


def test_network_inputs_match_the_model_front_end(emodb):
    inputs, _ = emodb
    assert inputs.shape == (48, 64, 338) and torch.isfinite(inputs).all()


def test_training_fits_the_training_set(emodb):
    inputs, labels = emodb
    model = fresh(SMALL | {"dense_units": 64}, seed=0)
    curve = fit(model, inputs, labels, epochs=30, seed=0)
    assert np.mean(curve.loss[-3:]) < 0.75 * np.mean(curve.loss[:3])
    assert (predict(model, inputs) == labels).mean() > 0.5  # chance: 0.25


def test_same_seed_same_network(emodb):
    inputs, labels = emodb
    a, b = fresh(SMALL, seed=3), fresh(SMALL, seed=3)
    fit(a, inputs, labels, epochs=2, seed=1)
    fit(b, inputs, labels, epochs=2, seed=1)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("setting", ["A4", "A5", "A7"])
def test_cached_frozen_stage_trains_like_the_frozen_network(emodb, setting):
    """With the same seed, training from C1's cached output gives the weights that training the whole network with
    the setting's groups frozen gives: the frozen C2 (and L) are replayed with the dropout that follows them."""
    inputs, labels = emodb
    base = fresh(SMALL, seed=0)
    assert base.dropout == 0.3
    fit(base, inputs, labels, epochs=1, seed=0)
    live, start = prepare(copy.deepcopy(base), setting, seed=5)
    cached, _ = prepare(copy.deepcopy(base), setting, seed=5)
    assert start == "C1"
    fit(live, inputs, labels, epochs=2, seed=2)  # from the input: C1 runs live (frozen, deterministic)
    fit(cached, stage_outputs(base, inputs, "C1"), labels, start="C1", epochs=2, seed=2)
    for key, value in live.state_dict().items():
        assert torch.allclose(value, cached.state_dict()[key], atol=1e-5), key
    frozen = {"A4": ("conv1", "conv2"), "A5": ("conv1", "conv2", "lstm"), "A7": ("conv1", "conv2")}[setting]
    for key, value in base.state_dict().items():
        assert torch.equal(live.state_dict()[key], value) == key.startswith(frozen), key


def test_dropout_makes_the_frozen_stages_matter(emodb):
    """The replay is not a no-op: training on C2's output in evaluation mode (no dropout after C1) is a different
    computation, so the two sets of weights differ."""
    inputs, labels = emodb
    base = fresh(SMALL, seed=0)
    a, _ = prepare(copy.deepcopy(base), "A4", seed=5)
    b, _ = prepare(copy.deepcopy(base), "A4", seed=5)
    fit(a, stage_outputs(base, inputs, "C1"), labels, start="C1", epochs=1, seed=2)
    fit(b, stage_outputs(base, inputs, "C2"), labels, start="C2", epochs=1, seed=2)
    assert not torch.allclose(a.state_dict()["dense.1.weight"], b.state_dict()["dense.1.weight"])


def test_prepare_reinitialises_from_the_seed(emodb):
    inputs, labels = emodb
    base = fresh(SMALL, seed=0)
    fit(base, inputs, labels, epochs=1, seed=0)
    a, start = prepare(copy.deepcopy(base), "A6", seed=7)
    b, _ = prepare(copy.deepcopy(base), "A6", seed=7)
    c, _ = prepare(copy.deepcopy(base), "A6", seed=8)
    assert start == "C1"
    state, key = base.state_dict(), "lstm.lstm.weight_ih_l0"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], state[key]) and not torch.equal(
        a.state_dict()[key], c.state_dict()[key]
    )
    assert torch.equal(a.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    assert [n for n, p in a.named_parameters() if not p.requires_grad] == ["conv1.0.weight", "conv1.0.bias"]
    full, start = prepare(copy.deepcopy(base), "A2", seed=7)
    assert start == "input" and all(p.requires_grad for p in full.parameters())


def test_class_weights():
    weights = class_weights(np.array([0, 0, 0, 1, 3]), 4)
    assert torch.allclose(weights, torch.tensor([5 / 9, 5 / 3, 0.0, 5 / 3]))
