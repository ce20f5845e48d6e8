"""How fast does EmoNet run here, against what the machine can do, and does ``predict`` stay bounded on an hour?

Measured side by side in one run, so that every number shares the machine's state:

1. **Matmul peak**: square fp32 and bf16 matrix products (``2 n³`` FLOP each) give this machine's GEMM GFLOP/s.
2. **EmoNet throughput** (``sermodels.load("emonet_wrn.multi4")`` when ``checkpoints/emonet_wrn.multi4`` exists,
   else a fresh EmoNet with the four corpus heads: speed does not depend on the weights), in fp32 and under bf16
   autocast, for a batch of 5 s clips (§5.1: segments of at most 5 s) and for one long window, on real corpus audio.
   Reported as × real time (audio seconds / wall seconds) and as achieved GFLOP/s from ``model.flops(seconds)``
   (convolutions, attention and head; the log-mel front-end is not counted), with the fraction of the matmul
   figure of the same device and dtype. The same code runs on CUDA when it is available.
3. **Memory of ``predict`` on a long recording**: a 16 kHz FLAC of real speech (EMO-DB, URDU, RAVDESS, EMOVO files
   concatenated until the length is reached) through the engine behind ``sermodels predict``
   (:func:`sermodels.pipelines.predict.predict_files`) in a fresh subprocess per run, as users run it: no
   ``--chunk-seconds``, so the model's own window (``model.default_chunk_seconds``, 30 s for EmoNet), and the
   CLI's batch size of 8 windows, for ten minutes and for one hour. Peak RSS is
   ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` read by a small launcher process whose only child is the predict run
   (Linux carries the high-water mark of the process image that calls exec into the new program, so a child started
   directly from this large benchmark process would report at least this process's own size); the predict
   process's own ``RUSAGE_SELF`` figure is kept beside it, and the process ends with ``os._exit`` after its report
   so that interpreter teardown does not add to its peak. The engine holds the whole decoded waveform (4 bytes per
   sample) and sends the model one batch of windows at a time, so peak RSS minus the waveform should stay about
   constant as the recording grows. For contrast, the ten-minute recording also goes through whole
   (``--chunk-seconds 0``: one pass over the whole file, the activations of all of it at once).

Timings are medians over repetitions after one warm-up pass; every raw time is kept in the JSON.

    python benchmarks/emonet_speed.py [--threads N] [--data ../shared/data]  # -> benchmarks/results/emonet_speed.json
    python benchmarks/emonet_speed.py --quick --out /tmp/speed.json         # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
MODEL_ID = "emonet_wrn.multi4"
#: Corpora concatenated into the long recordings, in this order (sorted files within each).
RECORDING_CORPORA = ("EMODB", "URDU", "RAVDESS", "EMOVO")
SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 4  # the engine's decoded float32 waveform
# Runs the command in argv and prints its peak RSS in KiB (Linux) as the last line: a small, clean parent.
LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)

FULL = {
    "matmul_n": {"cpu": 2048, "cuda": 8192},
    "matmul_repeats": 5,
    "batch": 8,
    "clip_seconds": 5.0,  # EmoNet §5.1: segments of at most 5 s
    "long_seconds": 60.0,
    "repeats": 5,
    "recordings": [600.0, 3600.0],
    "chunk_seconds": None,  # what `sermodels predict` uses without --chunk-seconds: the model's own window
    "predict_batch": 8,  # the CLI's --batch-size default
}
QUICK = {
    "matmul_n": {"cpu": 512, "cuda": 1024},
    "matmul_repeats": 3,
    "batch": 2,
    "clip_seconds": 0.5,
    "long_seconds": 1.5,
    "repeats": 2,
    # Longer than two 30 s windows, so that the default windowing and the batch cap are both exercised.
    "recordings": [70.0, 140.0],
    "chunk_seconds": None,
    "predict_batch": 2,
}


# ------------------------------------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = list(os.getloadavg())
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(step, device: torch.device, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``step`` after one warm-up call."""
    step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------------------------------------- matmul


def matmul_peak(device: torch.device, n: int, repeats: int) -> dict[str, dict[str, Any]]:
    """GFLOP/s of an ``n × n`` by ``n × n`` product in fp32 and in bf16 (inputs in that dtype)."""
    generator = torch.Generator().manual_seed(0)
    results = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        with torch.inference_mode():
            times = timed_runs(lambda a=a, b=b: torch.matmul(a, b), device, repeats)
        flop = 2.0 * n**3
        median = statistics.median(times)
        results[name] = {
            "n": n,
            "gflop": flop / 1e9,
            "wall_seconds": times,
            "wall_seconds_median": median,
            "gflops": flop / median / 1e9,
            "gflops_best": flop / min(times) / 1e9,
        }
    return results


# ------------------------------------------------------------------------------------------------- model


def build_model(workdir: Path) -> tuple[torch.nn.Module, str, str]:
    """The released multi-corpus EmoNet if it is in checkpoints/, else a fresh one with its four heads, saved to
    ``workdir`` so that the predict subprocesses load the very same model. Returns the model, what the subprocesses
    load, and a description."""
    import sermodels
    from sermodels.checkpoint import save_pretrained
    from sermodels.labels import label_names
    from sermodels.models.emonet import EmoNet
    from sermodels.pretrained import checkpoints_dir

    if (checkpoints_dir() / MODEL_ID).is_dir():
        return sermodels.load(MODEL_ID), MODEL_ID, f"checkpoints/{MODEL_ID}"
    torch.manual_seed(0)
    model = EmoNet({name: label_names("categories", name) for name in ("emodb", "ravdess", "emovo", "urdu")})
    folder = save_pretrained(model.eval(), workdir / "fresh_emonet")
    return model, str(folder), "fresh EmoNet (random weights, the four corpus heads)"


def corpus_files(data: Path) -> Iterator[Path]:
    for corpus in RECORDING_CORPORA:
        root = data / corpus
        if not root.is_dir():
            raise SystemExit(f"corpus folder {root} not found: pass --data (the shared data folder)")
        yield from sorted(root.rglob("*.flac"))


def real_speech(data: Path, seconds: float) -> torch.Tensor:
    """``seconds`` of real corpus speech, files concatenated in order, as one 16 kHz waveform."""
    from sermodels.audio import load_audio

    needed, parts = round(seconds * SAMPLE_RATE), []
    for path in corpus_files(data):
        parts.append(load_audio(path, SAMPLE_RATE))
        needed -= parts[-1].shape[0]
        if needed <= 0:
            break
    if needed > 0:
        raise SystemExit(f"the corpora in {data} hold less than {seconds} s of audio")
    return torch.cat(parts)[: round(seconds * SAMPLE_RATE)]


def throughput(
    model, speech: torch.Tensor, device: torch.device, settings: dict, matmul: dict
) -> tuple[list[dict], dict]:
    """× real time and achieved GFLOP/s of a batch of clips and of one long window, fp32 and bf16 autocast."""
    model = model.to(device).eval()
    clip = round(settings["clip_seconds"] * SAMPLE_RATE)
    shapes = {
        "batch": speech[: settings["batch"] * clip].reshape(settings["batch"], clip),
        "long": speech[: round(settings["long_seconds"] * SAMPLE_RATE)][None, :],
    }
    entries, logits = [], {}
    for dtype in ("fp32", "bf16"):
        for kind, waveforms in shapes.items():
            inputs = waveforms.to(device)

            def step(inputs=inputs, bf16=dtype == "bf16"):
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    return model(inputs)

            times = timed_runs(step, device, settings["repeats"])
            if kind == "batch":
                logits[dtype] = step().float().cpu()
            seconds = inputs.shape[1] / SAMPLE_RATE
            audio = inputs.shape[0] * seconds
            gflop = inputs.shape[0] * model.flops(seconds) / 1e9
            median = statistics.median(times)
            achieved = gflop / median
            entries.append(
                {
                    "device": device.type,
                    "dtype": dtype,
                    "kind": kind,
                    "batch": int(inputs.shape[0]),
                    "clip_seconds": seconds,
                    "audio_seconds": audio,
                    "repeats": len(times),
                    "wall_seconds": times,
                    "wall_seconds_median": median,
                    "x_realtime": audio / median,
                    "model_gflop": gflop,
                    "achieved_gflops": achieved,
                    "matmul_gflops": matmul[dtype]["gflops"],
                    "fraction_of_matmul": achieved / matmul[dtype]["gflops"],
                }
            )
    agreement = {
        "max_abs_logit_diff": float((logits["bf16"] - logits["fp32"]).abs().max()),
        "argmax_agree": float((logits["bf16"].argmax(-1) == logits["fp32"].argmax(-1)).float().mean()),
    }
    return entries, agreement


def device_section(model, speech: torch.Tensor, device: torch.device, settings: dict) -> dict[str, Any]:
    matmul = matmul_peak(device, settings["matmul_n"][device.type], settings["matmul_repeats"])
    entries, agreement = throughput(model, speech, device, settings, matmul)
    return {"matmul": matmul, "throughput": entries, "bf16_vs_fp32_batch": agreement}


# ------------------------------------------------------------------------------------------ predict memory


def write_recordings(data: Path, lengths: list[float], folder: Path) -> dict[float, dict[str, Any]]:
    """One pass over the corpora writing every requested length (the shorter ones are prefixes of the longer)."""
    targets = {seconds: round(seconds * SAMPLE_RATE) for seconds in lengths}
    outputs = {s: folder / f"recording_{int(s)}s.flac" for s in lengths}
    writers = {s: sf.SoundFile(outputs[s], "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") for s in lengths}
    written = dict.fromkeys(lengths, 0)
    files = 0
    try:
        for path in corpus_files(data):
            if all(written[s] >= targets[s] for s in lengths):
                break
            samples, rate = sf.read(path, dtype="float32")
            if rate != SAMPLE_RATE or samples.ndim != 1:
                raise SystemExit(f"{path}: expected 16 kHz mono (the shared corpus copies), got {rate} Hz")
            files += 1
            for s in lengths:
                take = samples[: max(targets[s] - written[s], 0)]
                if len(take):
                    writers[s].write(take)
                    written[s] += len(take)
    finally:
        for writer in writers.values():
            writer.close()
    short = [s for s in lengths if written[s] < targets[s]]
    if short:
        raise SystemExit(f"the corpora in {data} hold less than {max(short)} s of audio")
    return {s: {"path": outputs[s], "samples": written[s], "source_files_used": files} for s in lengths}


def run_child(recording: Path, model: str, chunk: float | None, batch: int, threads: int) -> dict[str, Any]:
    """One predict run in a fresh process under :data:`LAUNCHER`; its report plus the launcher's peak RSS.
    ``chunk``: ``--chunk-seconds`` as a user would give it (``None``: not given, the model's own window)."""
    command = [sys.executable, "-c", LAUNCHER, sys.executable, __file__, "--child-predict", str(recording)]
    command += ["--model", model, "--batch-size", str(batch), "--threads", str(threads)]
    if chunk is not None:
        command += ["--chunk-seconds", str(chunk)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"predict child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    *_, line, maxrss = done.stdout.strip().splitlines()
    report = json.loads(line)
    report["process_wall_seconds"] = time.perf_counter() - start
    report["peak_rss_bytes"] = kib_or_bytes(int(maxrss))
    return report


def kib_or_bytes(maxrss: int) -> int:
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # ru_maxrss: KiB on Linux, bytes on macOS


def current_rss_bytes() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return -1


def child_predict(args) -> None:
    """Inside the subprocess: load the model, run the predict engine on one recording, print one JSON line."""
    import sermodels
    from sermodels.audio import audio_info
    from sermodels.pipelines.predict import predict_files

    model = sermodels.load(args.model)
    rss_loaded = current_rss_bytes()
    start = time.perf_counter()
    result = predict_files(
        model, [args.child_predict], batch_size=args.batch_size, progress=False, max_chunk_seconds=args.chunk_seconds
    )
    wall = time.perf_counter() - start
    if result.failures:
        raise SystemExit(f"predict failed: {result.failures}")
    info = audio_info(args.child_predict)
    report = {
        "recording_seconds": info.duration,
        "samples": info.frames,
        "chunk_seconds_requested": args.chunk_seconds,
        "chunk_seconds_effective": effective_chunk_seconds(model, args.chunk_seconds),
        "batch_size": args.batch_size,
        "wall_seconds": wall,
        "x_realtime": info.duration / wall,
        "label": result.rows[0]["label"],
        "rss_after_model_load_bytes": rss_loaded,
        "self_maxrss_bytes": kib_or_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }
    print(json.dumps(report), flush=True)
    # Skip the interpreter's teardown: unloading torch touches ~100 MB more pages, which would count in the
    # launcher's figure without being any part of predict.
    os._exit(0)


def predict_memory(data: Path, model, model_source: str, settings: dict, threads: int, workdir: Path) -> dict[str, Any]:
    """Peak RSS of predict runs on the recordings; the subprocesses load ``model`` from ``model_source``."""
    lengths = sorted(settings["recordings"])
    start = time.perf_counter()
    recordings = write_recordings(data, lengths, workdir)
    writing = time.perf_counter() - start
    batch = settings["predict_batch"]
    runs = [
        with_waveform(run_child(recordings[s]["path"], model_source, settings["chunk_seconds"], batch, threads))
        for s in lengths
    ]
    whole = with_waveform(run_child(recordings[lengths[0]]["path"], model_source, 0.0, batch, threads))
    short, long = runs[0], runs[-1]
    ratios = {
        "length_ratio": long["recording_seconds"] / short["recording_seconds"],
        "peak_rss_long_over_short": long["peak_rss_bytes"] / short["peak_rss_bytes"],
        "peak_rss_minus_waveform_long_over_short": (
            long["peak_rss_minus_waveform_bytes"] / short["peak_rss_minus_waveform_bytes"]
        ),
        "peak_rss_growth_bytes": long["peak_rss_bytes"] - short["peak_rss_bytes"],
        "waveform_growth_bytes": long["waveform_bytes"] - short["waveform_bytes"],
        "whole_file_over_windowed_peak_rss_short": whole["peak_rss_bytes"] / short["peak_rss_bytes"],
    }
    return {
        "engine": "sermodels.pipelines.predict.predict_files (behind `sermodels predict`), one subprocess per run",
        # The parser's default is None ("the model's own window"); this is the window it resolves to.
        "cli_chunk_seconds_flag_default": cli_chunk_flag_default(),
        "cli_predict_default_chunk_seconds": effective_chunk_seconds(model, cli_chunk_flag_default()),
        "chunk_seconds": settings["chunk_seconds"],
        "batch_size": settings["predict_batch"],
        "recording_sources": list(RECORDING_CORPORA),
        "source_files_used": recordings[lengths[-1]]["source_files_used"],
        "recording_write_seconds": writing,
        "default_windows": runs,
        "whole_file_short": whole,
        "ratios": ratios,
    }


def with_waveform(report: dict[str, Any]) -> dict[str, Any]:
    report["waveform_bytes"] = report["samples"] * BYTES_PER_SAMPLE
    report["peak_rss_minus_waveform_bytes"] = report["peak_rss_bytes"] - report["waveform_bytes"]
    return report


def cli_chunk_flag_default() -> float | None:
    from sermodels.cli import _parser

    return _parser().parse_args(["predict", "x.wav"]).chunk_seconds


def effective_chunk_seconds(model, requested: float | None) -> float | None:
    """The window predict uses (``None``: whole files), by the rule of ``run_predictions``: ``None`` -> the model's
    ``default_chunk_seconds``, ``0`` -> whole files."""
    if requested is None:
        return getattr(model, "default_chunk_seconds", None)
    return None if requested == 0 else requested


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (a smoke run)")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/emonet_speed.json)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared corpora folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--no-gpu", action="store_true", help="skip CUDA even when it is available")
    # Internal: the predict subprocess.
    parser.add_argument("--child-predict", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-seconds", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_predict:
        child_predict(args)
        return
    if args.quick and args.out is None:
        parser.error("--quick numbers are not the benchmark: give --out (benchmarks/results keeps the full run)")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / "emonet_speed.json"
    settings = QUICK if args.quick else FULL
    data = Path(args.data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emonet_speed_") as tmp:
        model, model_source, described = build_model(Path(tmp))
        longest = max(settings["batch"] * settings["clip_seconds"], settings["long_seconds"])
        speech = real_speech(data, longest)
        result: dict[str, Any] = {
            "benchmark": "emonet_speed",
            "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine_info(),
            "torch": torch.__version__,
            "settings": settings,
            "model": {
                "source": described,
                "arch": model.arch,
                "heads": list(model.heads),
                "parameters": sum(p.numel() for p in model.parameters()),
                "gflop_per_5s_clip": model.flops(5.0) / 1e9,
                "flops_counts": "convolutions, attention and head (model.flops); not the log-mel front-end",
            },
            "notes": "x_realtime = audio_seconds / wall_seconds_median; achieved_gflops = model_gflop / "
            "wall_seconds_median; fraction_of_matmul = achieved_gflops / matmul gflops (median) of the same "
            "device and dtype; bf16 = torch.autocast(bfloat16) around the fp32 model",
        }
        phases = {}
        phase = time.perf_counter()
        result["cpu"] = device_section(model, speech, torch.device("cpu"), settings)
        phases["cpu"], phase = time.perf_counter() - phase, time.perf_counter()
        if torch.cuda.is_available() and not args.no_gpu:
            result["cuda"] = device_section(model, speech, torch.device("cuda"), settings)
            model.to("cpu")
        else:
            reason = "disabled with --no-gpu" if args.no_gpu else "CUDA is not available"
            result["cuda"] = {"skipped": reason}
        phases["cuda"], phase = time.perf_counter() - phase, time.perf_counter()
        threads = torch.get_num_threads()
        result["predict_memory"] = predict_memory(data, model, model_source, settings, threads, Path(tmp))
        phases["predict_memory"] = time.perf_counter() - phase
        result["phase_seconds"] = phases
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["total_seconds"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    from sermodels._io import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"wrote {out}")


def summary(result: dict[str, Any]) -> str:
    lines = []
    for device in ("cpu", "cuda"):
        section = result.get(device, {})
        for entry in section.get("throughput", []):
            lines.append(
                f"{device:4} {entry['dtype']} {entry['kind']:5} {entry['batch']} x {entry['clip_seconds']:g} s: "
                f"{entry['x_realtime']:8.1f}x real time, {entry['achieved_gflops']:8.1f} GFLOP/s "
                f"({entry['fraction_of_matmul']:.0%} of matmul {entry['matmul_gflops']:.0f})"
            )
    memory = result["predict_memory"]
    for run in memory["default_windows"] + [memory["whole_file_short"]]:
        window = run["chunk_seconds_effective"]
        chunks = f"{window:g} s windows" if window else "whole file"
        lines.append(
            f"predict {run['recording_seconds']:6.0f} s ({chunks}): {run['wall_seconds']:.1f} s, "
            f"{run['x_realtime']:.1f}x real time, peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"({run['peak_rss_minus_waveform_bytes'] / 2**20:.0f} MiB without the waveform)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
