"""EmoNet training regimes on the four corpora, as the paper's Table 4 (Gerczuk et al., IEEE TAC, §7.2).

For every corpus, fixed-split test UAR of

- ``scratch``: the same network trained on the corpus alone (§5.2.2 baseline);
- ``multi``: the released shared multi-corpus model (``emonet_wrn.multi4``) through the corpus's own head;
- ``adapters``: from the shared model, the corpus's adapters, BN and head re-initialised and trained, shared
  network frozen (§6.1);
- ``head``: only a new head on the frozen shared model (as seen through the corpus's adapters);
- ``full``: every parameter fine-tuned from the shared model, lr 0.01 (§6.1);

with McNemar's test of each against ``scratch`` on the same test utterances. ``--loso`` adds EMO-DB
leave-one-speaker-out for one regime (10 runs). A transfer regime needs a base that never saw the held-out
speaker, so LOSO transfer starts from ``--loso-base`` (a shared model trained without EMO-DB, e.g.
``recipes/emonet/multi3.yaml``); ``scratch`` needs none.

Each run is written to the JSON as soon as it finishes and skipped when the file already has it, so an interrupted
benchmark resumes. Schedules are reduced to what 2 CPU cores afford (``--epochs``); the JSON records them.

    python benchmarks/emonet.py [--data ../shared/data] [--base checkpoints/emonet_wrn.multi4] [--loso scratch]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

import sermodels
from sermodels._io import atomic_write_text
from sermodels.checkpoint import read_json_object
from sermodels.data import SERDataModule, load_corpus
from sermodels.evaluation import evaluate_items
from sermodels.hub import read_config, resolve
from sermodels.metrics import mcnemar
from sermodels.tasks import ClassificationTask, TransferTask
from sermodels.training.train import quiet_trainer

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
REGIMES = ("scratch", "multi", "adapters", "head", "full")
DEFAULT_OUT = REPO / "benchmarks" / "results" / "emonet.json"
DEFAULT_EPOCHS = {"scratch": 8, "adapters": 6, "head": 6, "full": 6}
# Published numbers we compare with; quoted, not measured here.
ANCHORS = [
    {
        "corpus": "emodb",
        "protocol": "emonet_split",
        "system": "EmoNet ResNet from scratch",
        "regime": "scratch",
        "uar": 0.592,
        "source": "Gerczuk et al., EmoNet, IEEE TAC, Table 4 (EMO-DB test partition of EmoSet)",
    },
    {
        "corpus": "emodb",
        "protocol": "emonet_split",
        "system": "EmoNet adapters from the shared model of all 26 EmoSet corpora",
        "regime": "adapters",
        "uar": 0.726,
        "source": "Gerczuk et al., EmoNet, IEEE TAC, Table 4 (EMO-DB test partition of EmoSet)",
    },
    {
        "corpus": "emodb",
        "protocol": "loso",
        "system": "ComParE functionals + SVM (7 classes)",
        "uar": 0.771,
        "source": "audEERING w2v2-how-to notebook (EMO-DB leave-one-speaker-out)",
    },
]


def fit(
    corpus: str,
    root: str,
    regime: str,
    *,
    base: str | None,
    epochs: int,
    patience: int,
    batch_size: int,
    max_duration: float,
    seed: int,
    split: str = "fixed",
    fold: int | None = None,
    precision: str = "bf16-mixed",
    limit_batches: int | float | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train one run; return the fitted network (best dev UAR) and what was run."""
    L.seed_everything(seed, verbose=False)
    data = SERDataModule(
        [corpus],
        roots={corpus: root},
        split=split,
        fold=fold,
        batch_size=batch_size,
        max_duration=max_duration,
        seed=seed,
    )
    transfer = "none" if regime == "scratch" else regime
    # The new domain starts from the base's own domain for this corpus when it has one, else its default head.
    like = None
    if transfer != "none" and corpus in read_config(base)["heads"]:
        like = corpus
    schedule = {"name": "plateau", "patience": patience}
    if transfer == "none":
        # The paper's from-scratch baseline is the plain ResNet (no adapters: a parallel 1x1 adapter would only
        # re-parameterise the centre tap of each 3x3 kernel and double its effective learning rate).
        task = ClassificationTask({"arch": "emonet_wrn", "adapters": False}, schedule=schedule)
    else:
        task = TransferTask(base, mode=transfer, like=like, schedule=schedule)
    trainer = quiet_trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_epochs=epochs,
        enable_progress_bar=False,
        limit_train_batches=limit_batches,
        limit_val_batches=limit_batches,
    )
    started = time.perf_counter()
    trainer.fit(task, datamodule=data)
    summary = task.training_summary()
    info = {
        "epochs": epochs,
        "epochs_run": trainer.current_epoch,
        "patience": patience,
        "lr": task.lr,
        "best_dev_uar": summary["best_val_score"],
        "trainable_parameters": summary["parameters"]["trainable"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    return task.net.eval(), info


def score(net, items, head: str) -> dict[str, Any]:
    """Test metrics and the per-utterance class indices (into ``labels``) that McNemar's test needs."""
    report = evaluate_items(net, items, head=head, batch_size=16)
    labels = report["labels"]
    return {
        "uar": report["uar"],
        "war": report["war"],
        "n": report["n"],
        "labels": labels,
        "true": [labels.index(p["true"]) for p in report["predictions"]],
        "predicted": [labels.index(p["predicted"]) for p in report["predictions"]],
        "paths": [Path(p["path"]).name for p in report["predictions"]],
    }


def compare(result: dict[str, Any]) -> None:
    """McNemar of every regime against scratch, per corpus (same test items, same order)."""
    for runs in result["fixed"].values():
        reference = runs.get("scratch")
        if not reference:
            continue
        for name, run in runs.items():
            if name == "scratch" or run.get("paths") != reference["paths"]:
                continue
            test = mcnemar(reference["true"], reference["predicted"], run["predicted"])
            better = run["uar"] > reference["uar"]
            run["mcnemar_vs_scratch"] = {**test, "significant": test["p_value"] < 0.05, "uar_higher": better}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--base", default=str(REPO / "checkpoints" / "emonet_wrn.multi4"))
    parser.add_argument("--corpora", nargs="+", default=list(FOLDERS))
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument(
        "--epochs",
        type=json.loads,
        default={},
        help=f"JSON object regime -> epochs, over the defaults {DEFAULT_EPOCHS}",
    )
    parser.add_argument("--patience", type=int, default=2, help="plateau patience (epochs) of every run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-duration", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loso", choices=("scratch", "adapters", "head", "full"), default=None)
    parser.add_argument("--loso-base", default=None, help="base for a transfer regime under LOSO (no EMO-DB in it)")
    parser.add_argument("--loso-epochs", type=int, default=5)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--limit-batches", type=int, default=None, help="cap batches per epoch (smoke runs only)")
    args = parser.parse_args()
    if args.limit_batches is not None and Path(args.out).resolve() == DEFAULT_OUT:
        parser.error("--limit-batches is a smoke run: give --out (benchmarks/results keeps the real runs)")
    if args.loso not in (None, "scratch") and not args.loso_base:
        parser.error(f"--loso {args.loso} needs --loso-base (a shared model trained without EMO-DB)")
    args.epochs = DEFAULT_EPOCHS | args.epochs
    torch.set_num_threads(max(1, torch.get_num_threads()))

    out = Path(args.out)
    result = read_json_object(out) if out.is_file() else {}
    result.setdefault("fixed", {})
    result.setdefault("loso", {})
    result["anchors"] = ANCHORS
    result["environment"] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "precision": args.precision,
    }
    result["protocol"] = {
        "split": "fixed (speaker-independent train/dev/test of sermodels/data/splits)",
        "selection": "weights of the epoch with the best dev UAR",
        "epochs": args.epochs,
        "plateau_patience": args.patience,
        "batch_size": args.batch_size,
        "max_duration": args.max_duration,
        "seed": args.seed,
        "base": Path(args.base).name,
    }

    def save() -> None:
        compare(result)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=1, sort_keys=True) + "\n")

    for corpus in args.corpora:
        root = str(Path(args.data) / FOLDERS[corpus])
        test_items = load_corpus(corpus, root).split("fixed")["test"]
        runs = result["fixed"].setdefault(corpus, {})
        for regime in args.regimes:
            settings = run_settings(args, regime, args.base, args.epochs.get(regime, 0))
            if runs.get(regime, {}).get("settings") == settings:
                continue  # done with these settings (a resumed run); anything else is run again
            print(f"[emonet bench] {corpus} {regime}", flush=True)
            if regime == "multi":
                net, info = sermodels.load(args.base).eval(), {"epochs": 0, "seconds": 0.0}
            else:
                net, info = fit(corpus, root, regime, base=args.base, epochs=args.epochs[regime], **fit_options(args))
            runs[regime] = {**info, "settings": settings, **score(net, test_items, corpus)}
            print(f"[emonet bench] {corpus} {regime}: test UAR {runs[regime]['uar']:.4f}", flush=True)
            save()
    if args.loso:
        root = str(Path(args.data) / FOLDERS["emodb"])
        corpus = load_corpus("emodb", root)
        key = args.loso if args.loso == "scratch" else f"{args.loso}_from_{Path(args.loso_base).name}"
        loso = result["loso"].setdefault(key, {"folds": {}})
        for fold, (_, test) in enumerate(corpus.folds("loso")):
            speaker = str(test[0].speaker)
            settings = run_settings(args, args.loso, args.loso_base, args.loso_epochs)
            if loso["folds"].get(speaker, {}).get("settings") == settings:
                continue
            print(f"[emonet bench] loso {key} speaker {speaker}", flush=True)
            net, info = fit(
                "emodb",
                root,
                args.loso,
                base=args.loso_base,
                epochs=args.loso_epochs,
                split="loso",
                fold=fold,
                **fit_options(args),
            )
            loso["folds"][speaker] = {**info, "settings": settings, **score(net, test, "emodb")}
            _pool(loso)
            save()
    save()


def run_settings(args, regime: str, base: str | None, epochs: int) -> dict[str, Any]:
    """What a stored run must match to be reused: schedule, data, precision, smoke limit and the base's weights."""
    weights = None
    if regime != "scratch":
        weights = hashlib.sha256((resolve(base) / "model.safetensors").read_bytes()).hexdigest()
    return {"epochs": epochs if regime != "multi" else 0, **fit_options(args), "base_sha256": weights}


def fit_options(args) -> dict[str, Any]:
    """The command-line settings every run of :func:`fit` shares."""
    keys = ("patience", "batch_size", "max_duration", "seed", "precision", "limit_batches")
    return {key: getattr(args, key) for key in keys}


def _pool(loso: dict[str, Any]) -> None:
    """Pooled UAR over every fold's predictions, and the mean/std of the per-speaker UARs."""
    from sermodels.metrics import uar

    folds = list(loso["folds"].values())
    true = [t for f in folds for t in f["true"]]
    pred = [p for f in folds for p in f["predicted"]]
    per = torch.tensor([f["uar"] for f in folds])
    loso.update(
        {
            "uar": float(uar(true, pred)),
            "fold_uar_mean": float(per.mean()),
            "fold_uar_std": float(per.std(unbiased=False)),
            "folds_n": len(folds),
        }
    )


if __name__ == "__main__":
    main()
