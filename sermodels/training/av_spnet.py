"""AV-SpNET pre-training and its recognition heads on a frozen encoder (Lu, Li, Lee, AVEC 2018).

Pre-training (§2.2, §3.1.2, Table 2) reads a proxy-label table (:func:`sermodels.data.proxy.proxy_table`: the audio
of the pre-training corpora with proxy arousal labels ``low``/``high`` computed from pitch and intensity, never from
the corpora's emotion labels) as the generic corpus ``folder:proxy``, one random 810 ms segment per utterance and
epoch, and trains :class:`~sermodels.models.av_spnet.AVSpNet` with one of the objectives of Table 2:

- ``av_spnet``: α·MSE(reconstruction) + (1 − α)·cross-entropy(proxy), Eq. (7) (:class:`MultitaskTask`);
- ``proxy`` (W_a): the proxy labels only; ``autoencoder`` (AE): the reconstruction only;
- W_AE_a: ``proxy`` started from an ``autoencoder`` checkpoint (``init_from``; :class:`TransferTask` with every
  group trainable).

Adam at 1e-3, batches of 32 (§3.1.1), a fixed number of optimiser steps (the paper gives no schedule), the input
statistics fitted on the training audio before the first step. The checkpoint folder written is a regular release
(``sermodels.load(folder)``); ``metrics.json`` scores the proxy head on the table's test partition (held-out
pre-training speakers), and ``pretraining.json`` adds the reconstruction MSE there.

The recognition network (§2.3) on a frozen encoder is trained from cached conv features by
:func:`fit_segment_head` (what ``sermodels finetune --from av_spnet.<tag>`` trains through Lightning, here as a
plain loop for the hundreds of runs of the benchmark): per segment, class-weighted cross-entropy, utterance label by
majority vote (:func:`vote`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sermodels.models.av_spnet import HEAD_HIDDEN, SEGMENT_SECONDS, _mlp, vote_shares

OBJECTIVES = ("av_spnet", "proxy", "autoencoder")
PROXY_CORPUS = "proxy"  # the head (and generic corpus) name of the proxy labels
DEFAULT_ALPHA = 0.5  # Eq. (7): α is not reported; 0.5 weighs the two losses equally
#: §3.1.1: Adam at 1e-3, mini-batches of 32.
PRETRAIN_OPTIMIZER: dict[str, Any] = {"name": "adam", "lr": 1e-3}
PRETRAIN_BATCH = 32
#: Recognition heads: Adam at 1e-3 (§3.1.1's SGD at 1e-5 does not move a new head in a CPU budget of epochs).
HEAD_LR = 1e-3
HEAD_BATCH = 128
HEAD_EPOCHS = 3
#: Updates of a head at least (small training sets, e.g. URDU at 25 %: ~200 segments): chosen on the training loss of
#: EMO-DB fold 0 (standardised features: training accuracy 0.75-0.93 after 60 steps, 0.5-0.6 after 30 for a frozen
#: pre-trained or random encoder), never on test folds.
HEAD_MIN_STEPS = 60


def objective_weights(objective: str, alpha: float = DEFAULT_ALPHA) -> dict[str, float]:
    """Loss weights of the multitask regime for an objective of Table 2."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if objective == "proxy":
        return {PROXY_CORPUS: 1.0, "reconstruction": 0.0}
    if objective == "autoencoder":
        return {PROXY_CORPUS: 0.0, "reconstruction": 1.0}
    return {PROXY_CORPUS: 1.0 - alpha, "reconstruction": alpha}


def pretrain(
    table: str | Path,
    out: str | Path,
    *,
    objective: str = "av_spnet",
    alpha: float = DEFAULT_ALPHA,
    steps: int = 100,
    batch_size: int = PRETRAIN_BATCH,
    seed: int = 0,
    init_from: str | Path | None = None,
    model: dict[str, Any] | None = None,
    model_id: str | None = None,
    description: str | None = None,
    progress: bool = False,
) -> Path:
    """Pre-train on the proxy table ``table`` and write the checkpoint folder ``out`` (module docstring)."""
    import lightning as L

    from sermodels.data import SERDataModule
    from sermodels.tasks.multitask import MultitaskTask
    from sermodels.tasks.transfer import TransferTask
    from sermodels.training.train import export, quiet_trainer, trainer_info

    weights = objective_weights(objective, alpha)
    if init_from is not None and objective != "proxy":
        raise ValueError("init_from continues a checkpoint with the proxy labels (W_AE_a): use objective='proxy'")
    data = SERDataModule(
        corpora=[f"folder:{PROXY_CORPUS}"],
        roots={PROXY_CORPUS: str(table)},
        batch_size=batch_size,
        max_duration=SEGMENT_SECONDS,
        seed=seed,
        drop_last=True,
    )
    L.seed_everything(seed, workers=True, verbose=False)
    common = {"optimizer": dict(PRETRAIN_OPTIMIZER), "schedule": {"name": "none"}, "restore_best": False}
    if init_from is None:
        arch = {"arch": "av_spnet", "proxy_heads": [PROXY_CORPUS]} | dict(model or {})
        task = MultitaskTask(model=arch, weights=weights, class_weighted=True, **common)
    else:
        task = TransferTask(init_from=str(init_from), mode="groups", **common)
    trainer = quiet_trainer(
        max_steps=steps, max_epochs=-1, limit_val_batches=0, enable_progress_bar=progress, log_every_n_steps=10
    )
    started = time.perf_counter()
    trainer.fit(task, datamodule=data)
    wall = time.perf_counter() - started
    text = description or f"AV-SpNET front-end pre-trained ({objective}) on proxy arousal labels of {table}"
    scored = () if objective == "autoencoder" else ("test",)
    folder = export(task, data, out, model_id=model_id, description=text, trainer_info=trainer_info(trainer, wall),
                    splits=scored)  # fmt: skip
    summary = {
        "objective": objective,
        "weights": weights,
        "init_from": None if init_from is None else str(init_from),
        "steps": trainer.global_step,
        "batch_size": batch_size,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "test_reconstruction_mse": reconstruction_error(task.net, data.datasets[PROXY_CORPUS]["test"]),
    }
    (Path(folder) / "pretraining.json").write_text(json.dumps(summary, indent=1) + "\n")
    return Path(folder)


@torch.no_grad()
def reconstruction_error(net, dataset, batch_size: int = 32) -> float:
    """Mean squared reconstruction error of every segment of the ``dataset``'s whole clips (evaluation mode)."""
    from torch.utils.data import DataLoader

    from sermodels.data.collate import pad_collate

    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=pad_collate):
        recon, target, _ = net.reconstruct(batch["waveforms"], batch["lengths"])
        total += float(((recon - target) ** 2).sum())
        count += target.numel()
    net.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------------- recognition


@torch.no_grad()
def segment_features(net, waveforms: list[torch.Tensor], batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen encoder's flattened conv maps of every segment of each clip ``(N, flat_dim)`` and the clip index
    of each row ``(N,)`` (evaluation mode; clips are run in batches of similar length)."""
    net.eval()
    order = sorted(range(len(waveforms)), key=lambda i: waveforms[i].shape[-1])
    rows, owners = [], []
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        lengths = torch.tensor([waveforms[i].shape[-1] for i in chosen])
        padded = torch.zeros(len(chosen), int(lengths.max()))
        for row, i in enumerate(chosen):
            padded[row, : lengths[row]] = waveforms[i]
        segments, owner = net.segments(padded, lengths)
        rows.append(net.encode(segments).float())
        owners.append(torch.tensor(chosen)[owner])
    features, owner = torch.cat(rows), torch.cat(owners)
    index = torch.argsort(owner, stable=True)
    return features[index], owner[index]


def fit_segment_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    *,
    seed: int,
    epochs: int = HEAD_EPOCHS,
    batch_size: int = HEAD_BATCH,
    lr: float = HEAD_LR,
    min_steps: int = HEAD_MIN_STEPS,
) -> torch.nn.Module:
    """The recognition network of §2.3 (FC 1024 → 512 → 128 → dropout → output) trained on frozen segment features
    ``(N, D)`` with labels ``(N,)`` (:func:`train_segments`), behind a per-dimension standardisation fitted on these
    features (:class:`Standardise`: the paper does not say how the frozen features are scaled; a random encoder's
    are ~0.04 in size and barely train in a CPU budget of steps without it). Seeded by ``seed`` alone
    (initialisation, batch order, dropout)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = _mlp((features.shape[1], *HEAD_HIDDEN), classes, 0.5)
    scale = Standardise(features)
    train_segments(head, list(head.parameters()), scale(features), labels, classes, seed=seed, epochs=epochs,
                   batch_size=batch_size, lr=lr, min_steps=min_steps)  # fmt: skip
    return torch.nn.Sequential(scale, head).eval()


class Standardise(torch.nn.Module):
    """``(x − mean) / std`` per dimension, fitted on the rows given (std floored at 1e-6)."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", rows.mean(0))
        self.register_buffer("std", rows.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_whole_network(
    net,
    segments: torch.Tensor,
    labels: torch.Tensor,
    head: str,
    *,
    seed: int,
    epochs: int = HEAD_EPOCHS,
    batch_size: int = PRETRAIN_BATCH,
    lr: float = HEAD_LR,
    min_steps: int = HEAD_MIN_STEPS,
):
    """Train the encoder and the recognition ``head`` of ``net`` together on standardised segments ``(N, 1, bins,
    frames)`` with labels ``(N,)`` (Table 3's R row with a trainable encoder; :func:`train_segments`). Returns
    ``net`` in evaluation mode."""
    params = [*net.stage1.parameters(), *net.stage2.parameters(), *net.head_parameters(head)]
    net.train()
    train_segments(
        lambda x: net.segment_logits(net.encode(x), head),
        params,
        segments,
        labels,
        len(net.heads[head]),
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        min_steps=min_steps,
        min_batch=2,
    )  # fmt: skip  (BN needs two segments)
    return net.eval()


def train_segments(
    forward,
    params: list[torch.nn.Parameter],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    classes: int,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    min_steps: int,
    min_batch: int = 1,
) -> None:
    """Per-segment training: Adam over ``params``, class-weighted cross-entropy (inverse class frequency of the
    segments) of ``forward(inputs[batch])``, ``max(epochs × ⌈N / batch⌉, min_steps)`` updates over reshuffled
    epochs (a batch smaller than ``min_batch`` is skipped); batch order and dropout seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=classes).float()
    weight = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros_like(counts))
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = max(epochs * math.ceil(len(labels) / batch_size), min_steps)
    order, position = torch.randperm(len(labels), generator=generator), 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # dropout masks
        for _ in range(steps):
            if position >= len(order):
                order, position = torch.randperm(len(labels), generator=generator), 0
            index = order[position : position + batch_size]
            position += batch_size
            if len(index) < min_batch:
                continue
            loss = F.cross_entropy(forward(inputs[index]), labels[index], weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def network_vote(net, segments: torch.Tensor, owner: torch.Tensor, clips: int, head: str) -> np.ndarray:
    """Utterance decisions of a whole network (:func:`fit_whole_network`) by the segments' majority vote."""
    logits = torch.cat([net.segment_logits(net.encode(block), head) for block in segments.split(128)])
    return net.pool_segments(logits, owner, clips, head).argmax(-1).numpy()


@torch.no_grad()
def vote(head: torch.nn.Module, features: torch.Tensor, owner: torch.Tensor, clips: int) -> np.ndarray:
    """Utterance decisions: the majority vote of the segments (§2.3), ties to the higher mean probability
    (:func:`~sermodels.models.av_spnet.vote_shares`, as the model's ``pooling="vote"``)."""
    return vote_shares(head(features).softmax(-1), owner, clips).argmax(-1).numpy()


def nested_fractions(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> dict[float, np.ndarray]:
    """Indices of each fraction of ``labels``' items, stratified by class and nested (a smaller fraction is a subset
    of every larger one): per class a seeded permutation of which the first ``⌈f · n_c⌉`` are taken."""
    rng = np.random.default_rng(seed)
    orders = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    chosen = {}
    for fraction in fractions:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fractions must be in (0, 1], got {fraction}")
        picks = [order[: max(1, math.ceil(fraction * len(order)))] for order in orders.values()]
        chosen[fraction] = np.sort(np.concatenate(picks))
    return chosen


# ---------------------------------------------------------------------------------------------------- release

#: What the card says about every AV-SpNET release of this library.
LIMITATIONS = [
    "Proxy labels, not emotion labels: the front-end learnt to rank utterances by a speaker's median pitch and "
    "intensity (Bone et al. 2014, as §2.2.2), which agree with the corpora's own arousal only in part (EMO-DB is "
    "peak-normalised, so its intensity ranks run against arousal; most URDU speakers have one emotion, so their "
    "per-speaker ranks carry no arousal): see benchmarks/results/av_spnet.json, key proxy.",
    "Pre-trained on the audio of the training speakers of each corpus's fixed split (its dev and test speakers only "
    "scored the proxy head): evaluating it on these corpora with another split (cross-validation, LOSO) puts test "
    "speakers' audio, with proxy labels that partly track arousal, into its pre-training. The leave-one-corpus-out "
    "front-ends of benchmarks/av_spnet.py have not seen their target corpus.",
    "The valence proxy of the paper (§2.2.3) needs transcripts and sentiment lexicons; the corpora's sentences are "
    "fixed and neutral, so there is no AV-SpNET_v.",
]


def release(run: str | Path, out: str | Path, store_dtype: str | None = None, table: str | Path | None = None) -> Path:
    """Copy a trained run (``sermodels train --output``) into a release folder, optionally with its weights stored in
    ``store_dtype`` (``float16``: half the size; :func:`~sermodels.checkpoint.load_folder` loads them into float32
    parameters), with the family's limitations and the CPU schedule in the card. With the proxy ``table`` it was
    trained on, the card names the corpora whose audio it learnt from (their licences bind the model) instead of the
    generic ``proxy`` corpus."""
    from sermodels.checkpoint import RESERVED_CONFIG_KEYS, load_folder, read_config
    from sermodels.training.export import rerelease

    run, out = Path(run), Path(out)
    model = load_folder(run)
    config = read_config(run)
    extra = {key: value for key, value in config.items() if key not in RESERVED_CONFIG_KEYS}
    if table is not None:
        extra["training"] = {**(extra.get("training") or {}), **source_corpora(table)}
    schedule = (extra.get("training") or {}).get("schedule_run") or {}
    notes = [
        f"Pre-trained for {schedule.get('optimizer_steps')} optimiser steps of "
        f"{(extra.get('training') or {}).get('batch_size')} segments ({schedule.get('wall_seconds')} s on "
        f"{schedule.get('accelerator')}): a reduced schedule (the paper's background corpus has 62 288 segments)."
    ]
    extra["limitations"] = list(dict.fromkeys([*extra.get("limitations", []), *LIMITATIONS, *notes]))
    rerelease(model, run, out, extra, store_dtype)
    return out


def source_corpora(table: str | Path) -> dict[str, Any]:
    """The corpora of a proxy table as a model card lists training corpora (metadata, licence, speakers, split), the
    table's size and label balance, and what was used of them (the audio, not the emotion labels)."""
    import csv

    from sermodels.data import load_corpus
    from sermodels.data.proxy import default_root

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    names = list(dict.fromkeys(row["corpus"] for row in rows))
    corpora = []
    for name in names:
        info = load_corpus(name, default_root(name)).info()
        corpora.append({k: v for k, v in info.items() if k != "root"} | {"used": "audio only (proxy labels)"})
    labels = [row["label"] for row in rows]
    return {
        "corpora": corpora,
        "split": {name: "fixed" for name in names},
        "proxy_table": {
            "rows": len(rows),
            "labels": {label: labels.count(label) for label in sorted(set(labels))},
            "partitions": {p: sum(row["split"] == p for row in rows) for p in ("train", "dev", "test")},
            "labeller": "sermodels.data.proxy (YIN median pitch and median intensity, per-speaker ranks, §2.2.2)",
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sermodels.training.av_spnet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pre-train on a proxy table (python -m sermodels.data.proxy writes one)")
    p.add_argument("table")
    p.add_argument("--out", required=True)
    p.add_argument("--objective", choices=OBJECTIVES, default="av_spnet")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=PRETRAIN_BATCH)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="checkpoint to continue (W_AE_a: an autoencoder run)")
    p = sub.add_parser("release", help="write a release folder of a trained run")
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--store-dtype", choices=["float16", "bfloat16"], default=None)
    p.add_argument("--table", default=None, help="the proxy table it was trained on (the card names its corpora)")
    args = parser.parse_args(argv)
    if args.command == "pretrain":
        folder = pretrain(args.table, args.out, objective=args.objective, alpha=args.alpha, steps=args.steps,
                          batch_size=args.batch_size, seed=args.seed, init_from=args.init_from)  # fmt: skip
    else:
        folder = release(args.run, args.out, args.store_dtype, args.table)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
