"""benchmarks/emonet_speed.py --quick on real corpus audio: the JSON's structure and its arithmetic hold together."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA, corpus_root

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "emonet_speed.py"


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    for name in ("emodb", "urdu"):  # the recordings start with these corpora
        corpus_root(name)
    out = tmp_path_factory.mktemp("bench") / "speed.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--no-gpu", "--data", str(DATA), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text())


def test_machine_and_model_are_recorded(quick):
    machine = quick["machine"]
    assert quick["quick"] is True and quick["torch"] == torch.__version__ == machine["torch"]
    assert machine["torch_threads"] >= 1 and machine["cpu_count"] >= 1 and machine["cpu_model"]
    assert quick["model"]["arch"] == "emonet_wrn" and quick["model"]["parameters"] > 1_000_000
    assert quick["cuda"] == {"skipped": "disabled with --no-gpu"}


def test_matmul_figures_follow_from_the_raw_times(quick):
    for dtype in ("fp32", "bf16"):
        mm = quick["cpu"]["matmul"][dtype]
        times = mm["wall_seconds"]
        assert len(times) == quick["settings"]["matmul_repeats"] and min(times) > 0
        assert mm["wall_seconds_median"] == pytest.approx(statistics.median(times))
        assert mm["gflop"] == pytest.approx(2 * mm["n"] ** 3 / 1e9)
        assert mm["gflops"] == pytest.approx(mm["gflop"] / mm["wall_seconds_median"])
        assert mm["gflops_best"] >= mm["gflops"]


def test_throughput_is_consistent(quick):
    settings, cpu = quick["settings"], quick["cpu"]
    entries = {(e["dtype"], e["kind"]): e for e in cpu["throughput"]}
    assert set(entries) == {(d, k) for d in ("fp32", "bf16") for k in ("batch", "long")}
    for (dtype, _), e in entries.items():
        assert len(e["wall_seconds"]) == settings["repeats"] and min(e["wall_seconds"]) > 0
        assert e["wall_seconds_median"] == pytest.approx(statistics.median(e["wall_seconds"]))
        assert e["audio_seconds"] == pytest.approx(e["batch"] * e["clip_seconds"])
        assert e["x_realtime"] == pytest.approx(e["audio_seconds"] / e["wall_seconds_median"])
        assert e["achieved_gflops"] == pytest.approx(e["model_gflop"] / e["wall_seconds_median"])
        assert e["matmul_gflops"] == cpu["matmul"][dtype]["gflops"]
        assert e["fraction_of_matmul"] == pytest.approx(e["achieved_gflops"] / e["matmul_gflops"])
    batch, long = entries["fp32", "batch"], entries["fp32", "long"]
    assert (batch["batch"], batch["clip_seconds"]) == (settings["batch"], settings["clip_seconds"])
    assert (long["batch"], long["clip_seconds"]) == (1, settings["long_seconds"])
    # model.flops grows linearly with the audio: FLOP per audio second agree between the two shapes.
    per_second = [e["model_gflop"] / e["audio_seconds"] for e in (batch, long)]
    assert per_second[0] == pytest.approx(per_second[1], rel=0.2)
    agreement = cpu["bf16_vs_fp32_batch"]
    assert 0.0 <= agreement["argmax_agree"] <= 1.0 and agreement["max_abs_logit_diff"] >= 0.0


def test_predict_memory_is_measured_and_bounded(quick):
    memory, settings = quick["predict_memory"], quick["settings"]
    runs = memory["chunked"]
    assert [r["recording_seconds"] for r in runs] == pytest.approx(sorted(settings["recordings"]))
    for run in [*runs, memory["unchunked_short"]]:
        assert run["samples"] == round(run["recording_seconds"] * 16000)
        assert run["x_realtime"] == pytest.approx(run["recording_seconds"] / run["wall_seconds"])
        assert run["waveform_bytes"] == 4 * run["samples"]
        assert run["peak_rss_minus_waveform_bytes"] == run["peak_rss_bytes"] - run["waveform_bytes"]
        # The launcher's RUSAGE_CHILDREN figure is the predict process's own peak (nothing else inflates it).
        assert run["peak_rss_bytes"] == pytest.approx(run["self_maxrss_bytes"], rel=0.02)
        assert run["peak_rss_bytes"] >= run["rss_after_model_load_bytes"] > 0
        assert run["process_wall_seconds"] > run["wall_seconds"] > 0 and run["label"]
    assert [r["chunk_seconds"] for r in runs] == [settings["chunk_seconds"]] * 2
    assert memory["unchunked_short"]["chunk_seconds"] is None
    short, long = runs
    ratios = memory["ratios"]
    assert ratios["peak_rss_long_over_short"] == pytest.approx(long["peak_rss_bytes"] / short["peak_rss_bytes"])
    assert ratios["waveform_growth_bytes"] == long["waveform_bytes"] - short["waveform_bytes"]
    assert ratios["peak_rss_minus_waveform_long_over_short"] < 1.25  # bounded: twice the audio, not twice the memory
    assert "cli_predict_default_chunk_seconds" in memory and memory["source_files_used"] >= 2
