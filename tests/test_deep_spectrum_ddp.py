"""Deep Spectrum trained by ``ClassificationTask`` on two CPU processes (DDP, gloo): the dev UAR is the whole dev
set's on both ranks, so both pick the same best head and end with identical weights.

The fit runs in a subprocess (Lightning re-launches the script for rank 1); each rank writes what it saw into the
folder given on the command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from conftest import REPO, corpus_root

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from sermodels.data import SERDataModule
    from sermodels.runtime import weights_digest
    from sermodels.tasks import ClassificationTask

    out, root = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    data = SERDataModule(["emodb"], {"emodb": root}, batch_size=8, max_duration=None, seed=0)
    model = {"arch": "deep_spectrum", "backbone": "mobilenetv2_100", "image": {"size": [64, 64]}}
    task = ClassificationTask(model, optimizer={"name": "adam", "lr": 1e-2, "weight_decay": 1e-4})
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, limit_train_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=data)
    rank = trainer.global_rank
    record = {
        "history": task.history,
        "best_uar": task.best_score,
        "head": weights_digest(task.net.classifier),
        "standardizer": weights_digest(task.net.standardizer),
        "dev_scored_here": sum(len(t) for _, t, _ in task._val["emodb"]),
    }
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(record, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_share_the_dev_score_and_the_best_head(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(corpus_root("emodb"))],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Each rank scored a disjoint shard of the 81 dev files; the score is the whole set's, the same on both.
    assert ranks[0]["dev_scored_here"] + ranks[1]["dev_scored_here"] == 81
    assert 0 < ranks[0]["dev_scored_here"] < 81
    assert len(ranks[0]["history"]) == 2
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["best_uar"] == ranks[1]["best_uar"]
    assert ranks[0]["head"] == ranks[1]["head"] and ranks[0]["standardizer"] == ranks[1]["standardizer"]
