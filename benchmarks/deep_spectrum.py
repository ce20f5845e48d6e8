"""Deep Spectrum (EmoNet paper §4.2) on the four corpora: what the ImageNet weights buy, and what rendering the
spectrogram plots in torch saves over drawing them with matplotlib.

Measured in one run, every number written to ``benchmarks/results/deep_spectrum.json``:

1. **Accuracy.** Features of whole files (no windowing), 128-band mel plots in the magma colour map resized to
   224 x 224 (§4.2), for three extractors:

   - ``mobilenetv2_100.imagenet``: timm's MobileNetV2 with torchvision's ImageNet weights, converted offline from the
     int8 TorchScript file (:func:`sermodels.convert.convert_mobilenet_v2_int8`, into ``runs/weights/`` if missing),
     pooled pre-logits features (1280-d);
   - ``mobilenetv2_100.random``: the same network, random initialisation (seed 0): what the weights buy;
   - ``vgg16.random``: the paper's network and layer (fc7, 4096-d), random initialisation (seed 0); its ImageNet
     weights cannot be had offline here.

   Each corpus is extracted once per extractor (bf16 autocast, cached in ``runs/cache/deep_spectrum``) and used for
   the fixed split (linear SVM, C on dev from 1 down to 1e-9, refit on train + dev: §4.1,
   :func:`sermodels.classical.svm.run_fixed`) and, for EMO-DB, leave-one-speaker-out
   (:func:`sermodels.classical.svm.run_loso`). Test predictions are kept, so McNemar's test compares every extractor
   with the ImageNet one on the same test files. The paper's EMO-DB number (Table 3) is quoted as an anchor.
2. **Speed** on the same EMO-DB files, after a warm-up, best (and median) of the repeats, ``--threads`` torch
   threads: the image path (decoded waveforms -> normalised backbone input) as the torch renderer
   (:class:`~sermodels.features.spectrogram_image.SpectrogramImage`, batched) against the plotting round trip
   (:func:`~sermodels.features.spectrogram_image.matplotlib_image` per file on the same dB spectrogram, PNG decoded back
   to a float tensor), in images/s and × real time; and end-to-end extraction (decode + render + backbone) for both
   backbones in fp32 and bf16. With CUDA, the same on the GPU; without it ``"gpu": null`` and the reason.

Finished corpora are kept in the JSON with the settings they ran under and skipped when rerun with the same ones
(features come from the cache), so an interrupted run resumes.

    python benchmarks/deep_spectrum.py [--data ../shared/data] [--threads 2]
    python benchmarks/deep_spectrum.py --quick --out /tmp/ds.json      # a smoke run (tests)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when imported from tests
import emonet_speed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "deep_spectrum.json"
DEFAULT_CACHE = REPO / "runs" / "cache" / "deep_spectrum"
IMAGENET_WEIGHTS = REPO / "runs" / "weights" / "mobilenetv2_100_imagenet.safetensors"
INT8_SOURCE = REPO.parent / "shared" / "weights" / "mobilenet_v2_imagenet_int8_torchscript.pt"
SEED = 0  # random initialisation of the backbones without weights
PRECISION = "bf16"  # autocast of the extractor on CPU
# EmoNet paper §4.2: 128 mel filters, magma colour map, whole files, plots resized to 224 x 224.
IMAGE = {"kind": "mel", "n_mels": 128, "colormap": "magma", "size": [224, 224]}
IMAGENET = "mobilenetv2_100.imagenet"
EXTRACTORS: dict[str, dict[str, Any]] = {
    IMAGENET: {
        "backbone": "mobilenetv2_100",
        "layer": "pre_logits",
        "weights": "imagenet",
        "description": "MobileNetV2 (timm mobilenetv2_100), torchvision's ImageNet weights, pooled pre-logits",
    },
    "mobilenetv2_100.random": {
        "backbone": "mobilenetv2_100",
        "layer": "pre_logits",
        "weights": "random",
        "description": "the same MobileNetV2, random initialisation (seed 0)",
    },
    "vgg16.random": {
        "backbone": "vgg16",
        "layer": "fc7",
        "weights": "random",
        "description": "VGG16 (timm vgg16) fc7, random initialisation (seed 0)",
    },
}
NOT_OFFLINE = (
    "VGG16's ImageNet weights (the paper's extractor) cannot be obtained offline on this machine; the only ImageNet "
    "CNN available is torchvision's int8 MobileNetV2 (../shared/weights), so vgg16 runs with random weights: the "
    "paper's network and layer without its pretraining."
)
# Published number we compare with; quoted, not measured here. EmoNet paper Table 3, "DS" columns, EMO-DB row
# (chance 14.3, DS devel 52.5, test 61.3).
ANCHORS = [
    {
        "corpus": "emodb",
        "protocol": "emonet_split",
        "system": "Deep Spectrum (VGG16 ImageNet fc7, magma mel plots) + linear SVM",
        "uar": 0.613,
        "dev_uar": 0.525,
        "source": "Gerczuk et al., EmoNet, IEEE TAC, Table 3, DS test column (EMO-DB test partition of EmoSet)",
    }
]

FULL = {
    "corpora": list(FOLDERS),
    "loso": True,
    "per_class": None,  # every file
    "extract_batch": 16,
    "speed_files": 32,
    "image_batch": 16,
    "repeats": 3,
}
QUICK = {
    "corpora": ["emodb"],
    "loso": False,
    "per_class": {"train": 1, "dev": 1, "test": 1},  # files per class and partition
    "extract_batch": 8,
    "speed_files": 2,
    "image_batch": 2,
    "repeats": 1,
}


# ------------------------------------------------------------------------------------------------ set-up


def machine_info() -> dict[str, Any]:
    """emonet_speed's machine description plus the libraries this benchmark depends on."""
    import sklearn
    import timm

    import sermodels

    info = emonet_speed.machine_info() | {
        "timm": timm.__version__,
        "scikit_learn": sklearn.__version__,
        "sermodels": sermodels.__version__,
    }
    if hasattr(os, "nice"):
        info["niceness"] = os.nice(0)  # a niced run under load measures the other processes as much as this one
    return info


def imagenet_weights(path: Path) -> dict[str, Any]:
    """The converted MobileNetV2 weights (converted from the int8 TorchScript file first if missing) and their
    provenance: sha256 and the converter's safetensors metadata."""
    from safetensors import safe_open

    from sermodels._io import sha256_of

    if not path.is_file():
        if not INT8_SOURCE.is_file():
            raise SystemExit(f"{path} is missing and so is the int8 source {INT8_SOURCE} to convert it from")
        from sermodels.convert import convert_mobilenet_v2_int8

        print(f"[deep spectrum] converting {INT8_SOURCE.name} -> {path}", flush=True)
        convert_mobilenet_v2_int8(INT8_SOURCE, path)
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != "format"}
    shown = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return {"file": shown, "sha256": sha256_of(path), **meta}


@functools.cache
def build_extractor(name: str, weights: Path):
    """The extractor ``name`` of :data:`EXTRACTORS`, in eval mode; random weights are drawn with seed 0. Built once
    per run (the accuracy and speed parts share it)."""
    from sermodels.features.deepspectrum import DeepSpectrum

    spec = EXTRACTORS[name]
    torch.manual_seed(SEED)
    pretrained = str(weights) if spec["weights"] == "imagenet" else False
    return DeepSpectrum(spec["backbone"], spec["layer"], pretrained=pretrained, image=IMAGE).eval()


def extractor_settings(name: str, extractor, weights: dict[str, Any] | None, settings: dict) -> dict[str, Any]:
    """What a stored result must match to be reused (its features come from the cache under the same key)."""
    import timm

    source = {"sha256": weights["sha256"]} if EXTRACTORS[name]["weights"] == "imagenet" else {"seed": SEED}
    return {
        **extractor.config(),
        "weights": EXTRACTORS[name]["weights"],
        **source,
        "timm": timm.__version__,
        "precision": PRECISION,
        "per_class": settings["per_class"],
    }


def partitions(corpus, per_class: dict[str, int] | None) -> tuple[list, dict[str, list]]:
    """The fixed split's items, or (smoke runs) the first ``per_class[part]`` files of each class per partition."""
    split = corpus.split("fixed")
    if per_class is not None:
        split = {part: _first_per_class(items, per_class[part]) for part, items in split.items()}
    return [it for part in ("train", "dev", "test") for it in split[part]], split


def _first_per_class(items: list, count: int) -> list:
    taken: dict[str, int] = {}
    chosen = []
    for item in items:
        if taken.get(item.label, 0) < count:
            taken[item.label] = taken.get(item.label, 0) + 1
            chosen.append(item)
    return chosen


# ------------------------------------------------------------------------------------------------ accuracy


def corpus_facts(corpus, split: dict[str, list]) -> dict[str, Any]:
    return {
        "n": {part: len(items) for part, items in split.items()},
        "classes": len(corpus.classes),
        "chance_uar": 1.0 / len(corpus.classes),
        "speakers": {part: sorted({str(it.speaker) for it in items}) for part, items in split.items()},
    }


def test_predictions(features: np.ndarray, items: list, split: dict[str, list], params: dict) -> dict[str, Any]:
    """The test predictions of :func:`run_fixed`'s final model: the same pipeline (z-score + LinearSVC with a fixed
    random_state) refit on train + dev with the chosen C, so the same predictions, as class indices."""
    from sermodels.classical.svm import make_svm

    row = {id(it): i for i, it in enumerate(items)}
    fit_rows = [row[id(it)] for part in ("train", "dev") for it in split[part]]
    test_rows = [row[id(it)] for it in split["test"]]
    y_fit = np.array([items[i].label for i in fit_rows])
    pipe = make_svm("linear", **params).fit(features[fit_rows], y_fit)
    labels = [str(c) for c in pipe.classes_]
    predicted = pipe.predict(features[test_rows])
    return {
        "labels": labels,
        "true": [labels.index(it.label) for it in split["test"]],
        "predicted": [labels.index(p) for p in predicted],
        "ids": [it.id for it in split["test"]],
    }


def extract(extractor, items: list, settings: dict, cache: Path | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of ``items`` (one row each) and how they were obtained (seconds; from the cache or computed)."""
    from sermodels.classical.deep_spectrum import extract_features

    before = set(cache.glob("*.npy")) if cache is not None and cache.is_dir() else set()
    start = time.perf_counter()
    feats = extract_features(
        extractor,
        [it.path for it in items],
        batch_size=settings["extract_batch"],
        precision=PRECISION,
        cache_dir=cache,
    )
    seconds = time.perf_counter() - start
    computed = cache is None or bool(set(cache.glob("*.npy")) - before)
    if not np.isfinite(feats).all():
        raise SystemExit(f"non-finite Deep Spectrum features from {items[0].path} ...: check the extractor")
    return feats, {"dim": int(feats.shape[1]), "seconds": round(seconds, 2), "computed": computed}


def accuracy(result: dict, corpora: dict, settings: dict, names: list[str], cache: Path | None, save) -> None:
    """Fixed split (every corpus) and EMO-DB LOSO for every extractor; each finished step is saved at once."""
    from sermodels.classical.svm import run_fixed, run_loso

    weights = imagenet_weights(IMAGENET_WEIGHTS) if IMAGENET in names else None
    section = result.setdefault("extractors", {})
    for name in names:
        extractor = build_extractor(name, IMAGENET_WEIGHTS)
        key = extractor_settings(name, extractor, weights, settings)
        entry = section.get(name, {})
        if entry.get("settings") != key:
            entry = {}  # run under other settings (or never): start again
        entry.update(
            {
                "settings": key,
                **EXTRACTORS[name],
                "weights_provenance": weights if EXTRACTORS[name]["weights"] == "imagenet" else f"seed {SEED}",
                "dim": extractor.dim,
                "parameters": sum(p.numel() for p in extractor.backbone.parameters()),
            }
        )
        section[name] = entry
        for corpus_name, (items, split) in corpora.items():
            fixed = entry.setdefault("fixed", {})
            wants_loso = settings["loso"] and corpus_name == "emodb"
            if corpus_name in fixed and (not wants_loso or "emodb" in entry.get("loso", {})):
                continue
            print(f"[deep spectrum] {name} {corpus_name}: features of {len(items)} files", flush=True)
            feats, how = extract(extractor, items, settings, cache)
            start = time.perf_counter()
            res = run_fixed("linear", feats, items, split)
            res["predictions"] = test_predictions(feats, items, split, res["params"])
            check = _uar(res["predictions"])
            if abs(check - res["uar"]) > 1e-9:
                raise SystemExit(f"{name} {corpus_name}: refit test UAR {check} != run_fixed's {res['uar']}")
            fixed[corpus_name] = {**res, "features": how, "svm_seconds": round(time.perf_counter() - start, 2)}
            print(f"[deep spectrum] {name} {corpus_name}: fixed test UAR {res['uar']:.4f}", flush=True)
            save()
            if wants_loso:
                start = time.perf_counter()
                loso = run_loso("linear", feats, items)
                entry.setdefault("loso", {})["emodb"] = {**loso, "seconds": round(time.perf_counter() - start, 2)}
                print(f"[deep spectrum] {name} emodb: LOSO UAR {loso['uar']:.4f}", flush=True)
                save()


def _uar(predictions: dict[str, Any]) -> float:
    from sermodels.metrics import uar

    return float(uar(predictions["true"], predictions["predicted"], num_classes=len(predictions["labels"])))


def compare(result: dict) -> None:
    """McNemar's test of every extractor against the ImageNet one, per corpus, on the same test files."""
    from sermodels.metrics import mcnemar

    section = result.get("extractors", {})
    reference = section.get(IMAGENET, {}).get("fixed", {})
    for name, entry in section.items():
        for corpus, run in entry.get("fixed", {}).items():
            run.pop("mcnemar_vs_imagenet", None)
            ref = reference.get(corpus)
            if name == IMAGENET or ref is None:
                continue
            a, b = ref["predictions"], run["predictions"]
            if a["ids"] != b["ids"] or a["labels"] != b["labels"] or a["true"] != b["true"]:
                continue
            test = mcnemar(a["true"], a["predicted"], b["predicted"])
            higher = run["uar"] > ref["uar"]
            run["mcnemar_vs_imagenet"] = {**test, "significant": test["p_value"] < 0.05, "uar_higher": higher}


# ------------------------------------------------------------------------------------------------ speed


def timed(step: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, Any]:
    """Wall seconds of ``repeats`` calls after one warm-up call: all of them, the best and the median."""
    times = emonet_speed.timed_runs(step, device, repeats)
    return {"wall_seconds": times, "best_seconds": min(times), "median_seconds": statistics.median(times)}


def rates(timing: dict[str, Any], files: int, audio_seconds: float) -> dict[str, Any]:
    """images (files) per second and × real time (audio seconds / wall seconds) at the best and the median time."""
    best, median = timing["best_seconds"], timing["median_seconds"]
    return {
        **timing,
        "files": files,
        "audio_seconds": audio_seconds,
        "images_per_s": files / best,
        "x_realtime": audio_seconds / best,
        "x_realtime_median": audio_seconds / median,
    }


def torch_images(extractor, waves: list[torch.Tensor], batch: int, device: torch.device) -> torch.Tensor:
    """Normalised backbone inputs ``(N, 3, H, W)`` from the torch renderer, ``batch`` padded clips at a time."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(waves), batch):
            chunk = waves[start : start + batch]
            lengths = torch.tensor([len(w) for w in chunk], device=device)
            padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            out.append(extractor.normalise(extractor.images(padded, lengths)))
    return torch.cat(out)


def matplotlib_images(extractor, waves: list[torch.Tensor]) -> torch.Tensor:
    """The plotting round trip per file: the same dB spectrogram drawn by matplotlib, saved as PNG, decoded, made a
    float tensor in [0, 1] and normalised for the backbone."""
    from sermodels.features.spectrogram_image import matplotlib_image

    images = extractor.images
    out = []
    with torch.inference_mode():
        for wave in waves:
            db, valid = images.decibels(wave[None])
            pixels = matplotlib_image(db[0, :, : int(valid[0])].numpy(), images.colormap, images.size)
            rgb = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255.0)
            out.append(extractor.normalise(rgb[None]))
    return torch.cat(out)


def image_path(extractor, waves: list[torch.Tensor], audio_seconds: float, settings: dict) -> dict[str, Any]:
    cpu = torch.device("cpu")
    batch, repeats = settings["image_batch"], settings["repeats"]
    ours = rates(timed(lambda: torch_images(extractor, waves, batch, cpu), cpu, repeats), len(waves), audio_seconds)
    theirs = rates(timed(lambda: matplotlib_images(extractor, waves), cpu, repeats), len(waves), audio_seconds)
    # Both paths end in the same normalised tensors; back to 8-bit pixels, how many agree exactly?
    mean, std = extractor.mean, extractor.std
    a = (torch_images(extractor, waves, batch, cpu) * std + mean).mul(255).round()
    b = (matplotlib_images(extractor, waves) * std + mean).mul(255).round()
    return {
        "torch": {**ours, "batch": batch, "what": "SpectrogramImage on padded batches + normalise"},
        "matplotlib": {**theirs, "what": "per file: dB spectrogram, matplotlib_image (PNG round trip), normalise"},
        "torch_over_matplotlib": ours["x_realtime"] / theirs["x_realtime"],
        "pixels_identical": float((a == b).all(dim=1).float().mean()),
    }


def end_to_end(
    extractors: dict, paths: list[str], audio_seconds: float, settings: dict, device: torch.device, precisions: tuple
) -> list[dict[str, Any]]:
    """Decode + render + backbone (``extract_features``, no cache) per backbone and precision."""
    from sermodels.classical.deep_spectrum import extract_features

    entries = []
    for name, extractor in extractors.items():
        extractor.to(device)
        feats = {}
        for precision in precisions:

            def run(extractor=extractor, precision=precision, feats=feats):
                kwargs = {"batch_size": settings["image_batch"], "device": device, "precision": precision}
                feats[precision] = extract_features(extractor, paths, **kwargs)

            timing = rates(timed(run, device, settings["repeats"]), len(paths), audio_seconds)
            where = {"extractor": name, "backbone": EXTRACTORS[name]["backbone"], "device": device.type}
            entries.append({**where, "precision": precision, "batch": settings["image_batch"], **timing})
        for entry in entries[-len(precisions) :]:
            entry["cosine_to_fp32"] = _cosine(feats[entry["precision"]], feats["fp32"])
        extractor.to("cpu")
    return entries


def _cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Per-file cosine similarity of two feature matrices: min and mean."""
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def speed(data: Path, settings: dict, no_gpu: bool) -> dict[str, Any]:
    """Image path and end-to-end rates on the first ``speed_files`` EMO-DB files (sorted by path)."""
    from sermodels.audio import load_audio
    from sermodels.data import load_corpus

    corpus = load_corpus("emodb", data / FOLDERS["emodb"])
    paths = sorted(it.path for it in corpus.items)[: settings["speed_files"]]
    waves = [load_audio(p, 16000) for p in paths]
    audio_seconds = sum(len(w) for w in waves) / 16000
    mobilenet = build_extractor(IMAGENET, IMAGENET_WEIGHTS)
    extractors = {IMAGENET: mobilenet, "vgg16.random": build_extractor("vgg16.random", IMAGENET_WEIGHTS)}
    print(f"[deep spectrum] speed on {len(paths)} EMO-DB files ({audio_seconds:.1f} s of audio)", flush=True)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": load,
        "files": [str(Path(p).name) for p in paths],
        "audio_seconds": audio_seconds,
        "threads": torch.get_num_threads(),
        "repeats": settings["repeats"],
        "timing": "one warm-up call, then the repeats; x_realtime and images_per_s at the best time",
        "image_path": image_path(mobilenet, waves, audio_seconds, settings),
        "end_to_end": end_to_end(extractors, paths, audio_seconds, settings, torch.device("cpu"), ("fp32", "bf16")),
    }
    if torch.cuda.is_available() and not no_gpu:
        cuda = torch.device("cuda")
        gpu_waves = [w.to(cuda) for w in waves]
        mobilenet.to(cuda)
        step = lambda: torch_images(mobilenet, gpu_waves, settings["image_batch"], cuda)  # noqa: E731
        result["gpu"] = {
            "device": torch.cuda.get_device_name(0),
            "image_path_torch": rates(timed(step, cuda, settings["repeats"]), len(paths), audio_seconds),
            "end_to_end": end_to_end(extractors, paths, audio_seconds, settings, cuda, ("fp32", "bf16", "fp16")),
        }
        mobilenet.to("cpu")
        result["gpu_reason"] = None
    else:
        result["gpu"] = None
        result["gpu_reason"] = "disabled with --no-gpu" if no_gpu else "CUDA is not available on this machine"
    result["load_average_at_end"] = list(os.getloadavg()) if load is not None else None
    return result


# ------------------------------------------------------------------------------------------------ main


def summary(result: dict) -> str:
    lines = []
    for name, entry in result.get("extractors", {}).items():
        fixed = " ".join(f"{c} {100 * r['uar']:.1f}" for c, r in entry.get("fixed", {}).items())
        loso = entry.get("loso", {}).get("emodb")
        lines.append(f"{name:24s} fixed: {fixed}" + (f"; EMO-DB LOSO {100 * loso['uar']:.1f}" if loso else ""))
    sp = result.get("speed")
    if sp:
        img = sp["image_path"]
        lines.append(
            f"images: torch {img['torch']['x_realtime']:.0f}x real time, matplotlib "
            f"{img['matplotlib']['x_realtime']:.0f}x ({img['torch_over_matplotlib']:.1f}x faster)"
        )
        for e in sp["end_to_end"]:
            lines.append(f"end to end {e['backbone']:16s} {e['precision']}: {e['x_realtime']:.0f}x real time")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="EMO-DB only, a few files, no LOSO (a smoke run)")
    parser.add_argument("--out", default=None, help=f"JSON path (default: {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared corpora folder")
    parser.add_argument("--cache", default=None, help="feature cache (default runs/cache/deep_spectrum; --quick: none)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--extractors", nargs="+", choices=list(EXTRACTORS), default=list(EXTRACTORS))
    parser.add_argument("--parts", nargs="+", choices=("accuracy", "speed"), default=["accuracy", "speed"])
    parser.add_argument("--no-gpu", action="store_true", help="skip CUDA even when it is available")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else DEFAULT_OUT
    if args.quick and out.resolve() == DEFAULT_OUT.resolve():
        parser.error("--quick numbers are not the benchmark: give --out (benchmarks/results keeps the full run)")
    torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL
    cache = Path(args.cache) if args.cache else (None if args.quick else DEFAULT_CACHE)
    data = Path(args.data)
    for name in settings["corpora"]:
        if not (data / FOLDERS[name]).is_dir():
            raise SystemExit(f"corpus folder {data / FOLDERS[name]} not found: pass --data (the shared data folder)")

    from sermodels._io import atomic_write_text
    from sermodels.checkpoint import read_json_object
    from sermodels.data import load_corpus

    result = read_json_object(out) if out.is_file() else {}
    if result.get("quick", args.quick) != args.quick:
        result = {}  # never mix a smoke run with the benchmark
    result.update(
        {
            "benchmark": "deep_spectrum",
            "quick": args.quick,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine_info(),
            "settings": settings,
            "protocol": {
                "image": IMAGE | {"whole_files": True},
                "precision": PRECISION,
                "precision_note": "torch.autocast(bfloat16) around the backbone on CPU; images rendered in float32",
                "svm": "z-score + class-balanced LinearSVC; fixed: C on dev from 1 to 1e-9, refit on train + dev; "
                "LOSO: C by speaker-grouped inner CV on the training speakers (sermodels.classical.svm)",
                "seed": SEED,
                "cache": str(cache) if cache else None,
            },
            "not_available": {"vgg16_imagenet_weights": NOT_OFFLINE},
            "anchors": ANCHORS,
        }
    )
    started = time.perf_counter()

    def save() -> None:
        compare(result)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=1, sort_keys=True) + "\n")

    if "accuracy" in args.parts:
        corpora, facts = {}, {}
        for name in settings["corpora"]:
            corpus = load_corpus(name, data / FOLDERS[name])
            items, split = partitions(corpus, settings["per_class"])
            corpora[name] = (items, split)
            facts[name] = corpus_facts(corpus, split)
        result["corpora"] = facts
        accuracy(result, corpora, settings, args.extractors, cache, save)
    if "speed" in args.parts:
        result["speed"] = speed(data, settings, args.no_gpu)
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    save()
    print(summary(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
