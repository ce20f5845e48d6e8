"""CNN+LSTM (Marczewski et al. 2017, §3.1): the paper's sizes, the fixed 54 000-sample window, per-clip
standardisation, batch independence, the staged forward the transfer study caches, on real EMO-DB clips."""

from __future__ import annotations

import pytest
import torch
from conftest import corpus_root

from sermodels.audio import load_audio
from sermodels.data import load_corpus
from sermodels.models.cnn_lstm import CNNLSTM, INPUT_SAMPLES, conv_steps

BASIC4 = ["anger", "happiness", "neutral", "sadness"]


def _count(model: CNNLSTM, group: str) -> int:
    prefixes = model.layer_groups()[group]
    return sum(p.numel() for n, p in model.named_parameters() if any(n.startswith(q + ".") for q in prefixes))


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    corpus = load_corpus("emodb", corpus_root("emodb"))
    items = sorted(corpus.items, key=lambda it: it.id)[:4]
    return [load_audio(it.path, 16000) for it in items]


def test_paper_sizes():
    model = CNNLSTM({"basic4": BASIC4})
    assert model.input_samples == INPUT_SAMPLES == 54_000
    assert model.conv1[0].out_channels == model.conv2[0].out_channels == 128  # §3.1: 128 kernels
    lstm = model.lstm.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.bidirectional) == (128, 500, True)  # two 500-d outputs
    assert [m.out_features for m in model.dense if isinstance(m, torch.nn.Linear)] == [1000, 1000]
    assert [m.p for m in model.dense if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]
    assert model.transfer_optimizer["name"] == "adadelta"
    assert list(model.layer_groups()) == ["C1", "C2", "L", "F"]
    # LSTM: 2 directions x 4 gates x 500 x (128 + 500 + 2 biases)
    assert _count(model, "L") == 2 * 4 * 500 * (128 + 500 + 2)
    assert _count(model, "F") == (1000 * 1000 + 1000) * 2 + 1000 * 4 + 4


@pytest.mark.parametrize(("frontend", "channels", "steps"), [("logmel", 64, 338), ("raw", 1, 54_000)])
def test_input_window_is_fixed_and_standardised(frontend, channels, steps, clips):
    model = CNNLSTM({"basic4": BASIC4}, frontend=frontend).eval()
    short = clips[0][:20_000]
    x = model.standardised_input(short[None])
    assert x.shape == (1, channels, steps)
    width = 20_000 if frontend == "raw" else 125  # frames centred inside the clip: ceil(20000 / 160)
    valid, pad = x[..., :width], x[..., width:]
    assert abs(float(valid.mean())) < 1e-4 and abs(float(valid.std(unbiased=False)) - 1) < 1e-3
    assert torch.count_nonzero(pad) == 0  # padding is the clip's mean after standardisation


def test_long_clip_uses_its_centre_window():
    model = CNNLSTM({"basic4": BASIC4}, filters=8, lstm_units=6, dense_units=12).eval()
    wave = torch.randn(80_000)
    start = (80_000 - INPUT_SAMPLES) // 2
    with torch.inference_mode():
        assert torch.allclose(model(wave[None]), model(wave[None, start : start + INPUT_SAMPLES]), atol=1e-6)


def test_clip_scores_the_same_alone_and_in_a_padded_batch(clips):
    model = CNNLSTM({"basic4": BASIC4}, filters=8, lstm_units=6, dense_units=12).eval()
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    with torch.inference_mode():
        together = model(batch, lengths)
        alone = torch.cat([model(clip[None]) for clip in clips])
    assert torch.allclose(together, alone, atol=1e-5)


def test_staged_forward_equals_the_whole_network(clips):
    model = CNNLSTM({"basic4": BASIC4}, filters=8, lstm_units=6, dense_units=12).eval()
    x = model.standardised_input(clips[1][None])
    with torch.inference_mode():
        whole = model.run(x)
        for stage in model.stages:
            assert torch.allclose(model.run(model.run(x, stop=stage), start=stage), whole, atol=1e-6), stage
        assert model.run(x, stop="L").shape == (1, 12)  # 2 x 6 final states
        assert torch.equal(model.embed(clips[1][None]), model.run(x, stop="F"))
    with pytest.raises(ValueError, match="unknown stage"):
        model.run(x, start="X")


def test_cnn_variant_flattens_the_conv_map():
    model = CNNLSTM({"basic4": BASIC4}, recurrent=False, filters=8, dense_units=12)
    assert list(model.layer_groups()) == ["C1", "C2", "F"]
    assert model.dense[1].in_features == 8 * model.steps == 8 * conv_steps(conv_steps(338, 5, 1, 4), 5, 1, 4)
    assert model(torch.randn(2, 30_000)).shape == (2, 4)


def test_raw_variant_layout():
    model = CNNLSTM({"basic4": BASIC4}, frontend="raw", filters=8, lstm_units=6, dense_units=12)
    assert model.steps == 211  # 54 000 samples -> 13 501 (stride 4) -> 1 687 (pool 8) -> 1 688 -> 211
    assert model(torch.randn(1, 1000)).shape == (1, 4)


def test_bad_configurations_and_inputs():
    with pytest.raises(ValueError, match="frontend must be one of"):
        CNNLSTM({"basic4": BASIC4}, frontend="mfcc")
    with pytest.raises(ValueError, match="too short for the convolutions"):
        CNNLSTM({"basic4": BASIC4}, frontend="raw", input_samples=100)
    with pytest.raises(ValueError, match="mel settings belong"):
        CNNLSTM({"basic4": BASIC4}, frontend="raw", mel={"n_mels": 40})
    model = CNNLSTM({"basic4": BASIC4}, filters=8, lstm_units=6, dense_units=12)
    with pytest.raises(ValueError, match="at least one sample"):
        model(torch.zeros(1, 100), torch.tensor([0]))
    silent = model.eval()(torch.zeros(1, 16000))  # a silent clip: standardised by the floor, finite output
    assert torch.isfinite(silent).all()


def test_new_domain_replaces_the_head_only():
    model = CNNLSTM({"basic4": BASIC4}, filters=8, lstm_units=6, dense_units=12)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifiers")}
    model.add_domain("mine", ["calm", "tense"])
    model.remove_domain("basic4")
    assert model.heads == {"mine": ["calm", "tense"]} and model.default_head == "mine"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model(torch.randn(1, 8000)).shape == (1, 2)
