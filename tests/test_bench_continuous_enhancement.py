"""benchmarks/continuous_enhancement.py on a tiny setting (EMO-DB sessions cut to 40 s, white noise at one SNR and
the phone band, two epochs): the JSON's structure, its numbers' ranges, the summary's counts and the markdown table."""

from __future__ import annotations

import json
import math

import pytest
from bench_scripts import load_script
from conftest import DATA, corpus_root

CONDITIONS = ("white_6dB", "phone")


@pytest.fixture(scope="module")
def bench():
    return load_script("continuous_enhancement")


@pytest.fixture(scope="module")
def tiny(bench, tmp_path_factory) -> tuple[dict, dict]:
    corpus_root("emodb")
    out = tmp_path_factory.mktemp("bench") / "continuous.json"
    out.write_text(json.dumps({"other": {"kept": True}}))  # another script's key survives the merge
    argv = ["--corpora", "emodb", "--kinds", "white", "phone", "--snrs", "6", "--max-epochs", "2"]
    argv += ["--crop-seconds", "40", "--data", str(DATA), "--results", str(out)]
    returned = bench.main(argv)
    return returned, json.loads(out.read_text())


def _in_range(value: float, low: float) -> bool:
    return math.isfinite(value) and low <= value <= 1.0


def test_results_merge_under_their_key(tiny):
    returned, stored = tiny
    assert stored["other"] == {"kept": True}
    assert set(stored) == {"other", "enhancement"}
    assert stored["enhancement"]["summary"] == returned["summary"]


def test_every_condition_has_every_number(tiny):
    entry = tiny[1]["enhancement"]
    assert list(entry["conditions"]) == list(CONDITIONS) == entry["settings"]["conditions"]
    for row in entry["conditions"].values():
        assert set(row["ccc"]) == set(row["uar"]) == {"noisy", "matched", "mixed"}
        for scores in row["ccc"].values():
            assert set(scores) == {"arousal", "valence"}
            assert all(_in_range(v, -1.0) for v in scores.values())
        assert all(_in_range(v, 0.0) for v in row["uar"].values())
        record = row["enhancer"]["matched"]
        assert 1 <= record["best_epoch"] <= record["epochs"] <= 2
        assert record["dev_mse"] > 0 and record["dev_mse_noisy"] > 0
    clean = entry["clean"]
    assert all(_in_range(v, -1.0) for version in ("clean", "mixed") for v in clean["ccc"][version].values())
    assert _in_range(clean["uar"]["clean"], 0.0) and _in_range(clean["uar"]["mixed"], 0.0)


def test_settings_paper_and_summary(tiny):
    entry = tiny[1]["enhancement"]
    settings = entry["settings"]
    assert settings["corpora"] == ["emodb"] and settings["snrs_db"] == [6.0] and settings["max_epochs"] == 2
    assert all(settings["hours"][p] > 0 and settings["utterances"][p] > 0 for p in ("train", "dev", "test"))
    assert entry["paper"]["ccc_average_over_snrs"]["arousal"] == {"noisy": 0.563, "matched": 0.596, "mixed": 0.594}
    assert "0.563 to 0.596" in entry["paper"]["quote"] and "lines 470-473" in entry["paper"]["source"]
    assert entry["enhancer_mixed"]["train_sequences"] == 3 * settings["sessions"]["train"]  # 2 conditions + clean
    summary = entry["summary"]
    assert summary["conditions"] == len(CONDITIONS)
    rows = entry["conditions"].values()
    for version in ("matched", "mixed"):
        wins = sum(r["ccc"][version]["arousal"] > r["ccc"]["noisy"]["arousal"] for r in rows)
        assert summary["ccc_arousal"][f"{version}_better"] == wins
    assert summary["uar"]["mean"]["noisy"] == pytest.approx(sum(r["uar"]["noisy"] for r in rows) / len(CONDITIONS))
    assert entry["wall_seconds"] > 0 and entry["environment"]["torch"]


def test_table_renders_every_condition(bench, tiny):
    entry = tiny[1]["enhancement"]
    table = bench.enhancement_table(entry)
    assert bench.enhancement_table(tiny[1]) == table  # the whole file's dict works too
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(CONDITIONS) + 1
    for name in CONDITIONS:
        row = entry["conditions"][name]
        assert any(
            line.startswith(f"| {name} |") and f"{row['ccc']['noisy']['arousal']:.3f} → " in line for line in lines
        )
    assert lines[-1].startswith("| clean (reference) |")
