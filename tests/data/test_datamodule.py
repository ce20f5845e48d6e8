"""SERDataModule on real corpora: batches, crops, round-robin, class weights, cache, workers, Lightning."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections import Counter

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DistributedSampler

import sermodels.audio
from sermodels import labels
from sermodels.data import AudioCache, CorpusError, SERDataModule, TrainBatchSampler
from sermodels.data.spaces import SpacesDataModule

RATE = 16_000
PARTS = ("train", "dev", "test")


def _dm(roots, corpora=("emodb",), **kwargs):
    return SERDataModule(list(corpora), roots={name: str(roots[name]) for name in corpora}, **kwargs)


@pytest.fixture
def roots(emodb_root, emovo_root):
    return {"emodb": emodb_root, "emovo": emovo_root}


def test_training_batch_from_emodb(roots):
    dm = _dm(roots, batch_size=8, max_duration=1.5, seed=3)
    dm.setup("fit")
    assert dm.label_names == {"emodb": ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]}
    assert dm.num_classes == {"emodb": 7}
    batch = next(iter(dm.train_dataloader()))
    waves, lengths = batch["waveforms"], batch["lengths"]
    assert waves.dtype == torch.float32 and waves.ndim == 2 and waves.shape[0] == 8
    assert lengths.dtype == torch.long and lengths.shape == (8,)
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (8,)
    assert int(lengths.max()) == waves.shape[1] <= int(1.5 * RATE)  # padded to the longest, cropped
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(waves[row, length:] == 0)
        assert waves[row, :length].abs().sum() > 0
    train_paths = {item.path for item in dm.partitions["emodb"]["train"]}
    assert set(batch["paths"]) <= train_paths and batch["corpus"] == ["emodb"] * 8
    assert batch["domains"].tolist() == [0] * 8
    # the labels are the items' own classes
    by_path = {item.path: item.label for item in dm.partitions["emodb"]["train"]}
    names = dm.label_names["emodb"]
    assert [names[i] for i in batch["labels"].tolist()] == [by_path[p] for p in batch["paths"]]


def test_crop_is_a_window_of_the_clip_and_seeded(roots):
    dm = _dm(roots, batch_size=4, max_duration=1.0, seed=0)
    dm.setup()
    dataset = dm.datasets["emodb"]["train"]
    index = max(range(len(dataset)), key=lambda i: sf.info(dataset.items[i].path).frames)
    full = dataset[index]["waveform"]
    assert full.shape[0] > 3 * RATE  # whole clip without an epoch key
    crops = [dataset[(index, epoch)]["waveform"] for epoch in range(4)]
    assert all(crop.shape[0] == RATE for crop in crops)
    starts = []
    for crop in crops:  # each crop is a contiguous window of the clip
        candidates = torch.nonzero(full[: full.shape[0] - RATE + 1] == crop[0]).flatten().tolist()
        match = [s for s in candidates if torch.equal(full[s : s + RATE], crop)]
        assert match
        starts.append(match[0])
    assert len(set(starts)) > 1  # the epoch changes the window
    again = _dm(roots, batch_size=4, max_duration=1.0, seed=0)
    again.setup()
    assert torch.equal(again.datasets["emodb"]["train"][(index, 2)]["waveform"], crops[2])


def test_evaluation_uses_whole_clips(roots):
    dm = _dm(roots, batch_size=5, max_duration=0.5)
    batch = next(iter(dm.val_dataloader()))
    frames = [sf.info(p).frames for p in batch["paths"]]  # the shared copy is already 16 kHz
    assert batch["lengths"].tolist() == frames
    assert batch["paths"] == [item.path for item in dm.partitions["emodb"]["dev"][:5]]


def test_same_seed_same_batches_other_seed_other_order(roots):
    first = [next(iter(_dm(roots, batch_size=6, seed=s).train_dataloader()))["paths"] for s in (1, 1, 2)]
    assert first[0] == first[1] and first[0] != first[2]


def test_epochs_reshuffle(roots):
    loader = _dm(roots, batch_size=6, max_duration=None).train_dataloader()
    sampler = loader.batch_sampler
    epoch0 = [key for batch in sampler for key in batch]
    epoch1 = [key for batch in sampler for key in batch]
    assert sorted(i for i, _ in epoch0) == sorted(i for i, _ in epoch1) == list(range(len(loader.dataset)))
    assert {e for _, e in epoch0} == {0} and {e for _, e in epoch1} == {1}
    assert [i for i, _ in epoch0] != [i for i, _ in epoch1]
    sampler.sampler.set_epoch(0)  # what Lightning does: an explicit epoch replays that epoch's order
    assert [key for batch in sampler for key in batch] == epoch0


def test_round_robin_alternates_corpora(roots):
    dm = _dm(roots, corpora=("emodb", "emovo"), batch_size=16, label_space="arousal", multi_corpus="round_robin")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader)
    for number, batch in enumerate(batches):
        expected = ["emodb", "emovo"][number % 2]
        assert batch["corpus"] == [expected] * len(batch["corpus"])
        assert batch["domains"].tolist() == [number % 2] * len(batch["corpus"])
    emodb_paths = [p for b in batches if b["corpus"][0] == "emodb" for p in b["paths"]]
    assert sorted(emodb_paths) == sorted(it.path for it in dm.partitions["emodb"]["train"])  # largest: once
    assert dm.label_names == ["low", "high"] and dm.num_classes == 2
    val = dm.val_dataloader()
    assert isinstance(val, list) and [next(iter(v))["corpus"][0] for v in val] == ["emodb", "emovo"]


def test_round_robin_shards_are_disjoint_and_in_lockstep():
    groups = [list(range(10)), list(range(10, 17))]
    dataset = list(range(17))
    per_rank = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True)
        sampler.set_epoch(3)
        batches = list(TrainBatchSampler(sampler, 2, False, groups, "round_robin", seed=5))
        assert all(epoch == 3 for batch in batches for _, epoch, _ in batch)
        per_rank.append([[i for i, _, _ in batch] for batch in batches])
    assert len(per_rank[0]) == len(per_rank[1]) == 6  # 3 rounds (10 items / 2 ranks / 2 per batch) x 2 corpora
    for step in range(6):  # both ranks on the same corpus at every step
        assert {i >= 10 for i in per_rank[0][step] + per_rank[1][step]} == {step % 2 == 1}
    first_pass = [set(), set()]
    for rank in (0, 1):
        first_pass[rank] = {i for b in per_rank[rank][0:6:2] for i in b}  # corpus 0, rounds 0-2
    assert first_pass[0].isdisjoint(first_pass[1]) and first_pass[0] | first_pass[1] == set(range(10))


def test_round_robin_recrops_a_cycled_item(roots):
    groups = [list(range(12)), list(range(12, 15))]  # the small corpus is cycled 4 times per epoch
    batches = list(TrainBatchSampler(DistributedSampler(list(range(15)), 1, 0), 3, False, groups, "round_robin"))
    small = [key for batch in batches[1::2] for key in batch]
    assert sorted(i for i, _, _ in small) == sorted(list(range(12, 15)) * 4)
    assert [c for _, _, c in small] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # the cycle is part of the key
    dm = _dm(roots, max_duration=0.5)
    dm.setup()
    dataset = dm.datasets["emodb"]["train"]
    index = next(i for i, it in enumerate(dataset.items) if sf.info(it.path).duration > 2.0)
    crops = [dataset[(index, 0, cycle)]["waveform"] for cycle in range(4)]
    assert len({tuple(crop[:50].tolist()) for crop in crops}) > 1  # a new window per cycle
    assert torch.equal(dataset[(index, 0, 0)]["waveform"], dataset[(index, 0)]["waveform"])  # cycle 0 unchanged
    again = _dm(roots, max_duration=0.5)  # deterministic: a fresh module gives the same crops
    again.setup()
    assert all(torch.equal(again.datasets["emodb"]["train"][(index, 0, c)]["waveform"], crops[c]) for c in range(4))


def test_concat_uses_the_injected_distributed_sampler():
    dataset = list(range(17))
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        shards.append([i for b in TrainBatchSampler(sampler, 4, False, [dataset], "concat") for i, _ in b])
    assert list(shards[0]) == list(DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=True, seed=0))
    assert len(set(shards[0]) | set(shards[1])) == 17


def test_class_weights(roots):
    dm = _dm(roots, corpora=("emodb", "emovo"))
    weights = dm.class_weights("emodb")
    counts = torch.bincount(torch.tensor(dm.datasets["emodb"]["train"].label_indices), minlength=7).double()
    expected = counts.sum() / (7 * counts)
    assert torch.allclose(weights.double(), expected, rtol=1e-6)
    assert torch.isclose((weights.double() * counts).sum() / counts.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(dm.class_weights("emovo"), torch.ones(7))  # EMOVO is balanced
    with pytest.raises(ValueError, match="categories are per corpus"):
        dm.class_weights()
    pooled = _dm(roots, corpora=("emodb", "emovo"), label_space="valence")
    assert pooled.class_weights().shape == (3,)


def test_balance_equalises_mapped_classes(roots):
    dm = _dm(roots, label_space="valence", balance=True)
    dm.setup()
    for part in ("train", "dev", "test"):
        counts = np.bincount(dm.datasets["emodb"][part].label_indices, minlength=3)
        assert len(set(counts.tolist())) == 1 and counts[0] > 0, (part, counts)


# ---------------------------------------------------------------------------------------------------------------------
# Shared emotion sets (basic4, basic6): corpora restricted to the set's classes.


def _set_names(dm, corpus, part):
    names = dm.label_names
    return [names[index] for index in dm.datasets[corpus][part].label_indices]


def test_basic4_keeps_only_the_shared_classes(roots):
    dm = _dm(roots, corpora=("emodb", "emovo"), label_space="basic4", multi_corpus="concat")
    dm.setup()
    assert dm.label_names == list(labels.SHARED_SETS["basic4"]) == ["anger", "happiness", "neutral", "sadness"]
    assert dm.num_classes == 4 and list(dm.target_spec().names) == dm.label_names
    # EMO-DB: anger 127 + happiness 71 + neutral 79 + sadness 62; EMOVO: 84 each of anger, joy, neutral, sadness
    expected = {"emodb": 339, "emovo": 336}
    for name, corpus in dm.corpora.items():
        unfiltered = corpus.split("fixed")
        kept = {part: [it.path for it in items] for part, items in dm.partitions[name].items()}
        assert sum(len(paths) for paths in kept.values()) == expected[name]
        for part, items in unfiltered.items():
            inside = [it.path for it in items if labels.in_label_set(it.label, "basic4")]
            assert kept[part] == inside and set(kept[part]) <= {it.path for it in items}
            assert dm.datasets[name][part].items == dm.partitions[name][part]
            wanted = [labels.map_label(it.label, "basic4") for it in dm.partitions[name][part]]
            assert _set_names(dm, name, part) == wanted  # the index is the item's set class (joy -> happiness)
    assert {c: Counter(it.label for p in dm.partitions[c].values() for it in p) for c in expected} == {
        "emodb": {"anger": 127, "happiness": 71, "neutral": 79, "sadness": 62},
        "emovo": {"anger": 84, "joy": 84, "neutral": 84, "sadness": 84},
    }
    weights = dm.class_weights()  # pooled over both corpora, like arousal
    assert weights.shape == (4,) and bool((weights > 0).all())
    info = dm.info()
    assert info["label_space"] == "basic4" and info["label_names"] == dm.label_names
    dropped = {c["name"]: c["outside_label_set"] for c in info["corpora"]}
    assert dropped == {
        "emodb": {"boredom": 81, "disgust": 46, "fear": 69},
        "emovo": {"disgust": 84, "fear": 84, "surprise": 84},
    }
    assert {c["name"]: sum(c["partition_sizes"].values()) for c in info["corpora"]} == expected
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["labels"].tolist()) <= set(range(4))


def test_basic4_balance_applies_after_the_restriction(emodb_root):
    dm = SERDataModule(["emodb"], roots={"emodb": str(emodb_root)}, label_space="basic4", balance=True)
    dm.setup()
    for part in ("train", "dev", "test"):
        counts = Counter(_set_names(dm, "emodb", part))
        assert set(counts) == set(labels.SHARED_SETS["basic4"]) and len(set(counts.values())) == 1, (part, counts)


def test_basic6_on_urdu_keeps_its_three_classes(urdu_root):
    dm = SERDataModule(["urdu"], roots={"urdu": str(urdu_root)}, label_space="basic6")
    dm.setup()
    assert dm.label_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    seen = {name for part in PARTS for name in _set_names(dm, "urdu", part)}
    assert seen == {"anger", "happiness", "sadness"}  # URDU's neutral is outside the six
    assert all(it.label != "neutral" for part in PARTS for it in dm.partitions["urdu"][part])
    weights = dm.class_weights()
    assert [bool(w > 0) for w in weights] == [True, False, False, True, True, False]  # absent classes weigh 0


def _class_folders(root, counts):
    for label, n in counts.items():
        for index in range(n):
            path = root / label / f"{index:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.full(800, 0.25, dtype=np.float32), RATE)
    return root


def test_a_corpus_with_one_class_of_the_set_is_an_error(tmp_path):
    root = _class_folders(tmp_path / "mine", {"anger": 4, "boredom": 4, "calm": 3})
    dm = SERDataModule(["folder:mine"], roots={"mine": str(root)}, label_space="basic4")
    one_left = r"mine: 1 of the basic4 classes .* left .* \(\['anger'\]\); at least two"
    with pytest.raises(CorpusError, match=one_left) as err:
        dm.setup()
    assert "'anger' (4), 'boredom' (4), 'calm' (3)" in str(err.value)  # what the corpus has
    both = SERDataModule(["folder:mine"], roots={"mine": str(root)}, label_space="basic6")
    with pytest.raises(CorpusError, match=r"mine: 1 of the basic6 classes"):
        both.setup()


def test_unknown_words_are_errors_in_a_shared_set(tmp_path):
    root = _class_folders(tmp_path / "typo", {"anger": 3, "sadness": 3, "sadnes": 3})
    dm = SERDataModule(["folder:typo"], roots={"typo": str(root)}, label_space="basic4")
    with pytest.raises(CorpusError, match=r"typo: labels without an arousal/valence placement") as err:
        dm.setup()  # an unknown word is not dropped as "outside the set"
    assert "'sadnes': 3 items" in str(err.value)


def test_shared_sets_are_no_domains_of_the_spaces_setting(roots):
    with pytest.raises(ValueError, match="'basic4' is not an aggregated label space"):
        SpacesDataModule(["emodb"], spaces=["arousal", "basic4"], roots={"emodb": str(roots["emodb"])})


def test_workers(roots):
    dm = _dm(roots, batch_size=4, num_workers=2, max_duration=1.0)
    loader = dm.train_dataloader()
    seen = [batch["paths"] for _, batch in zip(range(3), loader)]
    serial = [batch["paths"] for _, batch in zip(range(3), _dm(roots, batch_size=4).train_dataloader())]
    assert seen == serial


def test_configuration_errors(roots):
    with pytest.raises(ValueError, match="label_space"):
        _dm(roots, label_space="dominance")
    with pytest.raises(ValueError, match="multi_corpus"):
        _dm(roots, multi_corpus="mixed")
    with pytest.raises(ValueError, match="no root for corpus 'ravdess'"):
        SERDataModule(["ravdess"], roots={"emodb": "x"})


def test_unknown_corpus_keys_are_errors(roots):
    with pytest.raises(ValueError, match=r"split names unknown corpora \['emodbb'\]; the corpora are \['emodb'\]"):
        _dm(roots, split={"emodbb": "loso"}, fold=0)  # a misspelling used to fall back to "fixed" silently
    with pytest.raises(ValueError, match=r"roots names unknown corpora \['emovo'\]; the corpora are \['emodb'\]"):
        SERDataModule(["emodb"], roots={"emodb": str(roots["emodb"]), "emovo": str(roots["emovo"])})
    generic = SERDataModule(["folder:mine"], roots={"mine": "x"}, split={"folder:mine": "cv5"})
    assert generic.roots == {"mine": "x"} and generic.splits == {"mine": "cv5"}  # entry and name both count
    assert _dm(roots, corpora=("emodb", "emovo"), split={"emodb": "loso"}).splits == {"emodb": "loso", "emovo": "fixed"}


def test_jsonargparse_builds_it(roots):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SERDataModule, "data")
    config = parser.parse_string(
        f"data:\n  corpora: [emodb]\n  roots: {{emodb: '{roots['emodb']}'}}\n  label_space: arousal\n"
        "  split: loso\n  fold: 3\n  max_duration: null\n"
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(config).data
    dm.setup()
    assert {it.speaker for it in dm.partitions["emodb"]["test"]} == {"10"}  # fold 3 of 03 08 09 10 ...
    assert dm.max_duration is None and dm.label_names == ["low", "high"]


class _Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 2)
        self.train_corpora: list[str] = []
        self.val_corpora: list[tuple[int, str]] = []

    def training_step(self, batch, batch_idx):
        self.train_corpora.append(batch["corpus"][0])
        energy = (batch["waveforms"] ** 2).sum(dim=1, keepdim=True) / batch["lengths"].unsqueeze(1)
        return torch.nn.functional.cross_entropy(self.head(energy), batch["labels"])

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_corpora.append((dataloader_idx, batch["corpus"][0]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_round_robin(roots):
    dm = _dm(roots, corpora=("emodb", "emovo"), batch_size=4, label_space="arousal", multi_corpus="round_robin")
    probe = _Probe()
    trainer = L.Trainer(fast_dev_run=4, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(probe, datamodule=dm)
    assert probe.train_corpora == ["emodb", "emovo", "emodb", "emovo"]
    assert sorted(set(probe.val_corpora)) == [(0, "emodb"), (1, "emovo")]


# ---------------------------------------------------------------------------------------------------------------------
# Cache.


@pytest.fixture
def decode_counter(monkeypatch):
    calls: list[str] = []
    real = sermodels.audio.load_audio

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sermodels.audio, "load_audio", counting)
    return calls


def test_memory_cache_hit_avoids_decoding(emodb_root, decode_counter):
    paths = sorted((emodb_root / "wav").iterdir())[:3]
    cache = AudioCache(RATE)
    first = [cache.get(p) for p in paths]
    assert len(decode_counter) == 3
    second = [cache.get(p) for p in paths]
    assert len(decode_counter) == 3 and cache.stats["memory_hits"] == 3
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    direct, rate = sf.read(paths[0], dtype="float32")  # the shared copy is 16 kHz mono: no resampling
    assert rate == RATE and torch.equal(first[0], torch.from_numpy(direct))


def test_disk_cache_shared_and_repaired(emodb_root, tmp_path, decode_counter):
    source = sorted((emodb_root / "wav").iterdir())[:2]
    cache_dir = tmp_path / "cache"
    reference = [AudioCache(RATE, cache_dir).get(p) for p in source]
    assert len(decode_counter) == 2
    entries = sorted(cache_dir.glob("*/*.npy"))
    assert len(entries) == 2 and not list(cache_dir.glob("*/*.tmp"))
    fresh = AudioCache(RATE, cache_dir)  # a new process/worker: served from disk
    assert all(torch.equal(fresh.get(p), r) for p, r in zip(source, reference))
    assert len(decode_counter) == 2 and fresh.stats["disk_hits"] == 2
    victim = cache_dir / fresh.key(source[0])[:2] / f"{fresh.key(source[0])}.npy"
    victim.write_bytes(victim.read_bytes()[:100])  # truncated entry
    repaired = AudioCache(RATE, cache_dir)
    assert torch.equal(repaired.get(source[0]), reference[0])
    assert len(decode_counter) == 3 and repaired.stats["disk_repaired"] == 1
    assert AudioCache(RATE, cache_dir).get(source[0]) is not None and len(decode_counter) == 3  # rewritten


def test_callers_cannot_alter_the_cache(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.full(1600, 0.25, dtype=np.float32), RATE)
    cache = AudioCache(RATE, tmp_path / "cache")
    cache.get(path).mul_(0)  # e.g. an in-place normalisation by a caller, on the freshly decoded clip
    again = cache.get(path)
    assert cache.stats["memory_hits"] == 1 and float(again[0]) == pytest.approx(0.25, abs=1e-4)
    again.mul_(0)  # ... and on a memory hit
    assert float(cache.get(path).min()) == pytest.approx(0.25, abs=1e-4)
    assert all(not held.flags.writeable for held in cache._memory.values())


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_disk_entries_follow_the_umask(tmp_path, umask):
    path = tmp_path / "a.wav"
    sf.write(path, np.full(800, 0.25, dtype=np.float32), RATE)
    previous = os.umask(umask)
    try:
        AudioCache(RATE, tmp_path / "cache").get(path)
    finally:
        os.umask(previous)
    (entry,) = (tmp_path / "cache").glob("*/*.npy")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600: shareable


def test_unreadable_entry_is_kept_and_decoded(tmp_path, monkeypatch, decode_counter):
    path = tmp_path / "a.wav"
    sf.write(path, np.full(800, 0.25, dtype=np.float32), RATE)
    cache_dir = tmp_path / "cache"
    AudioCache(RATE, cache_dir).get(path)
    (entry,) = cache_dir.glob("*/*.npy")
    stored = entry.read_bytes()
    real_load = np.load

    def denied(file, *args, **kwargs):  # what np.load raises on another user's 0o600 entry (tests may run as root)
        if str(file) == str(entry):
            raise PermissionError(13, "Permission denied", str(file))
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", denied)
    other = AudioCache(RATE, cache_dir)
    assert float(other.get(path)[0]) == pytest.approx(0.25, abs=1e-4)
    assert other.stats["disk_unreadable"] == 1 and other.stats["disk_repaired"] == 0 and len(decode_counter) == 2
    assert entry.read_bytes() == stored and len(list(cache_dir.glob("*/*"))) == 1  # neither deleted nor rewritten


def test_stat_errors_keep_their_reason(tmp_path):
    blocker = tmp_path / "file.wav"
    blocker.write_bytes(b"x")
    with pytest.raises(sermodels.audio.AudioError, match="Not a directory"):
        AudioCache(RATE).get(blocker / "inner.wav")  # a file used as a folder: not "no such file"
    with pytest.raises(sermodels.audio.AudioError, match="no such file"):
        AudioCache(RATE).get(tmp_path / "absent.wav")


def test_cache_key_follows_file_changes(tmp_path, decode_counter):
    path = tmp_path / "x.wav"
    sf.write(path, np.full(800, 0.25, dtype=np.float32), RATE)
    cache = AudioCache(RATE, tmp_path / "cache")
    assert float(cache.get(path)[0]) == pytest.approx(0.25, abs=1e-4)
    sf.write(path, np.full(1600, -0.5, dtype=np.float32), RATE)  # replaced: other size and mtime
    changed = cache.get(path)
    assert changed.shape == (1600,) and float(changed[0]) == pytest.approx(-0.5, abs=1e-4)
    assert len(decode_counter) == 2
    assert AudioCache(8000).key(path) != AudioCache(RATE).key(path)


def test_datamodule_epochs_hit_the_cache(roots, decode_counter):
    dm = _dm(roots, batch_size=4, max_duration=1.0)
    loader = dm.train_dataloader()
    first = [b["paths"] for _, b in zip(range(2), loader)]
    decoded = len(decode_counter)
    assert decoded == 8
    dataset = dm.datasets["emodb"]["train"]
    for path in (p for batch in first for p in batch):
        index = next(i for i, it in enumerate(dataset.items) if it.path == path)
        dataset[(index, 7)]
    assert len(decode_counter) == decoded


# ---------------------------------------------------------------------------------------------------------------------
# DDP: two CPU processes in a subprocess (Lightning re-launches the script for rank 1).

DDP_SCRIPT = """
import json, sys
import lightning as L
import torch
from sermodels.data import SERDataModule


class Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(1, 2)
        self.steps = []

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.sampler = type(self.trainer.train_dataloader.batch_sampler.sampler).__name__
        self.steps.append({"corpus": batch["corpus"], "paths": batch["paths"]})
        energy = (batch["waveforms"] ** 2).mean(dim=1, keepdim=True)
        return torch.nn.functional.cross_entropy(self.head(energy), batch["labels"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


out, mode, emodb, emovo = sys.argv[1:5]
dm = SERDataModule(["emodb", "emovo"], roots={"emodb": emodb, "emovo": emovo}, batch_size=4,
                   label_space="arousal", multi_corpus=mode, max_duration=0.5)
probe = Probe()
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_train_batches=6,
                    limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
trainer.fit(probe, datamodule=dm)
with open(f"{out}/rank{trainer.global_rank}.json", "w") as handle:
    json.dump({"sampler": probe.sampler, "steps": probe.steps}, handle)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["concat", "round_robin"])
def test_ddp_two_cpu_processes(mode, roots, tmp_path):
    script = tmp_path / "ddp_probe.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    command = [sys.executable, str(script), str(tmp_path), mode, str(roots["emodb"]), str(roots["emovo"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["sampler"] for r in ranks] == ["DistributedSampler"] * 2  # Lightning injected it
    steps = [r["steps"] for r in ranks]
    assert len(steps[0]) == len(steps[1]) == 6
    seen = [{p for step in rank for p in step["paths"]} for rank in steps]
    assert seen[0].isdisjoint(seen[1])  # disjoint shards
    if mode == "round_robin":
        for number, (a, b) in enumerate(zip(*steps)):
            corpus = ["emodb", "emovo"][number % 2]
            assert set(a["corpus"]) == set(b["corpus"]) == {corpus}  # lockstep, one corpus per step
