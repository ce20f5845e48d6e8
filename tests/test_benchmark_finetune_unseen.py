"""benchmarks/finetune_unseen.py: the per-class draw, speaker disjointness, the class-folder layout, McNemar and how
results are merged. Nothing is trained or evaluated here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_scripts import load_script

from sermodels.data import Item

bench = load_script("finetune_unseen")
URDU = bench.REPO.parent / "shared" / "data" / "URDU"


def _item(i: int, label: str, speaker: str, folder: Path | None = None) -> Item:
    path = str(folder / f"{label}_{i:03d}.flac") if folder else f"/x/{label}_{i:03d}.flac"
    return Item(id=f"{label}_{i:03d}", path=path, label=label, speaker=speaker, sex=None, text=None, corpus="toy")


def _pool() -> list[Item]:
    return [_item(i, label, f"s{i % 5}") for label, n in (("a", 20), ("b", 12), ("c", 5)) for i in range(n)]


def test_the_draw_is_deterministic_per_class_and_nested():
    pool = _pool()
    chosen, short = bench.draw_per_class(pool, 8, seed=0)
    assert bench.counts(chosen) == {"a": 8, "b": 8, "c": 5} and short == {"c": 5}
    assert chosen == bench.draw_per_class(list(reversed(pool)), 8, seed=0)[0]  # pool order does not matter
    assert chosen == sorted(chosen, key=lambda it: it.id)
    assert set(bench.draw_per_class(pool, 4, seed=0)[0]) <= set(chosen)  # a smaller draw is part of a larger one
    assert chosen != bench.draw_per_class(pool, 8, seed=1)[0]
    # A class's draw does not depend on the other classes.
    only_a = [it for it in pool if it.label == "a"]
    assert [it for it in chosen if it.label == "a"] == bench.draw_per_class(only_a, 8, seed=0)[0]
    with pytest.raises(ValueError):
        bench.draw_per_class(pool, 0, seed=0)


class _Corpus:
    name = "toy"

    def __init__(self, parts):
        self.parts = parts

    def split(self, name):
        assert name == "fixed"
        return self.parts


def test_the_pool_is_train_plus_dev_and_shares_no_speaker_with_test():
    a, b, c = _item(0, "a", "s1"), _item(1, "b", "s2"), _item(2, "a", "s3")
    pool, test = bench.speaker_split(_Corpus({"train": [a], "dev": [b], "test": [c]}))
    assert pool == [a, b] and test == [c]
    with pytest.raises(bench.BenchError, match="s1"):
        bench.speaker_split(_Corpus({"train": [a], "dev": [b], "test": [_item(3, "b", "s1")]}))


@pytest.mark.skipif(not URDU.is_dir(), reason=f"{URDU} not found (shared corpora)")
def test_urdu_draw_comes_from_train_and_dev_speakers_only():
    corpus = bench.load_corpus("urdu", URDU)
    pool, test = bench.speaker_split(corpus)
    chosen, short = bench.draw_per_class(pool, 60, seed=0)
    assert bench.counts(chosen) == dict.fromkeys(corpus.classes, 60) and not short
    assert not {it.speaker for it in chosen} & {it.speaker for it in test}
    assert len(test) + len(pool) == len(corpus.items)


def test_lay_out_links_class_folders_and_rebuilds_only_its_links(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    items = [_item(i, label, "s", corpus) for label in ("x", "y") for i in range(3)]
    for it in items:
        Path(it.path).write_bytes(b"audio")
    train = tmp_path / "work" / "train"
    bench.lay_out(items, train)
    links = sorted(p.relative_to(train).as_posix() for p in train.rglob("*.flac"))
    assert links == [f"{it.label}/{Path(it.path).name}" for it in items]
    assert all(p.is_symlink() and p.resolve().parent == corpus for p in train.rglob("*.flac"))
    bench.lay_out(items[:2], train)  # another draw: the old links go, the corpus files stay
    assert sorted(p.name for p in train.rglob("*.flac")) == sorted(Path(it.path).name for it in items[:2])
    assert not (train / "y").exists() and all(Path(it.path).is_file() for it in items)
    (train / "x" / "notes.txt").write_text("mine")
    with pytest.raises(bench.BenchError, match="not a link"):
        bench.lay_out(items, train)
    assert (train / "x" / "notes.txt").is_file()


def test_relative_follows_links_to_the_corpus_path(tmp_path):
    (tmp_path / "corpus" / "A").mkdir(parents=True)
    (tmp_path / "corpus" / "A" / "f.flac").write_bytes(b"")
    os.symlink(tmp_path / "corpus" / "A" / "f.flac", tmp_path / "link.flac")
    assert bench.relative(tmp_path / "link.flac", tmp_path / "corpus") == os.path.join("A", "f.flac")


def test_mcnemar_counts_the_discordant_files():
    true = {f"f{i}": "a" for i in range(20)}
    model = {f: "a" for f in true} | {"f0": "b", "f1": "b"}
    svm = {f: "b" for f in true} | {"f0": "a"}
    test = bench.mcnemar_exact(true, model, svm)
    # f0: svm right, model wrong; f1: both wrong; f2..f19: model right, svm wrong.
    assert (test["n"], test["b"], test["c"]) == (20, 18, 1)
    assert test["better"] == "model" and test["significant"]
    assert bench.mcnemar_exact(true, true, true) | {"p_value": 1.0} == {
        "n": 20,
        "b": 0,
        "c": 0,
        "p_value": 1.0,
        "significant": False,
        "better": "tie",
    }


def test_entries_are_merged_and_a_finished_one_is_not_replaced_silently(tmp_path):
    path = tmp_path / "results.json"
    settings = {"base": "m", "seed": 0}
    key = bench.result_key("m", "urdu", 60)
    assert key == "m/urdu/60"
    bench.save_entry(path, "other/urdu/60", {"complete": True, "settings": {}})
    bench.save_entry(path, key, {"complete": False, "settings": settings})
    bench.save_entry(path, key, {"complete": True, "settings": settings, "beats_svms": True})
    results = json.loads(path.read_text())
    assert set(results["results"]) == {"other/urdu/60", key} and results["results"][key]["beats_svms"]
    assert "mcnemar" in results["protocol"]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left
    stored = results["results"][key]
    assert bench.kept_entry(stored, settings, force=False) == stored
    assert bench.kept_entry(stored, settings, force=True) is None
    assert bench.kept_entry({"complete": False, "settings": {}}, settings, force=False) is None
    with pytest.raises(bench.BenchError, match="--force"):
        bench.kept_entry(stored, settings | {"seed": 1}, force=False)


def test_finetune_args_come_last_and_may_not_redirect_the_run(tmp_path):
    args = bench.parse_args(["--base", "b", "--corpus", "urdu", "--finetune-args", "--epochs", "1", "--seed", "3"])
    assert args.finetune_args == ["--epochs", "1", "--seed", "3"] and args.per_class == 60
    command = bench.finetune_command("b", tmp_path / "train", tmp_path / "m", args.seed, args.finetune_args)
    assert command[command.index("finetune") + 1 :][:6] == ["--from", "b", "--data", str(tmp_path / "train")] + [
        "--out",
        str(tmp_path / "m"),
    ]
    assert command[-4:] == ["--epochs", "1", "--seed", "3"]  # after the benchmark's --seed: it wins
    for bad in (["--out", "x"], ["--data=x"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["--base", "b", "--corpus", "urdu", "--finetune-args", *bad])
