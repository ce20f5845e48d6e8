"""``sermodels finetune``: adapt a pretrained multi-domain model to your own labelled audio in one command.

A multi-domain model (EmoNet, and any family with the same methods, :data:`BASE_METHODS`) serves several corpora
through one shared network, each corpus (*domain*) through its own layers and head; fine-tuning adds a domain for
your corpus. The new head is named after the data folder (or table), reduced to a valid domain name
(:func:`corpus_name_for`), unless ``name`` is given.

The data is the generic corpus of :mod:`sermodels.data.folder`: a folder with one sub-folder per class, or a
CSV/TSV table ``path,label[,speaker][,split]``. Without speakers (a class-folder tree) the ≈70/10/20 %
train/dev/test split is drawn per file, stratified by class, so test files may share speakers with training files;
a table with a ``speaker`` (or ``split``) column gives a speaker-independent split.

The regimes are the modes of :class:`~sermodels.tasks.transfer.TransferTask` (Gerczuk et al., IEEE TAC, §6.1):

- ``adapters`` (default): new domain parameters for the corpus (EmoNet: residual adapters, BN layers and head); the
  shared network stays frozen (EmoNet: about 10 % of the parameters are trained) and the result keeps it;
- ``head``: only a new classifier head on top of the frozen base (as seen through its ``like`` domain);
- ``full``: the ``head`` start, then every parameter is trained.

**Transfer settings** (``setting``, ``--setting A1`` … ``A8``; Marczewski et al., ACM MM Thematic Workshops 2017,
§3.2) work on any model with named layer groups (:meth:`~sermodels.models.base.SERModel.layer_groups`), multi-domain
or not: A1 scores the pretrained model as it is (no training); A2 fine-tunes every layer; A3–A5 freeze the groups
up to the first, second or third cut-off (CNN+LSTM: C1, C2, L; other families: their first three groups, or
``cutoffs``) and fine-tune the rest; A6–A8 freeze the same groups and re-initialise the rest before training. When
the data's classes are those of one of the base's heads (a model pretrained on the shared ``basic4`` classes and a
folder with the folders anger, happiness, neutral, sadness), that head is kept and fine-tuned (A1 needs one); else
a new head is added (``add_domain``). The optimiser is the family's (CNN+LSTM: AdaDelta, §3.1).

Optimisation follows the paper (§5.2.2: SGD, momentum 0.9, class-weighted cross-entropy, ×0.1 on a plateau of the
dev UAR) on a schedule short enough for a CPU: :data:`DEFAULT_EPOCHS` epochs and a plateau patience of a quarter of
them (the paper's 50 epochs of patience are meant for runs of hundreds of epochs). The weights of the best dev epoch
are kept. The output folder is a regular checkpoint (``sermodels.load(folder)``): ``config.json``,
``model.safetensors``, ``training_log.json``, ``metrics.json`` (the corpus's test partition) and ``README.md``.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

from sermodels.layer_groups import SETTING_TEXT
from sermodels.layers.domains import SUFFIX

#: Epochs of a fine-tuning run: a few hundred clips take a few minutes on a laptop CPU (adapters regime).
DEFAULT_EPOCHS = 10
#: Batch size (the paper uses 64 on GPU; smaller batches give more updates per epoch on small corpora).
DEFAULT_BATCH_SIZE = 16
#: §5.1: training segments of at most 5 s (random crops; dev and test use whole clips).
DEFAULT_MAX_DURATION = 5.0
REGIMES = ("adapters", "head", "full")
PRECISIONS = ("32", "bf16-mixed")
#: What a base must have: the multi-domain methods (:data:`sermodels.tasks.classification.MULTI_DOMAIN_METHODS`) and
#: the two more that :func:`sermodels.tasks.transfer.prepare_domains` calls.
BASE_METHODS = ("add_domain", "domain_parameters", "shared_parameters", "remove_domain", "head_parameters")
REGIME_TEXT = {
    "adapters": "the new domain's own layers (adapters, BN layers) and head trained; the shared network is the "
    "base's, frozen.",
    "head": "a new classifier head trained on the frozen base.",
    "full": "every parameter trained, starting from the base.",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def corpus_name_for(data: str | Path) -> str:
    """The head name for a data folder or table: its name (a table's stem) as a valid domain name: accents dropped
    (``Émotions`` -> ``Emotions``), every run of other characters than ``[A-Za-z0-9_-]`` replaced by ``_`` (``my
    corpus!`` -> ``my_corpus``, ``labels.v2.csv`` -> ``labels_v2``), ``custom`` when nothing is left. Names that
    are module attributes (``train``) are fine as they are."""
    path = Path(data)
    raw = path.stem if path.suffix.lower() in (".csv", ".tsv") else path.name
    plain = "".join(c for c in unicodedata.normalize("NFKD", raw) if not unicodedata.combining(c))
    name = _UNSAFE.sub("_", plain).strip("_")
    # Domain names may not end in domains.SUFFIX ("__domain"): the underscores before "domain" shrink to one.
    name = re.sub(r"_+domain$", "_domain", name) if name.endswith(SUFFIX) else name
    return name or "custom"


def default_patience(epochs: int) -> int:
    """Plateau patience that lets the learning rate decay within a short run: a quarter of the epochs, at least 1."""
    return max(1, math.ceil(epochs / 4))


def finetune(
    base: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    regime: str = "adapters",
    setting: str | None = None,
    cutoffs: list[str] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_duration: float | None | str = "auto",
    lr: float | None = None,
    patience: int | None = None,
    name: str | None = None,
    like: str | None = None,
    seed: int = 0,
    precision: str = "32",
    devices: int | str = 1,
    accelerator: str = "auto",
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    description: str | None = None,
) -> Path | None:
    """Fine-tune the multi-domain model ``base`` (pretrained id or folder, e.g. ``emonet_wrn.multi4``) on ``data``
    and write a checkpoint folder ``out``.

    ``name`` is the new head's name (default: :func:`corpus_name_for` ``data``); ``like`` the base head whose BN
    (and, for ``head``/``full``, adapters) the new domain starts from (default: the base's default head). ``lr``
    defaults to 0.1 for ``adapters`` and 0.01 otherwise (§6.1). ``setting`` (A1–A8, module docstring) replaces
    ``regime``; ``cutoffs`` names its three cut-off groups. ``max_duration`` (the training crop, seconds;
    ``None``: whole clips) defaults to the family's ``training_crop_seconds`` (AV-SpNET: one 810 ms segment per clip
    and epoch, its per-segment training) or :data:`DEFAULT_MAX_DURATION`. Returns ``out`` (``None`` on the other
    ranks of a multi-device run, where only rank 0 writes).
    """
    import lightning as L

    from sermodels.data import SERDataModule
    from sermodels.layers.domains import check_domain_name
    from sermodels.tasks.transfer import TransferTask
    from sermodels.training.train import export, quiet_trainer, trainer_info

    arch = check_base(base, groups_only=setting is not None)
    if max_duration == "auto":  # the family's per-segment crop (AV-SpNET: 0.81 s), else 5 s
        max_duration = _training_crop(arch)
    _check_options(regime, epochs, batch_size, max_duration, precision, patience, setting, cutoffs)
    data, out = Path(data).expanduser(), Path(out).expanduser()
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data folder or CSV/TSV table")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: the output must be a folder, and this is a file")
    if data.is_dir() and out.resolve().is_relative_to(data.resolve()):
        raise ValueError(f"{out}: the output folder is inside the data folder {data}, where it would be a class")
    if setting is not None:
        classes = _corpus_classes(data)
        name = name or _matching_head(base, classes)
        if setting == "A1" and (name is None or _head_labels(base).get(name) != classes):
            raise ValueError(
                f"{base}: A1 (no fine-tuning) scores a head of the base, and none predicts the data's classes "
                f"{classes} in this order (folders sort by name; its heads: {_head_labels(base)}); choose A2-A8 "
                "for a new head"
            )
    name = check_domain_name(name or corpus_name_for(data))
    train_size = _check_corpus(data, name)
    batch_size = min(batch_size, train_size)
    datamodule = SERDataModule(
        corpora=[f"folder:{name}"],
        roots={name: str(data)},
        batch_size=batch_size,
        max_duration=max_duration,
        num_workers=num_workers,
        cache_dir=None if cache_dir is None else str(cache_dir),
        seed=seed,
        # A last batch of one clip cannot train the BN layers (no batch statistics): drop it when it would occur.
        drop_last=train_size % batch_size == 1,
    )
    L.seed_everything(seed, workers=True, verbose=False)
    task = TransferTask(
        init_from=str(base),
        mode=regime if setting is None else "groups",
        like=like,
        setting=setting,
        cutoffs=cutoffs,
        optimizer=None if lr is None else {"lr": lr},
        schedule={"name": "plateau", "patience": patience or default_patience(epochs)},
    )
    what = REGIME_TEXT[regime] if setting is None else f"transfer setting {setting}: {SETTING_TEXT[setting]}."
    text = description or f"{arch} fine-tuned from {base} on the user corpus {name} ({data.name}): {what}"
    if setting == "A1":  # nothing trains: the base, scored on the data's test partition
        task.configure_from(datamodule)
        return export(task, datamodule, out, description=text, trainer_info={"epochs_run": 0, "wall_seconds": 0.0})
    trainer = quiet_trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        precision=precision,
        enable_progress_bar=progress,
        log_every_n_steps=1,
    )
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    wall = time.perf_counter() - started
    if not trainer.is_global_zero:
        return None  # under DDP only rank 0 writes the folder
    return export(task, datamodule, out, description=text, trainer_info=trainer_info(trainer, wall))


def _training_crop(arch: str) -> float:
    from sermodels._registry import get_model_class

    return float(getattr(get_model_class(arch), "training_crop_seconds", DEFAULT_MAX_DURATION))


def check_base(base: str | Path, groups_only: bool = False) -> str:
    """The architecture of ``base``, or a clear error unless it is a multi-domain model: one whose class has every
    method of :data:`BASE_METHODS` (reads its config.json only; the weights are loaded when training starts). With
    ``groups_only`` (a transfer setting) any architecture is accepted: its layer groups are checked when it loads."""
    from sermodels._registry import get_model_class
    from sermodels.hub import read_config

    arch = read_config(base).get("architecture")
    cls = get_model_class(str(arch))
    if groups_only:
        return str(arch)
    missing = [method for method in BASE_METHODS if not callable(getattr(cls, method, None))]
    if missing:
        raise ValueError(
            f"{base}: a {arch} model, not a multi-domain model (it lacks {', '.join(missing)}); fine-tuning adds a "
            "domain for your corpus to a base with per-domain layers and heads, such as the default model"
        )
    return str(arch)


def _head_labels(base: str | Path) -> dict[str, list[str]]:
    from sermodels.hub import read_config

    return {name: list(labels) for name, labels in read_config(base).get("heads", {}).items()}


def _matching_head(base: str | Path, classes: list[str]) -> str | None:
    """The base's head whose classes are ``classes`` in the same order, if one is."""
    return next((name for name, labels in _head_labels(base).items() if labels == classes), None)


def _corpus_classes(data: Path) -> list[str]:
    from sermodels.data import load_corpus

    if not data.exists():
        raise FileNotFoundError(f"{data}: no such data folder or CSV/TSV table")
    return list(load_corpus("folder", data, name=corpus_name_for(data)).classes)


def _check_options(regime, epochs, batch_size, max_duration, precision, patience, setting=None, cutoffs=None) -> None:
    from sermodels.layer_groups import SETTINGS

    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    if setting is not None and setting not in SETTINGS:
        raise ValueError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if cutoffs is not None and (setting is None or len(cutoffs) != 3):
        raise ValueError(f"cutoffs are three layer groups of a transfer setting (A3-A8), got {cutoffs}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if epochs < 1 or batch_size < 1 or (patience is not None and patience < 1):
        raise ValueError("epochs, batch size and patience must be positive")
    if max_duration is not None and max_duration <= 0:
        raise ValueError(f"max_duration must be positive, got {max_duration}")


def _check_corpus(data: Path, name: str) -> int:
    """The number of training clips; an error naming ``data`` unless it has two classes and a train/dev/test split."""
    from sermodels.data import load_corpus

    corpus = load_corpus("folder", data, name=name)
    if len(corpus.classes) < 2:
        found = f"{len(corpus.classes)} ({', '.join(corpus.classes)})"
        raise ValueError(f"{data}: fine-tuning needs at least two class folders (labels), found {found}")
    sizes = {part: len(items) for part, items in corpus.split("fixed").items()}
    empty = [part for part in ("train", "dev", "test") if not sizes.get(part)]
    if empty or sizes["train"] < 2:
        raise ValueError(
            f"{data}: too few files for a train/dev/test split (sizes {sizes}); "
            "add files, or give a CSV/TSV table with a split column"
        )
    return sizes["train"]


def summary(folder: str | Path) -> str:
    """One line: the new head, its test UAR and where the checkpoint is."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    training: dict[str, Any] = config.get("training", {})
    key = next(k for k in metrics if k.endswith("/test"))
    test = metrics[key]
    return (
        f"fine-tuned {training.get('init_from')} ({training.get('regime')}) on {key.split('/')[0]} "
        f"({len(config['heads'][test['head']])} classes): test UAR {test['uar']:.3f}, WAR {test['war']:.3f} "
        f"(n={test['n']}) -> {folder}"
    )
