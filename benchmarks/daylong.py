"""Cross-corpus SVM vs WDA vs medoid active learning on an unlabelled "real-world" target: the NICU paper's Table 1.

Protocol (NICU paper, Interspeech, §4.2; our corpora in its roles):

- **Target**: URDU (spontaneous talk-show speech) plays the unlabelled real-world corpus. Its speakers are split
  into a target *pool* (≈75 %, unlabelled for adaptation; the oracle "annotator" of active learning reads its labels)
  and a *test* set (≈25 %), speaker-disjoint, by 5 random grouped splits (``GroupShuffleSplit``, split seeds 0-4).
- **Sources**: EMO-DB, RAVDESS and EMOVO, one at a time and pooled ("multi3").
- **Tasks**: binary arousal (high / low) and binary valence (positive / the rest), mapped from each corpus's
  categories by the circumplex map of :mod:`sermodels.labels`; UAR on the test speakers.
- **Features** (§4.1): the 600-d log-mel functionals, z-scored per corpus: each source with its own statistics, the
  target with the statistics of the pool (the test set's statistics are never used).
- **Rows**, each at model seeds 0-2 for every split (mean ± sd over the 15 runs):
  - ``svm_ccg``: class-balanced linear SVM on the source, C by 5-fold speaker-grouped CV on the source (§4.2.1-2);
  - ``nn_ccg``: the stage-1 network ``M = C_L ∘ F_S`` of WDA applied to the target (cross-corpus, no adaptation);
  - ``wda_us``: WDA, unsupervised: stage 2 until the critic's estimate levels off, last weights (§4.2.3);
  - ``wda_ss``: WDA, semi-supervised: the same run, the epoch with the best UAR on ``SEMI_LABELS`` labelled pool
    items (their labels choose the epoch only);
  - ``al_medoids@B``, ``al_clusters@B``, ``al_random@B``: active learning on the pool (§2.1, §4.2.1): the first B
    medoids of MAL (k = N/3) labelled by the oracle, an SVM trained on those B items only, or on every member of
    their B clusters with the medoid's label ("cluster labels"), against B random pool items; B in 5, 10, 20, 40, k.
- **McNemar** (exact when the discordant count is small) on the test items of every run for the key pairs: it tests
  a difference in errors (accuracy), not in UAR; the summary counts, per source, the runs where the difference is
  significant at 0.05 in each direction (the side with fewer errors).

The paper's Table 1 numbers (NICU-A target, its own sources) are stored beside ours under ``paper``.

Results merge into ``benchmarks/results/daylong.json`` run by run (atomically), so an interrupted benchmark resumes:

    python benchmarks/daylong.py [--data ../shared/data] [--splits 0 1 2 3 4] [--seeds 0 1 2]
        [--sources emodb ravdess emovo multi3]
        [--tasks arousal valence] [--parts ccg al wda]   (lanes with disjoint --tasks/--splits may run side by side)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit, StratifiedKFold
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import environment, locked_results  # noqa: E402  (benchmarks/models.py)

from sermodels import labels as label_maps  # noqa: E402
from sermodels.active import random_selection, select_medoids  # noqa: E402
from sermodels.classical.svm import LINEAR_C_GRID, select_by_group_cv  # noqa: E402
from sermodels.data import load_corpus  # noqa: E402
from sermodels.data.features import FeatureDataModule, extract_functionals, stratified_split  # noqa: E402
from sermodels.features import LogMelFunctionals  # noqa: E402
from sermodels.metrics import mcnemar, uar  # noqa: E402
from sermodels.models.wda import WDAMLP  # noqa: E402
from sermodels.training.wda import adapt, fit_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "daylong.json"
FEATURE_CACHE = REPO / ".cache" / "features"
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
SOURCES = {"emodb": ("emodb",), "ravdess": ("ravdess",), "emovo": ("emovo",), "multi3": ("emodb", "ravdess", "emovo")}
TARGET = "urdu"
TASKS = {"arousal": ("arousal", ["low", "high"]), "valence": ("binary_valence", ["non-positive", "positive"])}
HEAD = {"arousal": "arousal", "valence": "valence"}
TEST_FRACTION = 0.25
SEMI_LABELS = 40  # labelled pool items that choose the semi-supervised epoch (= the largest fixed AL budget)
BUDGETS = (5, 10, 20, 40)  # + k, the whole medoid list
SVM_CV_FOLDS = 5
SMALL_SVM_FOLDS = 3  # AL classifiers: stratified folds for C when every class has at least this many items
SMALL_SVM_C = 1.0  # C when a budget is too small to choose it (fewer than 3 items of some class); ours
MCNEMAR_PAIRS = (
    ("wda_us", "svm_ccg"),
    ("wda_us", "nn_ccg"),
    ("wda_ss", "wda_us"),
    ("al_medoids@40", "al_random@40"),
    ("al_clusters@40", "al_random@40"),
    ("al_medoids@40", "wda_ss"),
)
#: NICU paper Table 1, UAR % on NICU-A (log-mel features unless named). Valence first, then arousal.
PAPER = {
    "valence": {
        "svm_ccg": {"emodb": 48.5, "enterface": 56.8, "fesc": 45.3, "ravdess": 50.4, "all": 42.9},
        "wda_us": {"emodb": 49.7, "enterface": 57.0, "fesc": 46.9, "ravdess": 57.1, "all": 53.2},
        "wda_ss": {"emodb": 51.3, "enterface": 58.0, "fesc": 47.4, "ravdess": 57.7, "all": 53.5},
        "al_medoids": {"log-mel": 70.9, "GeMAPS": 71.0, "eGeMAPS": 71.9},
        "al_clusters": {"log-mel": 68.2, "GeMAPS": 73.4, "eGeMAPS": 72.9},
    },
    "arousal": {
        "svm_ccg": {"emodb": 64.1, "enterface": 63.1, "fesc": 56.3, "ravdess": 64.3, "all": 61.3},
        "wda_us": {"emodb": 71.0, "enterface": 67.2, "fesc": 61.5, "ravdess": 66.5, "all": 71.0},
        "wda_ss": {"emodb": 73.2, "enterface": 68.6, "fesc": 63.1, "ravdess": 68.4, "all": 71.3},
        "al_medoids": {"log-mel": 68.5, "GeMAPS": 69.3, "eGeMAPS": 65.8},
        "al_clusters": {"log-mel": 67.0, "GeMAPS": 68.9, "eGeMAPS": 67.6},
    },
}
PAPER_NOTE = (
    "NICU paper Table 1 (UAR %, target NICU-A daylong hospital speech; sources EMO-DB, eNTERFACE, FESC, RAVDESS, "
    "'all' = the four pooled). AL there used 5198 labelled medoids of a 129k-utterance pool; ours a pool of ~300."
)


# ------------------------------------------------------------------------------------------------ data


class Corpora:
    """Raw functionals, labels and speakers of every corpus, computed once (cached under ``.cache/features``)."""

    def __init__(self, data: Path):
        frontend = LogMelFunctionals()
        self.x: dict[str, torch.Tensor] = {}
        self.labels: dict[str, list[str]] = {}
        self.speakers: dict[str, np.ndarray] = {}
        for name, folder in FOLDERS.items():
            items = list(load_corpus(name, data / folder))
            self.x[name] = extract_functionals([it.path for it in items], frontend, cache_dir=FEATURE_CACHE)
            self.labels[name] = [it.label for it in items]
            self.speakers[name] = np.array([it.speaker for it in items])

    def y(self, corpus: str, task: str) -> torch.Tensor:
        space, classes = TASKS[task]
        return torch.tensor([classes.index(label_maps.map_label(c, space)) for c in self.labels[corpus]])


def zscore_with(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    mean, std = reference.double().mean(0), reference.double().std(0, correction=0).clamp(min=1e-12)
    return ((x.double() - mean) / std).float()


def source_data(corpora: Corpora, source: str, task: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Per-corpus z-scored features, labels and speakers of a source (pooled sources concatenated)."""
    xs, ys, groups = [], [], []
    for corpus in SOURCES[source]:
        xs.append(zscore_with(corpora.x[corpus], corpora.x[corpus]))
        ys.append(corpora.y(corpus, task))
        groups.append(np.array([f"{corpus}:{s}" for s in corpora.speakers[corpus]]))
    return torch.cat(xs), torch.cat(ys), np.concatenate(groups)


def target_split(corpora: Corpora, split: int) -> tuple[np.ndarray, np.ndarray]:
    speakers = corpora.speakers[TARGET]
    splitter = GroupShuffleSplit(n_splits=1, test_size=TEST_FRACTION, random_state=split)
    pool, test = next(splitter.split(np.zeros(len(speakers)), groups=speakers))
    return np.sort(pool), np.sort(test)


# ------------------------------------------------------------------------------------------------ classifiers


def fit_small_svm(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Class-balanced linear SVM for a few labelled items: C by stratified CV when every class has
    ``SMALL_SVM_FOLDS`` items, else ``SMALL_SVM_C``; one class only gives a constant predictor."""
    classes = np.unique(y)
    if len(classes) == 1:
        return _Constant(classes[0])
    C = SMALL_SVM_C
    if np.bincount(y).min() >= SMALL_SVM_FOLDS:
        folds = StratifiedKFold(SMALL_SVM_FOLDS, shuffle=True, random_state=seed)
        scores = []
        for c in LINEAR_C_GRID:
            pred = np.empty_like(y)
            for train, test in folds.split(x, y):
                svm = LinearSVC(C=c, class_weight="balanced", max_iter=20000, random_state=0).fit(x[train], y[train])
                pred[test] = svm.predict(x[test])
            scores.append(uar(y.tolist(), pred.tolist(), num_classes=2))
        C = LINEAR_C_GRID[int(np.argmax(scores))]
    return LinearSVC(C=C, class_weight="balanced", max_iter=20000, random_state=0).fit(x, y)


class _Constant:
    def __init__(self, value: int):
        self.value = value

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)


def predictions_of(model: WDAMLP, head: str, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval().forward_features(x, head).argmax(-1).numpy()


def score(y: np.ndarray, pred: np.ndarray) -> float:
    return float(uar(y.tolist(), pred.tolist(), num_classes=2))


# ------------------------------------------------------------------------------------------------ results file


def load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def merge_runs(path: Path, runs: dict[str, Any]) -> None:
    with locked_results(path) as results:
        results.setdefault("runs", {}).update(runs)
        results |= {"protocol": __doc__.split("\n\n")[1], "paper": PAPER, "paper_note": PAPER_NOTE}
        results["environment"] = environment()
        results["summary"] = summarise(results["runs"])


def summarise(runs: dict[str, Any]) -> dict[str, Any]:
    """Mean ± sd per task/row/source over runs, and the McNemar counts of the key pairs (per source; an active
    learning row, whose source is the target itself, is paired with every source's row; the deterministic SVM of
    a split with every seed's run of that split)."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    by_run: dict[tuple[str, str, str], dict[tuple[str, str], dict]] = {}
    svm: dict[tuple[str, str], dict[str, dict]] = {}
    for key, run in runs.items():
        task, row, source, split, seed = key.split("/")
        table.setdefault(task, {}).setdefault(row, {}).setdefault(source, []).append(run["uar"])
        by_run.setdefault((task, split, seed), {})[(row, source)] = run
        if row == "svm_ccg":
            svm.setdefault((task, split), {})[source] = run
    summary: dict[str, Any] = {"uar": {}, "mcnemar": {}}
    for task, rows in table.items():
        for row, by_source in rows.items():
            for source, values in by_source.items():
                cell = {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": len(values)}
                summary["uar"].setdefault(task, {}).setdefault(row, {})[source] = cell

    def get(rows: dict, task: str, split: str, row: str, source: str) -> dict | None:
        if row == "svm_ccg":
            return svm.get((task, split), {}).get(source)
        return rows.get((row, source)) or rows.get((row, "target"))

    for (task, split, _), rows in by_run.items():
        sources = {s for (_, s) in rows if s != "target"} | set(svm.get((task, split), {}))
        for a, b in MCNEMAR_PAIRS:
            both_al = a.startswith("al_") and b.startswith("al_")
            for source in ["target"] if both_al else sorted(sources):
                ra, rb = get(rows, task, split, a, source), get(rows, task, split, b, source)
                if ra is None or rb is None:
                    continue
                test = mcnemar(_classes(ra["true"]), _classes(ra["pred"]), _classes(rb["pred"]))
                cell = summary["mcnemar"].setdefault(task, {}).setdefault(f"{a} vs {b}", {})
                cell = cell.setdefault(source, {"runs": 0, "a_better_p05": 0, "b_better_p05": 0})
                cell["runs"] += 1
                if test["p_value"] < 0.05:  # McNemar compares error counts: the direction is the discordant pairs'
                    cell["a_better_p05" if test["c"] > test["b"] else "b_better_p05"] += 1
    return summary


# ------------------------------------------------------------------------------------------------ parts


def run_record(y: np.ndarray, pred: np.ndarray, **extra: Any) -> dict[str, Any]:
    """A run's UAR and its test labels and predictions as strings of class digits ("0110..."), compact in JSON."""
    return {"uar": score(y, pred), "true": _digits(y), "pred": _digits(pred), **extra}


def _digits(classes: np.ndarray) -> str:
    return "".join(str(int(c)) for c in classes)


def _classes(digits: str | list[int]) -> list[int]:
    return [int(c) for c in digits]


def part_ccg(corpora: Corpora, task: str, source: str, split: int) -> dict[str, Any]:
    """The cross-corpus SVM (deterministic: stored under seed 0 only)."""
    x, y, groups = source_data(corpora, source, task)
    params, _ = select_by_group_cv("linear", x.numpy(), y.numpy(), groups, n_splits=SVM_CV_FOLDS)
    svm = LinearSVC(C=params["C"], class_weight="balanced", max_iter=20000, random_state=0).fit(x.numpy(), y.numpy())
    pool, test = target_split(corpora, split)
    target = corpora.x[TARGET]
    x_test = zscore_with(target[test], target[pool]).numpy()
    y_test = corpora.y(TARGET, task).numpy()[test]
    return {f"{task}/svm_ccg/{source}/{split}/0": run_record(y_test, svm.predict(x_test), C=params["C"])}


def part_wda(corpora: Corpora, task: str, source: str, split: int, seed: int, stage1: dict) -> dict[str, Any]:
    head = HEAD[task]
    x, y, _ = source_data(corpora, source, task)
    key = (task, source, seed)
    if key not in stage1:
        train_idx, dev_idx = stratified_split(y, seed=seed)
        torch.manual_seed(seed)
        model = WDAMLP({head: TASKS[task][1]})
        data = FeatureDataModule(x[train_idx], y[train_idx], x[dev_idx], y[dev_idx], seed=seed)
        stats = (torch.zeros(x.shape[1]), torch.ones(x.shape[1]))  # features are z-scored already
        start = time.perf_counter()
        trained, history = fit_source(model, head, data, stats, seed=seed)
        stage1[key] = (trained, train_idx, dev_idx, len(history), time.perf_counter() - start)
    source_model, train_idx, dev_idx, source_epochs, source_seconds = stage1[key]
    pool, test = target_split(corpora, split)
    target = corpora.x[TARGET]
    pool_x, test_x = zscore_with(target[pool], target[pool]), zscore_with(target[test], target[pool])
    y_target = corpora.y(TARGET, task).numpy()
    y_pool, y_test = y_target[pool], y_target[test]
    labelled = random_selection(len(pool), min(SEMI_LABELS, len(pool)), seed=1000 * split + seed)
    data = FeatureDataModule(
        x[train_idx], y[train_idx], x[dev_idx], y[dev_idx], target_x=pool_x,
        target_labelled_x=pool_x[labelled], target_labelled_y=torch.as_tensor(y_pool[labelled]), seed=seed,
    )  # fmt: skip
    stats = (torch.zeros(x.shape[1]), torch.ones(x.shape[1]))
    start = time.perf_counter()
    adapted = adapt(source_model, head, data, stats, seed=seed)
    seconds = time.perf_counter() - start
    history = adapted.history
    common = {"stage1_epochs": source_epochs, "stage1_seconds": round(source_seconds, 1)}
    common |= {"stage2_epochs": len(history), "stage2_seconds": round(seconds, 1)}
    common |= {"wasserstein_first": history[0]["wasserstein"], "wasserstein_last": history[-1]["wasserstein"]}
    out = {
        f"{task}/nn_ccg/{source}/{split}/{seed}": run_record(y_test, predictions_of(source_model, head, test_x)),
        f"{task}/wda_us/{source}/{split}/{seed}": run_record(
            y_test, predictions_of(adapted.unsupervised, head, test_x), **common
        ),
    }
    if adapted.semi_supervised is not None:
        out[f"{task}/wda_ss/{source}/{split}/{seed}"] = run_record(
            y_test, predictions_of(adapted.semi_supervised, head, test_x), epoch=adapted.best_target_epoch, **common
        )
    return out


def part_al(corpora: Corpora, task: str, split: int, seed: int, selections: dict) -> dict[str, Any]:
    pool, test = target_split(corpora, split)
    target = corpora.x[TARGET]
    if (split, seed) not in selections:
        start = time.perf_counter()
        selections[(split, seed)] = (select_medoids(target[pool].numpy(), seed=seed), time.perf_counter() - start)
    selection, seconds = selections[(split, seed)]
    pool_x = zscore_with(target[pool], target[pool]).numpy()
    test_x = zscore_with(target[test], target[pool]).numpy()
    y_target = corpora.y(TARGET, task).numpy()
    y_pool, y_test = y_target[pool], y_target[test]
    out = {}
    for budget in (*BUDGETS, selection.k):
        name = "k" if budget == selection.k else str(budget)
        medoids = selection.budget(min(budget, selection.k))
        chosen = {
            "medoids": (medoids, y_pool[medoids]),
            "clusters": _clusters(selection, medoids, y_pool),
            "random": _random(len(pool), len(medoids), 1000 * split + seed, y_pool),
        }
        for way, (index, labels) in chosen.items():
            svm = fit_small_svm(pool_x[index], labels, seed)
            extra = {"labels": int(len(medoids)), "train_items": int(len(index)), "k": selection.k}
            extra |= {"one_class": bool(len(np.unique(labels)) == 1), "selection_seconds": round(seconds, 1)}
            out[f"{task}/al_{way}@{name}/target/{split}/{seed}"] = run_record(y_test, svm.predict(test_x), **extra)
    return out


def _clusters(selection, medoids: np.ndarray, y_pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every member of the chosen medoids' clusters, with its medoid's (oracle) label."""
    positions = {int(m): i for i, m in enumerate(selection.medoids)}
    chosen = {positions[int(m)] for m in medoids}
    members = np.array([i for i, c in enumerate(selection.assignment) if int(c) in chosen])
    labels = np.array([y_pool[int(selection.medoids[selection.assignment[i]])] for i in members])
    return members, labels


def _random(n: int, budget: int, seed: int, y_pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.asarray(random_selection(n, budget, seed=seed))
    return index, y_pool[index]


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sources", nargs="+", default=list(SOURCES))
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--parts", nargs="+", default=["ccg", "al", "wda"])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--force", action="store_true", help="recompute runs already in the results")
    p.add_argument("--summarise", action="store_true", help="only recompute the summary of the stored runs")
    args = p.parse_args(argv)
    path = Path(args.results)
    if args.summarise:
        merge_runs(path, {})
        return 0
    done = set(load_results(path)["runs"]) if not args.force else set()
    corpora = Corpora(Path(args.data))
    stage1: dict = {}
    selections: dict = {}
    for split in args.splits:
        for task in args.tasks:
            if "ccg" in args.parts:
                for source in args.sources:
                    if f"{task}/svm_ccg/{source}/{split}/0" not in done:
                        merge_runs(path, part_ccg(corpora, task, source, split))
            for seed in args.seeds:
                if "al" in args.parts and f"{task}/al_medoids@5/target/{split}/{seed}" not in done:
                    merge_runs(path, part_al(corpora, task, split, seed, selections))
                if "wda" in args.parts:
                    for source in args.sources:
                        if f"{task}/wda_us/{source}/{split}/{seed}" not in done:
                            runs = part_wda(corpora, task, source, split, seed, stage1)
                            merge_runs(path, runs)
                            us = runs[f"{task}/wda_us/{source}/{split}/{seed}"]
                            where = f"{task} {source} split {split} seed {seed}"
                            print(f"{where}: wda_us {us['uar']:.3f} in {us['stage2_seconds']} s", file=sys.stderr)
        print(f"split {split} done", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
