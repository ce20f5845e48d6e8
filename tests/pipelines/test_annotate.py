"""The annotation loop: daylong segments -> medoid selection -> labelled TextGrid -> corpus table -> fine-tuning.

The "annotator" labels each selected segment with the arousal of the utterance it overlaps in the synthetic
recording's manifest (real EMO-DB test-speaker speech), as a human would from listening.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import corpus_root

import sermodels
from sermodels.checkpoint import save_pretrained
from sermodels.cli import main
from sermodels.data import load_corpus
from sermodels.data.longform import LongformConfig, build_longform, test_speaker_items
from sermodels.models.emonet import EmoNet
from sermodels.pipelines import annotate
from sermodels.pipelines.annotations import Interval, read_annotations, write_textgrid
from sermodels.pipelines.daylong import DaylongSettings
from sermodels.pipelines.daylong_runner import run_daylong

pytestmark = pytest.mark.usefixtures("one_thread")
FAST_AE = {"max_epochs": 30}


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def daylong_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotate")
    items = test_speaker_items({"emodb": corpus_root("emodb")})
    rows = build_longform(
        items,
        folder / "day.flac",
        LongformConfig(duration=150.0, gap=(0.4, 3.0), backgrounds=("silence", "pink"), seed=5),
    )
    settings = DaylongSettings(vad="energy", block_seconds=60.0, annotations=())
    run_daylong(sermodels.load("logmel_svm.emodb"), [folder / "day.flac"], folder / "out", settings=settings,
                progress=False)  # fmt: skip
    return folder / "out", rows


@pytest.fixture(scope="module")
def selection(daylong_out, tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("sel")
    rows = annotate.select([daylong_out[0]], out, budget=6, seed=0)
    return out, rows


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Shorter autoencoder training for the whole module (the selection logic, not the AE, is under test)."""
    from sermodels import active

    mp = pytest.MonkeyPatch()
    original = active.select_medoids
    mp.setattr(active, "select_medoids", lambda features, **kw: original(features, **(FAST_AE | kw)))
    yield mp
    mp.undo()


def test_selection_is_ranked_by_cluster_size_and_repeatable(selection, daylong_out, tmp_path):
    out, rows = selection
    assert len(rows) == 6
    sizes = [r["cluster_size"] for r in rows]
    assert sizes == sorted(sizes, reverse=True)
    segments = _table(daylong_out[0] / "day" / "segments.csv")
    assignments = _table(out / annotate.ASSIGNMENTS_FILE)
    assert len(assignments) == len(segments)
    assert sum(int(r["cluster_size"]) for r in rows) <= len(segments)
    again = annotate.select([daylong_out[0]], tmp_path, budget=6, seed=0)
    assert again == rows, "the same seed selects the same segments in the same order"
    grid = read_annotations(out / "day.TextGrid")
    assert [i.text for i in grid["label"]] == ["?"] * 6
    assert sorted(int(i.text) for i in grid["rank"]) == list(range(1, 7))


def _label_like_an_annotator(selection_dir: Path, placed) -> Path:
    """Replace the '?' of the selection's TextGrid by the arousal of the overlapping utterance."""
    grid = read_annotations(selection_dir / "day.TextGrid")
    labelled = []
    for interval in grid["label"]:
        overlap, best = max(((min(interval.end, p.end) - max(interval.start, p.start), p) for p in placed),
                            key=lambda o: o[0])  # fmt: skip
        labelled.append(Interval(interval.start, interval.end, best.arousal if overlap > 0 else "?"))
    path = selection_dir / "labelled" / "day.TextGrid"
    path.parent.mkdir(exist_ok=True)
    write_textgrid(path, {"label": labelled}, max(i.end for i in labelled) + 1.0)
    return path


def test_import_reads_the_labels_back_as_a_corpus(selection, daylong_out, tmp_path):
    out, rows = selection
    labelled = _label_like_an_annotator(out, daylong_out[1])
    corpus_rows = annotate.import_labels(out, tmp_path / "corpus", [labelled])
    assert 0 < len(corpus_rows) <= 6
    assert {r["source"] for r in corpus_rows} == {"medoid"}
    assert {r["label"] for r in corpus_rows} <= {"high", "low"}
    corpus = load_corpus("folder", tmp_path / "corpus" / "labels.csv")
    assert len(corpus.items) == len(corpus_rows)
    first = corpus_rows[0]
    clip = sermodels.audio.load_audio(tmp_path / "corpus" / first["path"])
    assert len(clip) == pytest.approx((first["end"] - first["start"]) * 16000, abs=1)
    propagated = annotate.import_labels(out, tmp_path / "corpus2", [labelled], propagate=True)
    assert len(propagated) > len(corpus_rows)
    assert {r["source"] for r in propagated} == {"medoid", "cluster"}


def test_import_without_labels_is_a_clear_error(selection, tmp_path):
    with pytest.raises(ValueError, match="no labels found"):
        annotate.import_labels(selection[0], tmp_path / "c")


def test_the_loop_fine_tunes_a_model_on_the_imported_labels(selection, daylong_out, tmp_path):
    out, _ = selection
    labelled = _label_like_an_annotator(out, daylong_out[1])
    code = main(["annotate", "import", str(out), str(labelled), "--out", str(tmp_path / "corpus"), "--propagate"])
    assert code == 0
    torch.manual_seed(0)
    small = {"stem": 4, "widths": (8, 8, 8), "attention_units": 8, "hidden": 8}
    base = save_pretrained(EmoNet({"emodb": ["anger", "sadness"]}, **small), tmp_path / "base", extra={"id": "tiny"})
    fast = ["--max-duration", "1", "--epochs", "1", "--batch-size", "4", "--no-progress", "--accelerator", "cpu"]
    table = tmp_path / "corpus" / "labels.csv"
    args = ["finetune", "--from", str(base), "--data", str(table), "--out", str(tmp_path / "tuned"), "--name", "nicu"]
    assert main(args + fast) == 0
    tuned = sermodels.load(str(tmp_path / "tuned"))
    assert set(tuned.label_names("nicu")) == {r["label"] for r in _table(table)}


def test_recording_names_with_dots_are_matched(daylong_out, tmp_path, monkeypatch_module):
    """A recording folder named 2021.05.03 gets 2021.05.03.TextGrid; importing it finds that recording."""
    import shutil

    source = daylong_out[0] / "day"
    dotted = tmp_path / "run" / "2021.05.03"
    shutil.copytree(source, dotted, ignore=shutil.ignore_patterns(".work"))
    rows = annotate.select([tmp_path / "run"], tmp_path / "sel", budget=3, seed=0)
    grid = read_annotations(tmp_path / "sel" / "2021.05.03.TextGrid")
    labelled = [Interval(i.start, i.end, "low") for i in grid["label"]]
    write_textgrid(tmp_path / "2021.05.03.TextGrid", {"label": labelled}, max(i.end for i in labelled) + 1)
    imported = annotate.import_labels(tmp_path / "sel", tmp_path / "corpus", [tmp_path / "2021.05.03.TextGrid"])
    assert len(imported) == len(rows) == 3
