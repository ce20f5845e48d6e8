"""The flat recipe format of the scikit-learn fits, and the release folder they write.

A classical recipe (``recipes/baselines/*.yaml``, ``recipes/deep_spectrum/*_svm.*.yaml``) is a flat YAML: ``id``,
``corpus``, ``root``, ``output`` (the folder written), ``split`` and the fit's own settings, overridden from the
command line as ``key=value``. Lightning recipes are LightningCLI configs instead (``model: {class_path: ...}``,
trained by ``sermodels train``); :func:`is_lightning_recipe` tells the two apart.

Both leave through :func:`sermodels.training.export.write_release`: config.json (with the corpus facts, split and
partition sizes, the partitions fitted on, the classifier and its selection scores), model.safetensors,
training_log.json (the selection grid as the validation history), metrics.json of ``evaluate_splits`` (scored by
``sermodels evaluate``'s code) and the model card.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from sermodels.training.export import Scoring, write_release

RECIPE_REQUIRED = ("id", "corpus", "root", "output")
#: Keys every classical recipe may set: the card's paragraph and the partitions scored into metrics.json (the same
#: names as in a LightningCLI recipe; ``evaluate_splits=[]`` leaves metrics.json to ``sermodels evaluate``).
RELEASE_DEFAULTS = {"description": None, "evaluate_splits": ["test"]}
#: The partitions a fixed-split recipe selects on and is refitted on (EmoNet paper §4.1).
FIXED_PARTITIONS = ("train", "dev", "test")


def merge_recipe(
    path: str | Path,
    defaults: Mapping[str, Any],
    overrides: Sequence[str] = (),
    required: Sequence[str] = RECIPE_REQUIRED,
) -> dict[str, Any]:
    """A recipe YAML merged over :data:`RELEASE_DEFAULTS` and ``defaults``, then ``key=value`` overrides from the
    command line; the keys in ``required`` must be present. ``recipe_path`` records where it came from."""
    cfg = OmegaConf.merge(
        OmegaConf.create({**RELEASE_DEFAULTS, **defaults}),
        OmegaConf.load(path),
        OmegaConf.from_dotlist(list(overrides)),
    )
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(f"{path}: recipe lacks {missing}")
    recipe = OmegaConf.to_container(cfg, resolve=True)
    unknown = [s for s in recipe["evaluate_splits"] if s not in FIXED_PARTITIONS]
    if unknown:
        raise ValueError(f"{path}: evaluate_splits {unknown} are not partitions of the split {list(FIXED_PARTITIONS)}")
    recipe["recipe_path"] = str(path)
    return recipe


def is_lightning_recipe(path: str | Path) -> bool:
    """Whether ``path`` is a LightningCLI recipe (``model`` names its task class) rather than a classical one."""
    config = yaml.safe_load(Path(path).read_text())
    model = config.get("model") if isinstance(config, dict) else None
    return isinstance(model, dict) and "class_path" in model


def lightning_release_target(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``output``, ``id``, ``corpus`` and ``root`` of a one-corpus LightningCLI recipe after ``key=value`` overrides
    (what a release script needs to score the folder; the recipe itself is parsed by ``sermodels train``)."""
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
    recipe = OmegaConf.to_container(cfg, resolve=True)
    data = recipe.get("data") or {}
    data = data.get("init_args", data)
    corpora = data.get("corpora") or []
    if len(corpora) != 1:
        raise ValueError(f"{path}: a one-corpus recipe names one corpus in data.corpora, got {corpora}")
    corpus = corpora[0]
    return {
        "output": recipe.get("output"),
        "id": recipe.get("id"),
        "corpus": corpus,
        "root": (data.get("roots") or {}).get(corpus),
    }


def write_recipe_release(
    model,
    recipe: Mapping[str, Any],
    corpus,
    split: Mapping[str, list],
    fit: Sequence[str],
    *,
    history: Sequence[Mapping[str, Any]] = (),
    **training: Any,
) -> Path:
    """Release a model fitted by a one-corpus recipe to ``recipe["output"]`` through the one export, with its
    provenance: recipe, corpus facts (without the local root), split and partition sizes, the partitions it was
    fitted on (selection on dev), and ``training`` (classifier, selection scores, ...)."""
    info = {k: v for k, v in corpus.info().items() if k != "root"}  # a path on the training machine
    provenance = {
        "recipe": recipe.get("recipe_path"),
        "corpora": [info],
        "split": recipe["split"],
        "partitions": {"select": "dev", "fit": list(fit)},
        "files": {name: len(split[name]) for name in FIXED_PARTITIONS},
        **training,
    }
    head = model.default_head
    scorings = [Scoring(recipe["corpus"], name, split[name], head) for name in recipe["evaluate_splits"]]
    return write_release(
        model,
        recipe["output"],
        model_id=recipe["id"],
        description=recipe.get("description"),
        training=provenance,
        history=history,
        scorings=scorings,
        card=True,
    )
