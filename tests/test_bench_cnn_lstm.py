"""benchmarks/cnn_lstm.py: folds, what each pre-training sees, a Table 3 cell on real clips, the summary (gains,
t-tests, Table 4 pairing) and the README section computed from it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from bench_scripts import BENCHMARKS, load_script
from conftest import corpus_root

from sermodels import labels as label_maps
from sermodels.data import load_corpus


@pytest.fixture(scope="module")
def bench():
    return load_script("cnn_lstm")


def test_folds_are_speaker_disjoint_and_cover_the_basic4_items(bench):
    corpus = load_corpus("emodb", corpus_root("emodb"))
    items = sorted((it for it in corpus if label_maps.in_label_set(it.label, "basic4")), key=lambda it: it.id)
    fold = bench.test_folds(items)
    assert len(items) == 339 and sorted(set(fold)) == [0, 1, 2, 3, 4]
    speakers = np.array([it.speaker for it in items])
    for k in range(5):
        assert not set(speakers[fold == k]) & set(speakers[fold != k])
    assert np.array_equal(fold, bench.test_folds(items))  # the same folds in every run and setting


class _Data:
    """A stand-in for the benchmark's Data over synthetic inputs: two corpora, five folds (indices only)."""

    def __init__(self, bench):
        rng = np.random.default_rng(0)
        self.classes = list(label_maps.SHARED_SETS["basic4"])
        self.corpus = np.array(["emodb"] * 40 + ["urdu"] * 40)
        self.fold = np.tile(np.arange(5), 16)
        self.labels = rng.integers(0, 4, 80)
        self.inputs = torch.randn(80, 64, 338)
        self.frontend, self.space = "logmel", "basic4"
        self.mask = bench.Data.mask.__get__(self)


def test_s1_never_sees_the_test_fold_and_s2_never_the_target(bench):
    data = _Data(bench)
    train = data.mask(["emodb", "urdu"], 2)
    test = data.mask(["emodb"], 2, test=True)
    assert not (train & test).any() and test.sum() == 8 and train.sum() == 64
    s2 = data.mask(["urdu"])
    assert not (s2 & data.mask(["emodb"])).any()


def test_a_table3_cell_runs_every_setting_on_cached_stages(bench, monkeypatch):
    """A tiny network: TT and A1-A8 give UARs in [0, 1]; frozen stage outputs are computed once per network."""
    data = _Data(bench)
    small = {"filters": 4, "lstm_units": 4, "dense_units": 8}
    original = bench.config
    monkeypatch.setattr(bench, "config", lambda d, recurrent=True: original(d, recurrent) | small)
    base = bench.fresh(bench.config(data), 0)
    cell = bench.Target(data, "emodb", 0)
    scores = {a: cell.setting(base, "S1", a, epochs=1, seed=0) for a in bench.SETTINGS}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores["A1"] == cell.score(base)  # no fine-tuning: the pre-trained network itself
    # A2 trains from the inputs, A3-A8 from C1's output (computed once per network and part)
    assert sorted(cell.cache) == [("S1", "C1", "test"), ("S1", "C1", "train"), ("S1", "input", "test"),
                                  ("S1", "input", "train")]  # fmt: skip
    assert cell.setting(base, "S1", "A4", epochs=1, seed=0) == scores["A4"]  # seeded: the same again
    assert 0.0 <= cell.from_scratch(1, 0) <= 1.0


def _results(bench) -> dict:
    tt = [0.5, 0.6, 0.55, 0.5, 0.6]
    better = [v + 0.1 for v in tt]
    table3 = {}
    for corpus in ("emodb", "urdu"):
        table3[corpus] = {}
        for k in range(5):
            entry = {
                "TT": tt[k],
                "S1": {a: better[k] for a in bench.SETTINGS},
                "S2": {a: tt[k] for a in bench.SETTINGS},
            }
            entry["S2"]["A1"] = tt[k] / 2
            table3[corpus][str(k)] = entry
    table4 = {"emodb": {str(k): {"-urdu": {s: {a: tt[k] for a in bench.TABLE4_SETTINGS} for s in ("S1", "S2")}}
                        for k in range(3)}}  # fmt: skip
    table2 = {"emodb": {str(k): {"cnn": 0.5, "cnn_lstm": 0.6 + k / 100, "svm_logmel600": 0.7} for k in range(5)}}
    return {"table3": table3, "table4": table4, "table2": table2}


def test_summary_gains_tests_and_table4_pairing(bench):
    summary = bench.summarise(_results(bench))
    row = summary["table3"]["emodb"]
    assert row["folds"] == 5 and row["TT"] == pytest.approx(0.55)
    assert row["S1"]["A2"]["gain"] == pytest.approx(0.1 / 0.55, abs=1e-4)  # (UAR - TT) / TT
    assert row["S1"]["A2"]["p_vs_tt"] is None  # a constant difference: no t-test
    assert row["S2"]["A1"]["gain"] == pytest.approx(-0.5) and row["S2"]["A1"]["p_vs_tt"] < 0.05
    across = summary["table3_across"]["S1"]["A2"]
    assert across["mean"] == pytest.approx(0.1 / 0.55, abs=1e-4) and across["sd"] == pytest.approx(0.0)
    four = summary["table4"]["emodb"]
    assert four["folds"] == 3  # paired with Table 3's folds 0-2 only
    assert four["All"]["S1"]["A2"] == pytest.approx(np.mean([0.6, 0.7, 0.65]))
    assert four["-urdu"]["S1"]["A2"]["delta"] == pytest.approx(-0.1)
    assert summary["table2"]["emodb"]["cnn_lstm"] == pytest.approx(0.62)


def test_readme_section_is_computed_from_the_results(bench, tmp_path):
    import json

    results = _results(bench)
    results |= {"summary": bench.summarise(results), "paper": bench.PAPER, "run": {"frontend": "logmel"}}
    path = tmp_path / "cnn_lstm.json"
    path.write_text(json.dumps(results))
    sys.path.insert(0, str(BENCHMARKS))
    from make_readme import cnn_lstm_table

    text = cnn_lstm_table(path)
    assert "| emodb | 0.550 | +0.182 |" in text  # TT and S1-A1's gain
    assert "the best mean gain is S1-A1" in text
    assert "without fine-tuning, S2 (zero-shot to a new corpus) is below TT on 2 of 2 corpora" in text
    assert "| paper: emodb | All | 0.643 | 0.685 |" in text
    assert "CNN+LSTM beats the CNN on 1 of 1 corpora and every SVM on 0" in text


def test_basic6_folds_keep_the_six_emotions_of_emovo(bench):
    corpus = load_corpus("emovo", corpus_root("emovo"))
    items = sorted((it for it in corpus if label_maps.in_label_set(it.label, "basic6")), key=lambda it: it.id)
    assert len(items) == 6 * 84  # neutral is not one of the six
    fold = bench.test_folds(items, "basic6")
    assert sorted(set(fold)) == [0, 1, 2, 3, 4]
