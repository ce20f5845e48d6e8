"""Medoid-based active learning (MAL): which utterances of an unlabelled pool to annotate first.

Paper: the NICU paper (Vaaras et al., Interspeech 2021: SER for daylong child-centred NICU recordings; our copy,
../shared/papers/nicu_ser_cross_corpus_wda_active_learning.txt, has no title page),
§2.1, after Zhao et al. (the paper's ref. [15]):

1. the 600-d log-mel functionals are compressed to 32-d codes by an autoencoder (:mod:`.autoencoder`, §4.2.1);
2. the Pearson distance ``1 - r`` between the codes of every pair of samples forms an ``(N, N)`` matrix;
3. one random sample, then k - 1 more by farthest-first traversal (Eq. 1: ``d(a, S) = min_{b in S} d(a, b)``), seed
   k-medoids clustering, with ``k = N // 3`` (§2.1: "k was set to N/3");
4. the medoids are annotated from the largest cluster down; each cluster's members may take its medoid's label
   ("cluster labels", §2.1).

The paper points to its ref. [17] for k-medoids without naming a variant. This module implements the "alternate"
(Voronoi-iteration) algorithm, as in Park & Jun, "A simple and fast algorithm for K-medoids clustering", Expert
Systems with Applications 36(2), 2009 (without their initialisation, which is replaced by farthest-first): assign
every sample to its nearest medoid, then make each cluster's medoid the member with the least summed distance to the
other members, until no medoid changes. It is not PAM's BUILD/SWAP search (fewer, cheaper steps, possibly a worse
local optimum). Ties are broken deterministically (see :func:`k_medoids`).

``MAL`` runs per family of recordings in the paper (§4.2.1: "for each of the 35 training set families
separately"); ``groups`` in :func:`select_medoids` does the same. The distance matrix is ``N x N`` float64 (N = 20 000
is 3.2 GB), so a pool larger than :data:`MAX_SAMPLES` must be split into groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .autoencoder import DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE, as_feature_matrix, encode, fit_autoencoder

# §2.1: "k was set to N/3" (rounded down here, and at least 1).
NICU_SAMPLES_PER_MEDOID = 3
# Ours: the largest pool (or group) clustered at once; its distance matrix takes 8 N^2 bytes (3.2 GB at 20 000).
MAX_SAMPLES = 20_000
# Ours: k-medoids stops after this many assignment/update rounds even if a medoid still moves.
MAX_KMEDOIDS_ITER = 300
# A row of codes whose centred norm is at most this fraction of its largest |value| is constant (r undefined).
CONSTANT_ROW_RTOL = 1e-12
SYMMETRISE_BLOCK = 2048  # rows per block when mirroring the upper triangle of the distance matrix


def pearson_distances(codes: np.ndarray | Tensor) -> np.ndarray:
    """``(N, D)`` codes -> ``(N, N)`` float64 Pearson distances ``1 - r(row_i, row_j)``, in [0, 2], symmetric.

    The correlation of a constant row (all entries equal, e.g. a code stuck at an ELU floor) is undefined; such a
    row is given distance 1 (as if uncorrelated) to every other row and 0 to itself, so it neither attracts nor
    repels anything. The diagonal is exactly 0.
    """
    data = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"codes must be a non-empty (N, D) matrix, got shape {data.shape}")
    data = data.astype(np.float64)
    if not np.isfinite(data).all():
        raise ValueError(f"codes contain NaN/Inf in rows {_nonfinite_rows(data)}")
    centred = data - data.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    constant = norms <= CONSTANT_ROW_RTOL * np.abs(data).max(axis=1)
    unit = centred / np.where(constant, 1.0, norms)[:, None]
    unit[constant] = 0.0  # r = 0 with everything: distance 1
    distances = unit @ unit.T
    np.subtract(1.0, distances, out=distances)
    np.clip(distances, 0.0, 2.0, out=distances)
    _mirror_upper_triangle(distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def farthest_first(distances: np.ndarray, k: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``k`` indices by farthest-first traversal of ``distances (N, N)``: a random first index (from ``rng``, a
    generator or a seed), then repeatedly the unselected sample with the largest ``d(a, S) = min_{b in S} d(a, b)``
    (§2.1, Eq. 1), the lowest index on ties. Returns ``(k,)`` int64 in selection order."""
    n = _check_distances(distances)
    _check_k(k, n)
    rng = np.random.default_rng(rng)
    selected = np.empty(k, dtype=np.int64)
    selected[0] = rng.integers(n)
    to_set = distances[selected[0]].copy()  # d(a, S) for every sample a
    to_set[selected[0]] = -np.inf
    for step in range(1, k):
        chosen = int(np.argmax(to_set))
        selected[step] = chosen
        np.minimum(to_set, distances[chosen], out=to_set)  # selected samples stay at -inf
        to_set[chosen] = -np.inf
    return selected


def k_medoids(
    distances: np.ndarray, initial: Sequence[int] | np.ndarray, max_iter: int = MAX_KMEDOIDS_ITER
) -> tuple[np.ndarray, np.ndarray]:
    """Alternate (Voronoi-iteration) k-medoids on ``distances (N, N)`` from the ``initial`` medoids ``(k,)``.

    Returns ``medoids (k,)`` (sample indices, ascending) and ``assignment (N,)``, each sample's position in
    ``medoids``. Tie-breaking: a sample equidistant from several medoids joins the one with the lowest index (a
    medoid always joins its own cluster, so no cluster is empty); in the update, a cluster keeps its medoid if that
    medoid ties for the least summed distance, otherwise the tied member with the lowest index wins (keeping the
    medoid on ties makes the cost strictly fall at every change, so the iteration ends).
    """
    n = _check_distances(distances)
    medoids = np.sort(np.asarray(initial, dtype=np.int64).ravel())
    _check_k(len(medoids), n)
    if medoids[0] < 0 or medoids[-1] >= n or np.any(np.diff(medoids) == 0):
        raise ValueError(f"initial medoids must be distinct indices in [0, {n}), got {np.asarray(initial).tolist()}")
    assignment = _assign(distances, medoids)
    for _ in range(max_iter):
        updated = _update_medoids(distances, medoids, assignment)
        if np.array_equal(updated, medoids):
            break
        medoids = np.sort(updated)
        assignment = _assign(distances, medoids)
    return medoids, assignment


@dataclass(frozen=True)
class MedoidSelection:
    """The result of MAL on a pool of N samples with k clusters.

    ``medoids (k,)``: sample indices in annotation order (cluster size descending, ties by medoid index; with groups,
    see :func:`select_medoids`). ``sizes (k,)``: the cluster size of each medoid. ``assignment (N,)``: each sample's
    cluster as a position in ``medoids``. ``order (k,)``: the clusters as k-medoids numbered them (ascending medoid
    index, per group in the order groups first appear) listed in annotation order. ``groups``: each medoid's group,
    or None without groups.
    """

    medoids: np.ndarray
    sizes: np.ndarray
    assignment: np.ndarray
    order: np.ndarray
    groups: tuple[str, ...] | None = None

    @property
    def k(self) -> int:
        return len(self.medoids)

    def medoid_of(self, sample: int) -> int:
        """The sample index of the medoid of ``sample``'s cluster."""
        return int(self.medoids[self.assignment[sample]])

    def budget(self, n: int) -> np.ndarray:
        """The first ``n`` medoids to annotate, ``(n,)``."""
        if not 0 <= n <= self.k:
            raise ValueError(f"budget must be in [0, {self.k}] (the number of medoids), got {n}")
        return self.medoids[:n]

    def propagate(self, medoid_labels: Mapping[int, str] | Sequence[str]) -> list[str]:
        """Each sample's cluster label, its medoid's label (§2.1 "cluster labels"); a list of N labels.

        ``medoid_labels`` maps medoid sample indices to labels, or lists one label per medoid in annotation order.
        Every medoid needs a label (annotate the whole selection, or propagate only after all clusters are labelled).
        """
        if isinstance(medoid_labels, Mapping):
            unknown = sorted(set(medoid_labels) - {int(m) for m in self.medoids})
            if unknown:
                raise KeyError(f"labels given for samples that are not medoids: {unknown[:10]}")
            missing = [int(m) for m in self.medoids if int(m) not in medoid_labels]
            if missing:
                raise KeyError(f"{len(missing)} medoid(s) have no label, e.g. samples {missing[:10]}")
            labels = [medoid_labels[int(m)] for m in self.medoids]
        else:
            labels = list(medoid_labels)
            if isinstance(medoid_labels, str) or len(labels) != self.k:
                raise ValueError(f"expected {self.k} medoid labels in annotation order, got {len(labels)}")
        return [labels[cluster] for cluster in self.assignment]


def select_medoids(
    features: np.ndarray | Tensor,
    *,
    k: int | None = None,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    max_samples: int = MAX_SAMPLES,
    device: torch.device | str = "cpu",
    **autoencoder_options: Any,
) -> MedoidSelection:
    """MAL on raw ``features (N, 600)``: autoencoder codes -> Pearson distances -> farthest-first -> k-medoids.

    ``k`` defaults to ``N // 3`` (at least 1). With ``groups`` (one name per sample, e.g. its recording or speaker),
    one autoencoder is trained on the whole pool (as in §4.2.1) and clustering runs per group with
    ``max(1, n_g // 3)`` medoids each (``k`` must then be None); see :func:`select_from_codes` for the annotation
    order. ``autoencoder_options`` go to :func:`~.autoencoder.fit_autoencoder` (``batch_size``, ``lr``, ...).
    """
    data = as_feature_matrix(features)
    _check_sizes(len(data), k, groups, max_samples)
    model, _ = fit_autoencoder(
        data, seed=seed, max_epochs=max_epochs, patience=patience, device=device, **autoencoder_options
    )
    return select_from_codes(encode(model, data), k=k, seed=seed, groups=groups, max_samples=max_samples)


def select_from_codes(
    codes: np.ndarray | Tensor,
    *,
    k: int | None = None,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    max_samples: int = MAX_SAMPLES,
) -> MedoidSelection:
    """MAL steps 2-4 on ready-made ``codes (N, D)`` (e.g. autoencoder outputs or any other embedding).

    Without groups: clusters in order of size, descending, ties by medoid index. With groups: round-robin over the
    groups by rank, so that every group's largest cluster comes before any group's second largest; within a round,
    by cluster size descending, then group (in order of first appearance), then medoid index. A budget thus reaches
    every group before it reaches the smaller clusters of the large groups.
    """
    data = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    if data.ndim != 2:
        raise ValueError(f"codes must be an (N, D) matrix, got shape {data.shape}")
    n = len(data)
    _check_sizes(n, k, groups, max_samples)
    rng = np.random.default_rng(seed)
    members_of = _group_members(groups, n)
    medoids, sizes, ranks, group_ids, assignment = [], [], [], [], np.empty(n, dtype=np.int64)
    for group_id, members in enumerate(members_of.values()):
        n_clusters = k if k is not None else max(1, len(members) // NICU_SAMPLES_PER_MEDOID)
        distances = pearson_distances(data[members])
        local, local_assignment = k_medoids(distances, farthest_first(distances, n_clusters, rng))
        counts = np.bincount(local_assignment, minlength=n_clusters)
        local_rank = np.empty(n_clusters, dtype=np.int64)
        local_rank[np.lexsort((local, -counts))] = np.arange(n_clusters)
        assignment[members] = local_assignment + len(medoids)
        medoids += members[local].tolist()
        sizes += counts.tolist()
        ranks += local_rank.tolist()
        group_ids += [group_id] * n_clusters
    medoids, sizes = np.asarray(medoids, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    order = np.lexsort((medoids, np.asarray(group_ids), -sizes, np.asarray(ranks)))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    names = None if groups is None else tuple(list(members_of)[group_ids[cluster]] for cluster in order)
    return MedoidSelection(medoids[order], sizes[order], position[assignment], order, names)


def random_selection(n_samples: int, budget: int, seed: int = 0) -> np.ndarray:
    """The random baseline: ``budget`` distinct sample indices ``(budget,)`` drawn uniformly from ``n_samples``."""
    if not 0 <= budget <= n_samples:
        raise ValueError(f"budget must be in [0, n_samples={n_samples}], got {budget}")
    return np.random.default_rng(seed).choice(n_samples, size=budget, replace=False).astype(np.int64)


def _group_members(groups: Sequence[str] | None, n: int) -> dict[str, np.ndarray]:
    """Group name -> sample indices (ascending), groups in order of first appearance; one group "" without groups."""
    if groups is None:
        return {"": np.arange(n)}
    names = [str(name) for name in groups]
    members: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        members.setdefault(name, []).append(index)
    return {name: np.asarray(indices, dtype=np.int64) for name, indices in members.items()}


def _check_sizes(n: int, k: int | None, groups: Sequence[str] | None, max_samples: int) -> None:
    if groups is None:
        if k is not None:
            _check_k(k, n)
        if n > max_samples:
            raise ValueError(
                f"{n} samples exceed max_samples={max_samples}: the distance matrix would take {8 * n * n / 1e9:.1f} "
                "GB. Split the pool with groups= (per recording, speaker or family) or raise max_samples."
            )
        return
    if k is not None:
        raise ValueError("k cannot be combined with groups: each group gets max(1, n_g // 3) medoids")
    if len(groups) != n or isinstance(groups, str):
        raise ValueError(f"groups must name one group per sample ({n}), got {len(groups)}")
    largest = max(_group_members(groups, n).items(), key=lambda item: len(item[1]))
    if len(largest[1]) > max_samples:
        raise ValueError(
            f"group {largest[0]!r} has {len(largest[1])} samples, above max_samples={max_samples}: split it into "
            "smaller groups (e.g. per recording instead of per speaker) or raise max_samples."
        )


def _check_k(k: int, n: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k}")


def _check_distances(distances: np.ndarray) -> int:
    if not isinstance(distances, np.ndarray) or distances.ndim != 2 or distances.shape[0] != distances.shape[1]:
        shape = getattr(distances, "shape", type(distances).__name__)
        raise ValueError(f"distances must be a square (N, N) numpy array, got {shape}")
    return distances.shape[0]


def _assign(distances: np.ndarray, medoids: np.ndarray) -> np.ndarray:
    """Nearest medoid ``(N,)`` as a position in ``medoids`` (ascending, so argmin's first hit is the lowest index)."""
    assignment = np.argmin(distances[:, medoids], axis=1)
    assignment[medoids] = np.arange(len(medoids))
    return assignment


def _update_medoids(distances: np.ndarray, medoids: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Per cluster, the member with the least summed distance to the other members ``(k,)`` (see k_medoids)."""
    updated = medoids.copy()
    by_cluster = np.argsort(assignment, kind="stable")  # members of each cluster, ascending sample index
    bounds = np.cumsum(np.bincount(assignment, minlength=len(medoids)))
    start = 0
    for cluster, stop in enumerate(bounds):
        members = by_cluster[start:stop]
        start = stop
        if len(members) <= 2:  # one or two members: every member ties, keep the medoid
            continue
        costs = distances[np.ix_(members, members)].sum(axis=1)
        current = costs[np.searchsorted(members, medoids[cluster])]
        best = int(np.argmin(costs))
        if costs[best] < current:
            updated[cluster] = members[best]
    return updated


def _mirror_upper_triangle(matrix: np.ndarray) -> None:
    """Make ``matrix (N, N)`` exactly symmetric in place by copying its upper triangle below the diagonal, block by
    block (a full transpose copy would double the peak memory)."""
    n = len(matrix)
    for start in range(0, n, SYMMETRISE_BLOCK):
        stop = min(start + SYMMETRISE_BLOCK, n)
        block = matrix[start:stop, start:stop]
        block[...] = np.triu(block) + np.triu(block, 1).T
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T


def _nonfinite_rows(data: np.ndarray) -> list[int]:
    return np.flatnonzero(~np.isfinite(data).all(axis=1))[:10].tolist()
