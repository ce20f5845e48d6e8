"""Many recordings through :mod:`sermodels.pipelines.daylong` on Lightning's multi-device predict loop.

:func:`run_daylong` hands the recordings to ``Trainer.predict`` with :class:`DaylongRunner`: Lightning launches the
processes (``devices=N``, ``strategy="ddp"``; GPUs or CPU processes; several nodes under SLURM), moves the model to
each rank's device and shards the list without repeats (predict's distributed sampler), so no scheduler is written
here. Each rank processes whole recordings into their own folders; after a barrier rank 0 writes ``index.csv`` and
``index.html`` over all of them. A rerun of the same command resumes whatever was left unfinished.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from sermodels.audio import AudioError
from sermodels.models.base import SERModel
from sermodels.pipelines import daylong_report as report
from sermodels.pipelines.daylong import (
    DaylongSettings,
    RecordingJob,
    RecordingResult,
    process_recording,
    recording_folders,
)
from sermodels.pipelines.inputs import unique_inputs
from sermodels.pipelines.predict_runner import predict_trainer
from sermodels.pipelines.readout import readings_for
from sermodels.pipelines.vad import VAD, make_vad


class DaylongRunner(L.LightningModule):
    """Lightning's predict loop over recordings: ``predict_step`` runs one :class:`RecordingJob` (batch size 1).

    Lightning shards the recordings over its ranks without repeats (predict's distributed sampler), moves the model
    to each rank's device, and launches the processes; the detector is built per rank on the CPU."""

    def __init__(
        self,
        model: SERModel,
        paths: Sequence[Path],
        out: Path,
        settings: DaylongSettings,
        model_id: str,
        restart: bool = False,
        progress: bool = True,
    ):
        super().__init__()
        self.net = model
        self.paths, self.folders = list(paths), recording_folders(list(paths), out)
        self.out, self.settings, self.model_id = out, settings, model_id
        self.restart, self.progress = restart, progress
        self.readings = readings_for(model, settings.heads)
        self.vad: VAD | None = None

    def on_predict_start(self) -> None:
        self.vad = make_vad(self.settings.vad, sample_rate=self.net.sample_rate, **self.settings.vad_options)
        self.net.eval()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(list(range(len(self.paths))), batch_size=1, collate_fn=lambda items: items)

    def predict_step(self, batch: list[int], batch_idx: int) -> list[RecordingResult]:
        return [self.process(i) for i in batch]

    def process(self, i: int) -> RecordingResult:
        path, folder = self.paths[i], self.folders[i]
        job = RecordingJob(path, folder, self.net, self.readings, self.vad, self.settings, self.model_id, self.device)
        return process_recording(job, self.restart, self.progress)


def run_daylong(
    model: SERModel,
    recordings: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    settings: DaylongSettings | None = None,
    model_id: str = "",
    restart: bool = False,
    devices: int | str = 1,
    accelerator: str = "cpu",
    strategy: str = "auto",
    num_nodes: int = 1,
    progress: bool = True,
) -> list[RecordingResult]:
    """Every recording (folders expanded) through the pipeline into ``out/<recording>/``; ``out/index.csv`` and
    ``out/index.html`` list them all. Returns this rank's results (all of them with one process)."""
    settings = settings or DaylongSettings()
    out = Path(out)
    paths = unique_inputs(recordings)  # a file reached twice (a folder and a file in it) is processed once
    if not paths:
        raise ValueError("no recordings given")
    for path in paths:
        if path.is_dir():
            raise AudioError(path, "a folder with no audio files in it")
    out.mkdir(parents=True, exist_ok=True)
    runner = DaylongRunner(model, paths, out, settings, model_id, restart, progress)
    trainer = predict_trainer(accelerator, devices, strategy, num_nodes)
    results = trainer.predict(runner, return_predictions=True) or []
    mine = [r for batch in results for r in batch]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if trainer.global_rank == 0:
        report.write_index(out, paths, runner.folders)
    return mine
