"""ONNX export (sermodels/deploy/onnx.py): every released model exports, and onnxruntime gives what torch gives.

The parity test runs each released checkpoint's exported graph in onnxruntime beside the model in torch on real
speech (two EMO-DB utterances, cut to a common length) at two input lengths, every head: the same top class and
scores (probabilities, decision values or dimension values, as ``predict`` reports them) within 1e-4. The default
tier exports each model's default head (once per module; the largest takes about half a minute on two cores); the
slow tier exports every head of the multi-head models together, as ``sermodels export onnx`` does by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import spread_files

import sermodels
from sermodels.audio import load_audio
from sermodels.deploy.onnx import (
    AUDONNX_FILE,
    CLIP_FILE,
    INFO_FILE,
    METADATA_KEY,
    MODEL_FILE,
    export_onnx,
    parity,
    parity_tolerance,
    read_export_info,
)
from sermodels.runtime import weights_digest

pytestmark = pytest.mark.usefixtures("one_thread")

RELEASED = sorted(name for name in sermodels.list_pretrained() if name != "default")
# Seconds: two input lengths; the longer one spans two of conv_blstm's 6 s sequences (every minimum is shorter).
LENGTHS = (2.0, 6.5)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """Two rows of real EMO-DB speech at 16 kHz (utterances of different speakers joined end to end), each as long as
    the longer test length: ``(2, samples)``."""
    samples = int(LENGTHS[-1] * 16000)
    files = spread_files("emodb", 16)
    rows = []
    for half in (files[0::2], files[1::2]):
        row = torch.cat([load_audio(f) for f in half])
        assert len(row) >= samples
        rows.append(row[:samples])
    return torch.stack(rows)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(model id, all heads?)`` -> (model, export folder), exported on first use (all heads or the default)."""
    cache: dict[tuple[str, bool], tuple] = {}

    def get(model_id: str, every_head: bool = False):
        if (model_id, every_head) not in cache:
            model = sermodels.load(model_id).eval()
            folder = tmp_path_factory.mktemp(model_id.replace(".", "_"))
            heads = None if every_head else [model.default_head]
            export_onnx(model, folder, model_id=model_id, heads=heads)
            cache[model_id, every_head] = (model, folder)
        return cache[model_id, every_head]

    return get


def _scores(model, head: str, outputs: torch.Tensor) -> torch.Tensor:
    return model.scores(outputs, head)


@pytest.mark.parametrize("model_id", RELEASED)
def test_released_model_runs_the_same_in_onnxruntime(model_id, exported, speech):
    _check_parity(*exported(model_id), speech)


MULTI_HEAD = [name for name in RELEASED if len(sermodels.load(name).heads) > 1]


@pytest.mark.slow
@pytest.mark.parametrize("model_id", MULTI_HEAD)
def test_every_head_of_multi_head_models(model_id, exported, speech):
    _check_parity(*exported(model_id, every_head=True), speech)


def _check_parity(model, folder: Path, speech: torch.Tensor) -> None:
    session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    heads = [o.name for o in session.get_outputs()]
    assert heads and set(heads) <= set(model.heads)
    for seconds in LENGTHS:
        clips = speech[:, : int(seconds * model.sample_rate)]
        outputs = session.run(None, {"signal": clips.numpy()})
        for head, got in zip(heads, outputs):
            with torch.no_grad():
                want = model(clips, None, head=head)
            assert got.shape == tuple(want.shape), (head, seconds)
            got_scores = _scores(model, head, torch.from_numpy(got))
            want_scores = _scores(model, head, want)
            worst = float((got_scores - want_scores).abs().max())
            assert worst <= parity_tolerance(model), (head, seconds, worst)
            if model.output_spec(head).kind == "categories":
                assert torch.equal(got_scores.argmax(-1), want_scores.argmax(-1)), (head, seconds)


def test_export_files_describe_the_model(exported):
    model, folder = exported("emonet_wrn.arousal")
    assert list(model.heads) == ["arousal"]
    assert {p.name for p in folder.iterdir()} == {MODEL_FILE, CLIP_FILE, AUDONNX_FILE, INFO_FILE}
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["model_id"] == "emonet_wrn.arousal" and info["arch"] == "emonet_wrn"
    assert info["sample_rate"] == 16000 and info["weights_sha256"] == weights_digest(model)
    assert {head: out["labels"] for head, out in info["outputs"].items()} == model.heads
    assert info["outputs"]["arousal"]["spec"] == model.output_spec("arousal").to_json()
    assert read_export_info(folder / MODEL_FILE) == {k: v for k, v in info.items() if k != "files"}
    proto = onnx.load(str(folder / MODEL_FILE))
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert metadata["sample_rate"] == "16000"
    assert json.loads(metadata["labels.arousal"]) == model.label_names("arousal")
    assert METADATA_KEY in metadata
    assert len(proto.graph.initializer) > 0 and not any(  # weights inside the file, no external data
        t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
    )
    signal = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in signal] == ["batch", "samples"]
    clip = onnx.load(str(folder / CLIP_FILE)).graph.input[0].type.tensor_type.shape.dim
    assert clip[0].dim_value == 1 and clip[1].dim_param == "samples"


def test_dynamic_batch_and_time(exported, speech):
    """One graph serves any batch size and length: a clip's output does not depend on its batch-mates."""
    model, folder = exported("emonet_wrn.arousal")
    session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    for samples in (24000, 41234):
        clips = speech[:, :samples].numpy()
        (together,) = session.run(None, {"signal": clips})
        alone = np.concatenate([session.run(None, {"signal": clips[i : i + 1]})[0] for i in range(2)])
        assert np.allclose(together, alone, atol=1e-5)


def test_audonnx_loads_the_export(exported, speech):
    audonnx = pytest.importorskip("audonnx")  # the dev extra installs it
    model, folder = exported("emonet_wrn.arousal")
    loaded = audonnx.load(str(folder))
    clip = speech[0, :32000]
    got = loaded(clip.numpy(), 16000)
    with torch.no_grad():
        want = model(clip[None], None, head="arousal").numpy()
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-4)
    assert loaded.outputs["arousal"].labels == model.label_names("arousal")


def test_export_one_head_and_refusals(tmp_path):
    model = sermodels.load("emonet_wrn.multi4")
    path = export_onnx(model, tmp_path / "one", heads=["urdu"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["urdu"]
    with pytest.raises(KeyError, match="no head 'nope'"):
        export_onnx(model, tmp_path / "bad", heads=["nope"])
    with pytest.raises(ValueError, match="named twice"):
        export_onnx(model, tmp_path / "bad", heads=["urdu", "urdu"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        export_onnx(model, tmp_path / "file")
    with pytest.raises(ValueError, match="not an ONNX model"):
        read_export_info(tmp_path / "file")


def test_parity_reports_differences(exported, speech):
    """The check the CLI prints measures something: other weights give a large difference."""
    model, folder = exported("emonet_wrn.arousal")
    assert parity(model, folder / MODEL_FILE, speech[:, :32000])["arousal"] < 1e-4
    changed = sermodels.load("emonet_wrn.arousal").eval()
    with torch.no_grad():
        next(iter(changed.parameters())).add_(0.5)
    assert parity(changed, folder / MODEL_FILE, speech[:, :32000])["arousal"] > 1e-3


def test_released_example_is_in_this_suite():
    """Every released id is exported above (a new release joins the parity test by being in the index)."""
    assert len(RELEASED) >= 11 and all(Path(sermodels.hub.resolve(r)).is_dir() for r in RELEASED)


@pytest.mark.parametrize("frontend", ["logmel", "raw"])
def test_an_architecture_without_a_release_exports_too(frontend, tmp_path, speech):
    """Every registered architecture exports, not only the released checkpoints: the CNN+LSTM of the transfer study
    (fixed 3.375 s centre window) at a length inside and one beyond its window."""
    from sermodels.models.cnn_lstm import CNNLSTM

    torch.manual_seed(0)
    model = CNNLSTM({"basic4": ["anger", "happiness", "neutral", "sadness"]}, frontend=frontend, filters=8,
                    lstm_units=6, dense_units=12).eval()  # fmt: skip
    path = export_onnx(model, tmp_path)
    for seconds in LENGTHS:
        clips = speech[:, : int(seconds * 16000)]
        assert parity(model, path, clips)["basic4"] <= parity_tolerance(model), seconds
        with torch.no_grad():  # the traced path (whole rows) is the padded batch's path with full lengths
            full = torch.full((2,), clips.shape[1])
            assert torch.allclose(model(clips, None), model(clips, full), atol=1e-6)
