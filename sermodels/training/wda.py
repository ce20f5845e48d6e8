"""The two-stage WDA driver of the NICU paper (§2.2, §4.2.3) on cached log-mel functionals.

>>> from sermodels.training.wda import fit_wda
>>> result = fit_wda({"emodb": "../shared/data/EMODB"}, ("urdu", "../shared/data/URDU"))  # doctest: +SKIP
>>> result.unsupervised.heads            # {"arousal": ["low", "high"], "valence": ["non-positive", "positive"]}

- :func:`fit_source`: stage 1 of one head (:class:`~sermodels.tasks.wda.WDASourceTask`); returns a copy of the model
  with the head trained and the **source** statistics in its standardiser.
- :func:`adapt`: stage 2 of one head (:class:`~sermodels.tasks.wda.WDAAdaptationTask`); returns the unsupervised
  model (last weights) and, when labelled target items are given, the semi-supervised one (best labelled-target UAR),
  both with the **target** statistics, from one run.
- :func:`fit_wda`: both stages for every label space (binary arousal and binary valence by default, mapped with
  :mod:`sermodels.labels`), from corpus folders, into one multi-head model per variant.
- :func:`measure_wasserstein`: a fresh critic trained to convergence on two feature sets, a measurement of their
  distance that does not depend on the critic of the run.

Trainers are quiet (no logger, no checkpoints, no progress bar), ``deterministic=True`` and seeded, on the CPU by
default: the MLPs are small and the features sit in memory.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sermodels import labels as label_maps
from sermodels import losses
from sermodels.data import load_corpus
from sermodels.data.features import FeatureDataModule, extract_functionals, stratified_split, zscore
from sermodels.models.wda import WDAMLP
from sermodels.tasks.adaptation import GP_WEIGHT, critic_network
from sermodels.tasks.wda import SOURCE_LR, SOURCE_PATIENCE, WDAAdaptationTask, WDASourceTask, balanced_class_weights
from sermodels.training.train import quiet_trainer

#: Upper bounds on the epochs of each stage (stage 1 stops early on the dev UAR, stage 2 on saturation).
SOURCE_MAX_EPOCHS = 1000
ADAPT_MAX_EPOCHS = 300
#: Head name of each label space in a fitted model.
HEAD_OF_SPACE = {"arousal": "arousal", "binary_valence": "valence", "valence": "valence3"}
#: Critic of :func:`measure_wasserstein`: updates, learning rate, hidden units (full batches, gradient penalty). A
#: measurement needs no paper-sized critic: two layers of 64 give the same ranking of feature sets, ~10x faster.
MEASURE_STEPS = 200
MEASURE_LR = 1e-3
MEASURE_UNITS = (64, 64)


def _trainer(max_epochs: int, accelerator: str) -> L.Trainer:
    return quiet_trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        deterministic=True,
        enable_progress_bar=False,
    )


def fit_source(
    model: WDAMLP,
    head: str,
    data: FeatureDataModule,
    source_stats: tuple[torch.Tensor, torch.Tensor],
    *,
    lr: float = SOURCE_LR,
    patience: int = SOURCE_PATIENCE,
    max_epochs: int = SOURCE_MAX_EPOCHS,
    class_weighted: bool = True,
    seed: int = 0,
    accelerator: str = "cpu",
) -> tuple[WDAMLP, list[dict[str, Any]]]:
    """Stage 1 of ``head`` on ``data`` (source train/dev); returns a trained copy of ``model`` (best dev-UAR epoch,
    ``source_stats`` = ``(mean (600,), std (600,))`` in its standardiser, eval mode) and the per-epoch history."""
    L.seed_everything(seed, workers=True, verbose=False)
    model = copy.deepcopy(model).train()
    weights = balanced_class_weights(data.source_y, len(model.heads[head])) if class_weighted else None
    task = WDASourceTask(model, head, lr=lr, class_weights=weights, patience=patience)
    _trainer(max_epochs, accelerator).fit(task, datamodule=data.source_only())
    model.set_standardizer(*source_stats)
    return model.cpu().eval(), task.history


@dataclass
class Adapted:
    """Stage 2 of one head: the unsupervised model (last epoch), the semi-supervised one (best labelled-target UAR;
    None without labelled target items), the epoch it comes from, the per-epoch history, and the run's critic."""

    unsupervised: WDAMLP
    semi_supervised: WDAMLP | None
    best_target_epoch: int | None
    history: list[dict[str, Any]]
    critic: torch.nn.Module | None = None


def adapt(
    model: WDAMLP,
    head: str,
    data: FeatureDataModule,
    target_stats: tuple[torch.Tensor, torch.Tensor],
    *,
    max_epochs: int = ADAPT_MAX_EPOCHS,
    class_weighted: bool = True,
    seed: int = 0,
    accelerator: str = "cpu",
    **task_options: Any,
) -> Adapted:
    """Stage 2 of ``head``: ``data`` has the source train/dev parts and the target pool (``target_x``), optionally
    labelled target items for selection. ``task_options`` go to :class:`WDAAdaptationTask` (``lipschitz``,
    ``critic_steps``, learning rates, ``train_classifier``, saturation settings). The returned models carry
    ``target_stats`` in their standardisers."""
    if data.target_x is None:
        raise ValueError("adapt needs target features (FeatureDataModule(target_x=...))")
    L.seed_everything(seed, workers=True, verbose=False)
    model = copy.deepcopy(model).train()
    weights = balanced_class_weights(data.source_y, len(model.heads[head])) if class_weighted else None
    task = WDAAdaptationTask(model, head, class_weights=weights, **task_options)
    _trainer(max_epochs, accelerator).fit(task, datamodule=data)
    model.requires_grad_(True)
    model.set_standardizer(*target_stats)
    best = None
    if task.best_target_state is not None:
        best = copy.deepcopy(model)
        best.load_state_dict(task.best_target_state)
        best.set_standardizer(*target_stats)
        best = best.cpu().eval()
    return Adapted(model.cpu().eval(), best, task.best_target_epoch, task.history, task.critic.cpu().eval())


def measure_wasserstein(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = MEASURE_STEPS,
    lr: float = MEASURE_LR,
    units: tuple[int, ...] = MEASURE_UNITS,
    seed: int = 0,
) -> float:
    """The Wasserstein-1 estimate between feature sets ``(N, D)`` and ``(M, D)`` by a fresh critic
    (``critic_network(D, units)``, gradient penalty λ = 10, Adam, full batches) trained for ``steps`` updates: a
    measurement that can compare the features of two models (e.g. ``F_S`` and ``F_T`` on the target), unlike the
    estimates of a run's own critic, which grow with the critic while it learns."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        critic = critic_network(source.shape[1], units)
    source, target = source.detach().float(), target.detach().float()
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    for _ in range(steps):
        loss = losses.wasserstein_critic_loss(critic(source), critic(target))
        loss = loss + GP_WEIGHT * losses.gradient_penalty(critic, source, target, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(losses.wasserstein_estimate(critic(source), critic(target)))


# ---------------------------------------------------------------------------------------------------- from corpora


@dataclass
class WDAResult:
    """Multi-head models of :func:`fit_wda`: ``source`` (stage 1, source statistics), ``unsupervised`` and
    ``semi_supervised`` (stage 2, target statistics; the latter None without labelled target items), and per label
    space the histories of both stages and the selected epoch."""

    source: WDAMLP
    unsupervised: WDAMLP
    semi_supervised: WDAMLP | None
    history: dict[str, dict[str, Any]] = field(default_factory=dict)


def _copy_head(into: WDAMLP, source: WDAMLP, head: str) -> None:
    into.extractor(head).load_state_dict(source.extractor(head).state_dict())
    into.classifier(head).load_state_dict(source.classifier(head).state_dict())


def _mapped(categories: Sequence[str], space: str, classes: Sequence[str]) -> torch.Tensor:
    return torch.tensor([list(classes).index(_in_space(c, space, classes)) for c in categories])


def _in_space(label: str, space: str, classes: Sequence[str]) -> str:
    """A category mapped into ``space``; a label that already is one of its classes (e.g. ``high``) as it is."""
    return label if label in classes else label_maps.map_label(label, space)


def _labelled_for(
    pairs: Sequence[tuple[str | os.PathLike, str]], x: torch.Tensor, space: str, classes: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The labelled target items that have a label in ``space`` (an arousal label says nothing of valence)."""
    keep, y = [], []
    for i, (_, label) in enumerate(pairs):
        try:
            y.append(list(classes).index(_in_space(label, space, classes)))
        except (ValueError, label_maps.UnknownLabelError):
            continue
        keep.append(i)
    return (x[keep], torch.tensor(y)) if keep else None


def fit_wda(
    source_corpora: Mapping[str, str | os.PathLike],
    target: tuple[str, str | os.PathLike] | Sequence[str | os.PathLike],
    target_labelled: Sequence[tuple[str | os.PathLike, str]] | None = None,
    *,
    label_spaces: Sequence[str] = ("arousal", "binary_valence"),
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    model_args: dict[str, Any] | None = None,
    source_options: dict[str, Any] | None = None,
    adapt_options: dict[str, Any] | None = None,
    partitions: Sequence[str] | None = None,
    target_features: torch.Tensor | None = None,
) -> WDAResult:
    """Both WDA stages for every label space, from built-in corpora (name -> root, :func:`load_corpus`) to a target
    given as ``(corpus name, root)`` or a list of audio files (its labels are never read).

    ``target_labelled``: ``(file, emotion category)`` pairs of the target, mapped to each label space and used only
    to select the semi-supervised epoch; they are standardised with the target pool's statistics. Source features are
    z-scored per source corpus, the target with its own statistics (§4.1). ``source_options``/``adapt_options`` go to
    :func:`fit_source` / :func:`adapt`; ``model_args`` to :class:`WDAMLP`. Features are cached in ``cache_dir``.
    ``partitions`` (e.g. ``("train", "dev")``) keeps only those partitions of each corpus's fixed split, for the
    sources and a target given as a corpus, so that its test speakers stay unseen. ``target_features``: the raw
    functionals ``(M, 600)`` of the target (e.g. daylong segments), used instead of ``target``. A labelled target
    item may carry an emotion category or a label of the space itself (``high``, ``positive``); items without a
    label in a space do not take part in that head's selection.
    """
    if not source_corpora:
        raise ValueError("fit_wda needs at least one source corpus")
    unknown = [s for s in label_spaces if s not in HEAD_OF_SPACE]
    if unknown:
        raise ValueError(f"label spaces {unknown} are not categorical spaces of WDA; use {sorted(HEAD_OF_SPACE)}")
    heads = {HEAD_OF_SPACE[s]: list(label_maps.LABEL_SPACES[s]) for s in label_spaces}
    torch.manual_seed(seed)
    model = WDAMLP(heads, **(model_args or {}))
    frontend = model.functionals

    def features(files: Sequence) -> torch.Tensor:
        return extract_functionals(files, frontend, cache_dir=cache_dir, min_duration=model.min_duration)

    source_z, source_raw, categories = [], [], []
    for name, root in source_corpora.items():
        items = _items(name, root, partitions)
        raw = features([item.path for item in items])
        source_raw.append(raw)
        source_z.append(zscore(raw)[0])
        categories += [item.label for item in items]
    source_x = torch.cat(source_z)
    # The released source model's statistics: the source corpus's own, or those of the pooled source corpora.
    source_stats = zscore(torch.cat(source_raw))[1:]
    if target_features is None:
        target_files = (
            [item.path for item in _items(target[0], target[1], partitions)]
            if isinstance(target, tuple) and len(target) == 2 and not Path(str(target[0])).is_file()
            else [str(p) for p in target]
        )
        target_features = features(target_files)
    target_x, target_mean, target_std = zscore(target_features)
    labelled_x = None
    if target_labelled:
        labelled_x = (features([str(p) for p, _ in target_labelled]) - target_mean) / target_std

    source_model, unsupervised, semi = copy.deepcopy(model), None, None
    history: dict[str, dict[str, Any]] = {}
    semi_heads: set[str] = set()
    for space in label_spaces:
        head, classes = HEAD_OF_SPACE[space], heads[HEAD_OF_SPACE[space]]
        y = _mapped(categories, space, classes)
        train_idx, dev_idx = stratified_split(y, seed=seed)
        labelled = None if labelled_x is None else _labelled_for(target_labelled, labelled_x, space, classes)
        data = FeatureDataModule(
            source_x[train_idx], y[train_idx], source_x[dev_idx], y[dev_idx], target_x=target_x,
            target_labelled_x=None if labelled is None else labelled[0],
            target_labelled_y=None if labelled is None else labelled[1], seed=seed,
        )  # fmt: skip
        source_model, source_history = fit_source(source_model, head, data, source_stats, seed=seed,
                                                   **(source_options or {}))  # fmt: skip
        adapted = adapt(source_model, head, data, (target_mean, target_std), seed=seed, **(adapt_options or {}))
        unsupervised = unsupervised or copy.deepcopy(adapted.unsupervised)
        _copy_head(unsupervised, adapted.unsupervised, head)
        if adapted.semi_supervised is not None:
            semi = semi or copy.deepcopy(adapted.semi_supervised)
            _copy_head(semi, adapted.semi_supervised, head)
            semi_heads.add(head)
        history[space] = {
            "head": head,
            "source": source_history,
            "adaptation": adapted.history,
            "best_target_epoch": adapted.best_target_epoch,
            "split": {"train": len(train_idx), "dev": len(dev_idx), "seed": seed},
        }
    if semi is not None:  # a head without labelled target items keeps its unsupervised weights
        for head in set(heads) - semi_heads:
            _copy_head(semi, unsupervised, head)
    return WDAResult(source_model, unsupervised, semi, history)


def _items(name: str, root: str | os.PathLike, partitions: Sequence[str] | None) -> list:
    corpus = load_corpus(name, root)
    if partitions is None:
        return list(corpus)
    split = corpus.split("fixed")
    return [item for part in partitions for item in split[part]]
