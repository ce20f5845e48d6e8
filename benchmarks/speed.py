"""How fast does each released model family run, against what the device's matrix units can do?

One released checkpoint per family (:data:`FAMILIES`), measured side by side in one run so that every number shares
the machine's state (the CPU is shared: ``os.getloadavg()`` is recorded at the start and at the end):

1. **Matmul reference**: square fp32 and bf16 matrix products on the same device
   (:func:`emonet_speed.matmul_peak`, ``2 n³`` FLOP each).
2. **Model only** (no decoding, no engine): a batch of ``batch`` clips of ``clip_seconds`` of real corpus speech
   (EMO-DB, URDU, ... concatenated, cut into equal clips), waveform in, outputs out, after one warm-up call; the
   median over ``repeats``. Rows per family:

   - ``fp32``: the model as loaded, eager, plain fp32 (what ``sermodels predict`` runs by default);
   - ``bf16``: :func:`sermodels.runtime.prepare_for_inference` with ``precision="bf16"`` and
     ``channels_last=True``, eager (autocast; the front-end stays fp32);
   - ``bf16+compile``: the same with ``compile=True`` (inductor with frozen weights: BN folded into the
     convolutions, oneDNN weights pre-packed), the fast path for the CNNs;
   - ``onnxruntime`` (CPU): the graph of :func:`sermodels.deploy.onnx.export_onnx` (the default head; whole rows,
     as the graph takes them) on onnxruntime's CPU provider with as many threads as torch, fp32; the export time
     is kept beside it.

   × real time is audio seconds / wall seconds. FLOP: ``model.flops(seconds)`` where the model has it (EmoNet:
   convolutions, attention, head), else ``torch.utils.flop_counter.FlopCounterMode`` over one fp32 eager forward
   of the batch (matmuls, convolutions, ``bmm``/``addmm``, LSTM cells through their ``addmm``; not the FFT of the
   STFT nor elementwise work). Fraction of matmul = achieved GFLOP/s / the matmul GFLOP/s of the same device and
   dtype (onnxruntime runs fp32: its fraction is of the fp32 matmul).
   **Agreement**: every fast row is compared with the fp32 row on ``agreement_clips`` further real-speech clips
   of the same shape (default head): the fraction of equal argmax labels for a categories head; the largest
   absolute difference and the relative error of the outputs for every head. The median repetition is the
   headline figure, the fastest one is kept beside it (``*_best``: the code when the machine's other work
   leaves it alone).
3. **Ablation** (CPU, the CNN families): what each step of the fast path gives on its own, in the same run:
   bf16 autocast eager with the front-end under autocast too, + fp32 front-end, + channels-last, + compile, and
   fp32 + channels-last + compile. (bf16 *weights*, ``model.to(torch.bfloat16)``, are not a row: the models'
   fp32 masks promote activations back to fp32 in front of bf16 BatchNorm weights, which CPU BatchNorm rejects;
   under compile with frozen weights the autocast casts of the weights are folded into bf16 constants anyway.)
4. **GPU** (``--device cuda``, about 5-7 minutes on one H100/H200: ``benchmarks/speed_gpu.sh``): matmul of the
   GPU; model only per batch size (fp32 eager with TF32 off, bf16 eager, and at the largest batch the compiled
   bf16 fast path with CUDA graphs for EmoNet and the default model); end to end (the default model) through the
   predict engine
   (:func:`sermodels.pipelines.predict.run_predictions`) on 16 kHz WAV files written to a temporary folder, timed
   from the file list to the last result (decoding, batching, the model, the results), after a warm-up pass that
   compiles.
5. **Peak memory of ``sermodels predict`` on a 16 h recording** (CPU runs): the default model on a 16 kHz WAV of
   real speech (the corpora repeated until 16 h), as users run it (the model's own window, batch 8), in a fresh
   process under the launcher of :mod:`emonet_speed` (``getrusage(RUSAGE_CHILDREN)``). The engine decodes a file
   whole (4 bytes a sample: 3.7 GB for 16 h) and runs the model on it window by window. The recording is a 16-bit
   WAV (1.8 GB), written in seconds where a FLAC encoder would take minutes.

    python benchmarks/speed.py                                   # CPU -> benchmarks/results/speed.json
    python benchmarks/speed.py --device cuda                     # GPU -> benchmarks/results/speed_cuda.json
    python benchmarks/speed.py --quick --out /tmp/speed.json     # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when imported from tests

from emonet_speed import (  # noqa: E402
    REPO,
    SAMPLE_RATE,
    corpus_files,
    machine_info,
    matmul_peak,
    real_speech,
    run_child,
    synchronize,
    timed_runs,
    with_waveform,
)

#: One released checkpoint per model family.
FAMILIES = {
    "emonet_wrn": "emonet_wrn.multi4",
    "adapted_cnn": "mobilenetv2_adapters.multi4",
    "deep_spectrum": "deep_spectrum_mobilenetv2.emodb",
    "logmel_svm": "logmel_svm.emodb",
    "av_spnet": "av_spnet.proxy4",
    "conv_blstm": "conv_blstm.sessions",
    "blstm_enhancer": "blstm_enhancer.sessions_mixed",
    "wda_mlp": "wda_mlp.urdu",
}
#: The steps of the fast path measured one by one (CPU), as keyword arguments of ``prepare_for_inference``;
#: ``fp32_front_end=False`` leaves the front-end under autocast too.
ABLATION = {
    "bf16 autocast, front-end in bf16": {"precision": "bf16", "fp32_front_end": False},
    "bf16 autocast, front-end fp32": {"precision": "bf16"},
    "+ channels-last": {"precision": "bf16", "channels_last": True},
    "+ torch.compile (freezing)": {"precision": "bf16", "channels_last": True, "compile": True},
    "fp32 + channels-last + torch.compile (freezing)": {"precision": "fp32", "channels_last": True, "compile": True},
}

FULL = {
    "matmul_n": {"cpu": 2048, "cuda": 8192},
    "matmul_repeats": 5,
    "batch": 8,
    "clip_seconds": 5.0,  # EmoNet §5.1: segments of at most 5 s
    "repeats": 5,
    "agreement_clips": 64,
    "compile": True,
    "onnx_families": list(FAMILIES),
    "onnx_export_timeout": 180.0,
    "ablation_families": ["emonet_wrn", "adapted_cnn"],
    "memory_model": "mobilenetv2_adapters.multi4",  # the default model (sermodels/_pretrained.json)
    "memory_hours": 16.0,
    "predict_batch": 8,  # the CLI's --batch-size default
    "gpu_batches": [64, 512],
    "gpu_repeats": 10,
    "gpu_compile_families": ["emonet_wrn", "adapted_cnn"],
    "gpu_compile_batch": 512,
    "e2e_families": ["adapted_cnn"],  # the default model
    "e2e_files": 2000,
    "e2e_file_seconds": 20.0,
    "e2e_batch": 256,
}
QUICK = {
    "matmul_n": {"cpu": 256, "cuda": 1024},
    "matmul_repeats": 2,
    "batch": 2,
    "clip_seconds": 1.0,
    "repeats": 2,
    "agreement_clips": 4,
    "compile": False,  # compiling eight models takes minutes on two cores
    "onnx_families": ["wda_mlp"],
    "onnx_export_timeout": 240.0,
    "ablation_families": ["adapted_cnn"],
    "memory_model": "mobilenetv2_adapters.multi4",
    "memory_hours": 70.0 / 3600,  # longer than two 30 s windows
    "predict_batch": 2,
    "gpu_batches": [2, 4],
    "gpu_repeats": 2,
    "gpu_compile_families": ["emonet_wrn"],
    "gpu_compile_batch": 4,
    "e2e_families": ["adapted_cnn"],
    "e2e_files": 6,
    "e2e_file_seconds": 2.0,
    "e2e_batch": 4,
}


# ------------------------------------------------------------------------------------------------- FLOP


def count_flops(model: torch.nn.Module, waveforms: torch.Tensor) -> dict[str, Any]:
    """FLOP of one forward of ``waveforms (B, T)``: ``model.flops`` where the model has it, else counted by
    ``FlopCounterMode`` (module docstring); the counter's figure is kept beside ``model.flops`` as well."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(waveforms)
    counted = float(counter.get_total_flops())
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    result = {"flop_counter_gflop": counted / 1e9, "flop_counter_by_op": by_op}
    if hasattr(model, "flops"):
        seconds = waveforms.shape[1] / SAMPLE_RATE
        total = waveforms.shape[0] * model.flops(seconds)
        return result | {"gflop": total / 1e9, "source": "model.flops(seconds): convolutions, attention, head"}
    return result | {"gflop": counted / 1e9, "source": "FlopCounterMode (matmul, conv, bmm/addmm incl. LSTM cells)"}


# ---------------------------------------------------------------------------------------------- rows


def entry(kind: str, waveforms: torch.Tensor, times: list[float], gflop: float, matmul: dict) -> dict[str, Any]:
    """One timed row: × real time, achieved GFLOP/s and the fraction of the matmul rate of ``matmul``."""
    audio = waveforms.shape[0] * waveforms.shape[1] / SAMPLE_RATE
    median, best = statistics.median(times), min(times)
    achieved = gflop / median
    return {
        "kind": kind,
        "batch": int(waveforms.shape[0]),
        "clip_seconds": waveforms.shape[1] / SAMPLE_RATE,
        "audio_seconds": audio,
        "repeats": len(times),
        "wall_seconds": times,
        "wall_seconds_median": median,
        "x_realtime": audio / median,
        "model_gflop": gflop,
        "achieved_gflops": achieved,
        "matmul_dtype": matmul["dtype"],
        "matmul_gflops": matmul["gflops"],
        "fraction_of_matmul": achieved / matmul["gflops"],
        # The fastest repetition: what the code does when the shared machine's other work leaves it alone.
        "x_realtime_best": audio / best,
        "fraction_of_matmul_best": gflop / best / matmul["gflops"],
    }


def agreement(reference: torch.Tensor, outputs: torch.Tensor, categories: bool) -> dict[str, Any]:
    """Fast-path outputs against fp32 on the same clips: label agreement (categories heads), the largest absolute
    difference and the relative error ``‖out − ref‖ / ‖ref‖`` over all outputs."""
    reference, outputs = reference.float().cpu(), outputs.float().cpu()
    difference = outputs - reference
    result = {"clips": int(reference.shape[0]), "max_abs_diff": float(difference.abs().max())}
    result["relative_error"] = float(difference.norm() / reference.norm().clamp(min=1e-12))
    if categories:
        labels = reference.argmax(-1) == outputs.argmax(-1)
        result |= {"labels_agree": float(labels.float().mean()), "labels_differ": int((~labels).sum())}
    return result


def run_batches(call, clips: torch.Tensor, batch: int) -> torch.Tensor:
    """``call`` over ``clips (N, T)`` in batches of exactly ``batch`` rows (one shape: no recompilation)."""
    return torch.cat([call(clips[i : i + batch]) for i in range(0, clips.shape[0], batch)])


def prepared_call(model, device: torch.device, options: dict[str, Any]):
    """:func:`~sermodels.runtime.prepare_for_inference` with ``options`` (:data:`ABLATION` keys) on a copy of
    ``model`` (the loaded model stays as it is for the fp32 rows), static shapes: one compile per shape."""
    from sermodels.runtime import prepare_for_inference

    options = dict(options)
    fp32_front_end = options.pop("fp32_front_end", True)
    torch._dynamo.reset()
    prepared = prepare_for_inference(copy.deepcopy(model), device=device, dynamic=False, **options)
    if not fp32_front_end:  # undo the front-end wrapping (ablation only)
        for module in prepared.model.modules():
            if getattr(module, "_fp32_front_end", False):
                del module.forward, module._fp32_front_end
    return prepared


def timed_call(call, inputs: torch.Tensor, device: torch.device, repeats: int) -> tuple[list[float], float]:
    """Wall seconds of ``repeats`` calls after a first one, and the first call's own time (compiling, if any)."""
    start = time.perf_counter()
    call(inputs)
    synchronize(device)
    first = time.perf_counter() - start
    return timed_runs(lambda: call(inputs), device, repeats), first


def family_rows(family: str, model, clips, check, device, settings, matmul, workdir: Path) -> dict[str, Any]:
    """fp32, the bf16 fast path and onnxruntime (CPU) for one family on ``clips (B, T)``; agreement on ``check``."""
    model = model.to(device).eval()
    clips, check = clips.to(device), check.to(device)
    flop = count_flops(model, clips)
    categories = model.output_spec().kind == "categories"

    def fp32(x):
        with torch.inference_mode():
            return model(x)

    times, _ = timed_call(fp32, clips, device, settings["repeats"])
    reference = run_batches(fp32, check, clips.shape[0])
    rows = [entry("fp32", clips, times, flop["gflop"], matmul["fp32"]) | {"how": "eager fp32, as loaded"}]
    for kind, compiled in (("bf16", False), ("bf16+compile", True)):
        if compiled and not settings["compile"]:
            continue
        options = {"precision": "bf16", "channels_last": True, "compile": compiled}
        prepared = prepared_call(model, device, options)
        times, first = timed_call(prepared, clips, device, settings["repeats"])
        row = entry(kind, clips, times, flop["gflop"], matmul["bf16"])
        row |= {"how": f"prepare_for_inference({options_text(options)})", "first_call_seconds": first}
        agree = agreement(reference, run_batches(prepared, check, clips.shape[0]), categories)
        rows.append(row | {"agreement": agree})
    if device.type == "cpu" and family in settings["onnx_families"]:
        args = (clips, check, reference, categories, flop, matmul, settings, workdir / family)
        rows.append(onnx_row(model, FAMILIES[family], *args))
    return {
        "model_id": FAMILIES[family],
        "arch": getattr(model, "arch", type(model).__name__),
        "parameters": sum(p.numel() for p in model.parameters()),
        "output_kind": model.output_spec().kind,
        "flop": flop,
        "rows": rows,
    }


def options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def onnx_row(
    model, model_id: str, clips, check, reference, categories, flop, matmul, settings, folder: Path
) -> dict[str, Any]:
    """onnxruntime (CPU provider, fp32) on the exported graph; a row saying why when it cannot run."""
    try:
        import onnxruntime as ort

        import sermodels.deploy.onnx  # noqa: F401 (the exporter is there)
    except ImportError as error:
        return {"kind": "onnxruntime", "skipped": f"not available: {error}"}
    try:
        output = model.resolve_head(None)  # the default head, as the torch rows run it
        start = time.perf_counter()
        path = export_in_subprocess(model_id, output, folder, settings["onnx_export_timeout"])
        export = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {node.name for node in session.get_inputs()}

        def call(x):
            feed = {"signal": x.cpu().numpy()}
            if "lengths" in inputs:  # whole rows: every clip is as long as the batch
                feed["lengths"] = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64).numpy()
            return torch.from_numpy(session.run([output], feed)[0])

        times, first = timed_call(call, clips.cpu(), torch.device("cpu"), settings["repeats"])
    except Exception as error:  # an export or runtime failure is a result to report, not a crash of the benchmark
        return {"kind": "onnxruntime", "skipped": f"{type(error).__name__}: {error}"[:500]}
    row = entry("onnxruntime", clips, times, flop["gflop"], matmul["fp32"])
    row |= {"how": f"onnxruntime {ort.__version__} CPUExecutionProvider, fp32", "first_call_seconds": first}
    row |= {"export_seconds": export, "output": output}
    return row | {"agreement": agreement(reference, run_batches(call, check.cpu(), clips.shape[0]), categories)}


def export_in_subprocess(model_id: str, head: str, folder: Path, timeout: float) -> Path:
    """``export_onnx`` of the released ``model_id`` (the weights the torch rows run) in a child process, given up
    after ``timeout`` seconds: an export that does not finish is a result to report, not a hung benchmark."""
    code = (
        "import sys, sermodels; from sermodels.deploy.onnx import export_onnx; "
        "print(export_onnx(sermodels.load(sys.argv[1]), sys.argv[2], heads=[sys.argv[3]], model_id=sys.argv[1]))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, model_id, str(folder), head],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"the ONNX export did not finish in {timeout:g} s") from error
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "export failed")
    return Path(done.stdout.strip().splitlines()[-1])


def ablation(model, clips, check, device, settings, matmul, gflop: float) -> list[dict[str, Any]]:
    """Each step of the fast path on its own (:data:`ABLATION`), same clips, same run."""
    categories = model.output_spec().kind == "categories"
    with torch.inference_mode():
        reference = run_batches(model, check, clips.shape[0])
    rows = []
    for name, options in ABLATION.items():
        if options.get("compile") and not settings["compile"]:
            continue
        prepared = prepared_call(model, device, options)
        times, first = timed_call(prepared, clips, device, settings["repeats"])
        row = entry(name, clips, times, gflop, matmul[options["precision"]])
        row |= {"options": options, "first_call_seconds": first}
        rows.append(row | {"agreement": agreement(reference, run_batches(prepared, check, clips.shape[0]), categories)})
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1 and settings["compile"]:
        rows.append(one_thread_row(model, clips, device, settings, gflop))
    return rows


def one_thread_row(model, clips, device, settings, gflop: float) -> dict[str, Any]:
    """The compiled bf16 fast path on one thread, against a bf16 matmul on one thread measured just before: on a
    shared two-core machine a second OpenMP thread that has to share its core with another process holds up every
    parallel region, so this row says what one core gives whatever the other core is doing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        matmul = tagged(matmul_peak(device, settings["matmul_n"]["cpu"], settings["matmul_repeats"]))
        options = {"precision": "bf16", "channels_last": True, "compile": True}
        prepared = prepared_call(model, device, options)
        times, first = timed_call(prepared, clips, device, settings["repeats"])
    finally:
        torch.set_num_threads(threads)
    row = entry("+ torch.compile (freezing), 1 thread", clips, times, gflop, matmul["bf16"])
    return row | {"options": options | {"threads": 1}, "first_call_seconds": first, "matmul_1_thread": matmul}


# ------------------------------------------------------------------------------------------------- GPU


def gpu_rows(family: str, model, speech: torch.Tensor, device, settings, matmul) -> list[dict[str, Any]]:
    """Model only on the GPU per batch size: fp32 eager and bf16 eager (channels-last); at ``gpu_compile_batch``
    also the compiled fast path with CUDA graphs, for the CNN families of ``gpu_compile_families`` (one compile
    per family keeps the run within ten minutes; the small recurrent and linear models stay eager)."""
    clip = round(settings["clip_seconds"] * SAMPLE_RATE)
    model = model.to(device).eval()
    rows = []
    for batch in settings["gpu_batches"]:
        clips = speech[: batch * clip].reshape(batch, clip).to(device)
        gflop = count_flops(model, clips)["gflop"]

        def fp32(x):
            with torch.inference_mode():
                return model(x)

        times, _ = timed_call(fp32, clips, device, settings["gpu_repeats"])
        rows.append(entry("fp32", clips, times, gflop, matmul["fp32"]) | {"how": "eager fp32 (TF32 off)"})
        compiled = settings["compile"] and family in settings["gpu_compile_families"]
        compiled = compiled and batch == settings["gpu_compile_batch"]
        for kind, compile in (("bf16", False), ("bf16+compile", True)):
            if compile and not compiled:
                continue
            options = {"precision": "bf16", "channels_last": True, "compile": compile}
            options["cuda_graphs"] = compile and device.type == "cuda"
            prepared = prepared_call(model, device, options)
            times, first = timed_call(prepared, clips, device, settings["gpu_repeats"])
            row = entry(kind, clips, times, gflop, matmul["bf16"])
            rows.append(row | {"how": f"prepare_for_inference({options_text(options)})", "first_call_seconds": first})
            del prepared
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def write_wavs(data: Path, folder: Path, files: int, seconds: float) -> list[Path]:
    """``files`` 16 kHz 16-bit WAV files of ``seconds`` each, cut in order from the real-speech stream."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = round(seconds * SAMPLE_RATE)
    paths = []
    for index, chunk in enumerate(itertools.islice(speech_chunks(data, samples), files)):
        path = folder / f"clip_{index:05d}.wav"
        sf.write(path, chunk, SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def speech_chunks(data: Path, samples: int):
    """Endless ``samples``-long pieces of the corpora's speech (files in order, repeated), as int16 numpy arrays."""
    import numpy as np

    parts, held = [], 0
    for path in itertools.cycle(list(corpus_files(data))):
        audio, rate = sf.read(path, dtype="int16")
        if rate != SAMPLE_RATE or audio.ndim != 1:
            raise SystemExit(f"{path}: expected 16 kHz mono (the shared corpus copies), got {rate} Hz")
        parts.append(audio)
        held += audio.shape[0]
        if held < samples:
            continue
        buffer = np.concatenate(parts)
        while buffer.shape[0] >= samples:
            yield buffer[:samples]
            buffer = buffer[samples:]
        parts, held = [buffer], buffer.shape[0]


def end_to_end(family: str, model, data: Path, device, settings, workdir: Path) -> dict[str, Any]:
    """``run_predictions`` on WAV files: a warm-up pass over a few files (compiles), then the timed pass."""
    from sermodels.pipelines.predict import run_predictions

    paths = write_wavs(data, workdir / "wavs", settings["e2e_files"], settings["e2e_file_seconds"])
    options = {"precision": "bf16", "channels_last": True, "compile": settings["compile"]}
    common = {"device": device, "batch_size": settings["e2e_batch"], "progress": False, "postprocess": False}
    common["decode_workers"] = min(16, os.cpu_count() or 1)
    start = time.perf_counter()
    run_predictions(model, paths[: settings["e2e_batch"] * 2], **common, **options)
    warm = time.perf_counter() - start
    synchronize(device)
    start = time.perf_counter()
    result = run_predictions(model, paths, **common, **options)
    synchronize(device)
    wall = time.perf_counter() - start
    audio = len(paths) * settings["e2e_file_seconds"]
    return {
        "family": family,
        "model_id": FAMILIES[family],
        "files": len(paths),
        "file_seconds": settings["e2e_file_seconds"],
        "audio_seconds": audio,
        "options": options | {key: value for key, value in common.items() if key != "device"},
        "warmup_seconds": warm,
        "wall_seconds": wall,
        "x_realtime": audio / wall,
        "failures": len(result.failures),
    }


# ---------------------------------------------------------------------------------------- predict memory


def write_long_recording(data: Path, seconds: float, path: Path) -> dict[str, Any]:
    """A 16 kHz 16-bit WAV of ``seconds`` of real speech, the corpora repeated in order until it is long enough
    (WAV rather than FLAC: 16 h are written in seconds; 1.8 GB, under the 4 GB limit of RIFF)."""
    target = round(seconds * SAMPLE_RATE)
    block = SAMPLE_RATE * 600
    written = 0
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="WAV", subtype="PCM_16") as out:
        for chunk in speech_chunks(data, min(block, target)):
            take = chunk[: target - written]
            out.write(take)
            written += take.shape[0]
            if written >= target:
                break
    return {"path": path, "samples": written}


def predict_memory(data: Path, settings: dict, threads: int, workdir: Path) -> dict[str, Any]:
    """Peak RSS of ``sermodels predict``'s engine on one long recording in a fresh process (module docstring)."""
    seconds = settings["memory_hours"] * 3600
    start = time.perf_counter()
    recording = write_long_recording(data, seconds, workdir / "long_recording.wav")
    writing = time.perf_counter() - start
    run = with_waveform(
        run_child(recording["path"], settings["memory_model"], None, settings["predict_batch"], threads)
    )
    return {
        "engine": "sermodels.pipelines.predict.predict_files (behind `sermodels predict`), fp32, the model's window",
        "model_id": settings["memory_model"],
        "recording_hours": seconds / 3600,
        "recording_file_bytes": recording["path"].stat().st_size,
        "recording_write_seconds": writing,
        "run": run,
        "whole_waveform_held": "the engine decodes a file whole (float32) and feeds the model window by window",
    }


# -------------------------------------------------------------------------------------------------- main


def cpu_section(data: Path, settings: dict, families: list[str], workdir: Path, progress=None) -> dict[str, Any]:
    """The CPU part (module docstring); ``progress`` gets the section after every family (the script saves it)."""
    import sermodels

    device = torch.device("cpu")
    matmul = tagged(matmul_peak(device, settings["matmul_n"]["cpu"], settings["matmul_repeats"]))
    clip = round(settings["clip_seconds"] * SAMPLE_RATE)
    batch = settings["batch"]
    speech = real_speech(data, (batch + settings["agreement_clips"]) * settings["clip_seconds"])
    clips = speech[: batch * clip].reshape(batch, clip)
    check = speech[batch * clip :].reshape(-1, clip)
    rows, ablations = {}, {}
    for family in families:
        model = sermodels.load(FAMILIES[family]).eval()
        try:
            rows[family] = family_rows(family, model, clips, check, device, settings, matmul, workdir)
        except Exception as error:
            rows[family] = {"model_id": FAMILIES[family], "error": failure(error)}
            continue
        if family in settings["ablation_families"]:
            gflop = rows[family]["flop"]["gflop"]
            ablations[family] = ablation(model, clips, check, device, settings, matmul, gflop)
        print(summary_lines({family: rows[family]}), flush=True)
        if progress:
            progress({"matmul": matmul, "families": rows, "ablation": ablations})
    return {"matmul": matmul, "families": rows, "ablation": ablations}


def cuda_section(
    data: Path, settings: dict, families: list[str], workdir: Path, device: str = "cuda", progress=None
) -> dict[str, Any]:
    """The GPU part (module docstring): the matmul, end to end, then model only family by family; ``progress``
    gets the section after every step (the script saves it, so that a run cut short keeps what it measured).
    ``device`` is the CPU only when a test runs the same code without a GPU."""
    import sermodels

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (a test of the GPU code path)"
    matmul = tagged(matmul_peak(device, settings["matmul_n"][device.type], settings["matmul_repeats"]))
    section: dict[str, Any] = {"device_name": name, "matmul": matmul, "end_to_end": [], "families": {}}
    speech = real_speech(data, max(settings["gpu_batches"]) * settings["clip_seconds"])
    for family in settings["e2e_families"]:
        model = sermodels.load(FAMILIES[family]).eval()
        try:
            run = end_to_end(family, model, data, device, settings, workdir / f"e2e_{family}")
        except Exception as error:
            run = {"family": family, "model_id": FAMILIES[family], "error": failure(error)}
        section["end_to_end"].append(run)
        print(run, flush=True)
        if progress:
            progress(section)
    for family in families:
        model = sermodels.load(FAMILIES[family]).eval()
        try:
            rows = {"model_id": FAMILIES[family], "rows": gpu_rows(family, model, speech, device, settings, matmul)}
        except Exception as error:
            rows = {"model_id": FAMILIES[family], "error": failure(error)}
        section["families"][family] = rows
        print(summary_lines({family: rows}), flush=True)
        if progress:
            progress(section)
    return section


def tagged(matmul: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {dtype: figures | {"dtype": dtype} for dtype, figures in matmul.items()}


def failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}\n{traceback.format_exc()[-1500:]}"


def cpu_flags() -> list[str]:
    """The CPU's matrix-relevant instruction sets (bf16 dot products, AMX), from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512_vnni", "avx512f", "avx2")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (a smoke run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="what to measure")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/speed[_cuda].json)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared corpora folder")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 16 h predict memory run")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick numbers are not the benchmark: give --out (benchmarks/results keeps the full run)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    families = [name for name in args.families.split(",") if name]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    name = "speed.json" if args.device == "cpu" else "speed_cuda.json"
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / name
    settings = QUICK if args.quick else FULL
    data = Path(args.data)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "speed",
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": args.device,
        "machine": machine_info() | {"cpu_flags": cpu_flags()},
        "torch": torch.__version__,
        "settings": settings,
        "families_measured": families,
        "notes": "x_realtime = audio_seconds / wall_seconds_median; achieved_gflops = model_gflop / "
        "wall_seconds_median; fraction_of_matmul = achieved_gflops / the matmul gflops (median) of the same device "
        "and dtype (matmul_dtype); agreement: the row's outputs against eager fp32 on further real-speech clips",
    }
    out.parent.mkdir(parents=True, exist_ok=True)

    def save_partial(section: dict[str, Any]) -> None:
        write_json(out, result | {args.device: section, "complete": False})

    with tempfile.TemporaryDirectory(prefix="speed_") as tmp:
        phases = {}
        phase = time.perf_counter()
        if args.device == "cpu":
            result["cpu"] = cpu_section(data, settings, families, Path(tmp), progress=save_partial)
            phases["cpu"], phase = time.perf_counter() - phase, time.perf_counter()
            write_json(out, result | {"complete": False})
            if not args.no_memory:
                result["predict_memory"] = predict_memory(data, settings, torch.get_num_threads(), Path(tmp))
                phases["predict_memory"] = time.perf_counter() - phase
        else:
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32
            result["cuda"] = cuda_section(data, settings, families, Path(tmp), progress=save_partial)
            phases["cuda"] = time.perf_counter() - phase
        result["phase_seconds"] = phases
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["total_seconds"] = time.perf_counter() - started
    write_json(out, result | {"complete": True})
    print(f"wrote {out}")


def write_json(path: Path, result: dict[str, Any]) -> None:
    from sermodels._io import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")


def summary_lines(families: dict[str, Any]) -> str:
    lines = []
    for family, section in families.items():
        if "error" in section:
            lines.append(f"{family}: FAILED {section['error'].splitlines()[0]}")
        for row in section.get("rows", []):
            if "skipped" in row:
                lines.append(f"{family:15} {row['kind']:11} skipped: {row['skipped'][:120]}")
                continue
            agree = row.get("agreement", {}).get("labels_agree")
            lines.append(
                f"{family:15} {row['kind']:11} b{row['batch']:<4} {row['x_realtime']:9.1f}x real time "
                f"{row['achieved_gflops']:8.1f} GFLOP/s ({row['fraction_of_matmul']:.0%} of {row['matmul_dtype']} "
                f"matmul)" + ("" if agree is None else f" labels agree {agree:.3f}")
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
