"""`sermodels evaluate` of dimensions heads on real EMO-DB files: an utterance-level head on the built-in corpus
(categories placed by av_values) and a frame-level head on the generic corpus with CSV traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluation_dimensions import NAMES, emodb_test_items, model_frames, toy, write_table

from sermodels.checkpoint import save_pretrained
from sermodels.cli import main


def _checkpoint(tmp_path: Path, arch: str, seed: int = 0) -> Path:
    return save_pretrained(toy(arch, seed), tmp_path / arch)


def test_utterance_head_on_emodb_with_av_values(tmp_path, emodb_root, capsys):
    folder = _checkpoint(tmp_path, "toy_utterance")
    report, metrics = tmp_path / "r.json", tmp_path / "metrics.json"
    args = ["evaluate", "--model", str(folder), "--corpus", "emodb", "--root", str(emodb_root), "--no-progress"]
    code = main(
        [*args, "--split", "test", "--label-space", "av_values", "--out", str(report), "--metrics", str(metrics)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "toy_utterance on emodb/test: CCC arousal " in printed and "(n = 107)" in printed and "UAR" not in printed
    data = json.loads(report.read_text())
    assert data["n"] == 107 and data["targets"] == "label_map" and data["model"]["id"] == "toy_utterance"
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    merged = json.loads(metrics.read_text())["emodb/test"]
    assert merged == {"ccc": data["ccc"], "ccc_mean": data["ccc_mean"], "n": 107, "metrics": data["metrics"]}
    # Without --label-space the built-in corpus has no numeric targets: a clear error, exit status 2.
    assert main([*args, "--split", "test", "--out", str(tmp_path / "x.json")]) == 2
    assert "pass label_map" in capsys.readouterr().err
    assert main([*args, "--split", "test", "--label-space", "arousal", "--out", str(tmp_path / "x.json")]) == 2
    assert "--label-space must be one of ['av_values']" in capsys.readouterr().err


def test_frame_head_on_the_generic_corpus_with_traces(tmp_path, emodb_root, capsys):
    wavs = [Path(item.path) for item in emodb_test_items(emodb_root, count=4)]
    model = toy("toy_frame", seed=2)
    folder = save_pretrained(model, tmp_path / "toy_frame")
    table = write_table(tmp_path / "data", wavs, [model_frames(model, wav).numpy() for wav in wavs])
    report, metrics = tmp_path / "f.json", tmp_path / "metrics.json"
    args = ["evaluate", "--model", str(folder), "--corpus", "folder", "--root", str(table), "--no-progress"]
    assert main([*args, "--out", str(report), "--metrics", str(metrics)]) == 0
    printed = capsys.readouterr().out
    assert "CCC (frames concatenated) arousal 1.0000, valence 1.0000; per sequence arousal 1.0000" in printed
    data = json.loads(report.read_text())
    assert data["level"] == "frame" and data["n"] == len(wavs) and data["corpus"] == "folder"
    merged = json.loads(metrics.read_text())["folder/test"]
    assert set(merged) == {"ccc", "ccc_sequence", "ccc_mean", "n", "n_frames", "metrics"}
    assert merged["ccc_mean"] == pytest.approx(1.0) and merged["n_frames"] == data["n_frames"]
    assert set(merged["ccc"]) == set(NAMES)
