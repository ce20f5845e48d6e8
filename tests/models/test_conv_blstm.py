"""The end-to-end conv-BLSTM (D4.2 §5): the paper's sizes, sequence cutting, padding, and a fit on real sessions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import corpus_root

from sermodels import create_model
from sermodels.audio import load_audio
from sermodels.models.conv_blstm import ConvBLSTM, znormalise
from sermodels.outputs import dimensions
from sermodels.postprocess import PostProcessing

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"long_kernel_ms": 50.0, "sequence_seconds": 1.0, "lstm_cells": 16}


def test_literal_layers_and_parameter_count():
    model = create_model("conv_blstm")
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert counts["conv1"] == 40 * 80 + 40  # 40 filters of 5 ms at 16 kHz
    assert counts["conv2"] == 40 * 40 * 4000 + 40  # 40 filters of 500 ms at 8 kHz
    assert model.blstm.lstm.input_size == 640  # 2 channels x 320 samples of 40 ms at 8 kHz
    assert model.blstm.lstm.hidden_size == 128 and model.blstm.lstm.num_layers == 2
    # The layers as written give ~7.6 M parameters, not the text's ~1.5 M (module docstring)
    assert 7.5e6 < sum(counts.values()) < 7.7e6
    assert model.output_spec().frame_rate == 25.0 and model.output_spec().names == ("arousal", "valence")


def test_long_input_is_its_6_s_sequences_joined():
    torch.manual_seed(0)
    model = create_model("conv_blstm", **SMALL).eval()
    files = sorted(corpus_root("emodb").rglob("*.flac"))[:3]
    wave = torch.cat([load_audio(path) for path in files])[:40000]  # 2.5 s of real speech: two and a half sequences
    with torch.no_grad():
        whole = model(wave[None])
        parts = [model(wave[None, s : s + 16000]) for s in range(0, 40000, 16000)]
    assert whole.shape == (1, 63, 2)  # ceil(2.5 s * 25)
    torch.testing.assert_close(whole, torch.cat(parts, 1), atol=1e-5, rtol=1e-4)


def test_padded_batch_equals_each_clip_alone_and_gain_does_not_matter():
    torch.manual_seed(0)
    model = create_model("conv_blstm", **SMALL).eval()
    clips = [load_audio(p)[:n] for p, n in zip(sorted(corpus_root("emodb").rglob("*.flac"))[:2], (30000, 17000))]
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    lengths = torch.tensor([len(c) for c in clips])
    with torch.no_grad():
        out = model(batch, lengths)
        for row, clip in enumerate(clips):
            alone = model(clip[None])
            torch.testing.assert_close(out[row, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)
            assert torch.all(out[row, alone.shape[1] :] == 0)
        # z-normalised sequences (§5.2.1): the level of the recording does not change the output
        torch.testing.assert_close(model(batch * 4, lengths), out, atol=1e-4, rtol=1e-3)
    assert model.output_lengths(lengths).tolist() == [47, 27]


def test_znormalise_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 0.0], [5.0, 5.0, 7.0, 9.0]])
    out = znormalise(x, torch.tensor([3, 4]))
    assert out[0, 3] == 0 and abs(float(out[0, :3].mean())) < 1e-6
    assert float(out[0, :3].std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_specs_config_and_postprocessing_round_trip(tmp_path):
    spec = dimensions(["arousal", "valence"], range=None, level="frame", frame_rate=25.0)
    model = ConvBLSTM.from_specs({"trace": spec}, **SMALL)
    assert model.heads == {"trace": ["arousal", "valence"]}
    with pytest.raises(ValueError, match="frame-level dimensions"):
        ConvBLSTM.from_specs({"x": dimensions(["arousal"])})
    with pytest.raises(ValueError, match="frames/s"):
        ConvBLSTM.from_specs({"x": dimensions(["arousal"], level="frame", frame_rate=100.0)})
    chain = PostProcessing.identity(["arousal", "valence"], 25.0)
    model.set_postprocessing("trace", chain)
    rebuilt = ConvBLSTM(**model.config())
    assert rebuilt.config() == model.config() and "trace" in rebuilt.postprocessing
    traces = [np.random.default_rng(0).normal(size=(40, 2))]
    np.testing.assert_allclose(rebuilt.postprocess_traces(traces)[0], traces[0])
    with pytest.raises(ValueError, match="names heads the model does not have"):
        ConvBLSTM(**{**model.config(), "postprocess": {"other": chain.to_json()}})
    with pytest.raises(ValueError, match="whole number"):
        ConvBLSTM(sequence_seconds=1.01)


@pytest.fixture(scope="module")
def session_cache(tmp_path_factory):
    """EMO-DB's pseudo-sessions, built once for this module."""
    from sermodels.data import load_corpus
    from sermodels.data.sessions import build_sessions

    cache = tmp_path_factory.mktemp("sessions")
    build_sessions(load_corpus("emodb", corpus_root("emodb")), cache)
    return str(cache)


def test_ccc_fit_on_real_sessions_lowers_the_training_loss(session_cache):
    """Six Adam steps on 6 s crops of real EMO-DB pseudo-sessions, the regression regime with the CCC loss."""
    from sermodels.data.sessions import SessionDataModule
    from sermodels.losses import ccc_loss
    from sermodels.tasks import RegressionTask
    from sermodels.training.train import quiet_trainer

    torch.manual_seed(0)
    data = SessionDataModule(
        ["emodb"], roots={"emodb": str(corpus_root("emodb"))}, cache_dir=session_cache, batch_size=6, seed=0
    )
    task = RegressionTask(model={"arch": "conv_blstm", **SMALL}, loss="ccc", optimizer={"name": "adam", "lr": 2e-3})
    data.setup("fit")
    task.configure_from(data)
    batch = next(iter(data.train_dataloader()))

    def loss() -> float:
        task.net.eval()
        with torch.no_grad():
            output = task.net(batch["waveforms"], batch["lengths"])
        frames = min(output.shape[1], batch["traces"].shape[1])
        mask = batch["trace_mask"][:, :frames]
        return float(ccc_loss(output[:, :frames], batch["traces"][:, :frames], mask))

    before = loss()
    trainer = quiet_trainer(max_steps=6, limit_val_batches=0, enable_progress_bar=False, accelerator="cpu")
    trainer.fit(task, datamodule=data)
    assert loss() < before


def test_postprocessing_fitted_on_dev_is_what_evaluate_applies(session_cache):
    """The chain fitted on real dev sessions, stored in the model, is applied by ``evaluate`` (and only when asked)."""
    from sermodels.data.sessions import SessionDataModule
    from sermodels.evaluation import evaluate_items
    from sermodels.training.continuous import fit_for_model, session_traces

    torch.manual_seed(0)
    data = SessionDataModule(["emodb"], roots={"emodb": str(corpus_root("emodb"))}, cache_dir=session_cache)
    data.setup("fit")
    parts = data.partitions["emodb_sessions"]
    model = create_model("conv_blstm", heads={"trace": ["arousal", "valence"]}, **SMALL).eval()
    chain = fit_for_model(model, parts["dev"][:1], parts["train"])
    assert chain.names == ("arousal", "valence") and set(chain.dev_ccc["arousal"]) >= {"raw", "final"}
    # an untrained network is far from the gold: the chain keeps at least one step, and only raises dev CCC
    assert all(chain.dev_ccc[n]["final"] >= chain.dev_ccc[n]["raw"] for n in chain.names)
    model.set_postprocessing("trace", chain)
    test = parts["test"][:1]
    raw, gold = session_traces(model, test)
    report = evaluate_items(model, test)
    plain = evaluate_items(model, test, postprocess=False)
    assert report["postprocessing"] == chain.to_json() and plain["postprocessing"] is None
    expected = chain.apply(raw)[0]
    from sermodels.metrics import ccc

    assert report["ccc"]["arousal"] == pytest.approx(ccc(expected[:, 0], gold[0][:, 0]), abs=1e-6)
    assert plain["ccc"]["arousal"] == pytest.approx(ccc(raw[0][:, 0], gold[0][:, 0]), abs=1e-6)


def test_predict_chunks_are_whole_sequences(tmp_path):
    """A chunk length that is not a whole number of sequences is rounded down to one, so chunked prediction gives
    the frames of a whole-file forward."""
    import soundfile as sf

    from sermodels.pipelines.predict import run_predictions

    torch.manual_seed(0)
    model = create_model("conv_blstm", **SMALL).eval()
    files = sorted(corpus_root("emodb").rglob("*.flac"))[:3]
    wave = torch.cat([load_audio(path) for path in files])[:70000]
    path = tmp_path / "joined.wav"
    sf.write(path, wave.numpy(), 16000, subtype="FLOAT")
    chunked = run_predictions(model, [path], max_chunk_seconds=2.5, progress=False).outputs[0]
    with torch.no_grad():
        whole = model(wave[None])[0]
    torch.testing.assert_close(chunked.float(), whole, atol=1e-5, rtol=1e-4)
