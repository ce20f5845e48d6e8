"""CNN+LSTM transferable features (Marczewski, Veloso, Ziviani, ACM MM Thematic Workshops 2017): the analogues of
its Tables 2, 3 and 4 on our four corpora.

Every corpus is restricted to the four classes all of them have (anger, happiness, neutral, sadness: the ``basic4``
label set; EMOVO's joy is happiness; ``--space basic6`` takes the paper's six emotions instead, which only RAVDESS
and EMOVO have all of: EMO-DB lacks surprise, URDU has three; UAR is over the classes a test fold has) and split into
5 speaker-grouped folds (:func:`sermodels.data.splits.grouped_folds`, the same folds in every setting). Fold k of
every corpus is its test fold in run k.

- **Pre-training** (one network per key, cached under ``runs/cnn_lstm/pretrained``): ``S1`` fold k trains on every
  corpus without its fold k (so the target's training folds are in, its test fold never; §3.2 "S1: target domain
  data are used during pre-training and fine-tuning"); ``S2`` for a target trains on the other corpora only.
- **Table 3**: ``TT`` (the network trained on the target's training folds only, the baseline) and S1/S2 × A1–A8
  (:data:`sermodels.tasks.transfer.SETTINGS`), each fine-tuned on the target's training folds and scored (UAR) on
  its test fold; the relative gain over TT, ``(UAR − UAR_TT) / UAR_TT``, as the paper's table; paired t-tests over
  the folds, setting vs TT.
- **Table 2** (no transfer, §4.4): the S1 network of fold k *is* the paper's model trained on all corpora pooled
  (its A1), beside the same network without the LSTM ("CNN", trained the same way) and SVMs on utterance functionals
  (log-mel 600 and, when opensmile is installed, eGeMAPS; C and γ by speaker-grouped inner cross-validation) trained
  on the same pooled folds.
- **Table 4**: the pre-training without one source corpus (S1 and S2), A1–A4 as the paper shows; on the CPU the
  first 3 of the 5 folds (``--table4-folds``), each paired with the same fold of Table 3.

A frozen C1's output is cached per pre-trained network and target (:func:`sermodels.training.cnn_lstm.stage_outputs`);
the frozen stages after it are replayed with their dropout, as in training the whole network.
Each part merges its entries into ``benchmarks/results/cnn_lstm.json``; finished pre-trainings are kept, so a part
can be rerun or run side by side (``--targets``, ``--folds``).

    python benchmarks/cnn_lstm.py [--parts pretrain table3 table2 table4] [--targets emodb ...] [--folds 0 1 ...]
        [--table4-folds 0 1 2] [--frontend logmel|raw] [--pretrain-epochs N] [--finetune-epochs N] [--seed 0]
    python benchmarks/cnn_lstm.py --parts diagnose   # training curves that chose the epochs (no test data)

The CPU default is the log-mel variant with Table 4 on 3 folds (about an hour per table on 2 cores, two processes
side by side); the full study is ``--frontend raw --table4-folds 0 1 2 3 4 --device cuda`` on a GPU machine that
holds the four corpora.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import environment, locked_results  # noqa: E402  (benchmarks/models.py)

from sermodels import labels as label_maps  # noqa: E402
from sermodels.audio import load_audio  # noqa: E402
from sermodels.data import load_corpus  # noqa: E402
from sermodels.data.splits import grouped_folds  # noqa: E402
from sermodels.layer_groups import SETTINGS  # noqa: E402
from sermodels.metrics import uar  # noqa: E402
from sermodels.models.cnn_lstm import CNNLSTM  # noqa: E402
from sermodels.training.cnn_lstm import (
    BATCH_SIZE,
    OPTIMIZER,
    fit,
    fresh,
    network_inputs,
    predict,
    prepare,
    stage_outputs,
)  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "cnn_lstm.json"
RUNS = REPO / "runs" / "cnn_lstm"
CORPORA = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
SPACES = ("basic4", "basic6")  # the four classes all our corpora have; the paper's six emotions (§4.1)
FOLDS = 5
PARTS = ("diagnose", "pretrain", "table3", "table2", "table4")
DEFAULT_PARTS = PARTS[1:]
#: Epochs, chosen on training curves (``--parts diagnose``, no test fold involved; the paper does not state them):
#: a network trained from scratch (pre-training, TT, the CNN) is still improving at 20 epochs (S1 fold 0: training
#: loss 1.35 -> 0.67) and gets 20, the CPU budget; fine-tuning from a pre-trained network reaches TT's 20-epoch
#: training loss in about 8 (EMO-DB fold 0, A2 from S2: 0.51 at epoch 8 vs TT 0.52 at 20).
PRETRAIN_EPOCHS = 20
FINETUNE_EPOCHS = 8
TABLE4_SETTINGS = ("A1", "A2", "A3", "A4")  # the paper omits A5–A8 from Table 4
#: Table 4 needs 26 more pre-trainings and 360 fine-tunings over 5 folds; the CPU default runs the first 3 of the
#: same folds (paired with Table 3's values on those folds), ``--table4-folds 0 1 2 3 4`` the full table.
TABLE4_FOLDS = (0, 1, 2)
#: The paper's numbers (six emotions, six corpora of which EMO-DB and EMOVO are ours), quoted for comparison; OCR
#: dropped the minus signs of the negative gains, restored from the text (§4.4) and the missing leading points.
PAPER = {
    "source": "Marczewski et al. 2017, Tables 2-4 (../shared/papers/cnn_lstm_transferable_features_ser.txt)",
    "table2": {
        "emodb": {"svm": 0.645, "cnn": 0.622, "cnn_lstm": 0.659},
        "emovo": {"svm": 0.411, "cnn": 0.440, "cnn_lstm": 0.459},
    },
    "table3": {
        "emodb": {
            "TT": 0.614,
            "S1": [0.047, 0.117, 0.088, 0.051, 0.052, 0.102, 0.057, 0.086],
            "S2": [-0.365, 0.093, 0.064, 0.083, 0.050, 0.068, 0.065, 0.083],
        },
        "emovo": {
            "TT": 0.518,
            "S1": [-0.095, 0.053, 0.014, -0.061, -0.089, -0.071, 0.034, 0.014],
            "S2": [-0.372, 0.093, 0.109, -0.060, -0.041, -0.044, 0.008, -0.017],
        },
        "mean": {
            "S1": [0.016, 0.073, 0.050, 0.028, 0.017, 0.051, 0.058, 0.053],
            "S2": [-0.321, 0.051, 0.038, -0.007, -0.031, 0.015, 0.006, -0.020],
        },
        "sd": {
            "S1": [0.072, 0.051, 0.044, 0.063, 0.068, 0.078, 0.039, 0.041],
            "S2": [0.189, 0.041, 0.049, 0.064, 0.067, 0.040, 0.069, 0.076],
        },
    },
    "table4": {  # UAR A1–A4, S1 then S2
        "emodb": {
            "All": {"S1": [0.643, 0.685, 0.668, 0.645], "S2": [0.389, 0.671, 0.653, 0.665]},
            "-emovo": {"S1": [0.688, 0.792, 0.789, 0.786], "S2": [0.382, 0.667, 0.658, 0.638]},
        },
        "emovo": {
            "All": {"S1": [0.469, 0.545, 0.525, 0.496], "S2": [0.325, 0.566, 0.574, 0.487]},
            "-emodb": {"S1": [0.566, 0.664, 0.675, 0.664], "S2": [0.320, 0.567, 0.549, 0.528]},
        },
    },
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- data


class Data:
    """The four corpora in the shared label set: items, labels, corpus, test-fold index and network inputs."""

    def __init__(self, data: Path, frontend: str, space: str = SPACES[0]):
        self.frontend, self.space = frontend, space
        self.classes = list(label_maps.label_names(space))
        items, corpus_of, fold_of = [], [], []
        for name, folder in CORPORA.items():
            corpus = load_corpus(name, data / folder)
            kept = sorted((it for it in corpus if label_maps.in_label_set(it.label, space)), key=lambda it: it.id)
            folds = test_folds(kept, space)
            items += kept
            corpus_of += [name] * len(kept)
            fold_of += list(folds)
        self.items = items
        self.labels = np.array([self.classes.index(label_maps.map_label(it.label, space)) for it in items])
        self.corpus = np.array(corpus_of)
        self.fold = np.array(fold_of)
        self.inputs = self._inputs()

    def _inputs(self) -> torch.Tensor:
        front = CNNLSTM({self.space: self.classes}, frontend=self.frontend).config()
        front = {k: front.get(k) for k in ("frontend", "input_samples", "mel", "sample_rate")}
        names = "\n".join(str(it.path) for it in self.items) + json.dumps(front, sort_keys=True)
        path = RUNS / f"inputs_{self.frontend}_{hashlib.sha256(names.encode()).hexdigest()[:12]}.safetensors"
        if path.is_file():
            return load_file(path)["inputs"].float()
        log(f"decoding {len(self.items)} clips and computing the {self.frontend} inputs")
        model = CNNLSTM({self.space: self.classes}, frontend=self.frontend)
        waves = [load_audio(it.path, model.sample_rate) for it in self.items]
        inputs = network_inputs(model, waves)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"inputs": inputs.half().contiguous()}, path)  # 16-bit storage; z-scores lose < 1e-3
        return inputs.half().float()

    def mask(self, corpora: Sequence[str], fold: int | None = None, test: bool = False) -> np.ndarray:
        """Items of ``corpora``: all (``fold`` None), those outside fold ``fold`` (training), or in it (``test``)."""
        chosen = np.isin(self.corpus, list(corpora))
        if fold is None:
            return chosen
        return chosen & ((self.fold == fold) if test else (self.fold != fold))


def test_folds(items, space: str = SPACES[0]) -> np.ndarray:
    """Index of each item's test fold: 5 speaker-grouped folds (the train+dev of a fold is its training data)."""
    groups: dict[str, dict[str, int]] = {}
    for item in items:
        per = groups.setdefault(item.speaker, {})
        label = label_maps.map_label(item.label, space)
        per[label] = per.get(label, 0) + 1
    speakers = np.array([item.speaker for item in items])
    fold_of = np.full(len(items), -1)
    for index, fold in enumerate(grouped_folds(groups, FOLDS)):
        fold_of[np.isin(speakers, fold["test"])] = index
    assert (fold_of >= 0).all()
    return fold_of


def config(data: Data, recurrent: bool = True) -> dict[str, Any]:
    return {"domains": {data.space: data.classes}, "frontend": data.frontend, "recurrent": recurrent}


# ---------------------------------------------------------------------------------------------------- pre-training


def pretrained(
    data: Data, key: str, mask: np.ndarray, epochs: int, seed: int, recurrent: bool = True, wait: bool = True
) -> CNNLSTM | None:
    """The network pre-trained on ``mask``'s items (cached by ``key``, the items and the schedule). One that another
    process is training is waited for, or (``wait=False``) ``None``."""
    digest = hashlib.sha256(mask.tobytes() + f"{epochs} {seed} {recurrent}".encode()).hexdigest()[:10]
    path = RUNS / "pretrained" / f"{data.frontend}_{setup_digest(data)}" / f"{key}_{digest}.safetensors"
    model = fresh(config(data, recurrent), seed).to(data.inputs.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() and not claimed(path):
        if not wait:
            return None
        wait_for(path)  # returns once the file is there, or with this process's claim on it
    if path.is_file():
        model.load_state_dict(load_file(path, device=str(data.inputs.device)))
        return model.eval()
    log(f"pre-training {key} on {int(mask.sum())} clips, {epochs} epochs")
    started = time.perf_counter()
    curve = fit(model, data.inputs[mask], data.labels[mask], epochs=epochs, seed=seed)
    path.with_suffix(".json").write_text(
        json.dumps({"loss": curve.loss, "accuracy": curve.accuracy, "seconds": time.perf_counter() - started}) + "\n"
    )
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    save_file(model.state_dict(), partial)
    partial.replace(path)  # a process running beside this one never reads half a file
    path.with_suffix(".claim").unlink(missing_ok=True)
    return model.eval()


def claimed(path: Path) -> bool:
    """Whether this process may train ``path``'s network: it claims it (``.claim`` holding its pid), or takes over
    the claim of a process that is gone. A process running beside it waits instead (:func:`wait_for`)."""
    claim = path.with_suffix(".claim")
    try:
        with open(claim, "x") as f:
            f.write(str(os.getpid()))
        return True
    except FileExistsError:
        try:
            owner = int(claim.read_text() or 0)
            os.kill(owner, 0)
        except (ProcessLookupError, ValueError, FileNotFoundError):
            claim.unlink(missing_ok=True)  # its owner died (or just finished): claim it afresh
            return not path.is_file() and claimed(path)
        except PermissionError:
            pass  # a live process of another user
        return False


def wait_for(path: Path) -> None:
    log(f"waiting for {path.name}, trained by another process")
    while not path.is_file() and not claimed(path):
        time.sleep(5)


def setup_digest(data: Data) -> str:
    """What a cached network depends on besides its items and schedule: the architecture's configuration (sizes,
    dropout, front-end), the batch size, the optimiser and the device type."""
    setup = {
        "model": CNNLSTM(**config(data)).config(),
        "batch_size": BATCH_SIZE,
        "optimizer": OPTIMIZER,
        "device": data.inputs.device.type,
    }
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:8]


def s1(data: Data, fold: int, args, without: str | None = None, recurrent: bool = True, wait: bool = True):
    corpora = [c for c in CORPORA if c != without]
    key = f"S1_fold{fold}" + (f"_without_{without}" if without else "") + ("" if recurrent else "_cnn")
    mask = data.mask(corpora, fold)
    return pretrained(data, key, mask, args.pretrain_epochs, args.seed, recurrent, wait)


def s2(data: Data, target: str, args, without: str | None = None, wait: bool = True):
    corpora = [c for c in CORPORA if c not in (target, without)]
    key = "S2_" + "+".join(corpora)
    return pretrained(data, key, data.mask(corpora), args.pretrain_epochs, args.seed, wait=wait)


# ---------------------------------------------------------------------------------------------------- settings


class Target:
    """One target corpus and fold: its training and test items, and a frozen C1's outputs cached per network."""

    def __init__(self, data: Data, target: str, fold: int):
        self.data, self.target, self.fold = data, target, fold
        self.train = data.mask([target], fold)
        self.test = data.mask([target], fold, test=True)
        self.cache: dict[tuple[int, str], torch.Tensor] = {}

    def score(self, model: CNNLSTM, start: str = "input", x: torch.Tensor | None = None) -> float:
        x = self.data.inputs[self.test] if x is None else x
        return round(uar(self.data.labels[self.test], predict(model, x, start=start), len(self.data.classes)), 4)

    def stage(self, key: str, model: CNNLSTM, stage: str, part: np.ndarray) -> torch.Tensor:
        """``stage``'s outputs of the pre-trained ``model`` for ``part``'s items (computed once per network)."""
        name = (key, stage, "train" if part is self.train else "test")
        if name not in self.cache:
            inputs = self.data.inputs[part]
            self.cache[name] = inputs if stage == "input" else stage_outputs(model, inputs, stage)
        return self.cache[name]

    def setting(self, base: CNNLSTM, key: str, setting: str, epochs: int, seed: int) -> float:
        """UAR on the test fold after ``setting`` from the pre-trained ``base`` (left unchanged; ``key`` names it
        for the stage cache)."""
        if setting == "A1":
            return self.score(base)
        model, start = prepare(copy.deepcopy(base), setting, seed)
        x_train = self.stage(key, base, start, self.train)
        fit(model, x_train, self.data.labels[self.train], start=start, epochs=epochs, seed=seed)
        return self.score(model, start, self.stage(key, base, start, self.test))

    def from_scratch(self, epochs: int, seed: int, recurrent: bool = True) -> float:
        """TT: the network trained on the target's training folds only."""
        model = fresh(config(self.data, recurrent), seed).to(self.data.inputs.device)
        fit(model, self.data.inputs[self.train], self.data.labels[self.train], epochs=epochs, seed=seed)
        return self.score(model)


# ---------------------------------------------------------------------------------------------------- parts


def diagnose_part(data: Data, args) -> dict[str, Any]:
    """Training curves only (loss, accuracy per epoch) that chose the epochs: the S1 pre-training of fold 0, and on
    EMO-DB's fold-0 training items TT and A2 from the S2 network (which never saw EMO-DB). No test item is read."""
    epochs = args.diagnose_epochs
    curves: dict[str, Any] = {}
    model = fresh(config(data), args.seed)
    started = time.perf_counter()
    curve = fit(
        model,
        data.inputs[data.mask(list(CORPORA), 0)],
        data.labels[data.mask(list(CORPORA), 0)],
        epochs=epochs,
        seed=args.seed,
    )
    curves["S1_fold0_pretraining"] = vars(curve) | {"seconds": round(time.perf_counter() - started, 1)}
    target = Target(data, "emodb", 0)
    model = fresh(config(data), args.seed)
    started = time.perf_counter()
    curve = fit(model, data.inputs[target.train], data.labels[target.train], epochs=epochs, seed=args.seed)
    curves["emodb_fold0_TT"] = vars(curve) | {"seconds": round(time.perf_counter() - started, 1)}
    base = s2(data, "emodb", args)
    model, start = prepare(copy.deepcopy(base), "A2", args.seed)
    started = time.perf_counter()
    curve = fit(model, data.inputs[target.train], data.labels[target.train], epochs=epochs, seed=args.seed)
    curves["emodb_fold0_S2_A2"] = vars(curve) | {"seconds": round(time.perf_counter() - started, 1)}
    for name, c in curves.items():
        log(f"{name}: loss {[round(v, 3) for v in c['loss']]} accuracy {[round(v, 2) for v in c['accuracy']]}")
    return {
        key: {k: [round(v, 4) for v in val] if isinstance(val, list) else val for k, val in c.items()}
        for key, c in curves.items()
    }


def pretrain_part(data: Data, args) -> None:
    """The pre-trainings the tables in ``--parts`` need (finished ones are kept): S1 per fold, S2 per target, the CNN
    per fold (Table 2), those without one source corpus (Table 4). Processes running side by side share the work:
    each trains what no other has claimed, then waits for the rest."""
    jobs = []
    if "table3" in args.parts or "table2" in args.parts:
        jobs += [functools.partial(s1, data, fold, args) for fold in args.folds]
    if "table3" in args.parts:
        jobs += [functools.partial(s2, data, target, args) for target in args.targets]
    if "table2" in args.parts:
        jobs += [functools.partial(s1, data, fold, args, recurrent=False) for fold in args.folds]
    if "table4" in args.parts:
        jobs += [functools.partial(s1, data, fold, args, without=c) for fold in args.table4_folds for c in CORPORA]
        jobs += [
            functools.partial(s2, data, target, args, without=c)
            for target in args.targets
            for c in CORPORA
            if c != target
        ]
    deferred = [job for job in jobs if job(wait=False) is None]
    for job in deferred:
        job()


def table3_part(data: Data, args) -> None:
    for target in args.targets:
        base2 = s2(data, target, args)
        for fold in args.folds:
            started = time.perf_counter()
            cell = Target(data, target, fold)
            base1 = s1(data, fold, args)
            entry: dict[str, Any] = {"TT": cell.from_scratch(args.pretrain_epochs, args.seed)}
            for scenario, base in (("S1", base1), ("S2", base2)):
                entry[scenario] = {
                    a: cell.setting(base, scenario, a, args.finetune_epochs, args.seed) for a in SETTINGS
                }
            entry["seconds"] = round(time.perf_counter() - started, 1)
            log(f"table 3 {target} fold {fold}: TT {entry['TT']:.3f} S1 {entry['S1']} S2 {entry['S2']}")
            with locked_results(args.results) as results:
                results.setdefault("table3", {}).setdefault(target, {})[str(fold)] = entry


def table2_part(data: Data, args) -> None:
    from sermodels.classical.svm import extract_features, make_svm, select_by_group_cv

    feature_sets = ["logmel600"] + (["egemaps"] if _has_opensmile() else [])
    features = {
        name: extract_features([it.path for it in data.items], name, cache_dir=REPO / ".cache" / "features")
        for name in feature_sets
    }
    speakers = np.array([f"{c}/{it.speaker}" for c, it in zip(data.corpus, data.items)])
    for fold in args.folds:
        started = time.perf_counter()
        train = data.mask(list(CORPORA), fold)
        cnn, lstm = s1(data, fold, args, recurrent=False), s1(data, fold, args)
        svms = {}
        for name, x in features.items():
            params, _ = select_by_group_cv("rbf", x[train], data.labels[train], speakers[train], n_splits=5)
            svms[name] = (make_svm("rbf", **params).fit(x[train], data.labels[train]), params)
        for target in args.targets:
            cell = Target(data, target, fold)
            entry = {"cnn": cell.score(cnn), "cnn_lstm": cell.score(lstm)}
            for name, (svm, params) in svms.items():
                pred = svm.predict(features[name][cell.test])
                entry[f"svm_{name}"] = round(uar(data.labels[cell.test], pred, len(data.classes)), 4)
                entry[f"svm_{name}_params"] = params
            log(f"table 2 {target} fold {fold}: {entry}")
            with locked_results(args.results) as results:
                results.setdefault("table2", {}).setdefault(target, {})[str(fold)] = entry
        log(f"table 2 fold {fold}: {time.perf_counter() - started:.0f} s")


def table4_part(data: Data, args) -> None:
    for target in args.targets:
        for fold in args.table4_folds:
            started = time.perf_counter()
            cell = Target(data, target, fold)
            entry: dict[str, Any] = {}
            for without in (c for c in CORPORA if c != target):
                bases = {"S1": s1(data, fold, args, without=without), "S2": s2(data, target, args, without=without)}
                entry[f"-{without}"] = {
                    scenario: {
                        a: cell.setting(base, f"{scenario}-{without}", a, args.finetune_epochs, args.seed)
                        for a in TABLE4_SETTINGS
                    }
                    for scenario, base in bases.items()
                }
            entry["seconds"] = round(time.perf_counter() - started, 1)
            log(f"table 4 {target} fold {fold}: {entry}")
            with locked_results(args.results) as results:
                results.setdefault("table4", {}).setdefault(target, {})[str(fold)] = entry


def _has_opensmile() -> bool:
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- summary


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Means over folds, relative gains over TT, their mean and sd across corpora, paired t-tests over folds."""
    from scipy.stats import ttest_rel

    def test(a: list[float], b: list[float]) -> float | None:
        if len(a) < 2 or np.allclose(np.subtract(a, b), np.subtract(a, b)[0]):
            return None
        return round(float(ttest_rel(a, b).pvalue), 4)

    summary: dict[str, Any] = {}
    results = {part: _in_corpus_order(results.get(part, {})) for part in ("table2", "table3", "table4")}
    table3 = results["table3"]
    gains: dict[str, dict[str, list[float]]] = {"S1": {a: [] for a in SETTINGS}, "S2": {a: [] for a in SETTINGS}}
    for target, folds in table3.items():
        order = sorted(folds, key=int)
        tt = [folds[k]["TT"] for k in order]
        row: dict[str, Any] = {"folds": len(order), "TT": round(float(np.mean(tt)), 4)}
        for scenario in ("S1", "S2"):
            row[scenario] = {}
            for a in SETTINGS:
                values = [folds[k][scenario][a] for k in order]
                gain = (np.mean(values) - np.mean(tt)) / np.mean(tt)
                gains[scenario][a].append(gain)
                row[scenario][a] = {
                    "uar": round(float(np.mean(values)), 4),
                    "gain": round(float(gain), 4),
                    "p_vs_tt": test(values, tt),
                }
        summary.setdefault("table3", {})[target] = row
    if table3:
        summary["table3_across"] = {
            scenario: {
                a: {
                    "mean": round(float(np.mean(v)), 4),
                    "sd": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None,
                }
                for a, v in per.items()
            }
            for scenario, per in gains.items()
        }
    for target, folds in results.get("table2", {}).items():
        order = sorted(folds, key=int)
        systems = [k for k in folds[order[0]] if not k.endswith("_params")]
        summary.setdefault("table2", {})[target] = {
            "folds": len(order),
            **{name: round(float(np.mean([folds[k][name] for k in order])), 4) for name in systems},
            "p_cnn_lstm_vs_cnn": test([folds[k]["cnn_lstm"] for k in order], [folds[k]["cnn"] for k in order]),
            **{
                f"p_cnn_lstm_vs_{name}": test([folds[k]["cnn_lstm"] for k in order], [folds[k][name] for k in order])
                for name in systems
                if name.startswith("svm_")
            },
        }
    for target, folds in results.get("table4", {}).items():
        order = sorted(k for k in folds if str(k) in table3.get(target, {}))
        if not order:
            continue
        row = {"folds": len(order), "All": {}}
        for scenario in ("S1", "S2"):
            row["All"][scenario] = {
                a: round(float(np.mean([table3[target][k][scenario][a] for k in order])), 4) for a in TABLE4_SETTINGS
            }
        for dropped in (d for d in folds[order[0]] if d.startswith("-")):
            row[dropped] = {}
            for scenario in ("S1", "S2"):
                row[dropped][scenario] = {}
                for a in TABLE4_SETTINGS:
                    values = [folds[k][dropped][scenario][a] for k in order]
                    full = [table3[target][k][scenario][a] for k in order]
                    row[dropped][scenario][a] = {
                        "uar": round(float(np.mean(values)), 4),
                        "delta": round(float(np.mean(values) - np.mean(full)), 4),
                        "p_vs_all": test(values, full),
                    }
        summary.setdefault("table4", {})[target] = row
    return summary


def _in_corpus_order(per_target: dict[str, Any]) -> dict[str, Any]:
    """Targets in :data:`CORPORA` order (processes running side by side write them as they finish)."""
    return {c: per_target[c] for c in sorted(per_target, key=list(CORPORA).index)}


# ---------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS))
    parser.add_argument("--targets", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(FOLDS)))
    parser.add_argument("--table4-folds", nargs="+", type=int, default=list(TABLE4_FOLDS))
    parser.add_argument("--frontend", choices=("logmel", "raw"), default="logmel")
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS)
    parser.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS)
    parser.add_argument("--diagnose-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--space", choices=SPACES, default=SPACES[0], help="the shared label set")
    parser.add_argument("--results", type=Path, default=None, help=f"default: {RESULTS} (basic6: cnn_lstm_basic6.json)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.results is None:
        args.results = RESULTS if args.space == SPACES[0] else RESULTS.with_name(f"cnn_lstm_{args.space}.json")
    data = Data(args.data, args.frontend, args.space)
    data.inputs = data.inputs.to(args.device)
    run = {
        "frontend": args.frontend,
        "device": args.device,
        "pretrain_epochs": args.pretrain_epochs,
        "finetune_epochs": args.finetune_epochs,
        "seed": args.seed,
        "folds": FOLDS,
        "classes": data.classes,
        "clips": {c: int(data.mask([c]).sum()) for c in CORPORA},
    }
    with locked_results(args.results) as results:
        if results.get("run", run) != run:
            raise SystemExit(f"{args.results} holds a run with other settings ({results['run']}); give --results")
    for part in args.parts:
        started = time.perf_counter()
        if part == "diagnose":
            curves = diagnose_part(data, args)
            with locked_results(args.results) as results:
                results["diagnose"] = curves
        else:
            {"pretrain": pretrain_part, "table3": table3_part, "table2": table2_part, "table4": table4_part}[part](
                data, args
            )
        with locked_results(args.results) as results:
            results["run"] = run
            results["environment"] = environment()
            results["paper"] = PAPER
            results.setdefault("wall_seconds", {})[part + ":" + ",".join(args.targets)] = round(
                time.perf_counter() - started, 1
            )
            results["summary"] = summarise(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
