"""Corpus loaders on the real corpora, on a .wav copy in the official layout, and on broken layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from sermodels.audio import load_audio
from sermodels.data import CorpusError, describe_corpora, list_corpora, load_corpus
from sermodels.data.base import MAX_LISTED

EXPECTED = {
    "emodb": {
        "files": 535,
        "speakers": 10,
        "sexes": {"f": 5, "m": 5},
        "counts": {
            "anger": 127,
            "boredom": 81,
            "disgust": 46,
            "fear": 69,
            "happiness": 71,
            "sadness": 62,
            "neutral": 79,
        },
    },
    "ravdess": {
        "files": 1440,
        "speakers": 24,
        "sexes": {"f": 12, "m": 12},
        "counts": {
            "neutral": 96,
            **dict.fromkeys(["calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"], 192),
        },
    },
    "emovo": {
        "files": 588,
        "speakers": 6,
        "sexes": {"f": 3, "m": 3},
        "counts": dict.fromkeys(["disgust", "joy", "neutral", "fear", "anger", "surprise", "sadness"], 84),
    },
    "urdu": {
        "files": 400,
        "speakers": 29,
        "sexes": {"f": 11, "m": 18},
        "counts": dict.fromkeys(["angry", "happy", "neutral", "sad"], 100),
    },
}


@pytest.fixture
def roots(emodb_root, ravdess_root, emovo_root, urdu_root):
    return {"emodb": emodb_root, "ravdess": ravdess_root, "emovo": emovo_root, "urdu": urdu_root}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_classes_speakers(name, roots):
    corpus = load_corpus(name, roots[name])
    expected = EXPECTED[name]
    assert len(corpus) == expected["files"]
    assert len(corpus.speakers) == expected["speakers"]
    assert corpus.class_counts() == expected["counts"]
    assert corpus.classes == list(expected["counts"])
    sexes = Counter({item.speaker: item.sex for item in corpus.items}.values())
    assert sexes == expected["sexes"]
    assert len({item.id for item in corpus.items}) == len(corpus)
    assert all(item.corpus == name and Path(item.path).is_file() for item in corpus.items)
    assert all(Path(item.path).stem == item.id for item in corpus.items)
    if name == "urdu":
        assert all(item.text is None for item in corpus.items)
    else:
        assert all(item.text for item in corpus.items)


def test_per_speaker_counts(roots):
    ravdess = Counter(item.speaker for item in load_corpus("ravdess", roots["ravdess"]).items)
    assert set(ravdess.values()) == {60}
    emovo = Counter(item.speaker for item in load_corpus("emovo", roots["emovo"]).items)
    assert emovo == dict.fromkeys(["f1", "f2", "f3", "m1", "m2", "m3"], 98)


@pytest.mark.parametrize(
    ("name", "item_id", "fields"),
    [
        ("emodb", "03a01Fa", {"label": "happiness", "speaker": "03", "sex": "m", "text": "a01"}),
        ("emodb", "16b10Lb", {"label": "boredom", "speaker": "16", "sex": "f", "text": "b10"}),
        ("ravdess", "03-01-06-01-02-01-12", {"label": "fearful", "speaker": "12", "sex": "f", "text": "02"}),
        ("ravdess", "03-01-02-02-01-02-01", {"label": "calm", "speaker": "01", "sex": "m", "text": "01"}),
        ("emovo", "dis-f1-b1", {"label": "disgust", "speaker": "f1", "sex": "f", "text": "b1"}),
        ("emovo", "gio-m3-n5", {"label": "joy", "speaker": "m3", "sex": "m", "text": "n5"}),
        ("urdu", "SM1_F10_A010", {"label": "angry", "speaker": "SM1", "sex": "m", "text": None}),
    ],
)
def test_names_are_parsed(name, item_id, fields, roots):
    item = {it.id: it for it in load_corpus(name, roots[name]).items}[item_id]
    assert {key: getattr(item, key) for key in fields} == fields


def test_emodb_root_may_be_the_wav_folder(emodb_root):
    assert len(load_corpus("emodb", emodb_root / "wav")) == 535


def test_emodb_letters(emodb_root):
    letters = {item.id[5]: item.label for item in load_corpus("emodb", emodb_root).items}
    assert letters == {
        "W": "anger",
        "L": "boredom",
        "E": "disgust",
        "A": "fear",
        "F": "happiness",
        "T": "sadness",
        "N": "neutral",
    }


def test_info_and_listing(emodb_root):
    info = load_corpus("emodb", emodb_root).info()
    assert info["name"] == "emodb" and info["language"] == "German"
    assert "Burkhardt" in info["citation"] and info["licence"] and info["url"].startswith("http")
    assert info["files"] == 535 and info["speakers"] == 10
    assert info["class_counts"]["anger"] == 127
    assert info["splits"] == {"fixed": 0, "loso": 10}
    assert info["protocol_version"] == 1
    listed = list_corpora()
    assert set(listed) == {"emodb", "ravdess", "emovo", "urdu", "folder"}
    assert all(isinstance(text, str) and text for text in listed.values())
    described = {d["name"]: d for d in describe_corpora()}
    assert described["ravdess"]["licence"] == "CC BY-NC-SA 4.0"
    assert described["urdu"]["speakers"] == 29 and described["emovo"]["files"] == 588


def test_unknown_corpus_name():
    with pytest.raises(ValueError, match="unknown corpus 'iemocap'"):
        load_corpus("iemocap", ".")


# ---------------------------------------------------------------------------------------------------------------------
# The official download layout: .wav at 48 kHz stereo (a few EMOVO files converted in tmp_path).


def test_wav_layout_48k_stereo(emovo_root, tmp_path):
    chosen = ["dis-f1-b1", "gio-f1-n2", "neu-m2-l1", "tri-m2-d2"]
    for stem in chosen:
        speaker = stem.split("-")[1]
        mono, rate = sf.read(emovo_root / speaker / f"{stem}.flac", dtype="float32")
        up = soxr.resample(mono, rate, 48_000)
        stereo = np.stack([up, 0.5 * up], axis=1)
        (tmp_path / speaker).mkdir(exist_ok=True)
        sf.write(tmp_path / speaker / f"{stem}.wav", stereo, 48_000, subtype="PCM_16")
    (tmp_path / "documents").mkdir()  # the official zip's other folder is ignored
    (tmp_path / "documents" / "readme.txt").write_text("not audio")

    corpus = load_corpus("emovo", tmp_path, strict=False)
    assert sorted(item.id for item in corpus.items) == sorted(chosen)
    assert all(item.path.endswith(".wav") for item in corpus.items)
    assert {item.id: item.label for item in corpus.items}["tri-m2-d2"] == "sadness"
    parts = corpus.split("fixed")
    assert {it.id for it in parts["train"]} == {"dis-f1-b1", "gio-f1-n2"} and parts["test"] == []

    item = {it.id: it for it in corpus.items}["dis-f1-b1"]
    decoded = load_audio(item.path, 16_000).numpy()
    reference = load_audio(emovo_root / "f1" / "dis-f1-b1.flac", 16_000).numpy()
    assert abs(len(decoded) - len(reference)) <= 2
    n = min(len(decoded), len(reference))
    expected = 0.75 * reference[:n]  # the stereo mean of (x, x/2)
    assert np.corrcoef(decoded[:n], expected)[0, 1] > 0.99

    with pytest.raises(CorpusError) as err:  # strict: the partial copy is reported, with its missing files
        load_corpus("emovo", tmp_path)
    assert err.value.offenders == [f"{s}: missing speaker folder" for s in ("f2", "f3", "m1", "m3")]
    for speaker in ("f2", "f3", "m1", "m3"):
        _touch_audio(tmp_path / speaker / f"neu-{speaker}-b1.wav")
    with pytest.raises(CorpusError) as err:
        load_corpus("emovo", tmp_path)
    missing = [entry for entry in err.value.offenders if entry.endswith(": missing file")]
    assert len(missing) == 588 - 8 and "dis-f1-b2: missing file" in missing
    assert f"... and {len(err.value.offenders) - MAX_LISTED} more" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------------
# Broken layouts: every error lists its offenders.


def _touch_audio(path: Path, seconds: float = 0.05) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16_000 * seconds), dtype=np.float32), 16_000)
    return path


def test_emodb_unknown_codes_are_listed(tmp_path):
    _touch_audio(tmp_path / "wav" / "03a01Fa.wav")
    _touch_audio(tmp_path / "wav" / "03a01Xa.wav")  # unknown emotion letter
    _touch_audio(tmp_path / "wav" / "99a01Wa.wav")  # unknown speaker
    _touch_audio(tmp_path / "wav" / "hello.wav")  # not an EMO-DB name
    with pytest.raises(CorpusError) as err:
        load_corpus("emodb", tmp_path, strict=False)
    text = str(err.value)
    assert "3 problems" in text
    assert "wav/03a01Xa.wav: unknown emotion code 'X'" in text
    assert "wav/99a01Wa.wav: unknown speaker code '99'" in text
    assert "wav/hello.wav: name does not follow" in text
    assert isinstance(err.value, ValueError)


def test_duplicate_ids_are_listed(tmp_path):
    _touch_audio(tmp_path / "wav" / "03a01Fa.wav")
    _touch_audio(tmp_path / "wav" / "03a01Fa.flac")
    _touch_audio(tmp_path / "wav" / "08a02Wb.wav")
    with pytest.raises(CorpusError, match=r"03a01Fa: duplicate id \(the same stem in 2 files"):
        load_corpus("emodb", tmp_path, strict=False)


def test_missing_and_empty_folders_are_listed(tmp_path):
    _touch_audio(tmp_path / "Actor_01" / "03-01-05-02-01-01-01.wav")
    (tmp_path / "Actor_02").mkdir()  # empty
    with pytest.raises(CorpusError) as err:
        load_corpus("ravdess", tmp_path)
    offenders = err.value.offenders
    assert "Actor_02: empty folder: no audio files" in offenders
    assert [f"Actor_{i:02d}: missing actor folder" for i in range(3, 25)] == offenders[:22]
    assert len(offenders) == 1 + 22
    assert str(err.value).endswith("... and 3 more")  # the message lists 20, then counts

    urdu_root = tmp_path / "urdu"
    _touch_audio(urdu_root / "Angry" / "SM1_F10_A010.wav")
    (urdu_root / "Sad").mkdir()
    with pytest.raises(CorpusError) as err:
        load_corpus("urdu", urdu_root)
    text = str(err.value)
    assert "Happy: missing emotion folder" in text and "Neutral: missing emotion folder" in text
    assert "Sad: empty folder" in text


def test_ravdess_field_checks(tmp_path):
    _touch_audio(tmp_path / "Actor_01" / "03-02-05-02-01-01-01.wav")  # song channel
    _touch_audio(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav")  # emotion 09
    _touch_audio(tmp_path / "Actor_01" / "03-01-01-02-01-01-01.wav")  # strong neutral does not exist
    _touch_audio(tmp_path / "Actor_01" / "03-01-05-02-01-01-02.wav")  # actor 02 in Actor_01
    with pytest.raises(CorpusError) as err:
        load_corpus("ravdess", tmp_path, strict=False)
    text = str(err.value)
    assert "vocal channel 02 is not speech" in text
    assert "unknown emotion code '09'" in text
    assert "invalid intensity code '01'" not in text and "invalid intensity code '02'" in text
    assert "actor 02 in the name but the file is in Actor_01" in text


def test_ravdess_unpadded_actor_folder_is_accepted(tmp_path):
    _touch_audio(tmp_path / "Actor_7" / "03-01-05-02-01-01-07.wav")  # Actor_7 holds actor 07
    _touch_audio(tmp_path / "Actor_12" / "03-01-03-01-02-02-12.wav")
    corpus = load_corpus("ravdess", tmp_path, strict=False)
    assert sorted(item.speaker for item in corpus.items) == ["07", "12"]
    _touch_audio(tmp_path / "Actor_7" / "03-01-05-02-01-02-08.wav")  # the number still has to agree
    with pytest.raises(CorpusError, match="actor 08 in the name but the file is in Actor_7"):
        load_corpus("ravdess", tmp_path, strict=False)


def test_urdu_folder_and_name_must_agree(tmp_path):
    for folder in ("Angry", "Happy", "Neutral", "Sad"):
        _touch_audio(tmp_path / folder / f"SF1_F01_{folder[0]}001.wav")
    _touch_audio(tmp_path / "Sad" / "SM2_F03_H002.wav")
    _touch_audio(tmp_path / "Sad" / "SM9_F03_S002.wav")  # no speaker SM9
    with pytest.raises(CorpusError) as err:
        load_corpus("urdu", tmp_path, strict=False)
    text = str(err.value)
    assert "Sad/SM2_F03_H002.wav: emotion initial 'H' does not match folder Sad" in text
    assert "Sad/SM9_F03_S002.wav: unknown speaker id 'SM9'" in text


def test_missing_root():
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus("emovo", "/nonexistent/EMOVO")


def test_hidden_and_non_audio_files_are_ignored(tmp_path):
    _touch_audio(tmp_path / "f1" / "dis-f1-b1.wav")
    (tmp_path / "f1" / "._dis-f1-b1.wav").write_bytes(b"macOS resource fork")
    (tmp_path / "f1" / "notes.txt").write_text("x")
    corpus = load_corpus("emovo", tmp_path, strict=False)
    assert [item.id for item in corpus.items] == ["dis-f1-b1"]
