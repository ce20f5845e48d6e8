"""Model recipes compared on the four corpora, through the real command line.

Every variant below is a recipe (``recipes/<family>/<setting>.yaml``) trained with ``sermodels train`` in a
subprocess, or the released checkpoint folder that recipe produced, scored with ``sermodels evaluate``:

- ``fixed`` protocol (one model for the four corpora) and ``per_corpus`` (the same recipe trained on one corpus at a
  time, with ``max_steps`` and an integer ``val_check_interval`` divided by the recipe's number of corpora, so that
  each corpus sees as many batches as in the round-robin run and is validated as often): test UAR, WAR and n per
  corpus on our fixed speaker-independent split, and McNemar's exact test against the best classical baseline of
  that corpus (the system of ``baselines.json["fixed"][corpus]`` with the best test UAR, refitted here exactly as
  ``benchmarks/baselines.py`` fits it; its per-file test predictions are cached in the JSON under ``baselines``);
- ``loso``: EMO-DB leave-one-speaker-out. ``sermodels evaluate --split loso`` refits only the SVM recipes, so each
  fold is the per-corpus EMO-DB run again with ``--data.split loso --data.fold K`` (train on the fold's training
  speakers, select on its dev speakers), scored in-process on the held-out speaker with the evaluator the CLI uses;
  pooled UAR, per-fold UAR and their mean, beside the baselines' LOSO and the published anchor of baselines.json;
- ``loco``: leave one corpus out on the arousal/valence recipe: trained on three corpora, scored on every file of
  the fourth (``sermodels evaluate`` has no ``--split all``: train, dev and test are scored and pooled) through the
  ``arousal`` or ``valence`` head in that head's label space; one run per held-out corpus (``loco/<corpus>``) serves
  both heads.

Results are merged into the JSON after every finished score (atomically), so an interrupted benchmark resumes:
a score is kept while its variant's settings (recipe and its sha256, overrides, sermodels version, step scale;
the weights' sha256 for a released checkpoint) are unchanged, and a trained model folder under ``--workdir`` is
reused while the settings it was trained with (``bench_run.json`` in it) match. ``--force`` redoes the selection.

    python benchmarks/models.py [--data ../shared/data] [--only NAME ...] [--corpora C ...] [--workdir runs/bench]
                                [--results benchmarks/results/models.json] [--force] [--list]
    smoke runs (need --results and --workdir): [--steps-scale F] [--override ARG ...] [--folds K ...]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
import yaml
from scipy.stats import binomtest

import sermodels
from sermodels._io import atomic_write_text
from sermodels._io import sha256_of as sha256_file
from sermodels.checkpoint import read_json_object
from sermodels.classical.svm import extract_features, fit_fixed
from sermodels.data import load_corpus
from sermodels.evaluation import evaluate_items
from sermodels.labels import LABEL_SPACES, label_names
from sermodels.metrics import classification_report, uar, war

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
CORPORA = tuple(FOLDERS)
DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "models.json"
DEFAULT_WORKDIR = REPO / "runs" / "bench"
BASELINES = REPO / "benchmarks" / "results" / "baselines.json"
FEATURE_CACHE = REPO / ".cache" / "features"  # benchmarks/baselines.py's: the baselines' features are computed once
MARKER = "bench_run.json"  # in a trained folder: the settings it was trained with
ALPHA = 0.05
MCNEMAR_METHOD = "exact two-sided binomial test on the discordant files (scipy.stats.binomtest, p = 1/2)"
LOCO_SPLITS = ("train", "dev", "test")  # the whole held-out corpus


@dataclass(frozen=True)
class Variant:
    """One row of the comparison. ``source``: ``train`` fits ``recipe``; ``checkpoint`` scores the released folder
    that ``recipe`` produced. ``corpora``: scored (fixed), trained one at a time (per_corpus), held out (loco)."""

    name: str
    description: str
    recipe: str
    source: str = "train"
    overrides: tuple[str, ...] = ()
    corpora: tuple[str, ...] = CORPORA
    protocol: str = "fixed"
    checkpoint: str | None = None
    head: str | None = None  # loco: the head scored
    budget: float = 1.0  # the share of the recipe's max_steps each training of this variant runs (CPU budget)


VARIANTS = (
    Variant(
        "emonet_scratch",
        "EmoNet Wide-ResNet from scratch, no augmentation (the released emonet_wrn.multi4)",
        "recipes/emonet/multi4.yaml",
        source="checkpoint",
        checkpoint="checkpoints/emonet_wrn.multi4",
    ),
    Variant(
        "emonet_scratch_aug",
        "EmoNet Wide-ResNet from scratch with training-time augmentation",
        "recipes/emonet/multi4_augment.yaml",
    ),
    Variant(
        "imagenet",
        "ImageNet MobileNetV2 with adapters, no augmentation",
        "recipes/adapted_cnn/multi4.yaml",
        overrides=("--model.init_args.augment", "null"),
    ),
    Variant(
        "imagenet_aug",
        "ImageNet MobileNetV2 with adapters and augmentation (the default release, mobilenetv2_adapters.multi4)",
        "recipes/adapted_cnn/multi4.yaml",
        source="checkpoint",
        checkpoint="checkpoints/mobilenetv2_adapters.multi4",
    ),
    Variant(
        "imagenet_aug_percorpus",
        "the default recipe trained on one corpus at a time (max_steps / 4 each)",
        "recipes/adapted_cnn/multi4.yaml",
        protocol="per_corpus",
    ),
    Variant(
        "loso_emodb",
        "EMO-DB leave-one-speaker-out: the per-corpus EMO-DB recipe refitted on each fold, at a quarter of its "
        "steps (CPU budget: 100 steps of 32 clips, about 9 epochs of the fold's training speakers)",
        "recipes/adapted_cnn/multi4.yaml",
        corpora=("emodb",),
        protocol="loso",
        budget=0.25,
    ),
    Variant(
        "loco_arousal",
        "leave one corpus out, arousal (low/high): trained on three corpora, every file of the fourth (0.3 of "
        "the av recipe's steps: CPU budget)",
        "recipes/adapted_cnn/av.yaml",
        protocol="loco",
        head="arousal",
        budget=0.3,
    ),
    Variant(
        "loco_valence",
        "leave one corpus out, valence: trained on three corpora, every file of the fourth (0.3 of the av "
        "recipe's steps: CPU budget)",
        "recipes/adapted_cnn/av.yaml",
        protocol="loco",
        head="valence",
        budget=0.3,
    ),
)


@dataclass(frozen=True)
class Run:
    """One model folder: a training (``recipe`` + ``args``, which define it) or a released ``checkpoint``."""

    name: str
    recipe: str
    args: tuple[str, ...] = ()
    corpora: tuple[str, ...] = CORPORA
    checkpoint: str | None = None


class BenchError(RuntimeError):
    """A run or a score that could not be made; the variant is left unfinished, the others go on."""


# ------------------------------------------------------------------------------------------------ recipes


def read_recipe(recipe: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / recipe).read_text()) or {}


def data_prefix(config: dict[str, Any]) -> str:
    """``--data.`` for SERDataModule recipes, ``--data.init_args.`` for a named data module class."""
    return "--data.init_args." if "class_path" in (config.get("data") or {}) else "--data."


def recipe_corpora(config: dict[str, Any]) -> tuple[str, ...]:
    data = config.get("data") or {}
    return tuple((data.get("init_args") or data)["corpora"])


def schedule_args(config: dict[str, Any], divisor: int, scale: float) -> list[str]:
    """Overrides that run ``max_steps * scale / divisor`` steps. An integer ``val_check_interval`` is divided by
    ``divisor`` (as often validated as in the full run; capped at the steps, so a short run still validates once);
    a ``steps`` schedule's ``stage_steps`` (counted in rounds over the streams) is scaled by ``scale``."""
    if divisor == 1 and scale == 1:
        return []
    trainer = config.get("trainer") or {}
    max_steps = trainer.get("max_steps")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise BenchError("scaling or dividing a schedule needs the recipe's trainer.max_steps")
    steps = max(1, round(max_steps * scale / divisor))
    args = ["--trainer.max_steps", str(steps)]
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int) and not isinstance(interval, bool):
        args += ["--trainer.val_check_interval", str(min(steps, max(1, round(interval / divisor))))]
    schedule = ((config.get("model") or {}).get("init_args") or {}).get("schedule") or {}
    if scale != 1 and schedule.get("name") == "steps" and "stage_steps" in schedule:
        scaled = schedule | {"stage_steps": max(1, round(schedule["stage_steps"] * scale))}
        args += ["--model.init_args.schedule", json.dumps(scaled)]
    return args


# ------------------------------------------------------------------------------------------------ the bench


class Bench:
    """The results file, the data and work folders, and the run/score steps every protocol uses."""

    def __init__(self, args: argparse.Namespace):
        self.data = Path(args.data).resolve()
        self.workdir = Path(args.workdir).resolve()
        self.path = Path(args.results)
        self.steps_scale = args.steps_scale
        self.extra = list(args.override or [])
        self.folds = args.folds
        self.force = args.force
        self.results = read_json_object(self.path) if self.path.is_file() else {}
        for key in ("variants", "runs", "baselines"):
            self.results.setdefault(key, {})
        # With --force, each variant is reset and each run retrained once per invocation.
        self.reset_now: set[str] = set()
        self.trained_now: set[str] = set()
        self.environment = environment()
        self.mine: dict[str, set[str]] = {key: set() for key in ("variants", "runs", "baselines")}

    def put(self, section: str, name: str, value: dict[str, Any]) -> None:
        """Record an entry this process made (saved over whatever another process wrote under that name)."""
        self.results[section][name] = value
        self.mine[section].add(name)

    def root(self, corpus: str) -> str:
        return str(self.data / FOLDERS[corpus])

    def save(self) -> None:
        """Merge this process's entries into the results file as it is on disk now (several benchmark processes may
        run side by side, e.g. one per core), under a lock, and write it atomically."""
        with locked_results(self.path, sort_keys=True) as disk:
            for section, names in self.mine.items():
                merged = dict(disk.get(section, {}))
                merged.update({name: self.results[section][name] for name in names})
                self.results[section] = merged
            self.results["environment"] = self.environment
            self.results["protocol"] = protocol_notes()
            compare(self.results)
            disk.clear()
            disk.update(self.results)

    # ---- variants ----------------------------------------------------------------------------------------------
    def settings(self, variant: Variant) -> dict[str, Any]:
        """What a stored score must match to be kept."""
        settings: dict[str, Any] = {"recipe": variant.recipe, "sermodels": sermodels.__version__}
        if variant.source == "checkpoint":
            return settings | {"checkpoint": variant.checkpoint, "weights_sha256": self.weights_sha256(variant)}
        return settings | {
            "recipe_sha256": sha256_file(REPO / variant.recipe),
            "overrides": list(variant.overrides),
            "steps_scale": self.steps_scale * variant.budget,
            "extra_overrides": self.extra,
        }

    def weights_sha256(self, variant: Variant) -> str:
        weights = REPO / variant.checkpoint / "model.safetensors"
        if not weights.is_file():
            raise BenchError(f"{variant.checkpoint} is not released yet (no model.safetensors)")
        return sha256_file(weights)

    def entry(self, variant: Variant) -> dict[str, Any]:
        """The variant's stored record, or a fresh one when its settings changed (or on the first --force use)."""
        settings = self.settings(variant)
        stored = self.results["variants"].get(variant.name)
        reset = self.force and variant.name not in self.reset_now
        if stored is None or stored.get("settings") != settings or reset:
            stored = {
                "description": variant.description,
                "protocol": variant.protocol,
                "source": variant.source,
                "recipe": variant.recipe,
                "overrides": list(variant.overrides),
                "checkpoint": variant.checkpoint,
                "settings": settings,
            }
        # Ours from now on, new or resumed: save() writes it over the copy on disk.
        self.put("variants", variant.name, stored)
        self.reset_now.add(variant.name)
        return stored

    def record(self, entry: dict[str, Any]) -> None:
        """Stamp a variant that got a new score with today's date and commit, and save."""
        entry.update(date=self.environment["date"], git_commit=self.environment["git_commit"])
        self.save()

    # ---- runs --------------------------------------------------------------------------------------------------
    def run_settings(self, run: Run) -> dict[str, Any]:
        return {
            "recipe": run.recipe,
            "recipe_sha256": sha256_file(REPO / run.recipe),
            "args": list(run.args),
            "extra_overrides": self.extra,
            "sermodels": sermodels.__version__,
        }

    def model(self, run: Run) -> Path:
        """The folder to score: the released checkpoint, or the run trained (unless already trained alike)."""
        if run.checkpoint:
            return self.released(run)
        folder = self.workdir / run.name
        settings = self.run_settings(run)
        marker = folder / MARKER
        reusable = run.name in self.trained_now or not self.force
        if reusable and marker.is_file() and (folder / "config.json").is_file():
            done = json.loads(marker.read_text())
            if done.get("settings") == settings:
                self.record_run(run, folder, done)
                return folder
        return self.train(run, folder, settings)

    def released(self, run: Run) -> Path:
        folder = REPO / run.checkpoint
        config = folder / "config.json"
        if not config.is_file():
            raise BenchError(f"{run.checkpoint} is not released yet: run recipes/release.sh {run.recipe}")
        trained_by = json.loads(config.read_text()).get("training", {}).get("recipe")
        if trained_by != run.recipe:
            raise BenchError(f"{run.checkpoint} was trained by {trained_by}, not {run.recipe}")
        self.put("runs", run.name, {"source": "checkpoint", "model": run.checkpoint, "recipe": run.recipe})
        return folder

    def train(self, run: Run, folder: Path, settings: dict[str, Any]) -> Path:
        config = read_recipe(run.recipe)
        roots = {c: self.root(c) for c in run.corpora}
        command = [
            *cli("train"),
            "--config",
            run.recipe,
            *run.args,
            data_prefix(config) + "roots",
            json.dumps(roots),
            *self.extra,
            "--output",
            str(folder),
            "--id",
            "bench." + run.name.replace("/", "."),
            "--evaluate_splits",
            "[]",
            "--trainer.enable_progress_bar",
            "false",
        ]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).unlink(missing_ok=True)
        print(f"[models bench] train {run.name}", flush=True)
        started = time.perf_counter()
        call(command, folder / "train.log")
        done = {"settings": settings, "train_wall_s": round(time.perf_counter() - started, 1), "command": command}
        (folder / MARKER).write_text(json.dumps(done, indent=1) + "\n")
        self.trained_now.add(run.name)
        self.record_run(run, folder, done)
        return folder

    def record_run(self, run: Run, folder: Path, done: dict[str, Any]) -> None:
        training = json.loads((folder / "config.json").read_text()).get("training", {})
        schedule = training.get("schedule_run", {})
        self.put(
            "runs",
            run.name,
            {
                "source": "train",
                "recipe": run.recipe,
                "args": list(run.args),
                "trained_on": list(run.corpora),
                "model": _shown(folder),
                "train_wall_s": done["train_wall_s"],
                "max_steps": schedule.get("max_steps"),
                "optimizer_steps": schedule.get("optimizer_steps"),
                "best_val_score": training.get("best_val_score"),
            },
        )

    def train_wall(self, run_name: str) -> float:
        return self.results["runs"].get(run_name, {}).get("train_wall_s", 0.0)

    # ---- scores ------------------------------------------------------------------------------------------------
    def evaluate(self, folder: Path, corpus: str, split: str, out: Path, head=None, space=None) -> dict[str, Any]:
        """``sermodels evaluate`` in a subprocess; the report it wrote."""
        command = [*cli("evaluate"), "--model", str(folder), "--corpus", corpus, "--root", self.root(corpus)]
        command += ["--split", split, "--out", str(out), "--no-progress"]
        command += ["--head", head] if head else []
        command += ["--label-space", space] if space else []
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        call(command, out.with_suffix(".log"), ok=(0, 1))  # 1: some files failed; the report covers the rest
        return json.loads(out.read_text())

    def reports(self, variant: Variant) -> Path:
        return self.workdir / "reports" / variant.name

    def baseline(self, corpus: str) -> dict[str, Any]:
        """The corpus's best fixed-split baseline, refitted once: its per-file test predictions (cached)."""
        systems = json.loads(BASELINES.read_text())["fixed"][corpus]
        best = max(systems, key=lambda name: systems[name]["uar"])
        settings = {"system": best, "params": systems[best]["params"], "sermodels": sermodels.__version__}
        cached = self.results["baselines"].get(corpus)
        if cached and cached.get("settings") == settings:
            return cached
        print(f"[models bench] refit baseline {corpus} {best}", flush=True)
        started = time.perf_counter()
        entry = refit_baseline(corpus, self.root(corpus), best)
        entry.update(
            settings=settings,
            uar_in_baselines_json=systems[best]["uar"],
            reproduced=abs(entry["uar"] - systems[best]["uar"]) < 1e-9 and entry["params"] == systems[best]["params"],
            wall_s=round(time.perf_counter() - started, 1),
        )
        if not entry["reproduced"]:
            print(f"[models bench] warning: {corpus} {best} refit UAR {entry['uar']:.4f} differs from baselines.json")
        self.put("baselines", corpus, entry)
        self.save()
        return entry


@contextmanager
def locked_results(path: Path, **dump: Any) -> Iterator[dict[str, Any]]:
    """A results file as it is on disk now (``{}`` if none), under an exclusive ``flock`` on ``<path>.lock``; what the
    block leaves in the dict is written back atomically. Benchmark processes running side by side (one per core)
    merge their entries this way instead of overwriting each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_json_object(path) if path.is_file() else {}
        yield results
        atomic_write_text(path, json.dumps(results, indent=1, default=_jsonable, **dump) + "\n")


def cli(command: str) -> list[str]:
    """The ``sermodels`` command line, with this interpreter (the same environment as the benchmark)."""
    return [sys.executable, "-m", "sermodels.cli", command]


def call(command: list[str], log: Path, ok: Sequence[int] = (0,)) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        done = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode not in ok:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise BenchError(f"exit {done.returncode}: {' '.join(command)}\n(log {log})\n{tail}")


def refit_baseline(corpus: str, root: str, system: str) -> dict[str, Any]:
    """``system`` (``<feature set>+<kind>``) fitted as ``sermodels.classical.svm.run_fixed`` does: C (gamma) on dev,
    refit on train + dev, scored on test; with each test file's true and predicted label."""
    feature_set, kind = system.split("+")
    data = load_corpus(corpus, root)
    features = extract_features([it.path for it in data.items], feature_set, cache_dir=FEATURE_CACHE)
    index = {id(it): i for i, it in enumerate(data.items)}
    split = data.split("fixed")
    rows = {part: np.array([index[id(it)] for it in split[part]]) for part in ("train", "dev", "test")}
    y = np.array([it.label for it in data.items])
    fit = fit_fixed(kind, features[rows["train"]], y[rows["train"]], features[rows["dev"]], y[rows["dev"]])
    predicted = [str(p) for p in fit.predict(features[rows["test"]])]
    true = [str(t) for t in y[rows["test"]]]
    true_idx = [fit.labels.index(t) for t in true]
    pred_idx = [fit.labels.index(p) for p in predicted]
    paths = [relative(it.path, root) for it in split["test"]]
    return {
        "system": system,
        "params": fit.params,
        "uar": uar(true_idx, pred_idx, num_classes=len(fit.labels)),
        "war": war(true_idx, pred_idx),
        "n": len(true),
        "predictions": {p: {"true": t, "predicted": q} for p, t, q in zip(paths, true, predicted)},
    }


def relative(path: str, root: str) -> str:
    """A file's path inside its corpus folder: the key that pairs model and baseline predictions."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root))


# ------------------------------------------------------------------------------------------------ protocols


def run_fixed(bench: Bench, variant: Variant, corpora: Sequence[str]) -> None:
    """One model (trained or released), scored on each corpus's test partition through that corpus's head."""
    entry = bench.entry(variant)
    scores = entry.setdefault("corpora", {})
    todo = [c for c in corpora if c not in scores]
    if not todo:
        return
    config = read_recipe(variant.recipe)
    schedule = [] if variant.checkpoint else schedule_args(config, 1, bench.steps_scale * variant.budget)
    run = Run(variant.name, variant.recipe, (*variant.overrides, *schedule), recipe_corpora(config), variant.checkpoint)
    folder = bench.model(run)
    for corpus in todo:
        scores[corpus] = score_test(bench, variant, run, folder, corpus)
        bench.record(entry)


def run_per_corpus(bench: Bench, variant: Variant, corpora: Sequence[str]) -> None:
    """The recipe trained on each corpus alone (``per_corpus_run``), scored on that corpus's test partition."""
    entry = bench.entry(variant)
    scores = entry.setdefault("corpora", {})
    for corpus in corpora:
        if corpus in scores:
            continue
        run = per_corpus_run(variant, corpus, bench.steps_scale * variant.budget)
        scores[corpus] = score_test(bench, variant, run, bench.model(run), corpus)
        bench.record(entry)


def per_corpus_run(variant: Variant, corpus: str, scale: float, extra: Sequence[str] = ()) -> Run:
    """The recipe on ``corpus`` alone for ``max_steps / <the recipe's number of corpora>`` steps."""
    config = read_recipe(variant.recipe)
    prefix = data_prefix(config)
    args = (
        *variant.overrides,
        prefix + "corpora",
        json.dumps([corpus]),
        *extra,
        *schedule_args(config, len(recipe_corpora(config)), scale),
    )
    return Run(f"{variant.name}/{corpus}", variant.recipe, args, (corpus,))


def score_test(bench: Bench, variant: Variant, run: Run, folder: Path, corpus: str) -> dict[str, Any]:
    baseline = bench.baseline(corpus)["predictions"]  # refitted once, before the clock starts
    started = time.perf_counter()
    report = bench.evaluate(folder, corpus, "test", bench.reports(variant) / f"{corpus}-test.json")
    root = bench.root(corpus)
    predictions = {relative(p["path"], root): p["predicted"] for p in report["predictions"]}
    wrong = [p["path"] for p in report["predictions"] if baseline[relative(p["path"], root)]["true"] != p["true"]]
    if wrong:
        raise BenchError(f"{corpus}: the model's and the baseline's true labels differ for {wrong[:3]}")
    print(f"[models bench] {variant.name} {corpus}: test UAR {report['uar']:.4f}", flush=True)
    return {
        "run": run.name,
        "head": report["head"],
        **{key: report[key] for key in ("n", "n_items", "uar", "war", "macro_f1")},
        "failures": len(report.get("failures") or []),
        "train_wall_s": bench.train_wall(run.name),
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "predictions": predictions,
    }


def run_loso(bench: Bench, variant: Variant, corpora: Sequence[str]) -> None:
    """Leave-one-speaker-out on ``variant.corpora[0]``: the per-corpus run refitted on each fold's speakers."""
    corpus = variant.corpora[0]
    data = load_corpus(corpus, bench.root(corpus))
    entry = bench.entry(variant)
    entry.update(corpus=corpus, refit_of=per_corpus_twin(variant, corpus), **loso_context(corpus))
    folds = entry.setdefault("folds", {})
    prefix = data_prefix(read_recipe(variant.recipe))
    n_folds = data.split_names()["loso"]
    for fold in bench.folds if bench.folds is not None else range(n_folds):
        test = data.split("loso", fold)["test"]
        speaker = "+".join(sorted({str(it.speaker) for it in test}))
        if speaker in folds:
            continue
        split_args = (prefix + "split", "loso", prefix + "fold", str(fold))
        run = per_corpus_run(variant, corpus, bench.steps_scale * variant.budget, split_args)
        run = Run(f"{variant.name}/fold{fold:02d}", run.recipe, run.args, run.corpora)
        folds[speaker] = score_fold(bench, variant, run, bench.model(run), test, fold)
        pool_loso(entry, n_folds)
        bench.record(entry)
    pool_loso(entry, n_folds)


def per_corpus_twin(variant: Variant, corpus: str) -> str | None:
    """The per-corpus run whose recipe and overrides each LOSO fold refits (``imagenet_aug_percorpus/emodb``)."""
    for other in VARIANTS:
        if other.protocol == "per_corpus" and (other.recipe, other.overrides) == (variant.recipe, variant.overrides):
            return f"{other.name}/{corpus}"
    return None


def score_fold(bench: Bench, variant: Variant, run: Run, folder: Path, test: list, fold: int) -> dict[str, Any]:
    """The held-out speaker scored in-process by the evaluator ``sermodels evaluate`` uses (the CLI's ``--split``
    names fixed partitions only)."""
    started = time.perf_counter()
    model = sermodels.load(str(folder))
    corpus = test[0].corpus
    head = corpus if corpus in model.heads else None
    report = evaluate_items(model, test, head=head, corpus=corpus, split=f"loso/{fold}", model_id=run.name)
    out = bench.reports(variant) / f"{corpus}-loso-fold{fold:02d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1, default=_jsonable) + "\n")
    root = bench.root(corpus)
    print(f"[models bench] {variant.name} fold {fold}: UAR {report['uar']:.4f}", flush=True)
    return {
        "fold": fold,
        "run": run.name,
        "labels": report["labels"],
        **{key: report[key] for key in ("n", "uar", "war", "macro_f1")},
        "train_wall_s": bench.train_wall(run.name),
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "predictions": {relative(p["path"], root): [p["true"], p["predicted"]] for p in report["predictions"]},
    }


def pool_loso(entry: dict[str, Any], n_folds: int) -> None:
    """Pooled metrics over every finished fold's predictions; mean and population std of the per-fold UARs."""
    folds = list(entry.get("folds", {}).values())
    if not folds:
        return
    pairs = [pair for fold in folds for pair in fold["predictions"].values()]
    pooled = classification_report([t for t, _ in pairs], [p for _, p in pairs], folds[0]["labels"])
    per_fold = np.array([fold["uar"] for fold in folds])
    entry.update(
        {
            "n": pooled["n"],
            "uar": pooled["uar"],
            "war": pooled["war"],
            "macro_f1": pooled["macro_f1"],
            "fold_uar_mean": float(per_fold.mean()),
            "fold_uar_std": float(per_fold.std()),
            "folds_n": len(folds),
            "folds_total": n_folds,
            "complete": len(folds) == n_folds,
        }
    )


def loso_context(corpus: str) -> dict[str, Any]:
    """The baselines' LOSO results on ``corpus`` and the published LOSO anchors, from baselines.json."""
    baselines = json.loads(BASELINES.read_text())
    systems = baselines.get("loso", {}).get(corpus, {})
    keys = ("uar", "war", "fold_uar_mean", "fold_uar_std", "n")
    return {
        "baselines_loso": {name: {k: res.get(k) for k in keys} for name, res in systems.items()},
        "anchors": [a for a in baselines.get("anchors", []) if a["corpus"] == corpus and a["protocol"] == "loso"],
    }


def run_loco(bench: Bench, variant: Variant, corpora: Sequence[str]) -> None:
    """Per held-out corpus: the recipe on the other corpora (``loco/<corpus>``), every file of it scored."""
    config = read_recipe(variant.recipe)
    prefix = data_prefix(config)
    everything = recipe_corpora(config)
    entry = bench.entry(variant)
    entry["head"] = variant.head
    scores = entry.setdefault("corpora", {})
    for held_out in corpora:
        if held_out in scores:
            continue
        others = tuple(c for c in everything if c != held_out)
        args = (
            *variant.overrides,
            prefix + "corpora",
            json.dumps(list(others)),
            *schedule_args(config, 1, bench.steps_scale * variant.budget),
        )
        run = Run(f"loco/{held_out}", variant.recipe, args, others)
        scores[held_out] = score_whole(bench, variant, run, bench.model(run), held_out)
        bench.record(entry)


def score_whole(bench: Bench, variant: Variant, run: Run, folder: Path, corpus: str) -> dict[str, Any]:
    """Train, dev and test of ``corpus`` scored through ``variant.head`` in its label space, pooled."""
    started = time.perf_counter()
    space = head_space(folder, variant.head)
    reports = [
        bench.evaluate(folder, corpus, split, bench.reports(variant) / f"{corpus}-{split}.json", variant.head, space)
        for split in LOCO_SPLITS
    ]
    labels = reports[0]["labels"]
    predictions = [p for report in reports for p in report["predictions"]]
    pooled = classification_report([p["true"] for p in predictions], [p["predicted"] for p in predictions], labels)
    excluded: dict[str, int] = {}
    for report in reports:
        for label, count in (report.get("excluded") or {}).items():
            excluded[label] = excluded.get(label, 0) + count
    print(f"[models bench] {variant.name} {corpus}: UAR {pooled['uar']:.4f}", flush=True)
    return {
        "run": run.name,
        "trained_on": list(run.corpora),
        "head": variant.head,
        "label_space": space,
        "labels": labels,
        "splits_pooled": list(LOCO_SPLITS),
        **{key: pooled[key] for key in ("n", "uar", "war", "macro_f1")},
        "excluded": excluded,
        "failures": sum(len(report.get("failures") or []) for report in reports),
        "train_wall_s": bench.train_wall(run.name),
        "eval_wall_s": round(time.perf_counter() - started, 1),
    }


def head_space(folder: Path, head: str) -> str:
    """The label space whose classes the head predicts (``valence`` 3 classes, ``binary_valence`` 2, ...)."""
    classes = json.loads((folder / "config.json").read_text())["heads"][head]
    spaces = [s for s in LABEL_SPACES if s != "categories" and label_names(s) == list(classes)]
    if not spaces:
        raise BenchError(f"head {head!r} of {folder} predicts {classes}, no aggregated label space")
    return head if head in spaces else spaces[0]


PROTOCOLS: dict[str, Callable[[Bench, Variant, Sequence[str]], None]] = {
    "fixed": run_fixed,
    "per_corpus": run_per_corpus,
    "loso": run_loso,
    "loco": run_loco,
}


# ------------------------------------------------------------------------------------------------ summaries


def mcnemar_vs_baseline(predictions: dict[str, str], baseline: dict[str, Any], model_uar: float) -> dict[str, Any]:
    """McNemar's exact test of the model against the baseline on the files both predicted. ``b``: model right and
    baseline wrong; ``c``: the reverse; ``better``: who is right on more of the discordant files."""
    base = baseline["predictions"]
    shared = sorted(set(predictions) & set(base))
    model_right = [predictions[p] == base[p]["true"] for p in shared]
    base_right = [base[p]["predicted"] == base[p]["true"] for p in shared]
    b = sum(m and not r for m, r in zip(model_right, base_right))
    c = sum(r and not m for m, r in zip(model_right, base_right))
    p_value = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {
        "baseline": baseline["system"],
        "baseline_uar": baseline["uar"],
        "n": len(shared),
        "b": b,
        "c": c,
        "p_value": p_value,
        "significant": p_value < ALPHA,
        "better": "model" if b > c else "baseline" if c > b else "tie",
        "uar_higher": model_uar > baseline["uar"],
        "method": MCNEMAR_METHOD,
    }


def compare(results: dict[str, Any]) -> None:
    """McNemar against the cached baselines, means over the four corpora and wall times, for every variant."""
    for entry in results.get("variants", {}).values():
        scores = entry.get("corpora", {})
        for corpus, score in scores.items():
            baseline = results.get("baselines", {}).get(corpus)
            if baseline and "predictions" in score:
                score["mcnemar_vs_baseline"] = mcnemar_vs_baseline(score["predictions"], baseline, score["uar"])
        uars = [scores[c]["uar"] for c in CORPORA if c in scores]
        if scores:
            entry["mean_uar"] = float(np.mean(uars)) if len(uars) == len(CORPORA) else None
        parts = list(scores.values()) + list(entry.get("folds", {}).values())
        if parts:
            trained = {part["run"]: part.get("train_wall_s", 0.0) for part in parts}
            entry["wall_s"] = round(sum(trained.values()) + sum(part.get("eval_wall_s", 0.0) for part in parts), 1)


def summary(results: dict[str, Any], names: Sequence[str]) -> list[str]:
    """A terminal table: UAR % per corpus (``+``/``-``: significantly better/worse than the baseline), mean, wall."""
    head = f"{'variant':24s}" + "".join(f"{c:>10s}" for c in CORPORA) + f"{'mean':>8s}{'wall min':>10s}"
    lines = [head]
    for name in names:
        entry = results["variants"].get(name)
        if not entry:
            continue
        if entry["protocol"] == "loso":
            if "uar" in entry:
                what = f"pooled {100 * entry['uar']:.1f}, per-fold mean {100 * entry['fold_uar_mean']:.1f}"
                lines.append(f"{name:24s}{what} ({entry['folds_n']}/{entry['folds_total']} folds)")
            continue
        if not entry.get("corpora"):
            continue
        cells = [cell(entry["corpora"].get(c)) for c in CORPORA]
        mean = "–" if entry.get("mean_uar") is None else f"{100 * entry['mean_uar']:.1f}"
        wall = entry.get("wall_s", 0.0) / 60
        lines.append(f"{name:24s}" + "".join(f"{c:>10s}" for c in cells) + f"{mean:>8s}{wall:>10.1f}")
    return lines


def cell(score: dict[str, Any] | None) -> str:
    if not score:
        return "–"
    test = score.get("mcnemar_vs_baseline")
    mark = ("+" if test["better"] == "model" else "-") if test and test["significant"] else ""
    return f"{100 * score['uar']:.1f}{mark}"


def protocol_notes() -> dict[str, str]:
    return {
        "fixed": "test partitions of the fixed speaker-independent split (sermodels/data/splits), each corpus "
        "through its own head",
        "per_corpus": "the recipe on one corpus, trainer.max_steps and an integer val_check_interval divided by the "
        "recipe's number of corpora",
        "baseline": "per corpus, the system of baselines.json['fixed'] with the best test UAR, refitted as "
        "benchmarks/baselines.py (C, gamma on dev; refit on train + dev)",
        "mcnemar": MCNEMAR_METHOD + f"; significant below {ALPHA}",
        "loso": "per fold, the per-corpus recipe with data.split loso, data.fold K; pooled and per-fold UAR",
        "loco": "recipe trained on the other corpora; train + dev + test of the held-out corpus pooled",
        "wall_s": "training seconds of the runs a variant rests on plus its scoring seconds",
    }


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "sermodels": sermodels.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _shown(path: Path) -> str:
    """A path relative to the repository when it lies inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [v.name for v in VARIANTS]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder holding EMODB/, ...")
    parser.add_argument("--only", nargs="+", choices=names, default=names, metavar="NAME", help=", ".join(names))
    parser.add_argument("--corpora", nargs="+", choices=CORPORA, default=list(CORPORA), help="restrict the corpora")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="trained folders and evaluation reports")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS))
    parser.add_argument("--force", action="store_true", help="redo the selection even where results match")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every trained max_steps (smoke)")
    parser.add_argument(
        "--override",
        action="append",
        metavar="ARG",
        help="append ARG to every training command (smoke), e.g. --override=--trainer.limit_val_batches --override=1",
    )
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="LOSO folds to run (smoke)")
    args = parser.parse_args(argv)
    smoke = args.steps_scale != 1 or args.override or args.folds is not None
    default = Path(args.results).resolve() == DEFAULT_RESULTS or Path(args.workdir).resolve() == DEFAULT_WORKDIR
    if smoke and default:
        parser.error("--steps-scale/--override/--folds make a smoke run: give --results and --workdir elsewhere")
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for v in VARIANTS:
            what = v.checkpoint if v.source == "checkpoint" else " ".join(v.overrides) or "(recipe as is)"
            print(f"{v.name:24s} {v.protocol:10s} {v.source:10s} {v.recipe} {what}\n{'':24s} {v.description}")
        return 0
    bench = Bench(args)
    failed = []
    for variant in (v for v in VARIANTS if v.name in args.only):
        corpora = [c for c in variant.corpora if c in args.corpora]
        if not corpora:
            continue
        started = time.perf_counter()
        try:
            PROTOCOLS[variant.protocol](bench, variant, corpora)
        except (BenchError, OSError) as err:  # e.g. a recipe or checkpoint not there yet: the others go on
            failed.append(variant.name)
            print(f"[models bench] {variant.name} failed: {err}", file=sys.stderr, flush=True)
        bench.save()
        print(f"[models bench] {variant.name}: {time.perf_counter() - started:.0f} s this run", flush=True)
    print("\n".join(summary(bench.results, args.only)))
    print(f"wrote {bench.path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
