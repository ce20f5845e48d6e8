"""Does decoding dominate an epoch? SERDataModule epochs with a cold versus a warm audio cache, side by side.

The corpus is EMOVO as its official release ships it, 48 kHz stereo WAV (made here from the shared 16 kHz FLAC copy
in a temporary folder), so a cold epoch pays for WAV decoding, downmixing and soxr resampling to 16 kHz. Measured
in one run: a cold epoch, a warm epoch from the in-memory cache, a fresh DataModule reading the on-disk cache, and,
for scale, the log-mel front-end of the baseline model over the same batches. Writes
``benchmarks/results/datamodule_cache.json``.

    python benchmarks/datamodule_cache.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from sermodels.data import SERDataModule, load_corpus
from sermodels.features import LogMelFunctionals

REPO = Path(__file__).resolve().parents[1]


def official_layout_copy(src_root: Path, dst_root: Path) -> float:
    """Write EMOVO as 48 kHz stereo WAV in its speaker folders; return the audio's duration in seconds."""
    total = 0.0
    for item in load_corpus("emovo", src_root).items:
        wave, rate = sf.read(item.path, dtype="float32")
        up = soxr.resample(wave, rate, 48000)
        out = dst_root / item.speaker / f"{item.id}.wav"
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, np.stack([up, up], axis=1), 48000, subtype="PCM_16")
        total += len(wave) / rate
    return total


def epoch_seconds(dm: SERDataModule, compute=None) -> tuple[float, int]:
    start, batches = time.perf_counter(), 0
    for batch in dm.train_dataloader():
        if compute is not None:
            compute(batch)
        batches += 1
    return time.perf_counter() - start, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "datamodule_cache.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "EMOVO", Path(tmp) / "cache"
        hours = official_layout_copy(Path(args.data) / "EMOVO", root) / 3600

        def module(cache_dir=None) -> SERDataModule:
            dm = SERDataModule(
                corpora=["emovo"],
                roots={"emovo": str(root)},
                batch_size=32,
                max_duration=5.0,
                cache_dir=cache_dir,
                seed=0,
            )
            dm.setup("fit")
            return dm

        dm = module(str(cache))
        cold, batches = epoch_seconds(dm)
        warm, _ = epoch_seconds(dm)
        from_disk, _ = epoch_seconds(module(str(cache)))
        frontend = LogMelFunctionals().eval()
        with torch.inference_mode():
            warm_with_frontend, _ = epoch_seconds(dm, lambda b: frontend(b["waveforms"], b["lengths"]))
    result = {
        "corpus": "EMOVO train partition as 48 kHz stereo WAV",
        "corpus_hours_all_partitions": round(hours, 3),
        "batches_per_epoch": batches,
        "epoch_s": {
            "cold_decode_resample": round(cold, 3),
            "warm_memory": round(warm, 3),
            "disk_cache_fresh_process": round(from_disk, 3),
            "warm_plus_logmel_frontend": round(warm_with_frontend, 3),
        },
        "speedup_warm_vs_cold": round(cold / warm, 1),
        "speedup_disk_vs_cold": round(cold / from_disk, 1),
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
