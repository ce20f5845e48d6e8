"""Time-continuous arousal/valence on the pseudo-session task: an analogue of D4.2 Table 6.1, and speed.

The task (:mod:`sermodels.data.sessions`): acted utterances of one speaker spliced into 60–300 s sessions, with
arousal/valence traces at 25 Hz placed per category and smoothed. Synthetic targets from acted speech: these rows
compare methods on one task; they are not RECOLA numbers, and claims about real raters do not carry over.

Parts (each merges its key into ``benchmarks/results/continuous.json``; the feature-enhancement rows come from
``benchmarks/continuous_enhancement.py`` under the key ``enhancement``):

- ``end_to_end``: the conv-BLSTM (D4.2 §5) trained with the CCC loss and with the MSE at the paper's settings (the
  recipes ``recipes/conv_blstm/sessions_{ccc,mse}.yaml``, same schedule), and the release's recipe
  (``sessions_ccc_tuned.yaml``: dropout 0.1, Adam 1e-3, gradient clipping), scored on the test sessions of the four
  corpora:
  concatenated CCC per dimension (the AV+EC way, §5.3) and the mean per-session CCC, raw and after the
  post-processing chain fitted on the dev sessions (§5.3; scaling to the training traces' std).
- ``handcrafted``: log-mel LLD functionals over 3 s windows every 40 ms (§5.3; eGeMAPS when the ``smile`` extra is
  installed) -> linear SVR (C on a log grid 1e-6…1, chosen on dev CCC) and a BLSTM (3 x 64, CCC or MSE loss),
  raw and post-processed.
- ``lag``: the same task with the gold traces delayed by 2 s (a rater's reaction time): the SVR raw and with the
  post-processing chain, whose time shift should recover the delay.
- ``speed``: the conv-BLSTM's × real time on this CPU (1 and 2 threads, batch of 6 s sequences), and ``sermodels
  predict`` on a one-hour and a ten-minute recording (wall time, peak memory of the process): bounded memory means
  the hour needs no more than the ten minutes. GPU rows need a GPU (``--device cuda``); the JSON records the
  device.

    python benchmarks/continuous.py [--parts end_to_end handcrafted lag speed] [--cache DIR]
        [--runs ccc mse ccc_tuned]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import environment, locked_results  # noqa: E402  (benchmarks/models.py)

from sermodels.audio import load_audio  # noqa: E402
from sermodels.checkpoint import load_folder  # noqa: E402
from sermodels.classical.continuous import (  # noqa: E402
    concatenated_ccc,
    fit_lld_blstm,
    fit_svr,
    lld_frames,
    window_functionals,
)
from sermodels.data.sessions import AV_NAMES, TRACE_RATE, SessionDataModule, delayed  # noqa: E402
from sermodels.metrics import ccc  # noqa: E402
from sermodels.postprocess import fit_postprocessing, trace_std  # noqa: E402
from sermodels.training.continuous import session_traces  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "continuous.json"
CORPORA = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
#: The trained runs: the paper's settings with each loss, and the release's recipe (dropout 0.1, Adam 1e-3, clipping).
RUNS = {
    "ccc": "runs/conv_blstm.sessions",
    "mse": "runs/conv_blstm.sessions_mse",
    "ccc_tuned": "runs/conv_blstm.sessions_tuned",
}
LAG_SECONDS = 2.0
PARTS = ("end_to_end", "handcrafted", "lag", "speed")

#: D4.2's running text (its tables were lost in conversion): RECOLA, not like for like with our task.
PAPER = {
    "source": "MixedEmotions D4.2, ../shared/papers/mixedemotions_d4.2_feature_enhancement_ccc_end2end.txt",
    "note": "RECOLA (spontaneous dyadic interaction, real continuous ratings); numbers quoted from the running text",
    "quotes": [
        "§4.5.3, lines 771-773 (LSTM-DRNN on eGeMAPS, RECOLA test set): 'SSE training does not deliver useful "
        "results in the arousal dimension: CCC = .097 with SSE training and .350 with ΣCCC training'",
        "§5.3: 'In all of the experiments, our model outperforms the designed features in terms of ρc' "
        "(end-to-end conv-BLSTM vs eGeMAPS/ComParE functionals + SVR/BLSTM); 'the eGEMAPS feature set provides "
        "close performance on valence'",
        "§5.3: incorporating ρc in the objective 'gives consistently better results across all test-runs'",
    ],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def session_data(cache: str | None, data_root: Path) -> SessionDataModule:
    roots = {name: str(data_root / folder) for name, folder in CORPORA.items()}
    data = SessionDataModule(list(CORPORA), roots=roots, cache_dir=cache)
    data.setup("fit")
    return data


def partitions(data: SessionDataModule) -> dict[str, list]:
    return {
        part: [item for name in data.corpus_names for item in data.partitions[name][part]]
        for part in ("train", "dev", "test")
    }


def gold_of(items: Sequence) -> list[np.ndarray]:
    return [item.trace.frames(TRACE_RATE).astype(np.float64) for item in items]


def scores(predictions: Sequence[np.ndarray], gold: Sequence[np.ndarray]) -> dict[str, Any]:
    """Concatenated CCC per dimension (the headline), and the mean over sessions of each session's CCC."""
    pairs = [(p[: min(len(p), len(g))], g[: min(len(p), len(g))]) for p, g in zip(predictions, gold)]
    total = concatenated_ccc([p for p, _ in pairs], [g for _, g in pairs])
    per_session = {name: float(np.mean([ccc(p[:, d], g[:, d]) for p, g in pairs])) for d, name in enumerate(AV_NAMES)}
    return {"ccc": dict(zip(AV_NAMES, map(float, total))), "ccc_sequence": per_session}


def with_postprocessing(dev_pred, dev_gold, test_pred, test_gold, train_gold) -> dict[str, Any]:
    """Raw test scores, the chain fitted on dev, and the test scores after it."""
    chain = fit_postprocessing(
        dev_pred, dev_gold, TRACE_RATE, list(AV_NAMES), gold_std=trace_std(train_gold, list(AV_NAMES))
    )
    return {
        "dev_raw": scores(dev_pred, dev_gold)["ccc"],
        "test_raw": scores(test_pred, test_gold),
        "test_postprocessed": scores(chain.apply(test_pred), test_gold),
        "chain": chain.to_json()["steps"],
    }


# ---------------------------------------------------------------------------------------------------- parts


def end_to_end(data: SessionDataModule, runs: dict[str, str]) -> dict[str, Any]:
    parts = partitions(data)
    train_gold = gold_of(parts["train"])
    out = {}
    for loss, folder in runs.items():
        if not (REPO / folder / "config.json").is_file():
            log(f"skip {loss}: no trained model at {folder} (train it with recipes/conv_blstm/sessions_{loss}.yaml)")
            continue
        started = time.perf_counter()
        model = load_folder(REPO / folder)
        dev_pred, dev_gold = session_traces(model, parts["dev"])
        test_pred, test_gold = session_traces(model, parts["test"])
        training = json.loads((REPO / folder / "config.json").read_text()).get("training", {})
        out[loss] = {
            "model": folder,
            "optimizer_steps": training.get("schedule_run", {}).get("optimizer_steps"),
            "train_wall_seconds": training.get("schedule_run", {}).get("wall_seconds"),
            **with_postprocessing(dev_pred, dev_gold, test_pred, test_gold, train_gold),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        log(f"end_to_end {loss}: {out[loss]['test_raw']['ccc']} -> {out[loss]['test_postprocessed']['ccc']}")
    return out


_FEATURES: dict[tuple[str, str], np.ndarray] = {}


def window_features(items: Sequence, lld_set: str) -> list[np.ndarray]:
    """3 s window functionals of each item's LLDs at 25 Hz (computed once per run, shared by the parts)."""
    for item in items:
        if (item.path, lld_set) not in _FEATURES:
            _FEATURES[item.path, lld_set] = window_functionals(lld_frames(load_audio(item.path), lld_set=lld_set))
    return [_FEATURES[item.path, lld_set] for item in items]


def aligned(features: list[np.ndarray], gold: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    frames = [min(len(x), len(y)) for x, y in zip(features, gold)]
    return [x[:n] for x, n in zip(features, frames)], [y[:n] for y, n in zip(gold, frames)]


def handcrafted(data: SessionDataModule, lag: float = 0.0, blstm: bool = True) -> dict[str, Any]:
    parts = partitions(data)
    out: dict[str, Any] = {}
    lld_sets = ["logmel"] + (["egemaps"] if _has_opensmile() else [])
    for lld_set in lld_sets:
        started = time.perf_counter()
        features = {part: window_features(items, lld_set) for part, items in parts.items()}
        gold = {part: gold_of(items) for part, items in parts.items()}
        if lag:
            gold = {part: [delayed(g, lag, TRACE_RATE) for g in traces] for part, traces in gold.items()}
        xs, ys = {}, {}
        for part in parts:
            xs[part], ys[part] = aligned(features[part], gold[part])
        log(f"{lld_set} features ready ({time.perf_counter() - started:.0f} s)")
        svr = fit_svr(xs["train"], ys["train"], xs["dev"], ys["dev"], list(AV_NAMES))
        row = with_postprocessing(svr.predict(xs["dev"]), ys["dev"], svr.predict(xs["test"]), ys["test"], ys["train"])
        out[f"{lld_set}_svr"] = {"C": svr.C, **row}
        log(f"{lld_set} svr: {row['test_raw']['ccc']} -> {row['test_postprocessed']['ccc']}")
        if not blstm:
            continue
        for loss in ("ccc", "mse"):
            net, history = fit_lld_blstm(xs["train"], ys["train"], xs["dev"], ys["dev"], list(AV_NAMES), loss=loss)
            row = with_postprocessing(
                net.predict(xs["dev"]), ys["dev"], net.predict(xs["test"]), ys["test"], ys["train"]
            )
            out[f"{lld_set}_blstm_{loss}"] = {"epochs": len(history), **row}
            log(f"{lld_set} blstm {loss}: {row['test_raw']['ccc']} -> {row['test_postprocessed']['ccc']}")
    return out


def _has_opensmile() -> bool:
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


def speed(runs: dict[str, str], data: SessionDataModule, device: str) -> dict[str, Any]:
    """The release (with its post-processing chain) when there is one, else the CCC run."""
    released = REPO / "checkpoints" / "conv_blstm.sessions"
    folder = released if (released / "config.json").is_file() else REPO / runs["ccc"]
    if not (folder / "config.json").is_file():
        return {"skipped": f"no trained model at {runs['ccc']}"}
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    out: dict[str, Any] = {"device": device, "gpu": gpu, "model": str(folder.relative_to(REPO))}
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    model = load_folder(folder).eval().to(device)
    sequences = torch.randn(8, 96000, device=device)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            model(sequences[:2])
            sync()
            started = time.perf_counter()
            repeats = 3
            for _ in range(repeats):
                model(sequences)
            sync()
            seconds = (time.perf_counter() - started) / repeats
        out[f"model_x_realtime_{threads}_threads"] = round(8 * 6.0 / seconds, 1)
        log(f"conv_blstm {threads} thread(s): {out[f'model_x_realtime_{threads}_threads']}x real time")
    items = partitions(data)["test"]
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (10, 60):
            path = Path(tmp) / f"recording_{minutes}min.flac"
            _long_recording(items, minutes * 60, path)
            out[f"predict_{minutes}min"] = _predict_process(folder, path, Path(tmp) / f"trace_{minutes}.csv")
            log(f"predict {minutes} min: {out[f'predict_{minutes}min']}")
    return out


def _long_recording(items: Sequence, seconds: float, path: Path) -> None:
    """The test sessions end to end, repeated, written as one 16 kHz FLAC of ``seconds``."""
    total = int(seconds * 16000)
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as handle:
        written = 0
        while written < total:
            for item in items:
                audio = load_audio(item.path).numpy()[: total - written]
                handle.write(audio)
                written += len(audio)
                if written >= total:
                    break


def _predict_process(model: Path, audio: Path, out: Path) -> dict[str, Any]:
    """``sermodels predict`` in a fresh process (1 thread): wall time, × real time and the peak resident memory of
    that process alone (``wait4``'s own usage, not the maximum over every child so far)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    command = [sys.executable, "-m", "sermodels.cli", "predict", "--model", str(model), str(audio), "--out", str(out),
               "--no-progress"]  # fmt: skip
    child = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}")
    wall = time.perf_counter() - started
    peak = usage.ru_maxrss
    rows = sum(1 for _ in out.open()) - 1
    seconds = sf.info(audio).duration
    return {
        "seconds": round(seconds, 1),
        "wall_seconds": round(wall, 1),
        "x_realtime": round(seconds / wall, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "trace_rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache", default=None, help="session cache (default ~/.cache/sermodels/sessions)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="end_to_end: which runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-blstm", action="store_true", help="skip the LLD BLSTM rows (quick runs)")
    args = parser.parse_args(argv)
    runs = {name: RUNS[name] for name in args.runs}
    data = session_data(args.cache, args.data)
    for part in args.parts:
        started = time.perf_counter()
        if part == "end_to_end":
            result = end_to_end(data, runs)
        elif part == "handcrafted":
            result = handcrafted(data, blstm=not args.no_blstm)
        elif part == "lag":
            result = {"lag_seconds": LAG_SECONDS, **handcrafted(data, lag=LAG_SECONDS, blstm=False)}
        else:
            result = speed(runs, data, args.device)
        with locked_results(args.results) as results:
            kept = results.get(part, {}) if part == "end_to_end" else {}  # runs not redone this time stay
            results[part] = {**kept, **result, "wall_seconds": round(time.perf_counter() - started, 1)}
            results["paper"] = PAPER
            results["task"] = {"sessions": {p: len(v) for p, v in partitions(data).items()},
                               "config": data.session_config.to_json()}  # fmt: skip
            results["environment"] = environment()
        log(f"{part} done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
