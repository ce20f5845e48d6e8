"""``sermodels predict --backend onnx`` (sermodels/deploy/onnx_backend.py) writes the table the torch backend writes.

Real EMO-DB files of different lengths go through the engine in padded batches (so the backend's grouping by length
is exercised), with chunking on a long file (so chunk outputs are combined), and the tables are compared row by row.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import spread_files

import sermodels
from sermodels.cli import main
from sermodels.deploy.onnx import export_onnx
from sermodels.deploy.onnx_backend import OnnxBackend, cached_export
from sermodels.pipelines.predict import predict_files

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def arousal(tmp_path_factory):
    model = sermodels.load("emonet_wrn.arousal").eval()
    folder = tmp_path_factory.mktemp("arousal")
    export_onnx(model, folder, model_id="emonet_wrn.arousal")
    return model, folder


def _compare(torch_result, onnx_result) -> None:
    assert onnx_result.paths == torch_result.paths and not onnx_result.failures
    assert [r["label"] for r in onnx_result.rows] == [r["label"] for r in torch_result.rows]
    for want, got in zip(torch_result.rows, onnx_result.rows):
        scores = [k for k in want if k.startswith("score_")]
        assert [got[k] for k in scores] == pytest.approx([want[k] for k in scores], abs=1e-4)


def test_backend_matches_torch_on_padded_batches_and_chunks(arousal):
    model, folder = arousal
    files = spread_files("emodb", 7)
    backend = OnnxBackend(model, folder)
    options = {"batch_size": 4, "progress": False, "max_chunk_seconds": 1.5}  # long files: several chunks
    _compare(predict_files(model, files, **options), predict_files(backend, files, **options))
    assert backend.sample_rate == model.sample_rate and backend.label_names() == model.label_names()


def test_backend_refuses_a_graph_of_other_weights(arousal):
    _, folder = arousal
    other = sermodels.load("emonet_wrn.arousal")
    with torch.no_grad():
        next(iter(other.parameters())).mul_(1.01)
    with pytest.raises(ValueError, match="exported from other weights"):
        OnnxBackend(other, folder)


def test_backend_refuses_a_head_it_was_not_exported_with(tmp_path):
    model = sermodels.load("emonet_wrn.multi4")
    export_onnx(model, tmp_path, heads=["urdu"])
    backend = OnnxBackend(model, tmp_path)
    with pytest.raises(KeyError, match="without head 'emodb'"):
        backend(torch.zeros(1, 16000), head="emodb")


def test_cached_export_is_reused_and_keyed_by_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("SERMODELS_CACHE", str(tmp_path))
    model = sermodels.load("logmel_svm.emodb")
    first = cached_export(model)
    stamp = first.stat().st_mtime_ns
    assert cached_export(model) == first and first.stat().st_mtime_ns == stamp  # not exported again
    assert first.parent.parent == tmp_path / "onnx" and model.arch in first.parent.name


def test_cli_predict_backend_onnx(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SERMODELS_CACHE", str(tmp_path / "cache"))
    files = [str(f) for f in spread_files("emodb", 4)]
    assert (
        main(["predict", "--model", "logmel_svm.emodb", *files, "--out", str(tmp_path / "t.csv"), "--no-progress"]) == 0
    )
    assert main(["predict", "--model", "logmel_svm.emodb", *files, "--out", str(tmp_path / "o.csv"), "--no-progress",
                 "--backend", "onnx"]) == 0  # fmt: skip
    torch_rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    onnx_rows = list(csv.DictReader((tmp_path / "o.csv").open()))
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in torch_rows]
    for want, got in zip(torch_rows, onnx_rows):
        for key in want:
            if key.startswith("score_"):
                assert math.isclose(float(got[key]), float(want[key]), abs_tol=1e-4)
    assert main(["predict", "--model", "logmel_svm.emodb", *files, "--backend", "onnx", "--precision", "bf16"]) == 2
    assert "torch options" in capsys.readouterr().err


def test_cli_export(tmp_path, capsys):
    assert main(["export", "onnx", "logmel_svm.emodb", "-o", str(tmp_path / "svm")]) == 0
    err = capsys.readouterr().err
    assert "onnxruntime vs torch at 2 s" in err and (tmp_path / "svm" / "model.yaml").is_file()
    difference = float(err.split("max |difference| emodb ")[1].split()[0])
    assert difference < 1e-4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--devices", "2", "--out", "x.csv", "--precision", "bf16"], "one-process run"),
        (["--devices", "2", "--out", "x.csv", "--backend", "onnx"], "torch backend"),
        (["--devices", "2"], "give --out FILE"),
        (["--accelerator", "gpu"], "options of a --devices run"),
        (["--restart"], "options of a --devices run"),
        (["--onnx", "somewhere"], "--onnx names the graph of --backend onnx"),
        (["--backend", "onnx", "--device", "cuda"], "runs on the CPU"),
    ],
)
def test_cli_refuses_options_that_would_be_ignored(options, message, capsys):
    assert main(["predict", "sermodels/assets/clips", "--no-progress", *options]) == 2
    assert message in capsys.readouterr().err


def test_failed_export_leaves_no_folder(tmp_path):
    model = sermodels.load("logmel_svm.emodb")
    with pytest.raises(KeyError):
        export_onnx(model, tmp_path / "never", heads=["nope"])
    assert not (tmp_path / "never").exists()
