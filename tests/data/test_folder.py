"""The generic corpus: a folder per class, or a CSV/TSV table."""

from __future__ import annotations

import csv
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
