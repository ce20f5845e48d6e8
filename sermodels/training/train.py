"""``sermodels train --config recipes/<family>/<setting>.yaml``: one command for every Lightning family.

A recipe is a LightningCLI YAML in subclass mode: ``model`` names the task (the training regime) and its arguments,
the architecture being one of them (``model.init_args.model.arch``, or the checkpoint a transfer starts from);
``data`` holds :class:`~sermodels.data.SERDataModule` arguments, or ``class_path``/``init_args`` naming another data
module (:class:`~sermodels.data.spaces.SpacesDataModule` for EmoNet's A+V setting,
:class:`~sermodels.data.adaptation.AdaptationDataModule` for WDA); ``trainer`` is Lightning's; and ``output`` (the
release folder), ``id``, ``description`` and ``evaluate_splits`` say what is exported. After fitting, rank 0 writes
the release through :func:`sermodels.training.export.write_release`, with the resolved recipe beside it.
``--ckpt_path`` resumes an interrupted fit from a Lightning checkpoint (the best state and the validation history
so far come back with it).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from sermodels.data import SERDataModule
from sermodels.tasks.base import SERTask
from sermodels.training.export import Scoring, write_release


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--output", type=str | None, default=None, help="release folder written after fit")
        parser.add_argument("--id", type=str | None, default=None, help="model id stored in config.json")
        parser.add_argument("--description", type=str | None, default=None, help="one paragraph for the card")
        parser.add_argument("--evaluate_splits", type=list[str], default=["test"], help="partitions scored")
        parser.add_argument(
            "--ckpt_path", type=str | None, default=None, help="resume fitting from this Lightning checkpoint"
        )


def make_cli(argv: Sequence[str]) -> TrainCLI:
    """Parse a recipe and instantiate task, data module and trainer (nothing is fitted)."""
    argv = list(argv)
    subclass_data = any(_names_data_class(path) for path in _config_paths(argv)) or any(
        a.startswith("--data.class_path") for a in argv
    )
    return TrainCLI(
        SERTask,
        L.LightningDataModule if subclass_data else SERDataModule,
        subclass_mode_model=True,
        subclass_mode_data=subclass_data,
        run=False,
        args=argv,
        seed_everything_default=0,
        save_config_callback=None,
        parser_kwargs={"parser_mode": "omegaconf"},
    )


def train(argv: Sequence[str]) -> Path | None:
    """Fit a recipe and write its release; returns the folder (None without ``output`` or on other ranks)."""
    cli = make_cli(argv)
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    wall = time.perf_counter() - started
    if not cli.config.output or not cli.trainer.is_global_zero:
        return None
    recipe = cli.config.get("config")
    folder = Path(cli.config.output)
    folder.mkdir(parents=True, exist_ok=True)
    # The configuration actually run (recipe + command-line overrides + defaults), beside the weights.
    cli.parser.save(cli.config, str(folder / "recipe_resolved.yaml"), overwrite=True, skip_validation=True)
    return export(
        cli.model,
        cli.datamodule,
        folder,
        model_id=cli.config.id,
        description=cli.config.description,
        recipe=str(recipe[0]) if recipe else None,
        trainer_info=trainer_info(cli.trainer, wall),
        splits=cli.config.evaluate_splits,
    )


def export(
    task: SERTask,
    data,
    folder: str | Path,
    *,
    model_id: str | None = None,
    description: str | None = None,
    recipe: str | None = None,
    trainer_info: dict[str, Any] | None = None,
    splits: Sequence[str] = ("test",),
) -> Path:
    """Write the release of a fitted task: its model, provenance, validation history and the scored ``splits``."""
    summary = task.training_summary()
    history = summary.pop("history")
    info = data.info()
    corpora = [{k: v for k, v in c.items() if k != "root"} for c in info["corpora"]]
    training = {
        "recipe": recipe,
        **summary,
        "corpora": corpora,
        "label_space": info["label_space"],
        "balance": info.get("balance"),
        "multi_corpus": info.get("multi_corpus"),
        "max_duration": info.get("max_duration"),
        "batch_size": getattr(data, "batch_size", None),
        "split": {c["name"]: c["split"] for c in corpora},
        "selection": selection_text(task),
        "schedule_run": trainer_info or {},
    }
    return write_release(
        task.net,
        folder,
        model_id=model_id,
        description=description,
        training=training,
        history=history,
        scorings=scorings_for(data, task.stream_head, splits),
    )


def scorings_for(data, stream_head: dict[str, str], splits: Sequence[str]) -> list[Scoring]:
    """Each stream's whole partitions (unbalanced), through the stream's head, corpus labels mapped into its space."""
    found: list[Scoring] = []
    if getattr(data, "spaces", None):
        for space, part in data.parts.items():
            found += scorings_for(part, {corpus: space for corpus in part.corpus_names}, splits)
        return [Scoring(f"{s.head}/{s.corpus}", s.split, s.items, s.head, s.label_space) for s in found]
    for name in data.corpus_names:
        corpus = data.corpora[name]
        split = data.splits[name]
        fold = data.fold if corpus.split_names().get(split, 0) else None
        parts = corpus.split(split, fold)
        found += [Scoring(name, part, parts[part], stream_head[name], data.label_space) for part in splits]
    return found


def trainer_info(trainer: L.Trainer, wall: float) -> dict[str, Any]:
    return {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "epochs_run": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "precision": str(trainer.precision),
        "devices": trainer.num_devices,
        "nodes": trainer.num_nodes,
        "strategy": type(trainer.strategy).__name__,
        "accelerator": type(trainer.accelerator).__name__,
        "wall_seconds": round(wall, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }


def quiet_trainer(**options: Any) -> L.Trainer:
    """A Trainer for fits run from code (finetune, benchmarks): no logger, no Lightning checkpoints (weights leave
    as safetensors through the export), no model summary, no sanity validation; ``options`` override or extend."""
    defaults = {"logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    defaults["num_sanity_val_steps"] = 0
    return L.Trainer(**(defaults | options))


def _config_paths(argv: list[str]) -> list[str]:
    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    return paths + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def _names_data_class(path: str) -> bool:
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # LightningCLI reports the unreadable file itself
    data = config.get("data") if isinstance(config, dict) else None
    return isinstance(data, dict) and "class_path" in data


def selection_text(task) -> str:
    """How the released weights were chosen, for the training log and the card."""
    if getattr(task, "setting", None) == "A1":
        return "the base's weights, unchanged (transfer setting A1: no fine-tuning)"
    averaged = f"the EMA (decay {task.ema}) of the weights" if getattr(task, "ema", None) else "the weights"
    if task.restore_best:
        return f"{averaged} at the validation with the best mean dev score"
    return f"{averaged} at the end of training"
