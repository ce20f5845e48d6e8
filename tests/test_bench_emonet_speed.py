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
    for name in ("emodb", "urdu"):  # the recordings start with these corpora (EMO-DB alone holds ~25 min)
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
    runs = memory["default_windows"]
    assert [r["recording_seconds"] for r in runs] == pytest.approx(sorted(settings["recordings"]))
    for run in [*runs, memory["whole_file_short"]]:
        assert run["samples"] == round(run["recording_seconds"] * 16000)
        assert run["x_realtime"] == pytest.approx(run["recording_seconds"] / run["wall_seconds"])
        assert run["waveform_bytes"] == 4 * run["samples"]
        assert run["peak_rss_minus_waveform_bytes"] == run["peak_rss_bytes"] - run["waveform_bytes"]
        # The launcher's RUSAGE_CHILDREN figure is the predict process's own peak (nothing else inflates it).
        assert run["peak_rss_bytes"] == pytest.approx(run["self_maxrss_bytes"], rel=0.02)
        assert run["peak_rss_bytes"] >= run["rss_after_model_load_bytes"] > 0
        assert run["process_wall_seconds"] > run["wall_seconds"] > 0 and run["label"]
    # As users run it: no --chunk-seconds, so EmoNet's own 30 s window; the contrast run is forced whole (0).
    assert settings["chunk_seconds"] is None and memory["cli_chunk_seconds_flag_default"] is None
    assert memory["cli_predict_default_chunk_seconds"] == 30.0
    assert [(r["chunk_seconds_requested"], r["chunk_seconds_effective"]) for r in runs] == [(None, 30.0)] * 2
    whole = memory["whole_file_short"]
    assert (whole["chunk_seconds_requested"], whole["chunk_seconds_effective"]) == (0.0, None)
    assert whole["recording_seconds"] == runs[0]["recording_seconds"] > 2 * 30.0  # several windows, really cut
    short, long = runs
    ratios = memory["ratios"]
    assert ratios["peak_rss_long_over_short"] == pytest.approx(long["peak_rss_bytes"] / short["peak_rss_bytes"])
    assert ratios["waveform_growth_bytes"] == long["waveform_bytes"] - short["waveform_bytes"]
    assert ratios["whole_file_over_windowed_peak_rss_short"] == pytest.approx(
        whole["peak_rss_bytes"] / short["peak_rss_bytes"]
    )
    assert ratios["peak_rss_minus_waveform_long_over_short"] < 1.25  # bounded: twice the audio, not twice the memory
    assert memory["source_files_used"] >= 2


def test_readme_block_renders_the_quick_run(quick, tmp_path):
    """benchmarks/make_readme.py turns this JSON into the README's speed block: every measured row is there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_make_readme", REPO / "benchmarks" / "make_readme.py")
    make_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_readme)
    path = tmp_path / "emonet_speed.json"
    path.write_text(json.dumps(quick))
    text = make_readme.emonet_speed_table(path)
    assert sum(line.startswith("| CPU | ") for line in text.splitlines()) == 4  # fp32/bf16 x batch/long
    short, long = quick["predict_memory"]["default_windows"]
    whole = quick["predict_memory"]["whole_file_short"]
    assert f"| 70 s of speech | 30 s (the default) | {short['peak_rss_bytes'] / 2**20:.0f} |" in text
    assert f"| 140 s of speech | 30 s (the default) | {long['peak_rss_bytes'] / 2**20:.0f} |" in text
    assert f"| 70 s of speech | whole file (`--chunk-seconds 0`) | {whole['peak_rss_bytes'] / 2**20:.0f} |" in text
    assert "memory stays bounded" in text and "a `--quick` smoke run" in text
