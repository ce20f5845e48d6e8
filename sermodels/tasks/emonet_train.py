"""``sermodels train``: fit an EmoNet recipe with LightningCLI, then export a checkpoint folder.

A recipe is a LightningCLI YAML with ``model`` (:class:`EmoNetTask`), ``data`` (:class:`SERDataModule`) and
``trainer`` sections, plus ``export`` (output folder), ``id`` and ``description``. After fitting, rank 0 writes the
folder: ``config.json`` + ``model.safetensors`` (the best-on-dev weights), ``training_log.json`` (schedule actually
run, validation history, wall time), ``metrics.json`` (each corpus's fixed test split through its head, written by
the same evaluation code as ``sermodels evaluate``) and the generated model card.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from sermodels import labels as label_maps
from sermodels._registry import save_pretrained
from sermodels.card import write_model_card
from sermodels.data import SERDataModule
from sermodels.evaluation import evaluate_items
from sermodels.inference import atomic_write_text
from sermodels.tasks.emonet import EmoNetTask

METRIC_KEYS = ("uar", "war", "macro_f1", "n")


class EmoNetCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--export", type=str | None, default=None, help="checkpoint folder written after fit")
        parser.add_argument("--id", type=str | None, default=None, help="model id stored in config.json")
        parser.add_argument("--description", type=str | None, default=None, help="one paragraph for the card")
        parser.add_argument("--evaluate_splits", type=list[str], default=["test"], help="partitions scored")


def train(argv: Sequence[str]) -> Path | None:
    """Run a recipe (``argv`` as for LightningCLI without a subcommand: ``--config recipe.yaml ...``)."""
    cli = make_cli(argv)
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - started
    if not cli.config.export or not cli.trainer.is_global_zero:
        return None
    recipe = cli.config.get("config")
    recipe_path = str(recipe[0]) if recipe else None
    folder = Path(cli.config.export)
    folder.mkdir(parents=True, exist_ok=True)
    # The configuration actually run (recipe + command-line overrides + defaults), beside the weights.
    cli.parser.save(cli.config, str(folder / "recipe_resolved.yaml"), overwrite=True, skip_check=True)
    return export(
        cli.model,
        cli.datamodule,
        cli.config.export,
        model_id=cli.config.id,
        description=cli.config.description,
        recipe=recipe_path,
        trainer_info=_trainer_info(cli.trainer, wall),
        splits=cli.config.evaluate_splits,
    )


def make_cli(argv: Sequence[str]) -> EmoNetCLI:
    """Parse a recipe and instantiate task, data module and trainer (nothing is fitted).

    The ``data`` section holds :class:`SERDataModule` arguments, or ``class_path``/``init_args`` naming another
    LightningDataModule (e.g. :class:`sermodels.data.spaces.SpacesDataModule` for the A+V setting)."""
    argv = list(argv)
    subclass = any(_names_data_class(path) for path in _config_paths(argv)) or any(
        a.startswith("--data.class_path") for a in argv
    )
    return EmoNetCLI(
        EmoNetTask,
        L.LightningDataModule if subclass else SERDataModule,
        subclass_mode_data=subclass,
        run=False,
        args=argv,
        seed_everything_default=0,
        save_config_callback=None,
        parser_kwargs={"parser_mode": "omegaconf"},
    )


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


def _trainer_info(trainer, wall: float) -> dict[str, Any]:
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


def export(
    task: EmoNetTask,
    data: SERDataModule,
    folder: str | Path,
    *,
    model_id: str | None = None,
    description: str | None = None,
    recipe: str | None = None,
    trainer_info: dict[str, Any] | None = None,
    splits: Sequence[str] = ("test",),
) -> Path:
    """Write the checkpoint folder of a fitted task (module docstring)."""
    folder = Path(folder)
    net = task.net.to("cpu").eval()
    summary = task.training_summary()
    info = data.info()
    corpora = [{k: v for k, v in c.items() if k != "root"} for c in info["corpora"]]
    training = {
        "recipe": recipe,
        "regime": summary["regime"],
        "init_from": summary["init_from"],
        "corpora": corpora,
        "label_space": info["label_space"],
        "balance": info["balance"],
        "multi_corpus": info["multi_corpus"],
        "max_duration": info["max_duration"],
        "batch_size": data.batch_size,
        "split": {c["name"]: c["split"] for c in corpora},
        "selection": "weights of the epoch with the best mean dev UAR" if task.hparams.restore_best else "last",
        "optimizer": summary["optimizer"],
        "class_weighted": summary["class_weighted"],
        "best_val_uar": summary["best_val_uar"],
        "schedule_run": trainer_info or {},
        "parameters": summary["parameters"],
    }
    extra = {"id": model_id or folder.name, "training": training}
    if description:
        extra["description"] = description
    save_pretrained(net, folder, extra=extra)
    log = {"training": training, "history": summary["history"]}
    atomic_write_text(folder / "training_log.json", json.dumps(log, indent=2) + "\n")
    metrics = evaluate_domains(net, data, task.domain_of, splits)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    write_model_card(folder, model_id)
    return folder


def evaluate_domains(net, data: SERDataModule, domain_of: dict[str, str], splits: Sequence[str] = ("test",)):
    """``{"<corpus>/<split>": {uar, war, macro_f1, n, head}}`` on each corpus's whole partition (unbalanced),
    through the corpus's head; corpus labels are mapped into the head's label space where needed."""
    metrics: dict[str, Any] = {}
    if getattr(data, "spaces", None):
        for space, part in data.parts.items():
            found = evaluate_domains(net, part, {corpus: space for corpus in part.corpus_names}, splits)
            metrics.update({f"{space}/{key}": value for key, value in found.items()})
        return metrics
    for corpus_name in data.corpus_names:
        corpus = data.corpora[corpus_name]
        split = data.splits[corpus_name]
        fold = data.fold if corpus.split_names().get(split, 0) else None
        parts = corpus.split(split, fold)
        head = domain_of[corpus_name]
        space = data.label_space
        label_map = None if space == "categories" else (lambda label, s=space: label_maps.map_label(label, s))
        for part in splits:
            report = evaluate_items(
                net, parts[part], head=head, batch_size=16, label_map=label_map, corpus=corpus_name, split=part
            )
            metrics[f"{corpus_name}/{part}"] = {**{k: report[k] for k in METRIC_KEYS}, "head": head}
    return metrics
