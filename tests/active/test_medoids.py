"""Medoid-based active learning: Pearson distances, farthest-first, k-medoids, annotation order, groups, errors, and
the autoencoder and selection on real EMO-DB features.

Synthetic codes are built so that the answer is known: rows of a cluster share a random 32-d pattern (plus a little
noise and an arbitrary offset and scale, which Pearson distance ignores), so they correlate within and not across
clusters. Real features: the 600 log-mel functionals of 60 EMO-DB files spread over speakers and emotions.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from conftest import spread_files

from sermodels.active import (
    MAX_SAMPLES,
    FeatureAutoencoder,
    MedoidSelection,
    encode,
    farthest_first,
    fit_autoencoder,
    k_medoids,
    pearson_distances,
    random_selection,
    select_from_codes,
    select_medoids,
)
from sermodels.active import medoids as medoids_module
from sermodels.audio import load_audio
from sermodels.features import LogMelFunctionals

pytestmark = pytest.mark.usefixtures("one_thread")

EMODB_FILES = 60
AE_EPOCHS = 80  # enough for the loss to fall clearly on 48 training rows (one step per epoch at lr 1e-4)
BUDGET = 7  # EMO-DB has seven emotions
RANDOM_SETS = 50


def blobs(sizes: tuple[int, ...], dim: int = 32, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(sum(sizes), dim)`` in clusters of the given sizes, and the true cluster of each row."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    rows = patterns[truth] + noise * rng.normal(size=(len(truth), dim))
    offsets, scales = rng.normal(size=(len(truth), 1)), rng.uniform(0.5, 2.0, size=(len(truth), 1))
    return rows * scales + offsets, truth


def total_cost(distances: np.ndarray, medoids: np.ndarray) -> float:
    """The k-medoids objective: every sample's distance to its nearest medoid, summed."""
    return float(distances[:, medoids].min(axis=1).sum())


@pytest.fixture(scope="module")
def emodb_features() -> tuple[np.ndarray, list[str]]:
    """Functionals ``(60, 600)`` of EMO-DB files and their emotion letters (the sixth character of the name)."""
    functionals = LogMelFunctionals()
    paths = spread_files("emodb", EMODB_FILES)
    with torch.no_grad():
        features = torch.stack([functionals(load_audio(path)) for path in paths])
    return features.numpy(), [path.stem[5] for path in paths]


@pytest.fixture(scope="module")
def emodb_autoencoder(emodb_features):
    features, _ = emodb_features
    return fit_autoencoder(features, seed=0, max_epochs=AE_EPOCHS, patience=AE_EPOCHS)


# Pearson distances


def test_pearson_distances_match_numpy_corrcoef():
    codes = np.random.default_rng(1).normal(size=(40, 32)).astype(np.float32)
    distances = pearson_distances(codes)
    assert distances.dtype == np.float64 and distances.shape == (40, 40)
    np.testing.assert_allclose(distances, 1.0 - np.corrcoef(codes.astype(np.float64)), atol=1e-12)
    assert np.array_equal(distances, distances.T) and np.all(np.diag(distances) == 0)
    np.testing.assert_array_equal(pearson_distances(torch.from_numpy(codes)), distances)


def test_pearson_distances_of_constant_rows_are_one():
    codes = np.random.default_rng(2).normal(size=(5, 8))
    codes[1], codes[3] = 0.0, 2.5
    distances = pearson_distances(codes)
    for row in (1, 3):
        others = np.delete(np.arange(5), row)
        np.testing.assert_array_equal(distances[row, others], 1.0)
        np.testing.assert_array_equal(distances[others, row], 1.0)
        assert distances[row, row] == 0.0


def test_blockwise_symmetrisation_equals_the_whole_matrix(monkeypatch):
    codes = np.random.default_rng(3).normal(size=(23, 6))
    whole = pearson_distances(codes)
    monkeypatch.setattr(medoids_module, "SYMMETRISE_BLOCK", 5)
    blocked = pearson_distances(codes)
    assert np.array_equal(blocked, blocked.T)
    np.testing.assert_allclose(blocked, whole, atol=1e-15)


# Farthest-first traversal and k-medoids


def test_farthest_first_picks_the_farthest_point_on_a_line():
    points = np.array([0.0, 1.0, 5.0, 9.0, 10.0])
    distances = np.abs(points[:, None] - points[None, :])
    seed = next(s for s in range(100) if np.random.default_rng(s).integers(5) == 0)  # first pick: point 0
    # from {0}: 10 is farthest; from {0, 10}: min distances (0, 1, 5, 1, 0) -> 5; then ties at 1 -> lowest index
    np.testing.assert_array_equal(farthest_first(distances, 4, seed), [0, 4, 2, 1])
    assert sorted(farthest_first(distances, 5, seed)) == [0, 1, 2, 3, 4]


def test_farthest_first_never_repeats_duplicates():
    distances = np.zeros((4, 4))  # four identical samples
    assert sorted(farthest_first(distances, 4, 0)) == [0, 1, 2, 3]


def test_k_medoids_recovers_separated_clusters():
    codes, truth = blobs((20, 15, 10))
    distances = pearson_distances(codes)
    medoids, assignment = k_medoids(distances, farthest_first(distances, 3, 0))
    assert len(medoids) == 3 and np.all(np.diff(medoids) > 0)
    for cluster in range(3):  # each found cluster is exactly one true cluster
        assert len(set(truth[assignment == cluster])) == 1
    assert len(set(zip(truth, assignment))) == 3
    np.testing.assert_array_equal(assignment[medoids], np.arange(3))


def test_k_medoids_medoids_minimise_the_within_cluster_sum():
    codes, _ = blobs((30, 20, 12), noise=0.8, seed=4)  # overlapping clusters: several update rounds
    distances = pearson_distances(codes)
    medoids, assignment = k_medoids(distances, farthest_first(distances, 3, 4))
    for cluster, medoid in enumerate(medoids):
        members = np.flatnonzero(assignment == cluster)
        sums = distances[np.ix_(members, members)].sum(axis=1)
        assert sums[members == medoid][0] == pytest.approx(sums.min(), abs=1e-12)
        np.testing.assert_array_equal(np.argmin(distances[:, medoids], axis=1) == cluster, assignment == cluster)


def test_k_medoids_finds_the_brute_force_optimum_on_a_tiny_set():
    codes, _ = blobs((4, 3, 2), noise=0.3, seed=5)
    distances = pearson_distances(codes)
    medoids, _ = k_medoids(distances, farthest_first(distances, 3, 5))
    best = min(total_cost(distances, np.array(subset)) for subset in combinations(range(9), 3))
    assert total_cost(distances, medoids) == pytest.approx(best, abs=1e-12)


def test_k_medoids_moves_bad_initial_medoids_and_stops():
    codes, truth = blobs((10, 10), seed=6)
    distances = pearson_distances(codes)
    medoids, assignment = k_medoids(distances, [0, 1])  # both in the first cluster
    assert len(set(truth[medoids])) == 2
    assert k_medoids(distances, medoids)[0].tolist() == medoids.tolist()  # a fixed point
    one_round, _ = k_medoids(distances, [0, 1], max_iter=0)
    assert one_round.tolist() == [0, 1]


# Selection: order, determinism, propagation, groups


def test_annotation_order_is_cluster_size_descending():
    codes, truth = blobs((10, 30, 20), seed=7)
    selection = select_from_codes(codes, k=3, seed=0)
    np.testing.assert_array_equal(selection.sizes, [30, 20, 10])
    np.testing.assert_array_equal(truth[selection.medoids], [1, 2, 0])
    np.testing.assert_array_equal(np.bincount(selection.assignment), selection.sizes)
    np.testing.assert_array_equal(selection.assignment[selection.medoids], np.arange(3))


def test_ties_in_size_are_ordered_by_medoid_index():
    codes, _ = blobs((8, 8, 8, 8), seed=8)
    selection = select_from_codes(codes, k=4, seed=0)
    np.testing.assert_array_equal(selection.sizes, [8, 8, 8, 8])
    assert np.all(np.diff(selection.medoids) > 0)


def test_default_k_is_a_third_of_the_pool_and_at_least_one():
    codes = np.random.default_rng(9).normal(size=(50, 32))
    selection = select_from_codes(codes, seed=0)
    assert selection.k == 16 and len(set(selection.medoids.tolist())) == 16
    assert np.all(np.diff(selection.sizes) <= 0) and selection.sizes.sum() == 50
    assert select_from_codes(codes[:2], seed=0).k == 1


def test_same_seed_same_selection_other_seeds_may_differ():
    codes = np.random.default_rng(10).normal(size=(60, 32))
    first, again = select_from_codes(codes, seed=0), select_from_codes(codes, seed=0)
    for name in ("medoids", "sizes", "assignment", "order"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    others = [select_from_codes(codes, seed=seed).medoids for seed in range(1, 6)]
    assert any(not np.array_equal(first.medoids, medoids) for medoids in others)


def test_propagate_gives_every_member_its_medoid_label():
    codes, _ = blobs((12, 9, 6), seed=11)
    selection = select_from_codes(codes, seed=0)
    names = [f"label{rank}" for rank in range(selection.k)]
    labels = selection.propagate(names)
    assert len(labels) == 27
    for sample, label in enumerate(labels):
        assert label == names[selection.assignment[sample]]
    for rank, medoid in enumerate(selection.medoids):
        assert labels[medoid] == names[rank]
        assert selection.medoid_of(medoid) == medoid
    assert [labels[selection.medoid_of(sample)] for sample in range(27)] == labels
    assert selection.propagate(dict(zip(selection.medoids.tolist(), names))) == labels
    with pytest.raises(KeyError, match="no label"):
        selection.propagate({int(selection.medoids[0]): "a"})
    with pytest.raises(ValueError, match="medoid labels"):
        selection.propagate(names[:-1])


def test_budget_is_the_first_medoids():
    selection = select_from_codes(blobs((9, 6, 3))[0], seed=0)
    np.testing.assert_array_equal(selection.budget(2), selection.medoids[:2])
    assert len(selection.budget(0)) == 0
    with pytest.raises(ValueError, match="budget"):
        selection.budget(selection.k + 1)


def test_groups_cluster_separately_and_interleave_by_rank():
    codes = np.random.default_rng(12).normal(size=(46, 32))
    groups = ["a"] * 30 + ["b"] * 12 + ["c"] * 4
    groups = [groups[i] for i in np.random.default_rng(13).permutation(46)]
    selection = select_from_codes(codes, seed=0, groups=groups)
    assert selection.k == 10 + 4 + 1
    assert sorted(selection.groups) == sorted(["a"] * 10 + ["b"] * 4 + ["c"])
    for rank, medoid in enumerate(selection.medoids):  # members share their medoid's group
        assert groups[medoid] == selection.groups[rank]
        assert {groups[i] for i in np.flatnonzero(selection.assignment == rank)} == {groups[medoid]}
    assert set(selection.groups[:3]) == {"a", "b", "c"}  # every group's largest cluster first
    assert list(selection.sizes[:3]) == sorted(selection.sizes[:3], reverse=True)
    for group in "abc":  # within a group: size descending
        sizes = [size for size, name in zip(selection.sizes, selection.groups) if name == group]
        assert sizes == sorted(sizes, reverse=True)
    again = select_from_codes(codes, seed=0, groups=groups)
    np.testing.assert_array_equal(again.medoids, selection.medoids)


def test_random_selection_is_distinct_and_seeded():
    picks = random_selection(100, 7, seed=3)
    assert len(set(picks.tolist())) == 7 and picks.min() >= 0 and picks.max() < 100
    np.testing.assert_array_equal(picks, random_selection(100, 7, seed=3))
    with pytest.raises(ValueError, match="budget"):
        random_selection(5, 6)


# Errors


def test_errors_for_k_and_sizes():
    codes = np.random.default_rng(14).normal(size=(10, 4))
    distances = pearson_distances(codes)
    for k in (0, 11):
        with pytest.raises(ValueError, match="k must be in"):
            select_from_codes(codes, k=k)
        with pytest.raises(ValueError, match="k must be in"):
            farthest_first(distances, k, 0)
    with pytest.raises(ValueError, match="distinct"):
        k_medoids(distances, [1, 1])
    with pytest.raises(ValueError, match="cannot be combined"):
        select_from_codes(codes, k=2, groups=["a"] * 10)
    with pytest.raises(ValueError, match="one group per sample"):
        select_from_codes(codes, groups=["a"] * 9)


def test_pools_above_the_limit_are_refused_with_advice():
    with pytest.raises(ValueError, match=f"max_samples={MAX_SAMPLES}.*groups="):
        select_from_codes(np.zeros((MAX_SAMPLES + 1, 2)))
    with pytest.raises(ValueError, match="max_samples=10.*groups="):
        select_medoids(np.random.default_rng(0).normal(size=(11, 600)), max_samples=10)
    with pytest.raises(ValueError, match="group 'big' has 11 samples"):
        select_from_codes(np.zeros((14, 2)), groups=["big"] * 11 + ["small"] * 3, max_samples=10)


def test_nan_features_name_the_row():
    features = np.random.default_rng(15).normal(size=(20, 600))
    features[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"first rows: \[7\]"):
        select_medoids(features)
    with pytest.raises(ValueError, match=r"rows \[7\]"):
        pearson_distances(features)


# Autoencoder and selection on real features


def test_autoencoder_shapes_and_architecture():
    model = FeatureAutoencoder()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (600, 512), (512, 512), (512, 32), (32, 512), (512, 512), (512, 600)
    ]  # fmt: skip
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 4
    assert isinstance(model.decoder[-1], torch.nn.Linear)  # linear reconstruction


def test_autoencoder_loss_falls_on_real_features(emodb_features, emodb_autoencoder):
    features, _ = emodb_features
    model, history = emodb_autoencoder
    assert history.epochs == AE_EPOCHS
    assert history.train_loss[-1] < 0.8 * history.train_loss[0]
    assert min(history.val_loss) < 0.9 * history.val_loss[0]
    assert history.val_loss[history.best_epoch] == min(history.val_loss)
    codes = encode(model, features)
    assert codes.shape == (EMODB_FILES, 32) and codes.dtype == np.float32 and np.isfinite(codes).all()
    np.testing.assert_array_equal(codes, encode(model, torch.from_numpy(features)))


def test_autoencoder_is_deterministic_given_a_seed(emodb_features):
    features, _ = emodb_features
    runs = [fit_autoencoder(features[:30], seed=seed, max_epochs=5, patience=5) for seed in (1, 1, 2)]
    first, again, other = (encode(model, features[:30]) for model, _ in runs)
    np.testing.assert_array_equal(first, again)
    assert runs[0][1].train_loss == runs[1][1].train_loss
    assert not np.array_equal(first, other)


def test_early_stopping_restores_the_best_epoch(emodb_features):
    features, _ = emodb_features
    # lr 3e-2 makes Adam diverge after the first epoch: the run must stop 2 epochs later and keep epoch 0's weights
    model, history = fit_autoencoder(features, seed=0, max_epochs=200, patience=2, lr=3e-2)
    assert history.epochs < 200 and history.epochs - 1 - history.best_epoch == 2
    assert history.val_loss[history.best_epoch] == min(history.val_loss)
    with torch.no_grad():
        data = torch.from_numpy(features)
        restored = torch.nn.functional.mse_loss(model(data), model.standardizer(data)).item()
    assert restored < 0.01 * history.val_loss[-1]


def test_medoids_of_real_features_beat_random_medoid_sets(emodb_features, emodb_autoencoder):
    features, emotions = emodb_features
    codes = encode(emodb_autoencoder[0], features)
    selection = select_from_codes(codes, seed=0)
    again = select_from_codes(codes, seed=0)
    np.testing.assert_array_equal(selection.medoids, again.medoids)
    assert selection.k == EMODB_FILES // 3
    distances = pearson_distances(codes)
    cost = total_cost(distances, selection.medoids)
    random_costs = [
        total_cost(distances, random_selection(EMODB_FILES, selection.k, seed)) for seed in range(RANDOM_SETS)
    ]
    assert cost < min(random_costs)
    assert len({emotions[i] for i in selection.budget(BUDGET)}) >= 3  # the worst case is a single emotion


def test_select_medoids_end_to_end_is_deterministic(emodb_features):
    features, _ = emodb_features
    runs = [select_medoids(features, seed=0, max_epochs=10, patience=10) for _ in range(2)]
    assert isinstance(runs[0], MedoidSelection) and runs[0].k == EMODB_FILES // 3
    for name in ("medoids", "sizes", "assignment"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name))
