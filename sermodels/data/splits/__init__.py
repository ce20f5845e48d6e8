"""Speaker-independent evaluation protocols, versioned as JSON next to this file.

A protocol file ``<corpus>.json`` lists speakers, never files, so it is valid for any copy of the corpus (``.wav``
at the original rate or the 16 kHz ``.flac`` copy)::

    {"corpus": "emodb", "version": 1, "description": "...",
     "speakers": ["03", "08", ...],
     "splits": {"fixed": {"train": [...], "dev": [...], "test": [...]}},
     "folds": {"loso": [{"train": [...], "dev": [...], "test": [...]}, ...]}}

Every partition of every split and fold is a disjoint cover of ``speakers`` (checked on load). A fold's ``test``
speakers are the held-out group; its ``dev`` speakers are taken out of the rest for model selection, so a
cross-validation that needs no development set trains on ``train + dev``. Bump ``version`` whenever a speaker list
changes: model cards record ``<corpus>/<split> v<version>``.

The protocols (EMO-DB, RAVDESS and EMOVO by hand, URDU by :func:`urdu_protocol`):

* **emodb** v1 — fixed: test 03, 08; dev 09, 10; train the other six. ``loso``: 10 folds, one speaker each for
  test, the next speaker in sorted order (cyclic) as dev.
* **ravdess** v1 — fixed: test actors 21-24, dev 19-20, train 01-18. ``cv6``: 6 folds of 4 consecutive actors as
  test, the two preceding actors (cyclic; one male, one female) as dev, so the last fold (index 5) is the fixed split.
* **emovo** v1 — fixed: test f3, m3; dev f2, m2 (the remaining female/male pair with the next-highest number);
  train f1, m1. ``loso``: 6 folds, one speaker for test, the speaker of the other sex with the same number as dev.
* **urdu** v1 — computed by :func:`urdu_protocol` (the test suite checks that the stored file equals its output):
  fixed ≈ 70/10/20 % of files (286/34/80) and ``cv5`` 5 speaker-grouped folds of 80 files, see
  :func:`grouped_partition` and :func:`grouped_folds`. URDU's speakers are strongly class-skewed (SM5 alone has 72
  of the 100 neutral clips, four speakers hold all angry ones), so partitions match the file fractions but not
  every fold can contain every class; ``corpus.class_counts(items)`` shows what each holds.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

PARTITIONS = ("train", "dev", "test")
#: URDU fixed split: fractions of files per partition (the usual 70/10/20).
FIXED_FRACTIONS = {"train": 0.7, "dev": 0.1, "test": 0.2}
#: Seed and number of random speaker orders tried by the grouped split search.
SEARCH_SEED = 0
SEARCH_TRIALS = 200
#: Pairwise swaps are tried only up to this many groups (their cost grows with the square).
SWAP_LIMIT = 300
#: Default bound on the local search's work per :func:`grouped_partition` call, in candidate moves/swaps evaluated
#: over all trials. URDU needs at most ~0.3 M (so its stored protocol is exactly what an unbounded search gives);
#: callers splitting large corpora at load time pass a smaller bound (``sermodels.data.folder``).
SEARCH_WORK = 1_000_000
URDU_FOLDS = 5

# speaker -> class -> number of files
GroupCounts = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class Partition:
    """Speaker ids of the three partitions of one split or fold."""

    train: tuple[str, ...]
    dev: tuple[str, ...]
    test: tuple[str, ...]

    def speakers(self, part: str) -> tuple[str, ...]:
        return getattr(self, part)

    def as_dict(self) -> dict[str, list[str]]:
        return {part: list(self.speakers(part)) for part in PARTITIONS}


@dataclass(frozen=True)
class Protocol:
    """A corpus's fixed splits and cross-validation folds, as speaker lists."""

    corpus: str
    version: int
    description: str
    speakers: tuple[str, ...]
    splits: dict[str, Partition]
    folds: dict[str, tuple[Partition, ...]]

    def names(self) -> dict[str, int]:
        """Protocol name -> number of folds (0 for a single fixed split)."""
        return {**{name: 0 for name in self.splits}, **{name: len(folds) for name, folds in self.folds.items()}}

    def partition(self, name: str, fold: int | None = None) -> Partition:
        """The speaker partition of split ``name`` (``fold=None``) or of fold ``fold`` (0-based) of ``name``."""
        if name in self.splits:
            if fold is not None:
                raise ValueError(f"{self.corpus}: split {name!r} has no folds (got fold={fold})")
            return self.splits[name]
        if name in self.folds:
            folds = self.folds[name]
            if fold is None or not 0 <= fold < len(folds):
                raise ValueError(f"{self.corpus}: {name!r} has {len(folds)} folds; give fold=0..{len(folds) - 1}")
            return folds[fold]
        raise ValueError(f"{self.corpus}: unknown split {name!r}; available: {sorted(self.names())}")

    def to_json(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "version": self.version,
            "description": self.description,
            "speakers": list(self.speakers),
            "splits": {name: part.as_dict() for name, part in self.splits.items()},
            "folds": {name: [part.as_dict() for part in folds] for name, folds in self.folds.items()},
        }


class ProtocolError(ValueError):
    """A protocol whose partitions overlap, miss speakers or name unknown ones."""


def protocol_from_json(data: Mapping[str, Any]) -> Protocol:
    """Parse and validate a protocol dictionary (the JSON file's content)."""
    corpus = str(data.get("corpus", "?"))
    for key in ("corpus", "version", "speakers", "splits", "folds"):
        if key not in data:
            raise ProtocolError(f"protocol {corpus}: missing field {key!r}")
    speakers = tuple(str(s) for s in data["speakers"])
    if len(set(speakers)) != len(speakers):
        raise ProtocolError(f"protocol {corpus}: duplicate speakers in 'speakers'")
    splits = {name: _partition(corpus, name, part, speakers) for name, part in data["splits"].items()}
    folds = {
        name: tuple(_partition(corpus, f"{name}[{k}]", part, speakers) for k, part in enumerate(parts))
        for name, parts in data["folds"].items()
    }
    for name, parts in folds.items():
        tested = [s for part in parts for s in part.test]
        if sorted(tested) != sorted(speakers):
            raise ProtocolError(f"protocol {corpus}: the test groups of {name!r} do not cover every speaker once")
    return Protocol(corpus, int(data["version"]), str(data.get("description", "")), speakers, splits, folds)


def _partition(corpus: str, name: str, part: Mapping[str, Sequence[str]], speakers: tuple[str, ...]) -> Partition:
    lists = {p: tuple(str(s) for s in part.get(p, ())) for p in PARTITIONS}
    seen: list[str] = [s for p in PARTITIONS for s in lists[p]]
    if sorted(seen) != sorted(speakers):
        extra = sorted(set(seen) - set(speakers))
        missing = sorted(set(speakers) - set(seen))
        twice = sorted({s for s in seen if seen.count(s) > 1})
        raise ProtocolError(
            f"protocol {corpus} {name}: partitions must cover each speaker exactly once "
            f"(unknown: {extra}, missing: {missing}, in two partitions: {twice})"
        )
    return Partition(**lists)


@cache
def load_protocol(corpus: str) -> Protocol:
    """The stored protocol of a built-in corpus (``sermodels/data/splits/<corpus>.json``)."""
    source = resources.files(__name__).joinpath(f"{corpus}.json")
    if not source.is_file():
        raise FileNotFoundError(f"no stored protocol for corpus {corpus!r} ({source})")
    return protocol_from_json(json.loads(source.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------------------------------
# Grouped (speaker-disjoint) partitioning for corpora without a published protocol (URDU, user data).


def grouped_partition(
    groups: GroupCounts,
    fractions: Mapping[str, float] = FIXED_FRACTIONS,
    *,
    seed: int = SEARCH_SEED,
    trials: int = SEARCH_TRIALS,
    max_work: int | None = SEARCH_WORK,
) -> dict[str, list[str]]:
    """Assign whole groups (speakers) to partitions so that each class's files follow ``fractions``.

    Objective: ``Σ_partition (|files(partition) − fraction × files| + Σ_class |files(partition, class) − fraction ×
    files(class)|)`` with no partition empty: sizes and class proportions both close to target.
    Search, deterministic in ``seed``: ``trials`` times, shuffle the naturally sorted group ids with
    ``random.Random(seed)``; place each group, in that order, into the partition whose file count is furthest below
    its target (ties: the partition listed first in ``fractions``; the last groups go to partitions still empty,
    if any); then improve by local search — move one group
    to another partition, or (up to :data:`SWAP_LIMIT` groups) swap two groups of different partitions, taking the
    first strictly improving change in index order until none is left. Keep the best result (the earliest on ties).
    ``max_work`` bounds the candidate changes evaluated over all trials (``None``: unbounded); once it is spent the
    current trial stops where it is and no further trial starts, so the cost stays bounded for hundreds of groups.

    When every group is a single file (a corpus without speakers), the search is skipped: each class is split
    directly by :func:`_stratified_files` (deterministic in ``seed``, every class within one file of its target).
    Returns partition -> group ids in natural order (``SM2`` before ``SM10``).
    """
    names = list(fractions)
    if len(groups) < len(names):
        raise ValueError(f"{len(groups)} speakers cannot fill {len(names)} speaker-disjoint partitions")
    ids = sorted(groups, key=_natural)
    if all(sum(groups[g].values()) == 1 for g in ids):
        stratified = _stratified_files(ids, groups, names, [fractions[name] for name in names], seed)
        if stratified is not None:
            return stratified
    classes = sorted({c for counts in groups.values() for c in counts})
    # One column per class plus one for the group's total, so partition sizes are held to target as well.
    vectors = [[groups[g].get(c, 0) for c in classes] + [sum(groups[g].values())] for g in ids]
    totals = [sum(column) for column in zip(*vectors)]
    targets = [[fractions[name] * total for total in totals] for name in names]
    rng = random.Random(seed)
    order = list(range(len(ids)))
    best: tuple[float, list[int]] | None = None
    budget = [float("inf") if max_work is None else max(0, int(max_work))]  # work left, spent by _local_search
    for _ in range(trials):
        rng.shuffle(order)
        assignment = _greedy_fill(order, vectors, [fractions[name] for name in names])
        if len(set(assignment)) < len(names):
            continue
        score = _local_search(assignment, vectors, targets, budget)
        if best is None or score < best[0] - 1e-9:
            best = (score, assignment)
        if budget[0] <= 0:
            break
    if best is None:
        raise ValueError("no assignment leaves every partition non-empty; too few speakers")
    return {name: [ids[g] for g, p in enumerate(best[1]) if p == index] for index, name in enumerate(names)}


def grouped_folds(
    groups: GroupCounts,
    k: int,
    *,
    dev_fraction: float = FIXED_FRACTIONS["dev"],
    seed: int = SEARCH_SEED,
    trials: int = SEARCH_TRIALS,
    max_work: int | None = SEARCH_WORK,
) -> list[dict[str, list[str]]]:
    """``k`` speaker-grouped folds, each with a development set carved from its training speakers.

    The test groups come from :func:`grouped_partition` with ``k`` equal fractions (folds ordered by their smallest
    speaker id); each fold's dev speakers come from :func:`grouped_partition` over the remaining speakers with
    ``dev_fraction`` of all files (i.e. ``dev_fraction / (1 − 1/k)`` of the rest), same seed; ``max_work`` applies
    to each of these ``k + 1`` searches.
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    tests = grouped_partition(
        groups, {f"fold{i}": 1.0 / k for i in range(k)}, seed=seed, trials=trials, max_work=max_work
    )
    test_groups = sorted(tests.values(), key=lambda members: _natural(members[0]))
    relative_dev = dev_fraction / (1.0 - 1.0 / k)
    folds = []
    for test in test_groups:
        rest = {name: counts for name, counts in groups.items() if name not in test}
        inner = grouped_partition(
            rest, {"train": 1.0 - relative_dev, "dev": relative_dev}, seed=seed, trials=trials, max_work=max_work
        )
        folds.append({"train": inner["train"], "dev": inner["dev"], "test": list(test)})
    return folds


def _greedy_fill(order: Sequence[int], vectors: Sequence[Sequence[int]], fractions: Sequence[float]) -> list[int]:
    total = sum(vector[-1] for vector in vectors)
    deficit = [fraction * total for fraction in fractions]
    assignment = [0] * len(vectors)
    empty = set(range(len(fractions)))
    for position, group in enumerate(order):
        # the last groups go to still-empty partitions if that is the only way to fill every partition
        choices = sorted(empty) if len(order) - position <= len(empty) else range(len(deficit))
        target = max(choices, key=lambda p: deficit[p])  # max() keeps the first on ties
        assignment[group] = target
        deficit[target] -= vectors[group][-1]
        empty.discard(target)
    return assignment


def _stratified_files(
    ids: Sequence[str], groups: GroupCounts, names: Sequence[str], fractions: Sequence[float], seed: int
) -> dict[str, list[str]] | None:
    """Split single-file groups class by class; ``None`` if that would leave a partition empty.

    Each class's files (natural order, then shuffled with ``random.Random(seed)``, classes in sorted order) are cut
    into consecutive runs of ``⌊fraction × n_class⌋`` files, and the class's leftover files go one each to the
    partitions with the largest remainder, less what the classes before have already given a partition beyond its
    share of the files, so the partition sizes stay within about one file of their targets as well.
    """
    scale = sum(fractions)
    shares = [fraction / scale for fraction in fractions]
    by_class: dict[str, list[str]] = {}
    for group in ids:
        (label,) = groups[group]
        by_class.setdefault(label, []).append(group)
    rng = random.Random(seed)
    parts: list[list[str]] = [[] for _ in names]
    placed = 0
    for label in sorted(by_class):
        members = list(by_class[label])
        rng.shuffle(members)
        quotas = [share * len(members) for share in shares]
        counts = [math.floor(quota + 1e-9) for quota in quotas]
        surplus = [len(parts[p]) - shares[p] * placed for p in range(len(names))]
        ranked = sorted(range(len(names)), key=lambda p: (-(quotas[p] - counts[p] - surplus[p]), p))
        for p in ranked[: len(members) - sum(counts)]:
            counts[p] += 1
        start = 0
        for p, count in enumerate(counts):
            parts[p].extend(members[start : start + count])
            start += count
        placed += len(members)
    if not all(parts):
        return None
    return {name: sorted(parts[p], key=_natural) for p, name in enumerate(names)}


def _local_search(
    assignment: list[int],
    vectors: Sequence[Sequence[int]],
    targets: Sequence[Sequence[float]],
    budget: list[float] | None = None,
) -> float:
    """Improve ``assignment`` in place by single moves and pairwise swaps; return its final score.

    ``budget`` (a one-element list, shared across calls) is decreased by one per candidate evaluated; the search
    stops, keeping what it has, when it reaches zero.
    """
    budget = budget if budget is not None else [float("inf")]
    parts = len(targets)
    sums = [[0] * len(targets[0]) for _ in range(parts)]
    sizes = [0] * parts
    for group, p in enumerate(assignment):
        sizes[p] += 1
        sums[p] = [a + b for a, b in zip(sums[p], vectors[group])]

    def cost(p: int, vector: Sequence[float]) -> float:
        return sum(abs(v - t) for v, t in zip(vector, targets[p]))

    def shifted(vector: Sequence[float], add: Sequence[int], sub: Sequence[int]) -> list[float]:
        return [v + a - b for v, a, b in zip(vector, add, sub)]

    zero = [0] * len(targets[0])
    costs = [cost(p, sums[p]) for p in range(parts)]
    improved = True
    while improved and budget[0] > 0:
        improved = False
        for g, vector in enumerate(vectors):
            p = assignment[g]
            if sizes[p] == 1:
                continue
            for q in range(parts):
                if q == p:
                    continue
                budget[0] -= 1
                new_p, new_q = shifted(sums[p], zero, vector), shifted(sums[q], vector, zero)
                cost_p, cost_q = cost(p, new_p), cost(q, new_q)
                if cost_p + cost_q < costs[p] + costs[q] - 1e-9:
                    sums[p], sums[q], costs[p], costs[q] = new_p, new_q, cost_p, cost_q
                    sizes[p], sizes[q] = sizes[p] - 1, sizes[q] + 1
                    assignment[g], improved = q, True
                    break
            if improved or budget[0] <= 0:
                break
        if improved or budget[0] <= 0 or len(vectors) > SWAP_LIMIT:
            continue
        for g in range(len(vectors)):
            for h in range(g + 1, len(vectors)):
                p, q = assignment[g], assignment[h]
                if p == q:
                    continue
                budget[0] -= 1
                new_p = shifted(sums[p], vectors[h], vectors[g])
                new_q = shifted(sums[q], vectors[g], vectors[h])
                cost_p, cost_q = cost(p, new_p), cost(q, new_q)
                if cost_p + cost_q < costs[p] + costs[q] - 1e-9:
                    sums[p], sums[q], costs[p], costs[q] = new_p, new_q, cost_p, cost_q
                    assignment[g], assignment[h], improved = q, p, True
                    break
                if budget[0] <= 0:
                    break
            if improved or budget[0] <= 0:
                break
    return sum(costs)


def _natural(name: str) -> tuple:
    """Sort key that orders ``SM2`` before ``SM10``."""
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return (head, int(tail) if tail else -1)


def speaker_class_counts(items: Sequence[Any]) -> dict[str, dict[str, int]]:
    """speaker -> label -> number of items, from corpus items (objects with ``.speaker`` and ``.label``)."""
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        per = counts.setdefault(item.speaker, {})
        per[item.label] = per.get(item.label, 0) + 1
    return counts


def urdu_protocol(items: Sequence[Any]) -> dict[str, Any]:
    """The URDU protocol (v1) computed from the corpus's items: exactly what ``urdu.json`` stores.

    fixed = :func:`grouped_partition` with 70/10/20 %; ``cv5`` = :func:`grouped_folds` with k=5; seed
    :data:`SEARCH_SEED`, :data:`SEARCH_TRIALS` trials. Regenerate the file with
    :func:`write_urdu_protocol` if the algorithm changes, and bump the version.
    """
    groups = speaker_class_counts(items)
    fixed = grouped_partition(groups, FIXED_FRACTIONS)
    folds = grouped_folds(groups, URDU_FOLDS)
    return {
        "corpus": "urdu",
        "version": 1,
        "description": (
            "Speaker-disjoint splits computed by sermodels.data.splits.urdu_protocol: fixed ~70/10/20 % of files "
            f"(grouped_partition) and {URDU_FOLDS} speaker-grouped folds with a ~10 % dev set each (grouped_folds); "
            f"seed {SEARCH_SEED}, {SEARCH_TRIALS} trials."
        ),
        "speakers": sorted(groups, key=_natural),
        "splits": {"fixed": {part: sorted(fixed[part], key=_natural) for part in PARTITIONS}},
        "folds": {
            "cv5": [{part: sorted(fold[part], key=_natural) for part in PARTITIONS} for fold in folds],
        },
    }


def write_urdu_protocol(root: str, out: str | None = None) -> str:
    """Recompute ``urdu.json`` from a copy of the corpus at ``root`` (bump ``version`` by hand if it changes).

    ``python -c "from sermodels.data.splits import write_urdu_protocol as w; w('../shared/data/URDU')"``
    """
    from pathlib import Path

    from sermodels.data import load_corpus

    target = Path(out) if out else Path(__file__).with_name("urdu.json")
    protocol = urdu_protocol(load_corpus("urdu", root).items)
    target.write_text(json.dumps(protocol, indent=1) + "\n", encoding="utf-8")
    return str(target)
