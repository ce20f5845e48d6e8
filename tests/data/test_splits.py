"""Stored protocols: speaker-disjoint, complete, as specified; URDU's file equals its algorithm's output."""

from __future__ import annotations

import json
import time
from importlib import resources

import pytest

from sermodels.data import load_corpus
from sermodels.data.splits import (
    FIXED_FRACTIONS,
    PARTITIONS,
    ProtocolError,
    grouped_folds,
    grouped_partition,
    load_protocol,
    protocol_from_json,
    urdu_protocol,
)

CORPORA = ("emodb", "ravdess", "emovo", "urdu")
FOLDS = {"emodb": ("loso", 10), "ravdess": ("cv6", 6), "emovo": ("loso", 6), "urdu": ("cv5", 5)}


@pytest.fixture
def corpora(emodb_root, ravdess_root, emovo_root, urdu_root):
    roots = {"emodb": emodb_root, "ravdess": ravdess_root, "emovo": emovo_root, "urdu": urdu_root}
    return {name: load_corpus(name, root) for name, root in roots.items()}


def _assert_disjoint_and_complete(corpus, parts):
    ids = [item.id for part in PARTITIONS for item in parts[part]]
    assert sorted(ids) == sorted(item.id for item in corpus.items)  # every file in exactly one partition
    speakers = [{item.speaker for item in parts[part]} for part in PARTITIONS]
    for a in range(3):
        assert parts[PARTITIONS[a]], f"{corpus.name}: empty {PARTITIONS[a]}"
        for b in range(a + 1, 3):
            assert not speakers[a] & speakers[b], f"{corpus.name}: speakers shared by {PARTITIONS[a]}/{PARTITIONS[b]}"


@pytest.mark.parametrize("name", CORPORA)
def test_every_split_and_fold_is_speaker_disjoint_and_complete(name, corpora):
    corpus = corpora[name]
    _assert_disjoint_and_complete(corpus, corpus.split("fixed"))
    fold_name, k = FOLDS[name]
    assert corpus.split_names() == {"fixed": 0, fold_name: k}
    tested = []
    for fold in range(k):
        _assert_disjoint_and_complete(corpus, corpus.split(fold_name, fold))
    for train, test in corpus.folds(fold_name):
        assert not {it.speaker for it in train} & {it.speaker for it in test}
        assert len(train) + len(test) == len(corpus)
        tested.extend(item.id for item in test)
    assert sorted(tested) == sorted(item.id for item in corpus.items)  # each file is tested exactly once


def _speakers(parts):
    return {part: sorted({item.speaker for item in items}) for part, items in parts.items()}


def test_emodb_protocol(corpora):
    corpus = corpora["emodb"]
    others = ["11", "12", "13", "14", "15", "16"]
    assert _speakers(corpus.split("fixed")) == {"train": others, "dev": ["09", "10"], "test": ["03", "08"]}
    assert [_speakers(corpus.split("loso", k))["test"] for k in range(10)] == [[s] for s in corpus.speakers]


def test_ravdess_protocol(corpora):
    corpus = corpora["ravdess"]
    actors = [f"{i:02d}" for i in range(1, 25)]
    assert _speakers(corpus.split("fixed")) == {"train": actors[:18], "dev": actors[18:20], "test": actors[20:]}
    for k in range(6):
        parts = _speakers(corpus.split("cv6", k))
        assert parts["test"] == actors[4 * k : 4 * k + 4]
        assert sorted(int(a) % 2 for a in parts["dev"]) == [0, 1]  # one female, one male
    assert _speakers(corpus.split("cv6", 5)) == _speakers(corpus.split("fixed"))


def test_emovo_protocol(corpora):
    corpus = corpora["emovo"]
    assert _speakers(corpus.split("fixed")) == {"train": ["f1", "m1"], "dev": ["f2", "m2"], "test": ["f3", "m3"]}
    for k, speaker in enumerate(["f1", "f2", "f3", "m1", "m2", "m3"]):
        parts = _speakers(corpus.split("loso", k))
        assert parts["test"] == [speaker] and parts["dev"][0][1] == speaker[1] and parts["dev"][0][0] != speaker[0]


def test_urdu_file_is_what_the_algorithm_gives(corpora):
    stored = json.loads(resources.files("sermodels.data.splits").joinpath("urdu.json").read_text())
    assert stored == urdu_protocol(corpora["urdu"].items)
    sizes = {part: len(items) / 400 for part, items in corpora["urdu"].split("fixed").items()}
    for part, fraction in FIXED_FRACTIONS.items():
        assert abs(sizes[part] - fraction) <= 0.03, sizes
    assert all(
        set(corpora["urdu"].class_counts(items)) == {"angry", "happy", "neutral", "sad"}
        for items in corpora["urdu"].split("fixed").values()
    )


@pytest.mark.parametrize("name", CORPORA)
def test_stored_files_are_versioned(name):
    data = json.loads(resources.files("sermodels.data.splits").joinpath(f"{name}.json").read_text())
    assert data["corpus"] == name and data["version"] == 1 and data["description"]
    assert load_protocol(name).version == 1


def test_overlapping_or_incomplete_protocols_are_rejected():
    base = {"corpus": "x", "version": 1, "speakers": ["a", "b", "c"], "folds": {}}
    with pytest.raises(ProtocolError, match=r"in two partitions: \['a'\]"):
        protocol_from_json({**base, "splits": {"fixed": {"train": ["a", "b"], "dev": ["a"], "test": ["c"]}}})
    with pytest.raises(ProtocolError, match=r"missing: \['c'\]"):
        protocol_from_json({**base, "splits": {"fixed": {"train": ["a"], "dev": ["b"], "test": []}}})
    with pytest.raises(ProtocolError, match="missing field 'version'"):
        protocol_from_json({"corpus": "x", "speakers": [], "splits": {}, "folds": {}})


def test_unknown_split_and_bad_fold(corpora):
    corpus = corpora["emodb"]
    with pytest.raises(ValueError, match="unknown split 'cv6'"):
        corpus.split("cv6")
    with pytest.raises(ValueError, match="has 10 folds"):
        corpus.split("loso", 10)
    with pytest.raises(ValueError, match="has 10 folds"):
        corpus.split("loso")


def test_grouped_partition_is_deterministic_and_near_target():
    groups = {f"s{i}": {"a": 3 + i % 4, "b": 1 + (i * 7) % 5} for i in range(30)}
    first = grouped_partition(groups, seed=1, trials=30)
    assert first == grouped_partition(groups, seed=1, trials=30)
    assert sorted(s for members in first.values() for s in members) == sorted(groups)
    total = sum(sum(c.values()) for c in groups.values())
    for part, fraction in FIXED_FRACTIONS.items():
        files = sum(sum(groups[s].values()) for s in first[part])
        assert abs(files / total - fraction) < 0.03
    folds = grouped_folds(groups, 5, seed=1, trials=10)
    assert sorted(s for fold in folds for s in fold["test"]) == sorted(groups)
    for fold in folds:
        assert sorted(fold["train"] + fold["dev"] + fold["test"]) == sorted(groups)
    with pytest.raises(ValueError, match="2 speakers cannot fill 3"):
        grouped_partition({"a": {"x": 1}, "b": {"x": 1}})


def test_grouped_search_work_is_bounded():
    groups = {f"s{i}": {"a": 1 + i % 3, "b": (i * 5) % 4, "c": 1 + (i * 7) % 2} for i in range(400)}
    start = time.perf_counter()
    bounded = grouped_partition(groups, seed=0, trials=200, max_work=20_000)
    assert time.perf_counter() - start < 2.0  # unbounded: minutes (pairwise swaps over 400 groups, 200 orders)
    assert bounded == grouped_partition(groups, seed=0, trials=200, max_work=20_000)  # deterministic
    assert sorted(s for members in bounded.values() for s in members) == sorted(groups)
    total = sum(sum(c.values()) for c in groups.values())
    for part, fraction in FIXED_FRACTIONS.items():
        files = sum(sum(groups[s].values()) for s in bounded[part])
        assert abs(files / total - fraction) < 0.01, (part, files / total)
    greedy_only = grouped_partition(groups, seed=0, trials=200, max_work=0)  # the first order's greedy fill
    assert sorted(s for members in greedy_only.values() for s in members) == sorted(groups)


def test_single_file_groups_are_stratified_by_class():
    labels = {f"f{i}": "abc"[i % 3] if i < 90 else "d" for i in range(103)}
    groups = {name: {label: 1} for name, label in labels.items()}
    start = time.perf_counter()
    parts = grouped_partition(groups)
    assert time.perf_counter() - start < 0.5
    assert sorted(s for members in parts.values() for s in members) == sorted(groups)
    for part, fraction in FIXED_FRACTIONS.items():
        assert abs(len(parts[part]) - fraction * 103) <= 1
        for label in "abcd":
            n = sum(1 for value in labels.values() if value == label)
            assert abs(sum(1 for s in parts[part] if labels[s] == label) - fraction * n) < 1
    assert parts == grouped_partition(groups) and parts != grouped_partition(groups, seed=1)
    tiny = grouped_partition({"x": {"a": 1}, "y": {"b": 1}, "z": {"c": 1}})  # stratifying would leave dev empty
    assert all(len(members) == 1 for members in tiny.values())
