"""``sermodels wda`` end to end: EMO-DB as the source, the speech segments of a daylong output as the unlabelled
target, a few labelled segments from ``annotate import`` choosing the semi-supervised epoch; the release runs on
audio through ``sermodels daylong``. Short schedules: the command, not the accuracy, is under test here."""

from __future__ import annotations

import json

import pytest
from conftest import corpus_root

import sermodels
from sermodels.cli import main
from sermodels.data.longform import LongformConfig, build_longform, test_speaker_items
from sermodels.pipelines import annotate
from sermodels.pipelines.daylong import DaylongSettings
from sermodels.pipelines.daylong_runner import run_daylong

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wda_cli")
    items = test_speaker_items({"emovo": corpus_root("emovo")})
    config = LongformConfig(duration=120.0, gap=(0.4, 3.0), backgrounds=("silence", "pink"), seed=2)
    placed = build_longform(items, folder / "ward.flac", config)
    settings = DaylongSettings(vad="energy", block_seconds=60.0, annotations=())
    run_daylong(sermodels.load("logmel_svm.emodb"), [folder / "ward.flac"], folder / "day", settings=settings,
                progress=False)  # fmt: skip
    selection = annotate.select([folder / "day"], folder / "sel", budget=8, seed=0)
    table = folder / "sel" / annotate.SELECTION_FILE
    rows = table.read_text().splitlines()
    labelled = [rows[0]]
    for line, row in zip(rows[1:], selection):
        best = max(placed, key=lambda p: min(row["end"], p.end) - max(row["start"], p.start))
        labelled.append(line[: line.rfind(",")] + "," + best.arousal)
    table.write_text("\n".join(labelled) + "\n")
    annotate.import_labels(folder / "sel", folder / "corpus")
    return folder


def test_semi_supervised_adaptation_to_daylong_segments(loop, tmp_path):
    out = tmp_path / "adapted"
    args = ["wda", "--source", f"emodb={corpus_root('emodb')}", "--target-daylong", str(loop / "day")]
    args += ["--labelled", str(loop / "corpus" / "labels.csv"), "--variant", "semi-supervised"]
    args += ["--source-epochs", "3", "--adapt-epochs", "3", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert main(args) == 0
    model = sermodels.load(str(out))
    assert model.heads == {"arousal": ["low", "high"], "valence": ["non-positive", "positive"]}
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["variant"] == "semi-supervised"
    assert config["training"]["target"]["segments"] > 10
    log = json.loads((out / "training_log.json").read_text())
    by_space = {entry["space"]: entry for entry in log["history"]}
    assert by_space["arousal"]["best_target_epoch"] is not None  # arousal labels chose an epoch
    assert by_space["binary_valence"]["best_target_epoch"] is None  # no valence labels: unsupervised weights
    assert (out / "README.md").is_file()
    settings = DaylongSettings(vad="energy", block_seconds=60.0, annotations=())
    [result] = run_daylong(model, [loop / "ward.flac"], tmp_path / "scored", settings=settings, progress=False)
    assert result.ok and result.summary["segments"] > 10


def test_semi_supervised_without_labels_is_refused(loop, tmp_path):
    args = ["wda", "--source", f"emodb={corpus_root('emodb')}", "--target-daylong", str(loop / "day")]
    args += ["--variant", "semi-supervised", "--out", str(tmp_path / "x")]
    assert main(args) == 2


def test_bad_source_argument_is_refused(tmp_path):
    args = ["wda", "--source", "emodb", "--target", "urdu=/nowhere", "--out", str(tmp_path / "x")]
    assert main(args) == 2
