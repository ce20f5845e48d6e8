"""The command line on real files: predict (with bad inputs), evaluate, corpora, models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sermodels.cli import main
from sermodels.pretrained import load_index

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "sermodels" / "assets" / "clips"


def _evaluate(root: Path, split: str, report: Path, *extra: str) -> int:
    """`sermodels evaluate` of the released baseline on EMO-DB."""
    args = ["evaluate", "--model", "logmel_svm.emodb", "--corpus", "emodb", "--root", str(root), "--no-progress"]
    return main([*args, "--split", split, "--out", str(report), *extra])


def test_predict_reports_and_skips_bad_files(tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    out = tmp_path / "pred.csv"
    code = main(
        [
            "predict",
            "--model",
            "default",
            "--no-progress",
            str(CLIPS),
            str(empty),
            str(text),
            str(tmp_path / "missing.flac"),
            "--out",
            str(out),
        ]
    )
    assert code == 1  # some inputs failed
    err = capsys.readouterr().err
    assert "empty file" in err and "not an audio file" in err and "no such file" in err
    assert "3 of 8 inputs failed" in err
    rows = list(csv.DictReader(out.open()))
    good = [r for r in rows if r["label"]]
    assert len(good) == 5 and len(rows) == 8
    default = load_index()["_default"]
    config = json.loads((REPO / "checkpoints" / default / "config.json").read_text())
    labels = config["heads"][config["default_head"]]
    assert list(rows[0])[:2] == ["path", "label"] and [f"score_{c}" for c in labels] == list(rows[0])[2:-1]
    for r in good:  # the label is the class with the highest score
        scores = {c: float(r[f"score_{c}"]) for c in labels}
        assert r["label"] == max(scores, key=scores.get)


def test_predict_all_good_exits_zero_json(tmp_path):
    out = tmp_path / "pred.json"
    assert main(["predict", "--no-progress", str(CLIPS / "03a01Wa.flac"), "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["complete"] is True and len(payload["predictions"]) == 1


def test_evaluate_writes_report_png_and_metrics(tmp_path, emodb_root):
    report = tmp_path / "r.json"
    metrics = tmp_path / "metrics.json"
    assert _evaluate(emodb_root, "test", report, "--metrics", str(metrics)) == 0
    data = json.loads(report.read_text())
    assert data["n"] == 107 and 0.0 <= data["uar"] <= 1.0
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The released metrics.json was written by this same command: it must agree.
    released = json.loads((REPO / "checkpoints" / "logmel_svm.emodb" / "metrics.json").read_text())
    assert json.loads(metrics.read_text())["emodb/test"]["uar"] == pytest.approx(released["emodb/test"]["uar"])


def test_corpora_and_models_listing(capsys):
    assert main(["corpora"]) == 0
    out = capsys.readouterr().out
    for name in ("emodb", "ravdess", "emovo", "urdu"):
        assert name in out
    assert main(["models"]) == 0
    assert "logmel_svm.emodb" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["predict", "--model", "no_such_model.x", "--no-progress", str(CLIPS)]) == 2
    assert "no_such_model.x" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_loso_refits_per_speaker_and_matches_the_benchmark(tmp_path, emodb_root):
    """`--split loso` refits the recipe on nine speakers per fold; pooled UAR agrees with benchmarks/baselines.py."""
    report = tmp_path / "loso.json"
    assert _evaluate(emodb_root, "loso", report) == 0
    data = json.loads(report.read_text())
    assert data["n"] == 535 and data["folds_n"] == 10
    bench = REPO / "benchmarks" / "results" / "baselines.json"
    expected = json.loads(bench.read_text())["loso"]["emodb"]["logmel600+linear"]["uar"]
    assert data["uar"] == pytest.approx(expected, abs=0.01)


def test_predict_rejects_an_unknown_output_format_before_any_work(tmp_path, capsys):
    assert main(["predict", "--no-progress", str(CLIPS), "--out", str(tmp_path / "p.txt")]) == 2
    assert "unsupported output format" in capsys.readouterr().err
    assert not (tmp_path / "p.txt").exists()


def test_unwritable_output_is_exit_2_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["predict", "--no-progress", str(CLIPS / "03a01Wa.flac"), "--out", str(blocker / "p.csv")]) == 2
    assert "error" in capsys.readouterr().err


def test_report_keeps_the_model_description(tmp_path, emodb_root):
    report = tmp_path / "r.json"
    assert _evaluate(emodb_root, "dev", report) == 0
    model = json.loads(report.read_text())["model"]
    assert model["id"] == "logmel_svm.emodb" and model["arch"] == "logmel_svm"


def test_evaluate_names_the_files_it_could_not_score(tmp_path, emodb_root, capsys):
    """Like predict: every skipped file on stderr with its reason, n of n_items in the headline, exit status 1."""
    import shutil

    for stem in ("03a01Wa", "03a02Ta"):
        shutil.copy(emodb_root / "wav" / f"{stem}.flac", tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    table = tmp_path / "table.csv"
    table.write_text(
        "path,label,speaker,split\n03a01Wa.flac,anger,03,test\n03a02Ta.flac,sadness,03,test\nempty.wav,anger,03,test\n"
    )
    argv = ["evaluate", "--model", "logmel_svm.emodb", "--corpus", "folder", "--root", str(table)]
    assert main([*argv, "--out", str(tmp_path / "report.json"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "(n = 2 of 3)" in captured.out
    assert f"skipped {tmp_path / 'empty.wav'}: empty file" in captured.err
    assert "1 file could not be scored" in captured.err


def test_evaluate_keys_metrics_by_head_when_a_head_other_than_the_corpus_is_named(tmp_path, emodb_root):
    metrics = tmp_path / "metrics.json"
    runs = {  # model, extra arguments
        "mobilenetv2_adapters.av": ([], ["--head", "valence"]),  # arousal (its default head) and valence
        "emonet_wrn.arousal": (["--head", "arousal"],),  # its only head: the plain key
    }
    for model, options in runs.items():
        base = ["evaluate", "--model", model, "--corpus", "emodb", "--root", str(emodb_root), "--no-progress"]
        for extra in options:
            out = ["--out", str(tmp_path / "r.json"), "--metrics", str(metrics)]
            assert main([*base, "--split", "test", *out, *extra]) == 0
    written = json.loads(metrics.read_text())
    assert sorted(written) == ["emodb/test", "emodb/test/arousal", "emodb/test/valence"]
    released = json.loads((REPO / "checkpoints" / "mobilenetv2_adapters.av" / "metrics.json").read_text())
    assert written["emodb/test/valence"]["uar"] == pytest.approx(released["emodb/test/valence"]["uar"])
