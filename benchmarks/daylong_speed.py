"""Speed and peak memory of ``sermodels daylong`` on synthetic long recordings (sermodels.data.longform).

For each requested length (hours) a recording is built once from the test speakers of the corpora given (babble
from their train speakers; gaps 0.3-30 s; silence / pink / babble scenes at 0-20 dB SNR; level changes), cached
under ``--workdir``, and the whole command ``sermodels daylong`` runs on it in a fresh subprocess for each voice
detector: decoding, voice activity, segmentation, scoring of every segment with ``--model``, and every output. The
entry records wall time, × real time (recording seconds / wall seconds), the peak resident memory of the subprocess
(``ru_maxrss`` of the process itself: Python, torch and the model included), the speech found against the
manifest's, and the machine. Results merge into ``benchmarks/results/daylong_speed.json`` (atomically) under
``<hours>h/<vad>/<model>``; an entry is rerun only with ``--force``. Scoring with ``logmel_svm.emodb`` (no
convolutions) beside the default model separates the pipeline's memory from a CNN's per-input-shape kernel caches.

    python benchmarks/daylong_speed.py --hours 1 16 --vad energy silero [--model mobilenetv2_adapters.av]
        [--data ../shared/data] [--corpora emodb ravdess emovo urdu] [--workdir runs/bench/daylong] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import environment, locked_results  # noqa: E402  (benchmarks/models.py)

from sermodels.data.longform import LongformConfig, build_longform, read_manifest, test_speaker_items  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "daylong_speed.json"
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
SEED = 0


def build(hours: float, roots: dict[str, Path], workdir: Path) -> tuple[Path, float]:
    """The cached recording of ``hours`` (built on first use) and its speech seconds in the manifest."""
    audio = workdir / f"longform_{hours:g}h.flac"
    manifest = audio.with_suffix(".csv")
    if not (audio.is_file() and manifest.is_file()):
        workdir.mkdir(parents=True, exist_ok=True)
        items, babble = test_speaker_items(roots), test_speaker_items(roots, "train")
        config = LongformConfig(duration=hours * 3600.0, seed=SEED)
        build_longform(items, audio, config, babble=babble, manifest=manifest)
    speech = sum(p.end - p.start for p in read_manifest(manifest))
    return audio, speech


# Runs the CLI in a fresh interpreter and reports that process's own peak resident memory at the end.
LAUNCHER = (
    "import resource, sys\n"
    "from sermodels.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run(audio: Path, vad: str, model: str, threads: int, out: Path) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-c", LAUNCHER, "daylong", str(audio), "--out", str(out), "--vad", vad]
    command += ["--model", model, "--no-progress", "--restart"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB")))
    summary = json.loads((out / audio.stem / "summary.json").read_text())
    precision, recall = frame_agreement(out / audio.stem / "segments.csv", audio.with_suffix(".csv"), summary)
    return {
        "vad_precision": precision,
        "vad_recall": recall,
        "wall_s": round(wall, 2),
        "x_real_time": round(summary["duration_s"] / wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),  # the whole process: Python, torch, the model, the detector
        "segments": summary["segments"],
        "speech_found_s": summary["speech_s"],
    }


def frame_agreement(segments: Path, manifest: Path, summary: dict[str, Any]) -> tuple[float, float]:
    """Precision and recall of the segments against the manifest's utterances, on a 10 ms grid. Babble scenes are
    speech of other talkers: a detector finds them too, which lowers precision by design of the recording."""
    frames = int(summary["duration_s"] * 100) + 1
    truth, found = np.zeros(frames, bool), np.zeros(frames, bool)
    for p in read_manifest(manifest):
        truth[int(p.start * 100) : int(np.ceil(p.end * 100))] = True
    with open(segments, newline="") as handle:
        for row in csv.DictReader(handle):
            found[int(float(row["start"]) * 100) : int(np.ceil(float(row["end"]) * 100))] = True
    hits = (truth & found).sum()
    return round(float(hits / max(found.sum(), 1)), 3), round(float(hits / max(truth.sum(), 1)), 3)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, nargs="+", default=[1.0])
    p.add_argument("--vad", nargs="+", default=["energy", "silero"])
    p.add_argument("--model", default="mobilenetv2_adapters.av")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--corpora", nargs="+", default=list(FOLDERS))
    p.add_argument("--workdir", default=str(REPO / "runs" / "bench" / "daylong"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    roots = {c: Path(args.data) / FOLDERS[c] for c in args.corpora}
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"entries": {}}
    for hours in args.hours:
        audio, speech = build(hours, roots, Path(args.workdir))
        for vad in args.vad:
            key = f"{hours:g}h/{vad}/{args.model}"
            if key in results["entries"] and not args.force:
                print(f"{key}: kept (use --force to rerun)", file=sys.stderr)
                continue
            entry = run(audio, vad, args.model, args.threads, Path(args.workdir) / f"out_{vad}")
            entry |= {"hours": hours, "vad": vad, "model": args.model, "speech_manifest_s": round(speech, 1)}
            entry |= {"threads": args.threads, "corpora": args.corpora, "environment": environment()}
            with locked_results(results_path) as results:  # lanes for other detectors may have written meanwhile
                results.setdefault("entries", {})[key] = entry
                results["protocol"] = __doc__.split("\n\n")[0]
            print(f"{key}: {entry['x_real_time']}x real time, peak {entry['peak_rss_mb']} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
