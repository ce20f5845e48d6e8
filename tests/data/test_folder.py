"""The generic corpus: a folder per class, or a CSV/TSV table."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sermodels.data import CorpusError, SERDataModule, load_corpus
from sermodels.data.base import PARTITIONS


def _audio(path: Path, seconds: float = 0.1, ext_format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(16_000 * seconds), 0.1, dtype=np.float32), 16_000, format=ext_format)
    return path


def test_class_folders(tmp_path):
    for label, n in (("anger", 4), ("joy", 3), ("neutral", 5)):
        for i in range(n):
            _audio(tmp_path / label / f"{i:03d}.wav")
    _audio(tmp_path / "joy" / "session2" / "000.flac")  # nested; same stem as joy/000 but a different id
    corpus = load_corpus("folder", tmp_path)
    assert corpus.name == tmp_path.name
    assert len(corpus) == 13 and corpus.classes == ["anger", "joy", "neutral"]
    assert corpus.class_counts() == {"anger": 4, "joy": 4, "neutral": 5}
    assert {"joy/000", "joy/session2/000"} <= {item.id for item in corpus.items}
    assert all(item.speaker is None for item in corpus.items)
    info = corpus.info()
    assert info["speaker_independent"] is False and info["files"] == 13
    parts = corpus.split("fixed")
    assert sorted(it.id for p in PARTITIONS for it in parts[p]) == sorted(it.id for it in corpus.items)


def test_csv_with_speakers_and_split(tmp_path):
    rows = []
    for speaker, part in (("s1", "train"), ("s2", "train"), ("s3", "dev"), ("s4", "test")):
        for label in ("happy", "sad"):
            path = _audio(tmp_path / "audio" / f"{speaker}_{label}.wav")
            rows.append({"path": str(path.relative_to(tmp_path)), "label": label, "speaker": speaker, "split": part})
    table = tmp_path / "data.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "speaker", "split", "note"])
        writer.writeheader()
        writer.writerows({**row, "note": "ignored"} for row in rows)
    corpus = load_corpus("folder", table, name="mine")
    assert corpus.name == "mine" and len(corpus) == 8
    assert corpus.items[0].path == str(tmp_path / "audio" / "s1_happy.wav")  # resolved against the CSV folder
    parts = corpus.split("fixed")
    assert {p: sorted({it.speaker for it in items}) for p, items in parts.items()} == {
        "train": ["s1", "s2"],
        "dev": ["s3"],
        "test": ["s4"],
    }
    assert corpus.info()["speaker_independent"] is True


def test_tsv_without_split_gets_a_speaker_disjoint_protocol(tmp_path):
    lines = ["path\tlabel\tspeaker"]
    for s in range(10):
        for label in ("a", "b"):
            _audio(tmp_path / f"{s}{label}.wav")
            lines.append(f"{s}{label}.wav\t{label}\tspk{s}")
    (tmp_path / "list.tsv").write_text("\n".join(lines) + "\n")
    corpus = load_corpus("folder", tmp_path / "list.tsv")
    assert corpus.split_names() == {"fixed": 0, "cv5": 5}
    parts = corpus.split("fixed")
    speakers = [{it.speaker for it in parts[p]} for p in PARTITIONS]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert sum(len(parts[p]) for p in PARTITIONS) == 20
    assert [len(parts[p]) for p in PARTITIONS] == [14, 2, 4]
    assert sorted(it.id for _, test in corpus.folds("cv5") for it in test) == sorted(it.id for it in corpus.items)


def test_table_errors_list_rows(tmp_path):
    _audio(tmp_path / "ok.wav")
    (tmp_path / "bad.csv").write_text(
        "path,label,split\nok.wav,anger,train\nmissing.wav,anger,train\nok.wav,,test\nok.wav,joy,validation\n"
    )
    with pytest.raises(CorpusError) as err:
        load_corpus("folder", tmp_path / "bad.csv")
    assert err.value.offenders == [
        "bad.csv line 3: missing file missing.wav",
        "bad.csv line 4: empty label",
        "bad.csv line 5: split 'validation' is not one of train, dev, test",
    ]
    (tmp_path / "dup.csv").write_text("path,label\nok.wav,anger\nok.wav,joy\n")
    with pytest.raises(CorpusError, match="ok: duplicate id"):
        load_corpus("folder", tmp_path / "dup.csv")
    (tmp_path / "cols.csv").write_text("file,emotion\nok.wav,anger\n")
    with pytest.raises(CorpusError, match=r"lacks the column\(s\) \['path', 'label'\]"):
        load_corpus("folder", tmp_path / "cols.csv")


def test_folder_errors_list_offenders(tmp_path):
    _audio(tmp_path / "anger" / "a.wav")
    _audio(tmp_path / "anger" / "a.flac")  # same id
    (tmp_path / "joy").mkdir()  # empty class
    _audio(tmp_path / "stray.wav")
    with pytest.raises(CorpusError) as err:
        load_corpus("folder", tmp_path)
    assert err.value.offenders == ["stray.wav: audio outside a class folder", "joy: empty folder: no audio files"]
    (tmp_path / "stray.wav").unlink()
    (tmp_path / "joy").rmdir()
    with pytest.raises(CorpusError, match=r"anger/a: duplicate id \(2 entries"):
        load_corpus("folder", tmp_path)
    with pytest.raises(CorpusError, match="no class folders"):
        load_corpus("folder", tmp_path / "anger")


def test_csv_over_real_files_feeds_the_datamodule(emodb_root, tmp_path):
    wavs = sorted((emodb_root / "wav").iterdir())[::22]
    lines = ["path,label,speaker"] + [f"{p},{p.stem[5]},{p.stem[:2]}" for p in wavs]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    dm = SERDataModule(["folder:mine"], roots={"folder:mine": str(tmp_path / "mine.csv")}, batch_size=4)
    dm.setup()
    assert dm.corpus_names == ["mine"]
    assert dm.label_names == {"mine": sorted({p.stem[5] for p in wavs})}
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveforms"].shape[0] == 4 and batch["corpus"] == ["mine"] * 4


def _check_stratified(parts, labels, fractions):
    """Every class (and the whole set) is within one file of its share in every partition."""
    counts = {label: sum(1 for value in labels.values() if value == label) for label in set(labels.values())}
    for name, members in parts.items():
        for label, n in counts.items():
            held = sum(1 for member in members if labels[member] == label)
            assert abs(held - fractions[name] * n) < 1, (name, label, held, n)
        assert abs(len(members) - fractions[name] * len(labels)) <= 1, (name, len(members))


def test_large_folder_without_speakers_splits_fast_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"anger": 211, "joy": 157, "neutral": 139, "sadness": 93}  # 600 files, every one its own group
    for label, n in sizes.items():
        for i in range(n):
            path = tmp_path / "corpus" / label / f"{i:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rng.uniform(-0.1, 0.1, 160).astype(np.float32), 16_000)
    corpus = load_corpus("folder", tmp_path / "corpus")
    assert len(corpus) == 600
    labels = {item.id: item.label for item in corpus.items}
    start = time.perf_counter()
    fixed = corpus.split("fixed")
    folds = [corpus.split("cv5", k) for k in range(5)]
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"splitting 600 files took {elapsed:.1f} s"
    ids = {part: [item.id for item in items] for part, items in fixed.items()}
    assert sorted(i for part in PARTITIONS for i in ids[part]) == sorted(labels)  # complete, each file once
    _check_stratified(ids, labels, {"train": 0.7, "dev": 0.1, "test": 0.2})
    assert [len(ids[p]) for p in PARTITIONS] == [420, 60, 120]
    tested = [item.id for fold in folds for item in fold["test"]]
    assert sorted(tested) == sorted(labels)  # every file tested exactly once
    _check_stratified(
        {f"fold{k}": [it.id for it in f["test"]] for k, f in enumerate(folds)},
        labels,
        {f"fold{k}": 0.2 for k in range(5)},
    )
    for fold in folds:
        members = [{it.id for it in fold[part]} for part in PARTITIONS]
        assert sum(map(len, members)) == 600 and not (members[0] & members[1] or members[0] & members[2])
        assert not members[1] & members[2] and abs(len(members[1]) - 60) <= 1
    again = load_corpus("folder", tmp_path / "corpus")  # deterministic: a fresh load gives the same protocol
    assert again.protocol.to_json() == corpus.protocol.to_json()


def test_protocol_is_computed_once_per_corpus(tmp_path, monkeypatch):
    import sermodels.data.folder as folder

    for label in ("a", "b"):
        for i in range(5):
            _audio(tmp_path / label / f"{i}.wav", seconds=0.01)
    calls = []
    real = folder._computed_protocol
    monkeypatch.setattr(folder, "_computed_protocol", lambda *args: calls.append(1) or real(*args))
    corpus = load_corpus("folder", tmp_path)
    corpus.split("fixed"), corpus.split("cv5", 1), corpus.folds("cv5"), corpus.info(), corpus.split_names()
    assert len(calls) == 1 and corpus.protocol is corpus.protocol


# ---------------------------------------------------------------------------------------------- numeric targets


def _trace(path: Path, rows: list[tuple[float, ...]], header: str = "time,arousal,valence") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def test_csv_dimensions_and_traces_without_labels(tmp_path):
    for name in ("a", "b", "c"):
        _audio(tmp_path / f"{name}.wav", seconds=0.1)
        _trace(tmp_path / "traces" / f"{name}.csv", [(0.0, 0.1, -0.2), (0.05, 0.3, -0.4)])
    (tmp_path / "av.csv").write_text(
        "path,arousal,valence,trace,speaker,note\n"
        "a.wav,0.5,-0.25,traces/a.csv,s1,x\nb.wav,-1,1e-1,traces/b.csv,s2,y\nc.wav,0,0,traces/c.csv,s3,z\n"
    )
    corpus = load_corpus("folder", tmp_path / "av.csv")
    assert [item.values for item in corpus.items] == [
        {"arousal": 0.5, "valence": -0.25},
        {"arousal": -1.0, "valence": 0.1},
        {"arousal": 0.0, "valence": 0.0},
    ]
    assert all(item.label is None for item in corpus.items) and corpus.classes == []
    assert corpus.dimensions == ["arousal", "valence"] and corpus.trace_dimensions == ["arousal", "valence"]
    trace = corpus.items[0].trace
    assert trace.path == str(tmp_path / "traces" / "a.csv")
    assert np.allclose(trace.frames(20.0), [[0.1, -0.2], [0.3, -0.4]])
    info = corpus.info()
    assert info["dimensions"] == ["arousal", "valence"] and info["trace_dimensions"] == ["arousal", "valence"]
    assert "dimensions" not in load_corpus("folder", _labelled_table(tmp_path)).info()
    # Explicit dimension columns: any numeric column, and every named one must be present.
    (tmp_path / "dom.csv").write_text("path,label,dominance_rating\na.wav,x,2.5\nb.wav,y,-1\n")
    custom = load_corpus("folder", tmp_path / "dom.csv", dimensions=["dominance_rating"])
    assert [item.values for item in custom.items] == [{"dominance_rating": 2.5}, {"dominance_rating": -1.0}]
    assert all(item.values is None for item in load_corpus("folder", tmp_path / "dom.csv").items)
    with pytest.raises(CorpusError, match=r"dimensions \['arousal'\] must be distinct numeric columns"):
        load_corpus("folder", tmp_path / "dom.csv", dimensions=["arousal"])


def _labelled_table(tmp_path: Path) -> Path:
    _audio(tmp_path / "plain.wav")
    (tmp_path / "plain.csv").write_text("path,label\nplain.wav,joy\n")
    return tmp_path / "plain.csv"


def test_numeric_target_errors_name_row_and_problem(tmp_path):
    for name in ("a", "b"):
        _audio(tmp_path / f"{name}.wav")
    _trace(tmp_path / "good.csv", [(0.0, 0.1, 0.2), (0.04, 0.1, 0.2)])
    _trace(tmp_path / "unsorted.csv", [(0.0, 0.1, 0.2), (0.08, 0.1, 0.2), (0.04, 0.1, 0.2)])
    _trace(tmp_path / "words.csv", [(0.0, "calm", 0.2), (0.04, 0.1, 0.2)])
    _trace(tmp_path / "other.csv", [(0.0, 0.1), (0.04, 0.1)], header="time,dominance")
    (tmp_path / "bad.csv").write_text(
        "path,arousal,valence,trace\n"
        "a.wav,high,0.1,good.csv\n"
        "a.wav,nan,0.1,good.csv\n"
        "b.wav,0.2,inf,good.csv\n"
        "b.wav,0.2,0.1,absent.csv\n"
        "b.wav,0.2,0.1,unsorted.csv\n"
        "b.wav,0.2,0.1,words.csv\n"
        "b.wav,0.2,0.1,other.csv\n"
        "b.wav,,0.1,good.csv\n"
    )
    with pytest.raises(CorpusError) as err:
        load_corpus("folder", tmp_path / "bad.csv")
    assert err.value.offenders == [
        "bad.csv line 2: arousal 'high' is not a number",
        "bad.csv line 3: arousal is nan (dimension values must be finite numbers)",
        "bad.csv line 4: valence is inf (dimension values must be finite numbers)",
        "bad.csv line 5: missing trace file absent.csv",
        "bad.csv line 6: trace unsorted.csv line 4: time 0.04 does not come after 0.08 (times must increase)",
        "bad.csv line 7: trace words.csv line 2: arousal 'calm' is not a number",
        "bad.csv line 8: trace other.csv has the columns ['dominance'], the first trace (good.csv) "
        "['arousal', 'valence']",
        "bad.csv line 9: empty arousal",
    ]
    (tmp_path / "none.csv").write_text("path,speaker\na.wav,s1\n")
    with pytest.raises(CorpusError, match=r"lacks the column\(s\) \['label'\].*numeric dimension columns"):
        load_corpus("folder", tmp_path / "none.csv")
