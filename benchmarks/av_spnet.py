"""AV-SpNET (Lu, Li, Lee, AVEC 2018): initialisations of a frozen CNN front-end compared as in its Table 3, leaving
one corpus out.

For each held-out (target) corpus, the front-end is pre-trained on the audio of the other three corpora with proxy
arousal labels computed from pitch and intensity (:mod:`sermodels.data.proxy`; the corpora's emotion labels are
discarded), in the settings of Table 2:

- ``R``: a random encoder (seed 0), frozen (the input statistics of the pre-training audio);
- ``W_a``: proxy labels only; ``AE``: reconstruction only; ``W_AE_a``: AE, then proxy labels;
- ``AV-SpNET_a``: the joint loss, α = 0.5 (Eq. (7); α is not reported, and was not tuned here).

The recognition network (FC 1024 → 512 → 128 → dropout → softmax, §2.3) is trained on the frozen encoder's segment
features of the target corpus's own categories, speaker-independent 5-fold cross-validation (speaker-grouped folds;
each fold's train+dev speakers train, its test speakers test), with 25 / 50 / 75 / 100 % of each fold's training
utterances (nested, stratified by class, drawn per seed), several seeds (head initialisation, batch order and the
fraction draw); utterance decision by majority vote of the segments (§2.3); UAR per fold, averaged over folds, then
mean ± sd over seeds. ``R_trainable`` (``--trainable-r``) trains the encoder with the head from random weights.

Parts (each merges its key into ``benchmarks/results/av_spnet.json``):

- ``proxy``: the proxy tables and how well the proxy labels agree with each corpus's own arousal (a diagnostic only);
- ``pretrain``: the pre-trainings per held-out corpus (``runs/av_spnet/loco_<corpus>/<row>``; a finished run is
  kept and not redone), with the proxy UAR and reconstruction error on held-out pre-training speakers;
- ``downstream``: the Table 3 analogue, and paired t-tests (AV-SpNET_a vs R, folds × seeds) per corpus and fraction.

    python benchmarks/av_spnet.py [--parts proxy pretrain downstream] [--targets emodb ...] [--steps N]
        [--seeds 0 1 2] [--trainable-r]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import environment, locked_results  # noqa: E402  (benchmarks/models.py)

from sermodels.audio import load_audio  # noqa: E402
from sermodels.checkpoint import load_folder  # noqa: E402
from sermodels.data import load_corpus  # noqa: E402
from sermodels.data.proxy import proxy_agreement, proxy_table  # noqa: E402
from sermodels.data.splits import grouped_folds  # noqa: E402
from sermodels.metrics import uar  # noqa: E402
from sermodels.training.av_spnet import (  # noqa: E402
    fit_segment_head,
    fit_whole_network,
    nested_fractions,
    network_vote,
    pretrain,
    segment_features,
    vote,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "av_spnet.json"
RUNS = REPO / "runs" / "av_spnet"
CORPORA = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
PARTS = ("proxy", "pretrain", "downstream", "trainable")
DEFAULT_PARTS = PARTS[:3]
#: R with a trainable encoder trains the whole network per run (~30× the cost of a head on cached features): on the
#: CPU one seed and two fractions; ``--trainable-seeds``/``--trainable-fractions`` widen it (a GPU run).
TRAINABLE_SEEDS = (0,)
TRAINABLE_FRACTIONS = (0.25, 1.0)
ROWS = ("R", "W_a", "AE", "W_AE_a", "AV-SpNET_a")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
FOLDS = 5
SAMPLE_RATE = 16000  # every AV-SpNET front-end's (§2.2.1)
PRETRAIN_STEPS = 100  # CPU default; the paper trains on 62 288 segments of 14 h (Table 1) for an unstated time
#: Table 3 of the paper (UAR, IEMOCAP; 4 emotion categories and binary arousal), quoted for comparison: IEMOCAP is
#: not one of our corpora, and its pre-training corpus (14 h of Chinese TV) is ~6 times our three corpora.
PAPER = {
    "source": "Lu, Li, Lee, AVEC 2018, Table 3 (../shared/papers/av_spnet_proxy_label_front_end.txt)",
    "fractions": list(FRACTIONS),
    "iemocap_4class": {
        "R": [0.386, 0.385, 0.407, 0.417],
        "W_a": [0.335, 0.329, 0.355, 0.372],
        "AE": [0.285, 0.350, 0.362, 0.361],
        "W_AE_a": [0.311, 0.347, 0.337, 0.349],
        "AV-SpNET_a": [0.387, 0.419, 0.430, 0.431],
    },
    "iemocap_arousal": {
        "R": [0.685, 0.696, 0.701, 0.712],
        "W_a": [0.665, 0.685, 0.686, 0.696],
        "AE": [0.636, 0.649, 0.660, 0.654],
        "W_AE_a": [0.633, 0.667, 0.678, 0.685],
        "AV-SpNET_a": [0.692, 0.700, 0.711, 0.711],
    },
}
PRETRAIN_ROWS = {  # row -> (objective, started from)
    "AE": ("autoencoder", None),
    "W_a": ("proxy", None),
    "AV-SpNET_a": ("av_spnet", None),
    "W_AE_a": ("proxy", "AE"),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def roots(data: Path) -> dict[str, Path]:
    return {name: data / folder for name, folder in CORPORA.items()}


def table_path(held_out: str | None) -> Path:
    return RUNS / "tables" / (f"without_{held_out}.csv" if held_out else "all.csv")


# ---------------------------------------------------------------------------------------------------- parts


def proxy_part(data: Path, targets: Sequence[str]) -> dict[str, Any]:
    """Proxy tables (one per held-out corpus, and all four) and their agreement with the corpora's arousal."""
    all_four = proxy_table(list(CORPORA), roots(data), table_path(None), cache=RUNS / "prosody.json")
    for held_out in targets:
        others = [c for c in CORPORA if c != held_out]
        proxy_table(others, roots(data), table_path(held_out), cache=RUNS / "prosody.json")
    return {"agreement": proxy_agreement(all_four)}


def pretrain_part(targets: Sequence[str], steps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for held_out in targets:
        results[held_out] = {}
        for row, (objective, start) in PRETRAIN_ROWS.items():
            folder = RUNS / f"loco_{held_out}" / row
            if not (folder / "pretraining.json").is_file():
                log(f"pre-training {row} without {held_out} ({steps} steps)")
                init = None if start is None else RUNS / f"loco_{held_out}" / start
                pretrain(table_path(held_out), folder, objective=objective, steps=steps, init_from=init)
            summary = json.loads((folder / "pretraining.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text()) if objective != "autoencoder" else {}
            proxy = metrics.get("proxy/test", {})
            results[held_out][row] = {
                "objective": objective,
                "init_from": start,
                "steps": summary["steps"],
                "wall_seconds": summary["wall_seconds"],
                "test_reconstruction_mse": round(summary["test_reconstruction_mse"], 4),
                "test_proxy_uar": None if not proxy else round(proxy["uar"], 4),
            }
    return results


def encoder(held_out: str, row: str):
    """The frozen front-end of a row: a pre-trained checkpoint, or (R) fresh weights of seed 0 with the input
    statistics of the pre-training audio (taken from the AE run, fitted on the same training audio)."""
    if row != "R":
        return load_folder(RUNS / f"loco_{held_out}" / row)
    trained = load_folder(RUNS / f"loco_{held_out}" / "AE")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = type(trained)(**trained.config())
    state = {k: v for k, v in trained.state_dict().items() if k in ("input_mean", "input_std", "statistics_fitted")}
    fresh.load_state_dict(state, strict=False)
    return fresh.eval()


def target_items(data: Path, target: str):
    corpus = load_corpus(target, data / CORPORA[target])
    items = sorted(corpus, key=lambda item: item.id)
    classes = list(corpus.classes)
    labels = np.array([classes.index(item.label) for item in items])
    return corpus, items, classes, labels


def folds_of(items, labels: np.ndarray, classes: list[str]) -> list[np.ndarray]:
    """Test-set masks of the speaker-grouped folds (train+dev of a fold is its training data)."""
    groups: dict[str, dict[str, int]] = {}
    for item, label in zip(items, labels):
        per = groups.setdefault(item.speaker, {})
        per[classes[label]] = per.get(classes[label], 0) + 1
    folds = grouped_folds(groups, FOLDS)
    speakers = np.array([item.speaker for item in items])
    return [np.isin(speakers, fold["test"]) for fold in folds]


def features_of(
    held_out: str, row: str, waveforms: Callable[[], list[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached conv features of every segment of the target's items (``runs/av_spnet/features``, keyed by the
    front-end's weights: a re-trained front-end is not read from an older cache)."""
    source = RUNS / f"loco_{held_out}" / ("AE" if row == "R" else row) / "model.safetensors"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    path = RUNS / "features" / f"{held_out}_{row}_{digest}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return torch.from_numpy(stored["features"].astype(np.float32)), torch.from_numpy(stored["owner"])
    features, owner = segment_features(encoder(held_out, row), waveforms())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=features.numpy().astype(np.float16), owner=owner.numpy())
    return features.half().float(), owner  # the same values as a later run reads from the cache


def decode(items) -> list[torch.Tensor]:
    return [torch.as_tensor(load_audio(item.path, SAMPLE_RATE)) for item in items]


def run_row(features, owner, labels, test_masks, seeds, classes: int) -> dict[str, Any]:
    """UAR per fraction: per seed the mean over folds, and every (seed, fold) value for paired tests."""
    per_fold: dict[float, list[list[float]]] = {f: [] for f in FRACTIONS}
    segment_labels = torch.from_numpy(labels)[owner]
    for seed in seeds:
        rows = {f: [] for f in FRACTIONS}
        for fold, test in enumerate(test_masks):
            train_items = np.flatnonzero(~test)
            test_items = np.flatnonzero(test)
            picks = nested_fractions(labels[train_items], FRACTIONS, seed * 100 + fold)
            test_rows = torch.from_numpy(np.isin(owner.numpy(), test_items))
            test_owner = torch.from_numpy(np.searchsorted(test_items, owner[test_rows].numpy()))
            for fraction in FRACTIONS:
                chosen = train_items[picks[fraction]]
                train_rows = torch.from_numpy(np.isin(owner.numpy(), chosen))
                head = fit_segment_head(features[train_rows], segment_labels[train_rows], classes, seed=seed)
                decided = vote(head, features[test_rows], test_owner, len(test_items))
                rows[fraction].append(float(uar(labels[test_items], decided, classes)))
        for fraction in FRACTIONS:
            per_fold[fraction].append(rows[fraction])
    return {
        str(f): {
            "mean": round(float(np.mean([np.mean(s) for s in per_fold[f]])), 4),
            "sd": round(float(np.std([np.mean(s) for s in per_fold[f]], ddof=1)), 4) if len(seeds) > 1 else None,
            "per_seed_fold": [[round(v, 4) for v in s] for s in per_fold[f]],
        }
        for f in FRACTIONS
    }


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Paired t-test of two rows per fraction over the folds (each fold's UAR averaged over the seeds first: the seeds
    share the folds, the front-end and its pre-training, so they are not independent samples): mean difference
    a − b and p (n = folds; uncorrected for the number of fractions and corpora)."""
    from scipy.stats import ttest_rel

    out = {}
    for fraction in a:
        if not isinstance(a[fraction], dict) or not isinstance(b.get(fraction), dict):
            continue  # wall_seconds, or a fraction the other row did not run
        x = np.mean(a[fraction]["per_seed_fold"], axis=0)
        y = np.mean(b[fraction]["per_seed_fold"], axis=0)
        test = ttest_rel(x, y)
        out[fraction] = {"difference": round(float(np.mean(x - y)), 4), "p": round(float(test.pvalue), 4),
                         "folds": len(x)}  # fmt: skip
    return out


def downstream_part(
    data: Path, targets: Sequence[str], seeds: Sequence[int], results_path: Path, rows: Sequence[str] = ROWS
) -> None:
    """The Table 3 analogue for ``rows`` of each target; rows measured earlier with the same seeds are kept, so
    processes running different rows side by side (one per core) fill one entry."""
    for target in targets:
        _, items, classes, labels = target_items(data, target)
        test_masks = folds_of(items, labels, classes)
        # decoded once per target, and only when a row's features are not cached (every front-end runs at 16 kHz)
        waveforms = functools.cache(functools.partial(decode, items))
        measured: dict[str, Any] = {}
        for row in rows:
            started = time.perf_counter()
            features, owner = features_of(target, row, waveforms)
            measured[row] = run_row(features, owner, labels, test_masks, seeds, len(classes))
            measured[row]["wall_seconds"] = round(time.perf_counter() - started, 1)
            log(f"{target} {row}: " + ", ".join(f"{f}: {measured[row][str(f)]['mean']:.3f}" for f in FRACTIONS))
        with locked_results(results_path) as results:
            earlier = results.setdefault("downstream", {}).get(target, {})
            kept = earlier.get("rows", {}) if earlier.get("seeds") == list(seeds) else {}
            kept = {row: value for row, value in kept.items() if row not in measured}
            if "R_trainable" in earlier.get("rows", {}):  # measured by the trainable part, which this one does not redo
                kept["R_trainable"] = earlier["rows"]["R_trainable"]
            merged = {row: ({**kept, **measured})[row] for row in (*ROWS, "R_trainable") if row in {**kept, **measured}}
            entry = {
                "seeds": list(seeds),
                "classes": classes,
                "utterances": len(items),
                "segments": int(len(owner)),
                "folds": [int(m.sum()) for m in test_masks],
                "rows": merged,
            }
            if {"R", "AV-SpNET_a"} <= set(merged):
                entry["av_spnet_vs_r"] = paired(_fractions(merged["AV-SpNET_a"]), _fractions(merged["R"]))
            results["downstream"][target] = entry


def trainable_part(
    data: Path, targets: Sequence[str], seeds: Sequence[int], fractions: Sequence[float], results_path: Path
) -> None:
    """Table 3's R with a trainable encoder: a fresh network (seed) with the pre-training audio's input statistics,
    its encoder and recognition head trained on the fold's segments; same folds and nested fractions as the frozen
    rows (a fraction's draw depends on the seed and fold only)."""
    for target in targets:
        started = time.perf_counter()
        _, items, classes, labels = target_items(data, target)
        test_masks = folds_of(items, labels, classes)
        template = encoder(target, "R")
        with torch.no_grad():
            pieces = [
                template.segments(torch.as_tensor(load_audio(item.path, template.sample_rate))[None]) for item in items
            ]
        segments = torch.cat([p[0] for p in pieces])
        owner = torch.cat([torch.full((len(p[0]),), i) for i, p in enumerate(pieces)])
        segment_labels = torch.from_numpy(labels)[owner]
        per_fold: dict[float, list[list[float]]] = {f: [] for f in fractions}
        for seed in seeds:
            rows = {f: [] for f in fractions}
            for fold, test in enumerate(test_masks):
                train_items, test_items = np.flatnonzero(~test), np.flatnonzero(test)
                # the same draw as the frozen rows: a class's permutation depends on the seed and fold only
                picks = nested_fractions(labels[train_items], tuple(fractions), seed * 100 + fold)
                test_rows = torch.from_numpy(np.isin(owner.numpy(), test_items))
                test_owner = torch.from_numpy(np.searchsorted(test_items, owner[test_rows].numpy()))
                for fraction in fractions:
                    train_rows = torch.from_numpy(np.isin(owner.numpy(), train_items[picks[fraction]]))
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        net = type(template)(**template.config())
                        net.add_domain("target", classes)
                    net.load_state_dict({k: v for k, v in template.state_dict().items() if k.startswith("input_")} |
                                        {"statistics_fitted": template.statistics_fitted}, strict=False)  # fmt: skip
                    fit_whole_network(net, segments[train_rows], segment_labels[train_rows], "target", seed=seed)
                    decided = network_vote(net, segments[test_rows], test_owner, len(test_items), "target")
                    rows[fraction].append(float(uar(labels[test_items], decided, len(classes))))
                log(f"{target} R_trainable seed {seed} fold {fold}: " + ", ".join(f"{v:.3f}" for v in
                    (rows[f][-1] for f in fractions)))  # fmt: skip
            for fraction in fractions:
                per_fold[fraction].append(rows[fraction])
        entry = {
            str(f): {
                "mean": round(float(np.mean([np.mean(s) for s in per_fold[f]])), 4),
                "sd": round(float(np.std([np.mean(s) for s in per_fold[f]], ddof=1)), 4) if len(seeds) > 1 else None,
                "per_seed_fold": [[round(v, 4) for v in s] for s in per_fold[f]],
            }
            for f in fractions
        }
        entry["wall_seconds"] = round(time.perf_counter() - started, 1)
        with locked_results(results_path) as results:
            results.setdefault("downstream", {}).setdefault(target, {}).setdefault("rows", {})["R_trainable"] = entry
            results.setdefault("protocol", {})["trainable"] = {"seeds": list(seeds), "fractions": list(fractions)}


def _fractions(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "wall_seconds"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=list(DEFAULT_PARTS), choices=PARTS)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--targets", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--steps", type=int, default=PRETRAIN_STEPS, help="pre-training steps of batch 32")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="downstream: which rows")
    parser.add_argument("--trainable-seeds", type=int, nargs="+", default=list(TRAINABLE_SEEDS))
    parser.add_argument("--trainable-fractions", type=float, nargs="+", default=list(TRAINABLE_FRACTIONS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for part in args.parts:
        started = time.perf_counter()
        if part == "proxy":
            result = proxy_part(args.data, args.targets)
        elif part == "pretrain":
            result = pretrain_part(args.targets, args.steps)
        elif part == "trainable":
            trainable_part(args.data, args.targets, args.trainable_seeds, args.trainable_fractions, args.results)
            result = None
        else:
            downstream_part(args.data, args.targets, args.seeds, args.results, args.rows)
            result = None
        with locked_results(args.results) as results:
            if result is not None:
                results[part] = {**results.get(part, {}), **result} if part == "pretrain" else result
            results.setdefault("timing", {})[part] = round(time.perf_counter() - started, 1)
            results["paper"] = PAPER
            # what each part ran with (a downstream entry also records its seeds, a pre-training its steps)
            protocol = {"fractions": list(FRACTIONS), "folds": FOLDS, "rows": list(ROWS)}
            protocol |= {"seeds": list(args.seeds)} if part == "downstream" else {}
            protocol |= {"pretrain_steps": args.steps} if part == "pretrain" else {}
            results["protocol"] = {**results.get("protocol", {}), **protocol}
            results["environment"] = environment()
        log(f"{part} done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
