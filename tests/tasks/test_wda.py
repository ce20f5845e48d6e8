"""WDA training on cached log-mel functionals (NICU paper §2.2, §4.2.3): EMO-DB as the source, URDU as the target.

Features are extracted once per module (and cached on disk); stage 1 and stage 2 run once in module fixtures, with
a shortened stage 1 (patience 20) and the default unsupervised stage 2 (weight clipping, stopped when the critic's
estimate levels off, here after ~85 epochs, at most 100), and the tests read their results.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import corpus_root

from sermodels import labels, metrics
from sermodels.data import load_corpus
from sermodels.data.features import FeatureDataModule, extract_functionals, stratified_split, zscore
from sermodels.models.wda import NICU_HEADS, WDAMLP
from sermodels.tasks.wda import (
    SATURATION_PATIENCE,
    SATURATION_RTOL,
    SATURATION_WINDOW,
    WEIGHT_CLIP,
    balanced_class_weights,
    saturated,
)
from sermodels.training.wda import adapt, fit_source, fit_wda, measure_wasserstein

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = "arousal"
CLASSES = NICU_HEADS[HEAD]
LABELLED_EVERY = 10  # every 10th URDU file is a labelled target item (40 of 400), for selection only
SEED = 0
ADAPT_EPOCHS = 100


class Features:
    """EMO-DB and URDU functionals, z-scored per corpus, with arousal labels and the 85:15 source split."""

    def __init__(self, cache_dir):
        torch.manual_seed(SEED)
        self.model = WDAMLP({HEAD: CLASSES})
        self.source_items = list(load_corpus("emodb", corpus_root("emodb")))
        self.target_items = list(load_corpus("urdu", corpus_root("urdu")))
        self.cache_dir = cache_dir
        source_raw = self.extract([i.path for i in self.source_items])
        target_raw = self.extract([i.path for i in self.target_items])
        self.source_x, self.source_mean, self.source_std = zscore(source_raw)
        self.target_x, self.target_mean, self.target_std = zscore(target_raw)
        self.source_y = self.arousal(self.source_items)
        self.target_y = self.arousal(self.target_items)
        self.train_idx, self.dev_idx = stratified_split(self.source_y, seed=SEED)
        self.labelled = torch.arange(0, len(self.target_items), LABELLED_EVERY)

    def extract(self, files):
        return extract_functionals(files, self.model.functionals, cache_dir=self.cache_dir)

    @staticmethod
    def arousal(items) -> torch.Tensor:
        return torch.tensor([CLASSES.index(labels.arousal(i.label)) for i in items])

    def data(self, labelled: bool = True) -> FeatureDataModule:
        extra = {}
        if labelled:
            extra = {
                "target_labelled_x": self.target_x[self.labelled],
                "target_labelled_y": self.target_y[self.labelled],
            }
        return FeatureDataModule(
            self.source_x[self.train_idx], self.source_y[self.train_idx],
            self.source_x[self.dev_idx], self.source_y[self.dev_idx],
            target_x=self.target_x, seed=SEED, **extra,
        )  # fmt: skip


@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> Features:
    return Features(tmp_path_factory.mktemp("wda_features"))


@pytest.fixture(scope="module")
def source(feats):
    torch.set_num_threads(1)
    return fit_source(feats.model, HEAD, feats.data(), (feats.source_mean, feats.source_std), patience=20, seed=SEED)


@pytest.fixture(scope="module")
def adapted(feats, source):
    torch.set_num_threads(1)
    model, _ = source
    return adapt(model, HEAD, feats.data(), (feats.target_mean, feats.target_std), seed=SEED, max_epochs=ADAPT_EPOCHS)


def _uar(model: WDAMLP, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return metrics.uar(y, model.eval().forward_features(x, HEAD).argmax(-1), len(CLASSES))


# ---------------------------------------------------------------------------------------------------- features


def test_features_are_cached_and_not_recomputed(feats, monkeypatch):
    cached = list(feats.cache_dir.glob("functionals-*.safetensors"))
    assert len(cached) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached feature matrix was recomputed")

    monkeypatch.setattr("sermodels.data.features.load_audio", no_decoding)
    again = feats.extract([i.path for i in feats.target_items])
    assert again.shape == (400, 600)
    torch.testing.assert_close(zscore(again)[0], feats.target_x)


def test_per_corpus_zscore(feats):
    for x in (feats.source_x, feats.target_x):
        torch.testing.assert_close(x.mean(0), torch.zeros(600), atol=1e-4, rtol=0)
    assert not torch.allclose(feats.source_mean, feats.target_mean)


def test_stratified_split_is_85_15_per_class_and_seeded(feats):
    y = feats.source_y
    for cls in (0, 1):
        members = int((y == cls).sum())
        assert int((y[feats.dev_idx] == cls).sum()) == round(0.15 * members)
    again = stratified_split(y, seed=SEED)
    assert torch.equal(again[1], feats.dev_idx) and not torch.equal(stratified_split(y, seed=1)[1], feats.dev_idx)
    assert set(feats.train_idx.tolist()).isdisjoint(feats.dev_idx.tolist())


def test_balanced_class_weights():
    weights = balanced_class_weights(torch.tensor([0, 0, 0, 1]), 2)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 2.0]))


# ---------------------------------------------------------------------------------------------------- stage 1


def test_stage1_beats_chance_and_restores_the_best_epoch(feats, source):
    model, history = source
    best = max(row["source_dev_uar"] for row in history)
    assert best > 0.75  # chance is 0.5
    dev_uar = _uar(model, feats.source_x[feats.dev_idx], feats.source_y[feats.dev_idx])
    assert dev_uar == pytest.approx(best)
    first_best = next(i for i, row in enumerate(history) if row["source_dev_uar"] == best)
    assert len(history) - 1 - first_best == 20  # stopped after `patience` epochs without improvement


def test_stage1_model_carries_the_source_statistics(feats, source):
    model, _ = source
    torch.testing.assert_close(model.standardizer.mean, feats.source_mean)
    torch.testing.assert_close(model.standardizer.std, feats.source_std)


# ---------------------------------------------------------------------------------------------------- stage 2


def test_adaptation_lowers_the_measured_wasserstein_distance(feats, source, adapted):
    model, _ = source
    x = feats.source_x[feats.train_idx]
    with torch.no_grad():
        source_features = model.eval().embed_features(x, HEAD)
        before = model.embed_features(feats.target_x, HEAD)
        after = adapted.unsupervised.eval().embed_features(feats.target_x, HEAD)
    start = measure_wasserstein(source_features, before, seed=SEED)
    end = measure_wasserstein(source_features, after, seed=SEED)
    assert end < 0.85 * start, (start, end)


def test_history_records_every_epoch_until_the_estimate_levels_off(adapted):
    epochs = len(adapted.history)
    assert [row["epoch"] for row in adapted.history] == list(range(1, epochs + 1))
    estimates = [row["wasserstein"] for row in adapted.history]
    assert epochs < ADAPT_EPOCHS and saturated(estimates, SATURATION_WINDOW, SATURATION_PATIENCE, SATURATION_RTOL)
    assert not saturated(estimates[:-1], SATURATION_WINDOW, SATURATION_PATIENCE, SATURATION_RTOL)
    for row in adapted.history:
        assert {"wasserstein", "classification", "source_dev_uar", "target_uar"} <= set(row)
        assert all(math.isfinite(row[k]) for k in ("wasserstein", "classification"))


def test_weight_clipping_keeps_the_critic_in_bounds(adapted):
    weights = torch.cat([p.detach().flatten() for p in adapted.critic.parameters()])
    assert weights.abs().max() <= WEIGHT_CLIP
    assert weights.abs().max() == pytest.approx(WEIGHT_CLIP)  # the bound is active


def test_semi_supervised_selection_is_the_best_target_epoch(feats, adapted):
    uars = [row["target_uar"] for row in adapted.history]
    assert adapted.best_target_epoch == 1 + uars.index(max(uars))
    labelled = feats.target_x[feats.labelled], feats.target_y[feats.labelled]
    assert _uar(adapted.semi_supervised, *labelled) == pytest.approx(max(uars))
    assert _uar(adapted.unsupervised, *labelled) == pytest.approx(uars[-1])  # the unsupervised model is the last


def test_adapted_models_carry_the_target_statistics(feats, adapted):
    for model in (adapted.unsupervised, adapted.semi_supervised):
        torch.testing.assert_close(model.standardizer.mean, feats.target_mean)
        torch.testing.assert_close(model.standardizer.std, feats.target_std)


def test_classifier_is_frozen_by_default(source, adapted):
    model, _ = source
    for before, after in zip(model.classifier(HEAD).parameters(), adapted.unsupervised.classifier(HEAD).parameters()):
        assert torch.equal(before, after)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(model.extractor(HEAD).parameters(), adapted.unsupervised.extractor(HEAD).parameters())
    ]
    assert all(changed)
    assert all(p.requires_grad for p in adapted.unsupervised.parameters())


def test_gp_variant_and_trained_classifier_run(feats, source):
    model, _ = source
    stats = (feats.target_mean, feats.target_std)
    run = adapt(model, HEAD, feats.data(labelled=False), stats, lipschitz="gp", train_classifier=True, max_epochs=2)
    assert len(run.history) == 2 and run.semi_supervised is None
    assert all(math.isfinite(row["wasserstein"]) for row in run.history)
    assert any(p.abs().max() > WEIGHT_CLIP for p in run.critic.parameters())  # no clipping under the penalty
    assert not torch.equal(model.classifier(HEAD)[0].weight, run.unsupervised.classifier(HEAD)[0].weight)


def test_two_seeded_runs_are_equal(feats, source):
    source_stats = (feats.source_mean, feats.source_std)
    fits = [fit_source(feats.model, HEAD, feats.data(), source_stats, max_epochs=3, seed=3) for _ in range(2)]
    assert fits[0][1] == fits[1][1]
    first, second = fits[0][0].state_dict(), fits[1][0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    model, _ = source
    stats = (feats.target_mean, feats.target_std)
    runs = [adapt(model, HEAD, feats.data(), stats, max_epochs=2, seed=3) for _ in range(2)]
    assert runs[0].history == runs[1].history
    first, second = runs[0].unsupervised.state_dict(), runs[1].unsupervised.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_saturation_rule():
    rising = [float(i) for i in range(40)]
    assert not saturated(rising, window=5, patience=10, rtol=0.05)
    level = rising + [40.0] * 20
    assert saturated(level, window=5, patience=10, rtol=0.05)
    assert not saturated([1.0] * 14, window=5, patience=10, rtol=0.05)  # too few epochs to tell
    assert saturated([0.0] * 15, window=5, patience=10, rtol=0.05)


def test_unsupervised_run_stops_when_the_estimate_levels_off(feats, source):
    model, _ = source
    stats = (feats.target_mean, feats.target_std)
    options = {"saturation_window": 1, "saturation_patience": 1, "saturation_rtol": 1e9}  # "levelled" at once
    run = adapt(model, HEAD, feats.data(labelled=False), stats, max_epochs=50, **options)
    assert len(run.history) == 2


# ---------------------------------------------------------------------------------------------------- end to end


def test_fit_wda_gives_two_headed_models_that_run_on_audio(feats):
    urdu = feats.target_items
    labelled = [(item.path, item.label) for item in urdu[::LABELLED_EVERY]]
    result = fit_wda(
        {"emodb": corpus_root("emodb")},
        ("urdu", corpus_root("urdu")),
        labelled,
        cache_dir=feats.cache_dir,
        source_options={"max_epochs": 2},
        adapt_options={"max_epochs": 2},
    )
    for model in (result.source, result.unsupervised, result.semi_supervised):
        assert model.heads == NICU_HEADS
    torch.testing.assert_close(result.source.standardizer.mean, feats.source_mean)
    torch.testing.assert_close(result.unsupervised.standardizer.mean, feats.target_mean)
    assert set(result.history) == {"arousal", "binary_valence"}
    assert result.history["binary_valence"]["head"] == "valence"
    from sermodels.audio import load_audio

    wave = load_audio(urdu[0].path)
    with torch.inference_mode():
        for head in NICU_HEADS:
            assert result.semi_supervised(wave[None], None, head).shape == (1, 2)
