"""benchmarks/speed.py --quick on real corpus audio: the JSON's structure and its arithmetic hold together; the README
block renders it. No timing thresholds: the numbers depend on the machine and its load."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA, corpus_root

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    for name in ("emodb", "urdu"):  # the real-speech stream starts with these corpora
        corpus_root(name)
    out = tmp_path_factory.mktemp("bench") / "speed.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(DATA), "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text())


def test_device_machine_and_settings_are_recorded(quick):
    machine = quick["machine"]
    assert quick["quick"] is True and quick["device"] == "cpu" and quick["torch"] == torch.__version__
    assert quick["complete"] is True
    assert machine["torch_threads"] >= 1 and machine["cpu_model"] and isinstance(machine["cpu_flags"], list)
    assert len(machine["load_average_at_start"]) == len(machine["load_average_at_end"]) == 3
    speed = load_script()
    assert quick["families_measured"] == list(speed.FAMILIES)
    assert set(speed.FAMILIES.values()) <= {p.name for p in (REPO / "checkpoints").iterdir()}


def test_matmul_reference_follows_from_the_raw_times(quick):
    for dtype in ("fp32", "bf16"):
        mm = quick["cpu"]["matmul"][dtype]
        assert mm["dtype"] == dtype and len(mm["wall_seconds"]) == quick["settings"]["matmul_repeats"]
        assert mm["wall_seconds_median"] == pytest.approx(statistics.median(mm["wall_seconds"]))
        assert mm["gflops"] == pytest.approx(2 * mm["n"] ** 3 / 1e9 / mm["wall_seconds_median"])


def check_row(row: dict, matmul: dict, settings: dict) -> None:
    assert len(row["wall_seconds"]) == settings["repeats"] and min(row["wall_seconds"]) > 0
    assert row["wall_seconds_median"] == pytest.approx(statistics.median(row["wall_seconds"]))
    assert (row["batch"], row["clip_seconds"]) == (settings["batch"], settings["clip_seconds"])
    assert row["audio_seconds"] == pytest.approx(row["batch"] * row["clip_seconds"])
    assert row["x_realtime"] == pytest.approx(row["audio_seconds"] / row["wall_seconds_median"])
    assert row["achieved_gflops"] == pytest.approx(row["model_gflop"] / row["wall_seconds_median"])
    assert row["matmul_gflops"] == matmul[row["matmul_dtype"]]["gflops"]
    assert row["fraction_of_matmul"] == pytest.approx(row["achieved_gflops"] / row["matmul_gflops"])
    assert row["x_realtime_best"] == pytest.approx(row["audio_seconds"] / min(row["wall_seconds"]))
    assert row["fraction_of_matmul_best"] >= row["fraction_of_matmul"]


def test_every_family_has_fp32_and_the_bf16_fast_path(quick):
    cpu, settings = quick["cpu"], quick["settings"]
    assert set(cpu["families"]) == set(quick["families_measured"])
    for family, entry in cpu["families"].items():
        assert "error" not in entry, f"{family}: {entry.get('error')}"
        flop = entry["flop"]
        assert flop["gflop"] > 0 and flop["flop_counter_gflop"] > 0 and flop["source"]
        kinds = [row["kind"] for row in entry["rows"]]
        assert kinds[:2] == ["fp32", "bf16"], family
        fp32, bf16 = entry["rows"][:2]
        assert (fp32["matmul_dtype"], bf16["matmul_dtype"]) == ("fp32", "bf16")
        assert bf16["how"] == "prepare_for_inference(precision='bf16', channels_last=True, compile=False)"
        for row in entry["rows"][:2]:
            check_row(row, cpu["matmul"], settings)
            assert row["model_gflop"] == flop["gflop"]
        agreement = bf16["agreement"]
        assert agreement["clips"] == settings["agreement_clips"] and agreement["max_abs_diff"] >= 0
        assert agreement["relative_error"] >= 0
        if entry["output_kind"] == "categories":
            assert 0 <= agreement["labels_agree"] <= 1
            assert agreement["labels_differ"] == round((1 - agreement["labels_agree"]) * agreement["clips"])
    # EmoNet counts its own FLOP; the others are counted by FlopCounterMode.
    assert cpu["families"]["emonet_wrn"]["flop"]["source"].startswith("model.flops")
    assert cpu["families"]["wda_mlp"]["flop"]["source"].startswith("FlopCounterMode")


def test_onnxruntime_row_is_measured_or_says_why(quick):
    rows = {row["kind"]: row for row in quick["cpu"]["families"]["wda_mlp"]["rows"]}
    onnx = rows["onnxruntime"]
    if "skipped" in onnx:
        assert onnx["skipped"]
    else:
        check_row(onnx, quick["cpu"]["matmul"], quick["settings"])
        assert onnx["matmul_dtype"] == "fp32" and onnx["export_seconds"] > 0
        assert onnx["agreement"]["labels_agree"] >= 0


def test_ablation_steps_are_measured_in_the_same_run(quick):
    speed = load_script()
    steps = quick["cpu"]["ablation"]["adapted_cnn"]
    expected = [name for name, options in speed.ABLATION.items() if not options.get("compile")]  # quick: no compile
    assert [row["kind"] for row in steps] == expected
    for row in steps:
        check_row(row, quick["cpu"]["matmul"], quick["settings"])
        assert row["matmul_dtype"] == row["options"]["precision"]


def test_predict_memory_on_a_long_recording(quick):
    memory, settings = quick["predict_memory"], quick["settings"]
    run = memory["run"]
    assert memory["model_id"] == settings["memory_model"]
    assert run["recording_seconds"] == pytest.approx(settings["memory_hours"] * 3600)
    assert run["samples"] == round(settings["memory_hours"] * 3600 * 16000)
    assert run["waveform_bytes"] == 4 * run["samples"]
    assert run["peak_rss_bytes"] == pytest.approx(run["self_maxrss_bytes"], rel=0.02)
    assert run["peak_rss_bytes"] >= run["rss_after_model_load_bytes"] > 0 and run["label"]


def test_readme_block_renders_the_quick_run(quick, tmp_path):
    make_readme = load_make_readme()
    path = tmp_path / "speed.json"
    path.write_text(json.dumps(quick))
    text = make_readme.speed_table(path, cuda=tmp_path / "absent.json")
    lines = text.splitlines()
    for family, entry in quick["cpu"]["families"].items():
        bf16 = entry["rows"][1]
        cell = f"{bf16['x_realtime']:.0f} ({bf16['x_realtime_best']:.0f})"
        assert f"| {family} | {entry['model_id']} | bf16 | 2 × 1 s | {cell} |" in text
    assert sum(line.startswith("| adapted_cnn: ") for line in lines) == len(quick["cpu"]["ablation"]["adapted_cnn"])
    assert "a `--quick` smoke run" in text and "GPU: not measured yet" in text
    assert text.count("Fastest on this CPU: ") == 1 and "emonet_wrn " in text.split("Fastest on this CPU: ")[1]
    assert f"peak RSS {quick['predict_memory']['run']['peak_rss_bytes'] / 2**20:.0f} MiB" in text


def load_make_readme():
    spec = importlib.util.spec_from_file_location("bench_make_readme", REPO / "benchmarks" / "make_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script():
    spec = importlib.util.spec_from_file_location("bench_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_on_cpu(tmp_path_factory) -> tuple[dict, dict, list]:
    """The GPU section's code (end to end through the predict engine on WAV files, model only per batch size) run
    on the CPU with the quick settings: it cannot be timed here, but it must run and report consistently."""
    corpus_root("emodb")
    speed = load_script()
    settings = speed.QUICK | {"e2e_files": 3}
    saved = []
    workdir = tmp_path_factory.mktemp("gpu_path")
    section = speed.cuda_section(DATA, settings, ["wda_mlp"], workdir, device="cpu", progress=saved.append)
    return section, settings, saved


def test_gpu_code_path_runs_on_the_cpu(gpu_on_cpu):
    section, settings, saved = gpu_on_cpu
    assert section["device_name"].startswith("cpu") and len(saved) == 2  # after end to end, after the family
    rows = section["families"]["wda_mlp"]["rows"]
    expected = [(kind, batch) for batch in settings["gpu_batches"] for kind in ("fp32", "bf16")]
    assert [(row["kind"], row["batch"]) for row in rows] == expected
    for row in rows:
        assert row["x_realtime"] == pytest.approx(row["audio_seconds"] / row["wall_seconds_median"])
        assert row["matmul_gflops"] == section["matmul"][row["matmul_dtype"]]["gflops"]
    (e2e,) = section["end_to_end"]
    assert "error" not in e2e, e2e.get("error")
    assert e2e["failures"] == 0 and e2e["files"] == 3
    assert e2e["x_realtime"] == pytest.approx(e2e["audio_seconds"] / e2e["wall_seconds"])
    assert e2e["audio_seconds"] == pytest.approx(3 * settings["e2e_file_seconds"])


def test_readme_block_renders_a_gpu_run(quick, gpu_on_cpu, tmp_path):
    section = gpu_on_cpu[0]
    cpu, cuda = tmp_path / "speed.json", tmp_path / "speed_cuda.json"
    cpu.write_text(json.dumps(quick))
    cuda.write_text(json.dumps(quick | {"device": "cuda", "cuda": section, "complete": False}))
    text = load_make_readme().speed_table(cpu, cuda=cuda)
    label = f"GPU ({section['device_name']})"
    assert f"| {label} | checkpoint |" in text and f"{label} matmul reference" in text
    assert sum(line.startswith("| wda_mlp | wda_mlp.urdu | ") for line in text.splitlines()) == 3 + 4
    assert "| adapted_cnn (mobilenetv2_adapters.multi4) | 3 × 2 s |" in text and "cut short" in text
