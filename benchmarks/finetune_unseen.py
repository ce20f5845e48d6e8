"""Adapter fine-tuning on a small corpus the base model has never seen, against SVMs fitted on the same files.

The claim under test: a new user who lays out ``per_class`` files per class of a small corpus as class folders and
runs ``sermodels finetune`` (adapters regime, its defaults) gets a better classifier of unseen speakers than a linear
SVM on eGeMAPS or log-mel functionals fitted on the same files. One result per ``<base>/<corpus>/<per_class>``:

- the corpus's fixed speaker-independent split (``sermodels/data/splits``): the training pool is its train + dev
  speakers, the test set every file of its test speakers, never used for any choice;
- ``per_class`` files per class drawn from the pool with ``--seed``: each class sorted by item id, shuffled by a
  generator seeded with ``(seed, class)``, the first ``per_class`` taken (so a smaller draw is part of a larger one);
  a class with fewer files gives them all, recorded under ``short_classes``;
- the drawn files laid out as a user would, ``<workdir>/<corpus>_<per_class>/train/<class>/<file>`` (symbolic links
  to the corpus files, never copies), the test files likewise under ``test/``. The folder is named ``train``, so the
  new head is named ``train``;
- ``sermodels finetune --from BASE --data .../train --out ...`` in a subprocess, with ``--finetune-args`` appended.
  finetune knows no speakers: it holds out ≈10 % of the files as dev (best epoch, learning-rate plateau) and ≈20 %
  as its own test, drawn per file, so the model trains on about 70 % of the drawn files;
- the fine-tuned model's default head scored on every file of the test folder with the evaluator of ``sermodels
  evaluate`` (:func:`sermodels.evaluation.evaluate_items`): the CLI scores a folder corpus only through one partition
  of its own per-file split, not the whole folder;
- eGeMAPS and log-mel-600 functionals (features cached as ``benchmarks/baselines.py`` caches them, for the whole
  corpus) + class-balanced linear SVM on all the drawn files, C chosen by speaker-grouped cross-validation on them
  (one fold per training speaker, pooled UAR), refitted on all of them, scored on the same test files;
- McNemar's exact test (binomial on the discordant test files) of the model against each SVM; ``beats_svms``: the
  model's test UAR above both SVMs' test UARs.

The entry is merged into the results file (atomically) after each stage. A model folder is reused while the settings
it was trained with (``bench_run.json`` in it) match; a finished entry is kept while its settings match, and a
finished entry with other settings is replaced only with ``--force``.

    python benchmarks/finetune_unseen.py --base FOLDER_OR_ID --corpus urdu [--per-class 60] [--data ../shared/data]
        [--workdir runs/bench/unseen] [--results benchmarks/results/finetune_unseen.json] [--seed 0] [--force]
        [--finetune-args ARG ...]        (last: every argument after it goes to `sermodels finetune`)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest

import sermodels
from sermodels._io import atomic_write_text
from sermodels.checkpoint import read_json_object
from sermodels.classical.svm import extract_features, make_svm, select_by_group_cv
from sermodels.data import Item, load_corpus
from sermodels.evaluation import evaluate_items
from sermodels.hub import resolve
from sermodels.metrics import classification_report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when imported from tests
from models import _jsonable, _shown, git_commit, sha256_file  # noqa: E402  (benchmarks/models.py)

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "finetune_unseen.json"
DEFAULT_WORKDIR = REPO / "runs" / "bench" / "unseen"
FEATURE_CACHE = REPO / ".cache" / "features"  # benchmarks/baselines.py's: the corpus's features are computed once
SVM_SYSTEMS = (("egemaps", "linear"), ("logmel600", "linear"))
SET_BY_BENCH = ("--from", "--data", "--out")  # finetune options this script sets itself
MARKER = "bench_run.json"  # in a fine-tuned folder: the settings it was trained with
ALPHA = 0.05
MCNEMAR_METHOD = "exact two-sided binomial test on the discordant files (scipy.stats.binomtest, p = 1/2)"


class BenchError(RuntimeError):
    """A step that could not be done; nothing is recorded for it."""


# ------------------------------------------------------------------------------------------------ the files


def speaker_split(corpus) -> tuple[list[Item], list[Item]]:
    """The training pool (train + dev speakers of the fixed split) and the test files; an error if they share a
    speaker or an item lacks one."""
    split = corpus.split("fixed")
    pool, test = [*split["train"], *split["dev"]], list(split["test"])
    if any(it.speaker is None for it in pool + test):
        raise BenchError(f"{corpus.name}: every item needs a speaker for a speaker-independent comparison")
    shared = {it.speaker for it in pool} & {it.speaker for it in test}
    if shared:
        raise BenchError(f"{corpus.name}: speakers {sorted(shared)} are in the training pool and the test set")
    return pool, test


def draw_per_class(pool: Sequence[Item], per_class: int, seed: int) -> tuple[list[Item], dict[str, int]]:
    """``per_class`` items of each class (all of a class that has fewer), sorted by id; and the short classes with
    what they had. Each class is shuffled on its own (seeded with ``seed`` and the class), so a smaller draw is the
    start of a larger one and the draw of a class does not depend on the others."""
    if per_class < 1:
        raise ValueError(f"per_class must be positive, got {per_class}")
    by_class: dict[str, list[Item]] = {}
    for item in pool:
        by_class.setdefault(item.label, []).append(item)
    chosen: list[Item] = []
    short: dict[str, int] = {}
    for label in sorted(by_class):
        order = sorted(by_class[label], key=lambda it: it.id)
        random.Random(f"{seed}/{label}").shuffle(order)
        chosen += order[:per_class]
        if len(order) < per_class:
            short[label] = len(order)
    return sorted(chosen, key=lambda it: it.id), short


def lay_out(items: Sequence[Item], folder: Path) -> None:
    """``folder/<label>/<file name>``: a symbolic link to each item's file. A folder that already holds exactly these
    links is left as it is; otherwise its links are removed first. Anything there that is not a link is an error:
    this never deletes a file it did not make."""
    wanted = {folder / it.label / Path(it.path).name: Path(it.path).resolve() for it in items}
    if len(wanted) != len(items):
        raise BenchError(f"{folder}: two drawn files of one class have the same name")
    present: dict[Path, Path] = {}
    if folder.exists():
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                present[path] = Path(os.readlink(path))
            elif not path.is_dir():
                raise BenchError(f"{path} is not a link made by this benchmark: move it, or remove {folder}")
    if present == wanted:
        return
    for link in present:
        link.unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    for link, target in wanted.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)


def relative(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """A file's path inside its corpus folder, links followed: the key that pairs the systems' predictions."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(root))


def counts(items: Sequence[Item]) -> dict[str, int]:
    return dict(sorted(Counter(it.label for it in items).items()))


# ------------------------------------------------------------------------------------------------ the model


def cli() -> list[str]:
    """The ``sermodels`` command of this interpreter's environment (``python -m sermodels.cli`` without one)."""
    script = Path(sys.executable).parent / "sermodels"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sermodels.cli"]


def finetune_command(base: str, train_dir: Path, out: Path, seed: int, extra: Sequence[str]) -> list[str]:
    """``sermodels finetune``; ``extra`` comes last, so it overrides ``--seed``."""
    return [*cli(), "finetune", "--from", base, "--data", str(train_dir), "--out", str(out)] + [
        "--seed",
        str(seed),
        "--no-progress",
        *extra,
    ]


def fine_tune(command: list[str], out: Path, settings: dict[str, Any], force: bool) -> dict[str, Any]:
    """Run ``command`` (log beside ``out``) unless ``out`` was fine-tuned with these settings; its marker."""
    marker = out / MARKER
    if not force and marker.is_file() and (out / "config.json").is_file():
        done = read_json_object(marker)
        if done.get("settings") == settings:
            print(f"[finetune_unseen] reusing {out} (fine-tuned with these settings)", flush=True)
            return done
    marker.unlink(missing_ok=True)
    log = out.with_name(out.name + ".log")
    print(f"[finetune_unseen] {' '.join(command)}\n[finetune_unseen] log: {log}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as f:
        finished = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False)
    wall = round(time.perf_counter() - started, 1)
    if finished.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise BenchError(f"finetune exited {finished.returncode} after {wall} s (log {log}):\n{tail}")
    done = {"settings": settings, "command": command, "wall_s": wall, "date": time.strftime("%Y-%m-%d %H:%M")}
    atomic_write_text(marker, json.dumps(done, indent=1) + "\n")
    return done


def training_facts(folder: Path, train_dir: Path) -> dict[str, Any]:
    """What the fine-tuned folder says about its training: regime, head, its own test score; and the sizes of the
    per-file split finetune drew in ``train_dir`` (the folder corpus's ``fixed`` split, computed as finetune does)."""
    own_split = load_corpus("folder", train_dir).split("fixed")
    config = read_json_object(folder / "config.json")
    training = config.get("training", {})
    metrics = read_json_object(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    own_test = next((v for k, v in metrics.items() if k.endswith("/test") and isinstance(v, dict)), {})
    return {
        "regime": training.get("mode"),
        "default_head": config["model_args"].get("default_head"),
        "heads": sorted(config["model_args"].get("domains", {})),
        "own_split_n": {part: len(items) for part, items in own_split.items()},
        "own_test": {k: own_test.get(k) for k in ("n", "uar", "war")},
        "schedule_run": training.get("schedule_run"),
    }


def score_model(folder: Path, test_dir: Path, root: Path, report_path: Path) -> tuple[dict, dict[str, str], dict]:
    """The fine-tuned model's default head on every file of ``test_dir``: the summary, the predictions by corpus
    path, and the true labels by corpus path."""
    started = time.perf_counter()
    model = sermodels.load(str(folder))
    items = load_corpus("folder", test_dir).items
    report = evaluate_items(model, items, split="test speakers", model_id=folder.name)
    atomic_write_text(report_path, json.dumps(report, indent=1, default=_jsonable) + "\n")
    predicted = {relative(p["path"], root): p["predicted"] for p in report["predictions"]}
    true = {relative(p["path"], root): p["true"] for p in report["predictions"]}
    summary = {key: report[key] for key in ("head", "labels", "n", "n_items", "uar", "war", "macro_f1")}
    summary |= {"failures": len(report.get("failures") or []), "eval_wall_s": round(time.perf_counter() - started, 1)}
    return summary, predicted, true


# ------------------------------------------------------------------------------------------------ the SVMs


def fit_svm(
    features: np.ndarray, index: dict[int, int], train: Sequence[Item], test: Sequence[Item], root: Path, labels
) -> tuple[dict[str, Any], dict[str, str]]:
    """Linear SVM: C by speaker-grouped CV on ``train`` (one fold per speaker), refit on all of it, scored on
    ``test``; the result and the predictions by corpus path."""
    started = time.perf_counter()
    rows_train = np.array([index[id(it)] for it in train])
    rows_test = np.array([index[id(it)] for it in test])
    y_train = np.array([it.label for it in train])
    speakers = np.array([it.speaker for it in train])
    if len(set(speakers)) < 2:
        raise BenchError("speaker-grouped selection needs at least two training speakers")
    params, selection = select_by_group_cv("linear", features[rows_train], y_train, speakers)
    predicted = make_svm("linear", **params).fit(features[rows_train], y_train).predict(features[rows_test])
    predicted = [str(p) for p in predicted]
    report = classification_report([it.label for it in test], predicted, labels)
    result = {key: report[key] for key in ("n", "uar", "war", "macro_f1")}
    result |= {
        "C": params["C"],
        "cv_uar": max(s["uar"] for s in selection),
        "cv_folds": len(set(speakers)),
        "selection": selection,
        "fit_wall_s": round(time.perf_counter() - started, 2),
    }
    return result, {relative(it.path, root): p for it, p in zip(test, predicted)}


def mcnemar_exact(true: dict[str, str], model: dict[str, str], other: dict[str, str]) -> dict[str, Any]:
    """McNemar's exact test on the files both predicted. ``b``: the model right and the other system wrong; ``c``:
    the reverse; ``better``: who is right on more of the discordant files."""
    shared = sorted(set(model) & set(other) & set(true))
    model_right = [model[f] == true[f] for f in shared]
    other_right = [other[f] == true[f] for f in shared]
    b = sum(m and not o for m, o in zip(model_right, other_right))
    c = sum(o and not m for m, o in zip(model_right, other_right))
    p_value = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    better = "model" if b > c else "svm" if c > b else "tie"
    return {"n": len(shared), "b": b, "c": c, "p_value": p_value, "significant": p_value < ALPHA, "better": better}


# ------------------------------------------------------------------------------------------------ results


def result_key(base_name: str, corpus: str, per_class: int) -> str:
    return f"{base_name}/{corpus}/{per_class}"


def read_results(path: Path) -> dict[str, Any]:
    results = read_json_object(path) if path.is_file() else {}
    results.setdefault("results", {})
    return results


def save_entry(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Merge ``entry`` under ``key`` into the results file as it is on disk now (the other keys are kept), then
    write it atomically."""
    results = read_results(path)
    results["results"][key] = entry
    results["protocol"] = protocol_notes()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1, sort_keys=True, default=_jsonable) + "\n")


def kept_entry(stored: dict[str, Any] | None, settings: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The stored entry when it is finished with these settings (and not forced); an error when a finished entry
    with other settings would be replaced without ``--force``."""
    if not stored or not stored.get("complete") or force:
        return None
    if stored.get("settings") == settings:
        return stored
    raise BenchError(
        "a finished result with other settings is stored under this key; pass --force to replace it, or "
        "--results elsewhere (stored: " + json.dumps(stored.get("settings"), sort_keys=True) + ")"
    )


def protocol_notes() -> dict[str, str]:
    return {
        "split": "the corpus's fixed speaker-independent split: training pool = train + dev speakers, test = test "
        "speakers (every file)",
        "draw": "per class: sorted by id, shuffled with random.Random(f'{seed}/{class}'), the first per_class taken",
        "model": "sermodels finetune on the drawn files as class folders (it holds out ~10 % dev and ~20 % test "
        "per file itself); default head scored on the test folder by sermodels.evaluation.evaluate_items",
        "svm": "z-norm + class-balanced LinearSVC on all drawn files; C from sermodels.classical.svm.LINEAR_C_GRID "
        "by speaker-grouped CV (one fold per speaker, pooled UAR), refit on all drawn files",
        "mcnemar": MCNEMAR_METHOD + f"; significant below {ALPHA}",
        "beats_svms": "model test UAR > the test UAR of every SVM",
    }


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": _version("lightning"),
        "scikit_learn": _version("scikit-learn"),
        "opensmile": _version("opensmile"),
        "sermodels": sermodels.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "git_commit": git_commit(),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="pretrained multi-domain model: id or checkpoint folder")
    parser.add_argument(
        "--allow-seen", action="store_true", help="accept a base trained on the corpus (a smoke test of the machinery)"
    )
    parser.add_argument("--corpus", required=True, choices=sorted(FOLDERS))
    parser.add_argument("--per-class", type=int, default=60, help="files drawn per class (default: 60)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding URDU/, ...")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="class folders, models, logs, reports")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS))
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed, also passed to finetune")
    parser.add_argument("--force", action="store_true", help="retrain and replace a stored result")
    parser.add_argument(
        "--finetune-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="last option: everything after it is appended to `sermodels finetune` (e.g. --epochs 1)",
    )
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error("--per-class must be positive")
    clash = [a for a in args.finetune_args if a.split("=")[0] in SET_BY_BENCH]
    if clash:
        parser.error(f"--finetune-args may not set {', '.join(SET_BY_BENCH)} (the benchmark sets them): {clash}")
    return args


def base_identity(base: str) -> tuple[str, str, Path]:
    """The name the results use (an id, or the folder's name), the argument finetune gets (a folder made absolute,
    as it runs from the repository), and the checkpoint folder."""
    if Path(base).is_dir():
        folder = Path(base).resolve()
        return _shown(folder).replace("/", "-"), str(folder), folder
    return base, base, resolve(base)


def check_unseen(base_folder: Path, corpus: str) -> None:
    """The point is a corpus the base never trained on: refuse a base whose training corpora include it."""
    training = read_json_object(base_folder / "config.json").get("training", {})
    seen = [c.get("name") if isinstance(c, dict) else c for c in training.get("corpora", [])]
    if corpus in seen:
        raise SystemExit(f"{base_folder} was trained on {corpus} ({seen}): pick a base that never saw it")


def run(args: argparse.Namespace) -> dict[str, Any]:
    base_name, base_arg, base_folder = base_identity(args.base)
    if not args.allow_seen:
        check_unseen(base_folder, args.corpus)
    key = result_key(base_name, args.corpus, args.per_class)
    results_path = Path(args.results)
    root = (Path(args.data) / FOLDERS[args.corpus]).resolve()
    settings = {
        "base": base_name,
        "base_weights_sha256": sha256_file(base_folder / "model.safetensors"),
        "corpus": args.corpus,
        "per_class": args.per_class,
        "seed": args.seed,
        "finetune_args": list(args.finetune_args),
        "sermodels": sermodels.__version__,
    }
    stored = read_results(results_path)["results"].get(key)
    kept = kept_entry(stored, settings, args.force)
    if kept is not None:
        print(f"[finetune_unseen] {key}: kept (finished with these settings; --force redoes it)")
        return kept

    corpus = load_corpus(args.corpus, root)
    pool, test = speaker_split(corpus)
    train, short = draw_per_class(pool, args.per_class, args.seed)
    work = Path(args.workdir).resolve() / f"{args.corpus}_{args.per_class}"
    train_dir, test_dir = work / "train", work / "test"
    lay_out(train, train_dir)
    lay_out(test, test_dir)
    entry: dict[str, Any] = {
        "base": args.base,
        "base_name": base_name,
        "corpus": args.corpus,
        "per_class": args.per_class,
        "seed": args.seed,
        "settings": settings,
        "complete": False,
        "environment": environment(),
        "train": {
            "folder": _shown(train_dir),
            "n": len(train),
            "n_per_class": counts(train),
            "short_classes": short,
            "speakers": sorted({it.speaker for it in train}),
            "pool_n": len(pool),
            "files": [relative(it.path, root) for it in train],
        },
        "test": {
            "folder": _shown(test_dir),
            "n": len(test),
            "n_per_class": counts(test),
            "speakers": sorted({it.speaker for it in test}),
        },
    }
    if set(entry["train"]["speakers"]) & set(entry["test"]["speakers"]):
        raise BenchError("drawn training files share speakers with the test set")

    out = work / f"model_{base_name}"
    command = finetune_command(base_arg, train_dir, out, args.seed, args.finetune_args)
    done = fine_tune(command, out, settings, args.force)
    entry["finetune"] = {
        "command": done["command"],
        "wall_s": done["wall_s"],
        "trained": done.get("date"),
        "model": _shown(out),
    } | training_facts(out, train_dir)
    save_entry(results_path, key, entry)

    model, model_pred, true = score_model(out, test_dir, root, work / f"report_{base_name}.json")
    expected = {relative(it.path, root): it.label for it in test}
    if any(expected[f] != label for f, label in true.items()):
        raise BenchError("the test folder's labels differ from the corpus's")
    entry["model"] = model
    save_entry(results_path, key, entry)

    labels = list(corpus.classes)
    index = {id(it): i for i, it in enumerate(corpus.items)}
    entry["svms"], entry["mcnemar"] = {}, {}
    predictions: dict[str, dict[str, str]] = {f: {"true": t} for f, t in expected.items()}
    for f, p in model_pred.items():
        predictions[f]["model"] = p
    for feature_set, kind in SVM_SYSTEMS:
        system = f"{feature_set}+{kind}"
        started = time.perf_counter()
        features = extract_features([it.path for it in corpus.items], feature_set, cache_dir=FEATURE_CACHE)
        feature_wall = round(time.perf_counter() - started, 1)
        result, svm_pred = fit_svm(features, index, train, test, root, labels)
        entry["svms"][system] = result | {"features_wall_s": feature_wall}
        entry["mcnemar"][system] = mcnemar_exact(expected, model_pred, svm_pred)
        for f, p in svm_pred.items():
            predictions[f][system] = p
    entry["predictions"] = predictions
    entry["beats_svms"] = all(model["uar"] > svm["uar"] for svm in entry["svms"].values())
    entry["complete"] = True
    save_entry(results_path, key, entry)
    return entry


def summary(entry: dict[str, Any]) -> list[str]:
    train, test, model = entry["train"], entry["test"], entry["model"]
    short = f", short classes {train['short_classes']}" if train["short_classes"] else ""
    lines = [
        f"{entry['base_name']}/{entry['corpus']}/{entry['per_class']} (seed {entry['seed']}): train {train['n']} files "
        f"of {len(train['speakers'])} speakers{short}; test {test['n']} files of {len(test['speakers'])} speakers",
        f"  fine-tuned ({entry['finetune']['regime']}, head {model['head']}, {entry['finetune']['wall_s']:.0f} s): "
        f"UAR {model['uar']:.3f}  WAR {model['war']:.3f}",
    ]
    for system, svm in entry["svms"].items():
        test_ = entry["mcnemar"][system]
        lines.append(
            f"  {system:17s} C={svm['C']:g}: UAR {svm['uar']:.3f}  WAR {svm['war']:.3f}   McNemar b={test_['b']} "
            f"c={test_['c']} p={test_['p_value']:.3g} ({test_['better']})"
        )
    lines.append(f"  beats_svms: {entry['beats_svms']}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        entry = run(args)
    except BenchError as err:
        print(f"[finetune_unseen] failed: {err}", file=sys.stderr, flush=True)
        return 1
    print("\n".join(summary(entry)))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
