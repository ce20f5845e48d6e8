"""Fitting the linear layer of a :class:`~sermodels.models.deep_spectrum.DeepSpectrumModel` on frozen features.

(a) The paper's protocol (EmoNet paper §4.1-4.2): features of every file of the fixed split, z-normalisation and a
    class-balanced linear SVM with C chosen on dev from 1 down to 1e-9, refit on train + dev (:func:`fit_svm`,
    reusing :mod:`sermodels.tasks.svm`); the hyperplanes are copied into the model's linear layer.
(b) :class:`DeepSpectrumTask`: a LightningModule holding the model with its frozen extractor; the z-score is fitted
    on the training features before the first step, then a softmax linear head is trained with class-weighted
    cross-entropy and Adam; the weights with the best dev UAR are kept. Features of unchanged clips (no random
    crop) are computed once and reused across epochs.

:func:`release` runs a recipe (``recipes/deep_spectrum/*.yaml``) end to end and writes a checkpoint folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import sermodels
from sermodels.audio import load_audio
from sermodels.features.deepspectrum import PRECISIONS, DeepSpectrum, autocast, autocast_dtype, weights_digest
from sermodels.metrics import uar
from sermodels.models.deep_spectrum import DeepSpectrumModel
from sermodels.tasks.common import gather_predictions, merge_recipe, save_release
from sermodels.tasks.svm import SVMFit, feature_cache_path, fit_fixed, store_features

# ---------------------------------------------------------------------------------------------------- features


def _batches(paths: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(paths), batch_size):
        yield paths[start : start + batch_size]


@torch.inference_mode()
def extract_features(
    extractor: DeepSpectrum,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Whole-file Deep Spectrum features ``(N, D)`` float32, optionally cached as one ``.npy`` per file list.

    The cache key covers the files (path, size, mtime), the extractor's configuration, its weights' sha256 and
    the precision, so a changed setting or weight never reuses stale features."""
    rate = extractor.images.sample_rate
    cache = None
    if cache_dir is not None:
        settings = ["deepspectrum", extractor.config(), weights_digest(extractor), precision, sermodels.__version__]
        cache = feature_cache_path(paths, settings, cache_dir)
        if cache.is_file():
            return np.load(cache, allow_pickle=False)
    extractor = extractor.to(device).eval()
    min_duration = extractor.images.min_samples() / rate
    out = []
    bar = tqdm(total=len(paths), disable=not progress, desc="deep spectrum", unit="file")
    for chunk in _batches(list(paths), batch_size):
        waves = [load_audio(p, rate, min_duration=min_duration) for p in chunk]
        lengths = torch.tensor([len(w) for w in waves])
        batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(device)
        with autocast(device, precision):
            out.append(extractor(batch, lengths.to(device)).float().cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    feats = np.concatenate(out) if out else np.zeros((0, extractor.dim), dtype=np.float32)
    if cache is not None:
        store_features(cache, feats)
    return feats


# ---------------------------------------------------------------------------------------------------- (a) the SVM


def fit_svm(model: DeepSpectrumModel, feats: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> SVMFit:
    """C on dev, refit on train + dev (EmoNet paper §4.1), copied into ``model``; checked against scikit-learn on
    the test features when ``feats`` has a "test" entry."""
    if model.classifier_kind != "svm":
        raise ValueError("fit_svm fills a model built with classifier='svm'")
    fit = fit_fixed("linear", feats["train"], labels["train"], feats["dev"], labels["dev"])
    if fit.labels != model.label_names():
        raise ValueError(f"the model's labels {model.label_names()} differ from the fitted classes {fit.labels}")
    scaler, svm = fit.pipeline.named_steps["zscore"], fit.pipeline.named_steps["svm"]
    model.set_linear_svm(scaler.mean_, scaler.scale_, svm.coef_, svm.intercept_)
    if "test" in feats:
        with torch.inference_mode():
            logits = model.classifier(model.standardizer(torch.from_numpy(feats["test"]))).double()
        decision = fit.pipeline.decision_function(feats["test"])
        if decision.ndim == 1:  # two classes: one hyperplane, stored as (-w, +w)
            decision = np.stack([-decision, decision], axis=1)
        # float32 torch vs float64 scikit-learn: only a disagreement beyond float32 rounding means a wrong copy.
        worst = float(np.abs(logits.numpy() - decision).max())
        if worst > 1e-3 * max(1.0, float(np.abs(decision).max())):
            raise RuntimeError(f"the torch head's decision values differ from scikit-learn's by up to {worst:.3g}")
    return fit


# ---------------------------------------------------------------------------------------------------- (b) Lightning


class DeepSpectrumTask(L.LightningModule):
    """Frozen Deep Spectrum extractor + trainable softmax linear head, on batches of a one-corpus ``SERDataModule``.

    Args:
        backbone, layer, image, pool: the extractor (see :class:`DeepSpectrum`).
        weights: "hub" (timm's pretrained weights from the Hugging Face Hub; a clear error offline), a local
            ``.safetensors`` file of the backbone, or "random" (random initialisation: only meaningful as a control).
        lr, weight_decay: Adam on the linear layer.
        class_weighted: cross-entropy weighted by inverse class frequency of the training partition.
        precision: autocast of the extractor (fp32, bf16; fp16 on GPU).
        restore_best: keep the head with the best dev UAR.
    """

    def __init__(
        self,
        backbone: str = "mobilenetv2_100",
        weights: str = "hub",
        layer: str | None = None,
        image: dict[str, Any] | None = None,
        pool: str = "avg",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        class_weighted: bool = True,
        precision: str = "fp32",
        restore_best: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
        self.model: DeepSpectrumModel | None = None
        self.class_weights: torch.Tensor | None = None
        self._features: dict[str, torch.Tensor] = {}
        self._cache_features = True
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.history: list[dict[str, float]] = []
        self.best_uar = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        _pretrained_arg(weights)  # a bad value fails here, not at fit time

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        data = self.trainer.datamodule
        if data is None:
            raise ValueError("DeepSpectrumTask needs a SERDataModule passed to the Trainer (datamodule=...)")
        self.configure_from(data)

    def configure_from(self, data) -> None:
        data.setup("fit")
        if len(data.corpus_names) != 1:
            raise ValueError(f"DeepSpectrumTask trains one corpus's head; the data module has {data.corpus_names}")
        corpus = data.corpus_names[0]
        names = data.label_names
        labels = names[corpus] if isinstance(names, dict) else list(names)
        pretrained = _pretrained_arg(self.hparams.weights)
        head = corpus if data.label_space == "categories" else data.label_space
        self.model = DeepSpectrumModel(
            labels,
            head=head,
            sample_rate=data.sample_rate,
            backbone=self.hparams.backbone,
            layer=self.hparams.layer,
            image=self.hparams.image,
            pool=self.hparams.pool,
            classifier="linear",
            pretrained=pretrained,
        )
        self.class_weights = data.class_weights(corpus) if self.hparams.class_weighted else None
        # Features may be reused across epochs only when every epoch sees the same audio (no random crops).
        self._cache_features = data.max_duration is None
        self._train_set = data.datasets[corpus]["train"]

    def _extract(self, batch: dict[str, Any]) -> torch.Tensor:
        paths = batch["paths"]
        if self._cache_features and all(p in self._features for p in paths):
            return torch.stack([self._features[p] for p in paths]).to(self.device)
        with torch.no_grad(), autocast(self.device, self.hparams.precision):
            feats = self.model.features(batch["waveforms"], batch["lengths"]).float()
        if self._cache_features:
            for path, row in zip(paths, feats.cpu()):
                self._features[path] = row
        return feats

    def on_fit_start(self) -> None:
        """Fit the z-score on the training partition's features (whole clips) before the first step."""
        from torch.utils.data import DataLoader

        from sermodels.data.datamodule import pad_collate

        loader = DataLoader(self._train_set, batch_size=self.trainer.datamodule.batch_size, collate_fn=pad_collate)
        rows = []
        for batch in loader:
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            rows.append(self._extract(batch).cpu())
        self.model.standardizer.fit(torch.cat(rows))

    def forward(self, waveforms, lengths=None, head=None):
        return self.model(waveforms, lengths, head)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.classifier(self.model.standardizer(self._extract(batch)))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        weight = None if self.class_weights is None else self.class_weights.to(self.device)
        loss = F.cross_entropy(self._logits(batch), batch["labels"], weight=weight)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["paths"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._val.append((self._logits(batch).argmax(-1).detach(), batch["labels"].detach()))

    def on_validation_epoch_end(self) -> None:
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        pred = torch.cat([p for p, _ in self._val]) if self._val else empty
        true = torch.cat([t for _, t in self._val]) if self._val else empty
        # Under DDP every rank scored its own dev shard: the score (and so the best head) is the whole dev set's.
        pred, true = gather_predictions(self, pred, true)
        if true.numel() == 0:
            return
        score = uar(true.cpu(), pred.cpu())
        self.log("val/uar", score, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.history.append({"epoch": self.current_epoch, "step": self.global_step, "val_uar": score})
        if score > self.best_uar:
            self.best_uar = score
            if self.hparams.restore_best:
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.classifier.state_dict().items()}

    def on_fit_end(self) -> None:
        if self.hparams.restore_best and self.best_state is not None:
            self.model.classifier.load_state_dict(self.best_state)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed fit must keep comparing against the best dev UAR seen so far, and restore that head at the end.
        state = {"best_uar": self.best_uar, "best_state": self.best_state, "history": self.history}
        checkpoint["deep_spectrum"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("deep_spectrum", {})
        self.best_uar = state.get("best_uar", self.best_uar)
        self.best_state = state.get("best_state", self.best_state)
        self.history = list(state.get("history", self.history))

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.model.classifier.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


# ---------------------------------------------------------------------------------------------------- recipes

RECIPE_DEFAULTS = {
    "arch": "deep_spectrum",
    "split": "fixed",
    "sample_rate": 16000,
    "backbone": "mobilenetv2_100",
    "weights": "hub",
    "layer": None,
    "pool": "avg",
    "image": {},
    "classifier": "svm",
    "batch_size": 16,
    "precision": "fp32",
    "device": "cpu",
    "cache_dir": None,
    # (b) only
    "epochs": 30,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "seed": 0,
}


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A Deep Spectrum recipe YAML merged over :data:`RECIPE_DEFAULTS`, with ``key=value`` overrides."""
    recipe = merge_recipe(path, RECIPE_DEFAULTS, overrides)
    if recipe["arch"] != "deep_spectrum":
        raise ValueError(f"{path}: arch must be deep_spectrum, got {recipe['arch']!r}")
    recipe["recipe_path"] = str(path)
    _pretrained_arg(recipe["weights"])
    autocast_dtype(recipe["precision"], recipe["device"])  # fp16 on a CPU fails before any work
    if recipe["classifier"] not in ("svm", "linear"):
        raise ValueError(f"{path}: classifier must be svm or linear, got {recipe['classifier']!r}")
    return recipe


def _pretrained_arg(weights: str) -> bool | str:
    """The ``pretrained`` argument of the extractor for a ``weights`` setting: "hub", "random" or a file."""
    if weights == "random":
        return False
    if weights == "hub":
        return True
    if not isinstance(weights, str | Path) or not str(weights).endswith(".safetensors"):
        raise ValueError(f"weights must be 'hub', 'random' or a .safetensors file, got {weights!r}")
    return str(weights)


def release(recipe: dict[str, Any]) -> Path:
    """Fit a recipe's head on the fixed split and save the checkpoint folder (config, weights; the card and test
    metrics come from ``sermodels card`` / ``sermodels evaluate``)."""
    from sermodels.data import load_corpus

    corpus = load_corpus(recipe["corpus"], recipe["root"])
    split = corpus.split(recipe["split"])
    labels = sorted({it.label for it in corpus.items})
    torch.manual_seed(recipe["seed"])  # the backbone's random initialisation, when it has no weights
    if recipe["classifier"] == "svm":
        model = DeepSpectrumModel(
            labels,
            head=recipe["corpus"],
            sample_rate=recipe["sample_rate"],
            classifier="svm",
            pretrained=_pretrained_arg(recipe["weights"]),
            **_extractor_args(recipe),
        )
        paths = {name: [it.path for it in split[name]] for name in ("train", "dev", "test")}
        feats = {
            name: extract_features(
                model.extractor, p, batch_size=recipe["batch_size"], precision=recipe["precision"],
                device=recipe["device"], cache_dir=recipe["cache_dir"],
            )
            for name, p in paths.items()
        }  # fmt: skip
        ys = {name: np.array([it.label for it in split[name]]) for name in paths}
        fit = fit_svm(model, feats, ys)
        classifier = {"kind": "linear_svm", "class_weight": "balanced", **fit.params}
        selection: Any = fit.selection
    else:
        model, classifier, selection = _fit_linear(recipe)
    return save_release(
        model.eval(),
        recipe,
        corpus,
        split,
        ["train", "dev"] if recipe["classifier"] == "svm" else ["train"],
        backbone_weights=_weights_provenance(recipe["weights"]),
        classifier=classifier,
        selection=selection,
    )


def _extractor_args(recipe: dict[str, Any]) -> dict[str, Any]:
    """The extractor's settings in a recipe, as both heads' constructors take them."""
    return {key: recipe[key] for key in ("backbone", "layer", "image", "pool")}


def _weights_provenance(weights: str) -> dict[str, Any]:
    if weights == "random":
        return {"source": "random initialisation"}
    if weights == "hub":
        return {"source": "timm pretrained weights from the Hugging Face Hub"}
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as f:
        meta = dict(f.metadata() or {})
    return {"file": Path(weights).name, **{k: meta[k] for k in sorted(meta) if k != "format"}}


def _fit_linear(recipe: dict[str, Any]) -> tuple[DeepSpectrumModel, dict, list]:
    from sermodels.data import SERDataModule
    from sermodels.tasks.emonet import quiet_trainer

    L.seed_everything(recipe["seed"], workers=True, verbose=False)
    data = SERDataModule(
        [recipe["corpus"]],
        {recipe["corpus"]: recipe["root"]},
        split=recipe["split"],
        batch_size=recipe["batch_size"],
        max_duration=None,
        sample_rate=recipe["sample_rate"],
        seed=recipe["seed"],
    )
    task = DeepSpectrumTask(
        weights=recipe["weights"],
        **_extractor_args(recipe),
        lr=recipe["lr"],
        weight_decay=recipe["weight_decay"],
        precision=recipe["precision"],
    )
    accelerator = "gpu" if str(recipe["device"]).startswith("cuda") else "cpu"
    trainer = quiet_trainer(
        max_epochs=recipe["epochs"], accelerator=accelerator, devices=1, deterministic=True, enable_progress_bar=False
    )
    trainer.fit(task, datamodule=data)
    classifier = {
        "kind": "softmax_linear",
        "epochs": recipe["epochs"],
        "lr": recipe["lr"],
        "weight_decay": recipe["weight_decay"],
        "best_dev_uar": task.best_uar,
    }
    return task.model, classifier, task.history
