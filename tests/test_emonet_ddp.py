"""The DDP recipe ``recipes/emonet/ddp.yaml`` on two CPU processes (gloo): both ranks end with the same weights.

``sermodels train`` runs in a subprocess (Lightning re-launches the same command line for rank 1) with
:class:`WeightProbe` added through ``--trainer.callbacks``; it is importable there because ``tests/`` is put on
``PYTHONPATH``. Each rank writes a hash of its network's tensors before and after fitting, the corpus of each
training step, the dev labels it scored and those the task gathered from all ranks, and its training
throughput, into the folder named by ``SERMODELS_DDP_PROBE``. The same recipe on one process gives the throughput
to compare with (printed: run with ``-s`` or ``-rP`` to see it; nothing is asserted about speed).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, corpus_root

PROBE_ENV = "SERMODELS_DDP_PROBE"
STEPS = 4  # optimiser steps: two round-robin rounds of EMO-DB and URDU
BATCH = 2  # clips per rank and step
VAL_BATCHES = 2  # dev batches per corpus and rank


def tensor_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state_dict's tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class WeightProbe(L.Callback):
    """Writes ``rank<N>.json``: the network's tensor hash at fit start and after fitting (``teardown`` runs after
    the task's ``on_fit_end`` restored the best weights), the corpus of every training batch, each validation's dev
    labels as this rank scored them and as ``SERTask.gathered`` collected them from all ranks, the validation
    history, and the samples per second of the training steps."""

    def __init__(self) -> None:
        self.record: dict = {"corpora": [], "samples": 0, "step_seconds": 0.0, "validations": []}
        self._started = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.record["initial"] = tensor_hash(pl_module.net.state_dict())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.record["step_seconds"] += time.perf_counter() - self._started
        self.record["samples"] += len(batch["labels"])
        self.record["corpora"].append(sorted(set(batch["corpus"])))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        # Runs before the task's own hook, on every rank, so the collective calls of `gathered` pair up.
        validation = {}
        for corpus in pl_module.streams:
            local = [true.tolist() for _, true, _ in pl_module._val.get(corpus, [])]
            pred, true = pl_module.gathered(corpus)
            validation[corpus] = {"local": sum(local, []), "gathered": true.tolist(), "pred": pred.tolist()}
        self.record["validations"].append(validation)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self.record.update(
            final=tensor_hash(pl_module.net.state_dict()),
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            strategy=type(trainer.strategy).__name__,
            global_step=trainer.global_step,
            history=pl_module.history,
        )
        folder = Path(os.environ[PROBE_ENV])
        (folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


TINY = {"stem": 8, "widths": [8, 16, 16], "attention_units": 16, "hidden": 16}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(tmp_path: Path, devices: int, strategy: str | None, export: bool) -> tuple[subprocess.CompletedProcess, float]:
    """Run the recipe on ``devices`` CPU processes (probe records in ``tmp_path/probe<devices>``; ``strategy=None``
    keeps the recipe's); the finished process and its wall time."""
    probes = tmp_path / f"probe{devices}"
    probes.mkdir()
    roots = {"emodb": str(corpus_root("emodb")), "urdu": str(corpus_root("urdu"))}
    command = [
        sys.executable, "-m", "sermodels.cli", "train",
        "--config", str(REPO / "recipes/emonet/ddp.yaml"),
        "--data.corpora", "[emodb, urdu]",
        "--data.roots", json.dumps(roots),
        "--data.batch_size", str(BATCH),
        "--data.max_duration", "0.5",
        "--data.num_workers", "0",
        "--model.model", json.dumps({"arch": "emonet_wrn", **TINY}),
        "--model.schedule", json.dumps({"name": "steps", "stage_steps": 1, "min_lr": 0.001}),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", str(devices),
        "--trainer.precision", "32",
        "--trainer.max_steps", str(STEPS),
        "--trainer.limit_train_batches", str(STEPS),  # the epoch ends with the last step, so validation runs
        # 2 batches per dev loader and rank: from the command line jsonargparse reads 1 as the float 1.0 (all batches).
        "--trainer.limit_val_batches", str(VAL_BATCHES),
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.callbacks+=test_emonet_ddp.WeightProbe",
        "--evaluate_splits", "[dev]",
        "--output", str(tmp_path / "export") if export else "null",
    ]  # fmt: skip
    command += ["--trainer.strategy", strategy] if strategy else []
    env = {
        **os.environ,
        PROBE_ENV: str(probes),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",  # one thread per rank: the ranks share the machine's cores
    }
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    return done, time.perf_counter() - started


def _train(tmp_path: Path, devices: int, strategy: str | None, export: bool) -> tuple[list[dict], float]:
    """A run that must succeed: the probes' records (by rank) and the wall time."""
    done, wall = _run(tmp_path, devices, strategy, export)
    assert done.returncode == 0, done.stderr[-4000:]
    probes = tmp_path / f"probe{devices}"
    assert sorted(path.name for path in probes.iterdir()) == [f"rank{rank}.json" for rank in range(devices)]
    return [json.loads((probes / f"rank{rank}.json").read_text()) for rank in range(devices)], wall


def _throughput(records: list[dict]) -> float:
    """Samples per second of all ranks together (the ranks step in parallel: the slowest one sets the pace)."""
    return sum(r["samples"] for r in records) / max(r["step_seconds"] for r in records)


def test_ddp_recipe_two_cpu_ranks_agree(tmp_path):
    import sermodels

    ranks, wall = _train(tmp_path, devices=2, strategy=None, export=True)  # the recipe's strategy
    assert [(r["rank"], r["world_size"], r["global_step"]) for r in ranks] == [(0, 2, STEPS), (1, 2, STEPS)]
    assert {r["strategy"] for r in ranks} == {"DDPStrategy"}
    # Lockstep round-robin: both ranks saw the same corpus at every step, EMO-DB and URDU in turn.
    assert ranks[0]["corpora"] == ranks[1]["corpora"] == [["emodb"], ["urdu"]] * (STEPS // 2)
    # Validation: each rank scored its own dev shard; `gathered` gave every rank the same union of both.
    assert len(ranks[0]["validations"]) == len(ranks[1]["validations"]) == 1
    for corpus in ("emodb", "urdu"):
        mine, theirs = (r["validations"][0][corpus] for r in ranks)
        assert len(mine["local"]) == len(theirs["local"]) == VAL_BATCHES * BATCH
        assert mine["gathered"] == theirs["gathered"] == mine["local"] + theirs["local"]
        assert mine["pred"] == theirs["pred"]
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 1
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["final"] == ranks[1]["final"]  # parameters and BN buffers
    assert ranks[0]["final"] != ranks[0]["initial"]  # it trained
    # Rank 0 exported the weights it ended with, and they load as a registered model.
    model = sermodels.load(str(tmp_path / "export"))
    assert sorted(model.heads) == ["emodb", "urdu"]
    assert tensor_hash(model.state_dict()) == ranks[0]["final"]
    metrics = json.loads((tmp_path / "export" / "metrics.json").read_text())
    assert sorted(metrics) == ["emodb/dev", "urdu/dev"]

    single, single_wall = _train(tmp_path, devices=1, strategy="auto", export=False)
    assert single[0]["final"] != single[0]["initial"]
    print(
        f"EmoNet DDP (2 CPU ranks, gloo): {_throughput(ranks):.1f} samples/s over the training steps, "
        f"{wall:.1f} s wall; 1 process: {_throughput(single):.1f} samples/s, {single_wall:.1f} s wall "
        f"({STEPS} steps of {BATCH} clips of <= 0.5 s per rank)"
    )


@pytest.mark.slow
def test_plain_ddp_refuses_round_robin(tmp_path):
    """Why the recipe asks DDP to find unused parameters: a round-robin step leaves the other corpora's adapters,
    BN and head out of the graph, which plain DDP rejects at the next step."""
    done, _ = _run(tmp_path, devices=2, strategy="ddp", export=False)
    assert done.returncode != 0
    assert "find_unused_parameters" in done.stderr
