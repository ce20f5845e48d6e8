"""The table `sermodels predict` prints, from the released EmoNet on real EMO-DB files: every file with its label and
that label's probability, the same as in the written CSV; with no `--out` the table alone, with `--out -` the CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest

from sermodels.cli import main
from sermodels.pipelines.terminal import format_table

MODEL = "emonet_wrn.multi4"
STEMS = ["03a01Fa", "09a05Lc", "11b10Nc", "16a04Lc"]


@pytest.fixture
def files(emodb_root) -> list[str]:
    return [str(emodb_root / "wav" / f"{stem}.flac") for stem in STEMS]


def _table(printed: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the printed table (columns are separated by at least two spaces)."""
    header, rule, *rows = printed.splitlines()
    assert set(rule) <= {"-", " "}
    return header.split(), [re.split(r" {2,}", row) for row in rows]


def test_table_lists_every_file_with_the_label_and_probability_of_the_csv(tmp_path, files, capsys):
    out = tmp_path / "predictions.csv"
    missing = str(tmp_path / "missing.flac")
    assert main(["predict", "--model", MODEL, "--no-progress", *files, missing, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    header, rows = _table(captured.out)
    assert header == ["file", "label", "probability"]
    written = [row for row in csv.DictReader(out.open()) if not row["error"]]
    assert [row[0] for row in rows] == [row["path"] for row in written] == files  # input order; failures elsewhere
    for (_, label, probability), row in zip(rows, written):
        assert label == row["label"]
        assert 0.0 <= float(probability) <= 1.0
        assert float(probability) == pytest.approx(float(row[f"score_{label}"]), abs=5e-4)
    assert f"skipped {missing}: no such file" in captured.err


def test_without_out_the_table_alone_and_with_out_dash_the_csv(files, capsys):
    assert main(["predict", "--model", MODEL, "--head", "urdu", "--no-progress", *files]) == 0
    header, rows = _table(capsys.readouterr().out)
    assert [row[0] for row in rows] == files and header[-1] == "probability"
    assert main(["predict", "--model", MODEL, "--head", "urdu", "--no-progress", *files, "--out", "-"]) == 0
    written = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["path"], row["label"]) for row in written] == [(row[0], row[1]) for row in rows]
    assert all(row["label"] in ("angry", "happy", "neutral", "sad") for row in written)


def test_columns_are_aligned_text_left_numbers_right():
    lines = format_table(
        ["file", "label", "probability"], [["a.wav", "anger", "0.5"], ["bb.wav", "sad", "10.25"]], [False, False, True]
    )
    assert lines == [
        "file    label  probability",
        "------  -----  -----------",
        "a.wav   anger          0.5",
        "bb.wav  sad          10.25",
    ]


def test_an_svm_shows_its_decision_value(files, capsys):
    assert main(["predict", "--model", "logmel_svm.emodb", "--no-progress", *files[:2]]) == 0
    header, rows = _table(capsys.readouterr().out)
    assert header == ["file", "label", "decision", "value"] and len(rows) == 2
