"""``sermodels predict --out`` on Lightning's multi-device predict loop: many GPUs, CPU processes or nodes.

:func:`predict_distributed` writes the same table as :func:`~sermodels.pipelines.predict.run_predictions` followed
by :func:`~sermodels.pipelines.predict.write_predictions`, for input lists too long for one device:

- The inputs are expanded as ``predict`` expands them (:func:`~sermodels.pipelines.inputs.expand_inputs`), each file
  kept once, at its first place (by absolute path), in that order.
- The list is cut into groups of ``group_size`` consecutive files: group ``g`` holds files ``g * group_size`` to
  ``(g + 1) * group_size - 1``. Groups depend on the input list and the group size only, not on the number of
  processes, so an interrupted run can be resumed on another number of devices or nodes.
- ``Trainer.predict`` with :class:`PredictRunner` launches the processes (``devices=N``, ``strategy="ddp"``; GPUs or
  CPU processes; several nodes under SLURM), moves the model to each rank's device and shards the group numbers over
  the ranks without repeats (predict's distributed sampler: rank ``r`` of ``W`` gets groups ``r, r + W, ...``).
  ``predict_step`` runs the single-process engine on its group (:func:`run_predictions`: decoding, batching,
  chunking, frame timelines and bad files exactly as ``predict``) and writes the group's rows into a shard.
- After a barrier rank 0 reads the shards in group order, assembles one :class:`PredictionResult` and writes it with
  :func:`write_predictions` (``.csv``, ``.json`` or ``.parquet``: the same columns and values as ``predict --out``),
  then removes the partial folder. A file that cannot be predicted is a row with its ``error``, never a stop.

The work goes into ``<out>.partial/`` (:mod:`sermodels.pipelines.resume`):

- ``settings.json``: model id, weights digest (:func:`~sermodels.runtime.weights_digest`), head, chunk and timeline
  settings, group size, the number and sha256 of the input paths, software versions. A rerun with other settings is
  refused, naming what differs, unless ``restart`` (which discards the folder's work first).
- ``lock``: held by rank 0 from the start of the loop until the table is written, so a second run on the same output
  fails at once instead of mixing its shards in.
- ``group-NNNNNN.json``, written atomically when its group is done: for every file its key
  (:func:`~sermodels.pipelines.inputs.file_key`: path, size, modification time), its row (its timeline rows for a
  frame-level head) and its utterance-level output, or its error. JSON writes floats by ``repr``, so they read back
  exactly. A rerun skips every group whose shard exists with the same file keys (a file replaced or touched since
  puts its group through again): a killed run loses at most the groups in flight. Files that failed are recorded as
  failures and not retried by a resumed run; after a finished run the folder is gone and a new run starts afresh.

Values: a file's outputs depend on the other files of its batch only through float32 rounding (about 1e-7: the
batched kernels sum in another order). Batches never cross groups, so the table equals the single-process one exactly
with ``batch_size=1`` and to that rounding otherwise. Every rank must see the same paths: on several nodes, inputs and
``out`` live on a shared file system.

On a cluster: one node with 4 GPUs, ``sermodels predict FOLDER/ --out preds.csv --accelerator gpu --devices 4``;
several nodes under SLURM, ``srun --ntasks-per-node=4 sermodels predict FOLDER/ --out preds.csv --accelerator gpu
--devices 4 --num-nodes N`` (Lightning reads the SLURM environment). Rerun the same command to resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from sermodels._io import atomic_write_text, software_versions
from sermodels.models.base import SERModel
from sermodels.pipelines.inputs import file_key, unique_inputs
from sermodels.pipelines.predict import PredictionResult, check_output_path, run_predictions, write_predictions
from sermodels.pipelines.resume import SETTINGS_FILE, PartialFolder, differences, locked
from sermodels.runtime import weights_digest

# Files per group: a group is one run_predictions call and one shard. Large enough to fill batches (a batch never
# crosses groups), small enough that a killed run loses little and that 8 GPUs have work for a few thousand files.
GROUP_SIZE = 32
PARTIAL_FORMAT = "predict-groups-1"  # bumped when the shard layout changes: an old folder is then refused
SHARD_PATTERN = "group-{:06d}.json"
SHARD_GLOB = "group-*.json"


@dataclass
class DistributedPredictions:
    """What one rank of :func:`predict_distributed` did.

    ``out``: the merged table (written by rank 0 once every rank is done). ``computed`` / ``skipped``: the groups
    this rank predicted / found already done by an earlier run. ``failures``: ``(path, reason)`` of the files this
    rank computed and could not predict. ``result``: the merged table as a :class:`PredictionResult` on rank 0 (its
    ``outputs`` are not kept, its ``logits`` are), ``None`` on the other ranks.
    """

    out: Path
    rank: int
    world_size: int
    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    result: PredictionResult | None = None


class PredictRunner(L.LightningModule):
    """Lightning's predict loop over groups of files: ``predict_step`` gets a list of group numbers (batch size 1)
    and runs :func:`run_predictions` on each group not done yet, writing its shard.

    Rank 0 takes the partial folder's lock and prepares it in :meth:`setup` (Lightning holds every rank at a barrier
    right after), so no rank looks for shards that a ``restart`` is about to remove."""

    def __init__(
        self,
        model: SERModel,
        groups: Sequence[Sequence[Path]],
        partial: Path,
        settings: dict[str, Any],
        options: dict[str, Any],
        restart: bool = False,
    ):
        super().__init__()
        self.net = model
        self.groups = [list(group) for group in groups]
        self.partial, self.settings, self.options, self.restart = partial, settings, options, restart
        self.hold = ExitStack()  # rank 0's lock on the partial folder, released by :meth:`release`

    def setup(self, stage: str) -> None:
        """Rank 0 locks and opens the partial folder; what it refuses (in use by another run, other settings) every
        rank raises, so that none waits for the others at Lightning's next barrier."""
        problem: Exception | None = None
        if self.global_rank == 0:
            try:
                self.hold.enter_context(locked(self.partial))
                if not self.restart:
                    _refuse_unlisted_shards(self.partial)
                PartialFolder.open(self.partial, self.settings, self.restart)
            except Exception as err:  # noqa: BLE001 - handed to every rank, raised below
                problem = err
        problem = self.trainer.strategy.broadcast(problem, src=0)
        if problem is not None:
            raise problem

    def release(self) -> None:
        self.hold.close()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(list(range(len(self.groups))), batch_size=1, collate_fn=lambda items: items)

    def predict_step(self, batch: list[int], batch_idx: int) -> list[dict[str, Any]]:
        return [self.process(group) for group in batch]

    def process(self, group: int) -> dict[str, Any]:
        """Predict one group into its shard unless an earlier run did; ``{"group", "computed", "failures"}``."""
        paths = self.groups[group]
        shard = self.partial / SHARD_PATTERN.format(group)
        keys = [file_key(path) for path in paths]
        if _shard_keys(shard) == keys:
            return {"group": group, "computed": False, "failures": []}
        result = run_predictions(self.net, paths, device=self.device, progress=False, **self.options)
        atomic_write_text(shard, json.dumps(_shard(group, result, keys), ensure_ascii=False) + "\n")
        return {"group": group, "computed": True, "failures": list(result.failures)}


def predict_trainer(
    accelerator: str, devices: int | str, strategy: str, num_nodes: int, progress: bool = False
) -> L.Trainer:
    """A ``Trainer`` for Lightning's predict loop over work items (the daylong runner, the distributed ``predict``):
    no logger, checkpoints or summary; the distributed sampler shards the items over the ranks without repeats."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no accelerator banner per run
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=True,
    )


def predict_distributed(
    model: SERModel,
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model_id: str = "",
    head: str | None = None,
    batch_size: int = 8,
    max_chunk_seconds: float | None = None,
    timeline_seconds: float | None = None,
    devices: int | str = 1,
    accelerator: str = "cpu",
    strategy: str | None = None,
    num_nodes: int = 1,
    group_size: int = GROUP_SIZE,
    restart: bool = False,
    progress: bool = True,
) -> DistributedPredictions:
    """Predict every file of ``paths`` (folders expanded) on ``devices`` x ``num_nodes`` processes into ONE table
    at ``out`` (``.csv``, ``.json`` or ``.parquet``), as ``predict --out`` writes it (module docstring).

    ``head``, ``batch_size``, ``max_chunk_seconds``, ``timeline_seconds``: as :func:`run_predictions`. ``strategy``:
    Lightning's, by default ``"ddp"`` with more than one device or node and ``"auto"`` otherwise. ``model_id`` is
    recorded in the partial folder's settings. ``restart`` discards the work of an earlier run on ``out``.
    ``progress``: Lightning's progress bar over this rank's groups. Returns what this rank did; rank 0's return
    holds the merged table.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    check_output_path(out)
    out = Path(out)
    files = unique_inputs(paths)
    if not files:
        raise ValueError("no input files given")
    options = {
        "head": head,
        "batch_size": batch_size,
        "max_chunk_seconds": max_chunk_seconds,
        "timeline_seconds": timeline_seconds,
    }
    empty = run_predictions(model, [], progress=False, **options)  # refuses bad options before any process starts
    settings = _settings(model, model_id, empty, max_chunk_seconds, timeline_seconds, files, group_size)
    partial = out.with_name(out.name + ".partial")
    if not restart:  # every rank refuses alike, before any waits for the others
        check_settings(partial, settings)
    groups = [files[start : start + group_size] for start in range(0, len(files), group_size)]
    runner = PredictRunner(model, groups, partial, settings, {**options, "head": empty.head}, restart)
    if strategy is None:
        strategy = "ddp" if str(devices) != "1" or num_nodes > 1 else "auto"
    trainer = predict_trainer(accelerator, devices, strategy, num_nodes, progress)
    try:
        steps = trainer.predict(runner, return_predictions=True) or []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank's shards are on disk
        done = [summary for batch in steps for summary in batch]
        mine = DistributedPredictions(
            out=out,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            computed=[d["group"] for d in done if d["computed"]],
            skipped=[d["group"] for d in done if not d["computed"]],
            failures=[tuple(failure) for d in done for failure in d["failures"]],
        )
        if trainer.global_rank == 0:
            mine.result = merge_shards(empty, partial, len(groups))
            write_predictions(mine.result, out)
            shutil.rmtree(partial)
    finally:
        runner.release()
    return mine


def check_settings(partial: Path, settings: dict[str, Any]) -> None:
    """Refuse (ValueError) a partial folder holding work done with other settings, or shards without settings;
    read-only, so that every rank can call it."""
    stored_file = partial / SETTINGS_FILE
    if not stored_file.is_file():
        _refuse_unlisted_shards(partial)
        return
    try:
        stored = json.loads(stored_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{stored_file}: unreadable ({err}); rerun with --restart (restart=True)") from err
    changes = differences(stored, json.loads(json.dumps(settings)))
    if changes:
        raise ValueError(
            f"{partial} holds work done with other settings ({'; '.join(changes[:6])}); rerun with the same settings "
            "to resume it, or add --restart (restart=True) to discard it"
        )


def merge_shards(empty: PredictionResult, partial: Path, count: int) -> PredictionResult:
    """The groups' shards ``0 .. count - 1`` as one result in input order, shaped like ``empty`` (the result of the
    same options on no files: head, spec, score kind, timeline seconds)."""
    rows: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    order: list[tuple[bool, int]] = []
    logits: list[list[float]] = []
    timelines: list[list[dict[str, Any]]] = []
    for group in range(count):
        shard = partial / SHARD_PATTERN.format(group)
        if not shard.is_file():
            raise RuntimeError(f"{shard}: group {group} was not predicted by any rank; rerun the same command")
        for item in json.loads(shard.read_text())["files"]:
            if "error" in item:
                order.append((False, len(failures)))
                failures.append((item["path"], item["error"]))
            else:
                order.append((True, len(rows)))
                rows.append(item["row"])
                logits.append(item["output"])
                timelines.append(item.get("timeline", []))
    frame = empty.spec.level == "frame"
    return dataclasses.replace(
        empty,
        rows=rows,
        failures=failures,
        order=order,
        logits=torch.tensor(logits, dtype=torch.float32).reshape(len(rows), empty.spec.dim),
        timelines=timelines if frame else [],
        complete=True,
    )


def _settings(
    model: SERModel,
    model_id: str,
    empty: PredictionResult,
    max_chunk_seconds: float | None,
    timeline_seconds: float | None,
    files: Sequence[Path],
    group_size: int,
) -> dict[str, Any]:
    """What the shards depend on (module docstring); the input list by its paths as given, in order."""
    listing = hashlib.sha256("\n".join(str(path) for path in files).encode("utf-8")).hexdigest()
    return {
        "partial_format": PARTIAL_FORMAT,
        "model_id": model_id,
        "weights_state_sha256": weights_digest(model),
        "head": empty.head,
        "max_chunk_seconds": max_chunk_seconds,
        "timeline_seconds": timeline_seconds,
        "group_size": group_size,
        "inputs": {"count": len(files), "sha256": listing},
        "versions": software_versions("sermodels", "torch"),
    }


def _shard(group: int, result: PredictionResult, keys: Sequence[str]) -> dict[str, Any]:
    """A group's shard: per file in input order its key and its row, timeline rows and utterance-level output
    ``(size,)`` (a frame-level head's mean frame), or its error."""
    order = result.input_order()
    if len(order) != len(keys):  # run_predictions reports every file it is given, as a row or a failure
        raise RuntimeError(f"group {group}: {len(order)} results for {len(keys)} files")
    files: list[dict[str, Any]] = []
    for key, (is_row, index) in zip(keys, order):
        if not is_row:
            path, reason = result.failures[index]
            files.append({"path": path, "key": key, "error": reason})
            continue
        item = {"path": result.rows[index]["path"], "key": key, "row": result.rows[index]}
        item["output"] = result.logits[index].tolist()
        if result.timelines:
            item["timeline"] = result.timelines[index]
        files.append(item)
    return {"group": group, "files": files}


def _shard_keys(shard: Path) -> list[str] | None:
    """The file keys a shard was written for; ``None`` when it is missing or unreadable (then computed again)."""
    try:
        return [item["key"] for item in json.loads(shard.read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _refuse_unlisted_shards(partial: Path) -> None:
    if not (partial / SETTINGS_FILE).is_file() and partial.is_dir() and any(partial.glob(SHARD_GLOB)):
        raise ValueError(f"{partial} has shards but no {SETTINGS_FILE}; rerun with --restart (restart=True)")
