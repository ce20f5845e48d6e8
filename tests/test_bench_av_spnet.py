"""benchmarks/av_spnet.py: the folds, a Table 3 row on synthetic features, the paired test, and the README claims."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_scripts import BENCHMARKS, load_script
from conftest import DATA


@pytest.fixture(scope="module")
def bench():
    return load_script("av_spnet")


def test_folds_are_speaker_disjoint_and_cover_the_corpus(bench):
    _, items, classes, labels = bench.target_items(DATA, "emodb")
    masks = bench.folds_of(items, labels, classes)
    assert len(masks) == 5
    assert np.array_equal(np.sum(masks, axis=0), np.ones(len(items)))  # every item is tested exactly once
    speakers = np.array([item.speaker for item in items])
    for mask in masks:
        assert not set(speakers[mask]) & set(speakers[~mask])  # no test speaker trains


def test_a_row_scores_every_fold_and_fraction(bench, monkeypatch):
    fit = bench.fit_segment_head
    monkeypatch.setattr(bench, "fit_segment_head", lambda *a, **k: fit(*a, **k, epochs=2, min_steps=10))
    generator = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(3), 20)
    owner = torch.arange(60).repeat_interleave(2)  # two segments per utterance
    features = torch.randn(3, 16, generator=generator)[torch.from_numpy(labels)[owner]] * 3
    features = features + torch.randn(120, 16, generator=generator)
    groups = np.arange(60) % 5
    masks = [groups == k for k in range(5)]
    row = bench.run_row(features, owner, labels, masks, seeds=[0, 1], classes=3)
    for fraction in bench.FRACTIONS:
        cells = row[str(fraction)]
        assert np.shape(cells["per_seed_fold"]) == (2, 5)
        assert cells["sd"] is not None
    assert row["1.0"]["mean"] > 0.9  # separable classes
    again = bench.run_row(features, owner, labels, masks, seeds=[1], classes=3)
    assert again["0.5"]["per_seed_fold"][0] == row["0.5"]["per_seed_fold"][1]  # seeded


def test_paired_test_averages_seeds_per_fold(bench):
    a = {"0.5": {"per_seed_fold": [[0.6, 0.7, 0.8], [0.6, 0.7, 0.8]]}, "wall_seconds": 3.0}
    b = {"0.5": {"per_seed_fold": [[0.5, 0.5, 0.6], [0.5, 0.7, 0.6]]}}
    result = bench.paired(a, b)
    assert set(result) == {"0.5"} and result["0.5"]["folds"] == 3
    assert result["0.5"]["difference"] == pytest.approx(np.mean([0.1, 0.1, 0.2]), abs=1e-4)


def test_readme_claims_count_what_they_say():
    sys.path.insert(0, str(BENCHMARKS))
    import make_readme

    def row(means):
        return {f: {"mean": m, "sd": 0.0, "per_seed_fold": [[m + d for d in (0.0, 0.01, -0.01, 0.02, -0.02)]]}
                for f, m in zip(("0.25", "0.5", "0.75", "1.0"), means)}  # fmt: skip

    down = {
        "a": {"rows": {"R": row([0.5, 0.5, 0.5, 0.6]), "AV-SpNET_a": row([0.6, 0.6, 0.6, 0.4]),
                       "W_a": row([0.7, 0.7, 0.7, 0.7])}},
        "b": {"rows": {"R": row([0.5, 0.5, 0.5, 0.5]), "AV-SpNET_a": row([0.4, 0.4, 0.4, 0.4])}},
    }  # fmt: skip
    claims = make_readme.av_spnet_claims(down, ["0.25", "0.5", "0.75", "1.0"])
    assert claims[0].startswith("AV-SpNET_a beats the random frozen encoder R in 3 of 8")
    assert "R is better with p < 0.05 in 5" in claims[0]
    assert claims[1] == "at 25% of the data AV-SpNET_a beats R on 1 of 2 corpora"
    assert "joint training beats W_a in 0 of 4 cells" in claims
    assert claims[-1] == "AV-SpNET_a with 50% of the data reaches R with 100% on 1 of 2 corpora"
    assert Path(make_readme.__file__).parent == BENCHMARKS
