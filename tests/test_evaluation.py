"""Evaluation reports on real EMO-DB files: keys and values, label mapping, JSON + PNG output, LOSO aggregation."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from energy_model import EMOTIONS, LogEnergyModel
from matplotlib import image as mpimg

from sermodels import metrics
from sermodels.evaluation import evaluate_items, loso_report, save_report
from sermodels.pipelines.predict import predict_files

EMODB_LETTERS = dict(zip("WLEAFTN", EMOTIONS))
AROUSAL = {"anger": "high", "fear": "high", "happiness": "high", "disgust": "high", "boredom": "low"}
AROUSAL |= {"sadness": "low", "neutral": "low"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    speaker: str


def emodb_items(root: Path, speaker: str, count: int = 7) -> list[Item]:
    files = sorted((root / "wav").glob(f"{speaker}*.flac"))[:count]
    return [Item(path, EMODB_LETTERS[path.stem[5]], speaker) for path in files]


@pytest.fixture
def folds(emodb_root) -> dict[str, list[Item]]:
    return {speaker: emodb_items(emodb_root, speaker) for speaker in ("03", "08")}


def test_report_keys_and_values(folds, tmp_path):
    items = folds["03"] + [Item(tmp_path / "lost.flac", "anger", "03")]
    model = LogEnergyModel()
    report = evaluate_items(model, items, corpus="emodb", split="speaker-03", batch_size=4)
    expected_keys = {
        "model", "head", "labels", "corpus", "split", "n", "n_items", "uar", "war", "macro_f1", "per_class",
        "confusion_matrix", "predictions", "failures", "excluded", "label_map", "versions",
    }  # fmt: skip
    assert set(report) == expected_keys
    assert report["model"] == {"id": "test_log_energy", "arch": "test_log_energy", "config": {"seed": 0}}
    assert (report["head"], report["corpus"], report["split"]) == ("emotion", "emodb", "speaker-03")
    assert report["labels"] == EMOTIONS and report["confusion_matrix"]["labels"] == EMOTIONS
    assert report["n"] == len(folds["03"]) and report["n_items"] == len(items)
    assert report["failures"] == [{"path": str(tmp_path / "lost.flac"), "reason": "no such file"}]
    assert [p["path"] for p in report["predictions"]] == [str(item.path) for item in folds["03"]]
    assert [p["true"] for p in report["predictions"]] == [item.label for item in folds["03"]]
    assert {p["speaker"] for p in report["predictions"]} == {"03"}
    # The predictions are the engine's, and the metrics are recomputed from them.
    engine = predict_files(model, [item.path for item in folds["03"]], progress=False)
    assert [p["predicted"] for p in report["predictions"]] == [row["label"] for row in engine.rows]
    y_true = [EMOTIONS.index(p["true"]) for p in report["predictions"]]
    y_pred = [EMOTIONS.index(p["predicted"]) for p in report["predictions"]]
    assert report["uar"] == pytest.approx(metrics.uar(y_true, y_pred, len(EMOTIONS)))
    assert report["war"] == pytest.approx(metrics.war(y_true, y_pred, len(EMOTIONS)))
    assert np.array(report["confusion_matrix"]["counts"]).sum() == report["n"]
    assert report["per_class"]["anger"]["support"] == sum(item.label == "anger" for item in folds["03"])
    assert report["versions"]["torch"] and report["versions"]["python"] and report["versions"]["libsndfile"]
    json.dumps(report, allow_nan=False)  # strictly valid JSON


def test_unknown_labels_are_listed(folds):
    items = folds["03"] + [Item(folds["08"][0].path, "surprise", "08"), Item(folds["08"][1].path, "calm", "08")]
    with pytest.raises(ValueError, match=r"'calm' \(1 item\), 'surprise' \(1 item\); pass label_map"):
        evaluate_items(LogEnergyModel(), items)


def test_label_map_function_and_dict(folds):
    items = folds["03"]
    report = evaluate_items(LogEnergyModel(), items, head="arousal", label_map=AROUSAL.get)
    assert report["labels"] == ["low", "high"]
    assert [p["true"] for p in report["predictions"]] == [AROUSAL[item.label] for item in items]
    assert report["label_map"].endswith("get")
    # A dict mapping a label to None leaves those items out and counts them.
    partial = dict(AROUSAL, neutral=None)
    report = evaluate_items(LogEnergyModel(), items, head="arousal", label_map=partial)
    neutral = sum(item.label == "neutral" for item in items)
    assert neutral > 0
    assert report["excluded"] == {"neutral": neutral} and report["n"] == len(items) - neutral
    with pytest.raises(
        ValueError, match=r"no entry for these labels: 'anger' \(2 items\), 'happiness' \(2 items\), 'sadness'"
    ):
        evaluate_items(LogEnergyModel(), items, head="arousal", label_map={"neutral": "low"})


def test_all_items_failing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"no item of emodb test could be predicted .*no such file"):
        evaluate_items(LogEnergyModel(), [Item(tmp_path / "x.wav", "anger", "03")], corpus="emodb", split="test")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_save_report_writes_json_and_png(folds, tmp_path):
    report = evaluate_items(LogEnergyModel(), folds["03"], corpus="emodb", split="speaker-03")
    json_path, png_path = tmp_path / "reports" / "emodb.json", tmp_path / "reports" / "emodb.png"
    save_report(report, json_path, png_path)
    assert json.loads(json_path.read_text()) == report
    width, height = _png_size(png_path.read_bytes())
    assert width > 300 and height > 300
    pixels = mpimg.imread(png_path)
    assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05  # decodes, and is not a blank canvas
    assert not [p for p in json_path.parent.iterdir() if p.suffix == ".tmp"]
    # The CLI replaces the model entry by its name; the figure takes either.
    save_report(dict(report, model="emodb_demo"), json_path, png_path)
    assert _png_size(png_path.read_bytes())[0] > 300


def test_loso_report(folds, tmp_path):
    model = LogEnergyModel()
    reports = [evaluate_items(model, items, corpus="emodb", split=f"speaker-{s}") for s, items in folds.items()]
    summary = loso_report(reports)
    uars = [r["uar"] for r in reports]
    assert summary["folds_n"] == 2 and summary["n"] == sum(r["n"] for r in reports)
    assert summary["fold_uar_mean"] == pytest.approx(np.mean(uars))
    assert summary["fold_uar_std"] == pytest.approx(np.std(uars)) and summary["fold_uar_std"] > 0
    assert summary["fold_war_mean"] == pytest.approx(np.mean([r["war"] for r in reports]))
    pooled = [p for r in reports for p in r["predictions"]]
    y_true = [EMOTIONS.index(p["true"]) for p in pooled]
    y_pred = [EMOTIONS.index(p["predicted"]) for p in pooled]
    assert summary["uar"] == pytest.approx(metrics.uar(y_true, y_pred, len(EMOTIONS)))
    assert summary["war"] == pytest.approx(metrics.war(y_true, y_pred, len(EMOTIONS)))
    assert [p["fold"] for p in summary["predictions"]] == [r["split"] for r in reports for _ in r["predictions"]]
    expected_counts = np.add(*[np.array(r["confusion_matrix"]["counts"]) for r in reports])
    assert summary["confusion_matrix"]["counts"] == expected_counts.tolist()
    assert [f["split"] for f in summary["folds"]] == ["speaker-03", "speaker-08"]
    save_report(summary, tmp_path / "loso.json", tmp_path / "loso.png")
    assert _png_size((tmp_path / "loso.png").read_bytes())[0] > 300
    with pytest.raises(ValueError, match="in the test sets of two folds: 'speaker-03' and 'speaker-03b'"):
        loso_report([reports[0], dict(reports[0], split="speaker-03b")])
    with pytest.raises(ValueError, match="has labels"):
        loso_report([reports[0], dict(reports[1], labels=["low", "high"])])
    with pytest.raises(ValueError, match="at least one fold"):
        loso_report([])
