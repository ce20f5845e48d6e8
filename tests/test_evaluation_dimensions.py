"""Evaluation of dimensions heads on real EMO-DB files: utterance level (av_values, rated values) and frame level
(traces in CSV timelines of the generic corpus), their metrics, alignment, figures and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import toy_models  # noqa: F401  (registers toy_frame and toy_utterance)
from matplotlib import image as mpimg

import sermodels
from sermodels import labels, metrics, outputs
from sermodels.audio import load_audio
from sermodels.data import load_corpus
from sermodels.evaluation import evaluate_items, headline, loso_report, save_report
from sermodels.pipelines.predict import run_predictions

NAMES = ["arousal", "valence"]


def toy(arch: str, seed: int = 0) -> sermodels.SERModel:
    torch.manual_seed(seed)
    return sermodels.create_model(arch).eval()


def emodb_test_items(root: Path, count: int = 14) -> list:
    """A few items of EMO-DB's fixed test split (speakers 03 and 08), both sexes and several emotions."""
    items = load_corpus("emodb", root).split("fixed")["test"]
    return items[:: max(1, len(items) // count)][:count]


def model_frames(model, path: Path) -> torch.Tensor:
    """The frame-level toy's valid frames for a file, computed outside the engine: ``(frames, 2)``."""
    waveform = load_audio(path, model.sample_rate)
    with torch.inference_mode():
        output = model(waveform[None], torch.tensor([waveform.shape[0]]))[0]
    return output[: int(model.output_lengths(torch.tensor([waveform.shape[0]]))[0])]


def write_table(folder: Path, wavs: list[Path], traces: list[np.ndarray] | None, rate: float = 100.0, **columns):
    """A generic-corpus CSV over ``wavs``: ``columns`` (name -> one value per file) and, with ``traces``, a trace
    file per wav holding ``traces[i]`` ``(rows, 2)`` at ``rate`` rows per second."""
    lines = [",".join(["path", *columns, *(["trace"] if traces is not None else []), "speaker", "split"])]
    for number, wav in enumerate(wavs):
        cells = [str(wav), *(repr(float(values[number])) for values in columns.values())]
        if traces is not None:
            trace = folder / "traces" / f"{wav.stem}.csv"
            trace.parent.mkdir(parents=True, exist_ok=True)
            rows = "".join(
                f"{k / rate!r},{float(a)!r},{float(v)!r}\n" for k, (a, v) in enumerate(np.asarray(traces[number]))
            )
            trace.write_text("time,arousal,valence\n" + rows)
            cells.append(str(trace.relative_to(folder)))
        cells += [wav.stem[:2], "test"]
        lines.append(",".join(cells))
    table = folder / "rated.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def _strict_json(report) -> None:
    json.dumps(report, allow_nan=False)


def test_utterance_head_on_emodb_with_av_values(emodb_root, tmp_path):
    items = emodb_test_items(emodb_root)
    model = toy("toy_utterance")
    report = evaluate_items(model, items, label_map=labels.av_values, corpus="emodb", split="test", batch_size=4)
    assert (report["targets"], report["level"], report["pooled"]) == ("label_map", "utterance", None)
    assert report["dimensions"] == NAMES and report["output"] == model.output_spec().to_json()
    assert report["n"] == report["n_items"] == len(items) and report["label_map"] == "sermodels.labels.av_values"
    assert [p["true"] for p in report["predictions"]] == [labels.av_values(item.label) for item in items]
    assert [p["label"] for p in report["predictions"]] == [item.label for item in items]
    engine = run_predictions(model, [item.path for item in items], progress=False)
    predicted = torch.stack(engine.outputs).double()
    reported = torch.tensor([list(p["predicted"].values()) for p in report["predictions"]], dtype=torch.float64)
    assert torch.allclose(reported, predicted, atol=1e-7)
    true = np.array([list(labels.av_values(item.label).values()) for item in items])
    for d, name in enumerate(NAMES):
        assert report["metrics"][name]["ccc"] == pytest.approx(metrics.ccc(predicted[:, d], true[:, d]), rel=1e-12)
        assert report["metrics"][name]["pearson"] == pytest.approx(np.corrcoef(predicted[:, d], true[:, d])[0, 1])
        assert report["metrics"][name]["rmse"] == pytest.approx(
            np.sqrt(np.mean((predicted[:, d].numpy() - true[:, d]) ** 2))
        )
        assert report["ccc"][name] == report["metrics"][name]["ccc"]
    assert report["ccc_mean"] == pytest.approx(np.mean(list(report["ccc"].values())))
    assert headline(report).startswith("CCC arousal ") and f"(n = {len(items)})" in headline(report)
    _strict_json(report)
    save_report(report, tmp_path / "u.json", tmp_path / "u.png")
    assert json.loads((tmp_path / "u.json").read_text()) == report
    pixels = mpimg.imread(tmp_path / "u.png")
    assert pixels.shape[1] > 500 and pixels.std() > 0.05


def test_frame_head_scored_on_utterance_targets_uses_the_mean_frame(emodb_root):
    items = emodb_test_items(emodb_root, count=6)
    model = toy("toy_frame")
    report = evaluate_items(model, items, label_map=labels.av_values)
    assert (report["level"], report["pooled"]) == ("utterance", "mean over frames")
    for prediction, item in zip(report["predictions"], items):
        mean = model_frames(model, Path(item.path)).double().mean(0)
        assert list(prediction["predicted"].values()) == pytest.approx(mean.tolist(), abs=1e-6)


def test_rated_values_from_the_generic_corpus(emodb_root, tmp_path):
    wavs = [Path(item.path) for item in emodb_test_items(emodb_root, count=10)]
    model = toy("toy_utterance", seed=3)
    own = torch.stack(run_predictions(model, wavs, progress=False).outputs).double()
    rated = own * 0.5 + 0.2  # a rater that agrees with the model up to scale and offset: r = 1, CCC < 1
    table = write_table(tmp_path, wavs, None, arousal=rated[:, 0].tolist(), valence=rated[:, 1].tolist())
    corpus = load_corpus("folder", table)
    report = evaluate_items(model, corpus.split("fixed")["test"], corpus="rated", split="test")
    assert report["targets"] == "values" and "label" not in report["predictions"][0]
    for d, name in enumerate(NAMES):
        assert report["metrics"][name]["pearson"] == pytest.approx(1.0, abs=1e-6)
        assert report["metrics"][name]["ccc"] == pytest.approx(metrics.ccc(own[:, d], rated[:, d]), abs=1e-6)
        assert report["metrics"][name]["ccc"] < 0.999
    _strict_json(report)


def test_frame_head_against_traces(emodb_root, tmp_path):
    wavs = [Path(item.path) for item in emodb_test_items(emodb_root, count=5)]
    model = toy("toy_frame", seed=1)
    own = [model_frames(model, wav).numpy() for wav in wavs]
    corpus = load_corpus("folder", write_table(tmp_path / "same", wavs, own))
    report = evaluate_items(model, corpus.items, corpus="rated", split="test", batch_size=2)
    assert (report["targets"], report["level"]) == ("trace", "frame")
    # The traces are the model's own frames: aligned frame by frame, every metric is perfect.
    assert report["n_frames"] == sum(len(frames) for frames in own)
    assert [p["frames"] for p in report["predictions"]] == [len(frames) for frames in own]
    for name in NAMES:
        for level in ("sequence", "concatenated"):
            assert report["metrics"][name][level]["ccc"] == pytest.approx(1.0, abs=1e-9)
            assert report["metrics"][name][level]["rmse"] == pytest.approx(0.0, abs=1e-6)
        assert report["ccc"][name] == report["metrics"][name]["concatenated"]["ccc"]
        assert report["ccc_sequence"][name] == report["metrics"][name]["sequence"]["ccc"]
        counts = np.array(report["density"][name]["counts"])
        assert counts.sum() == report["n_frames"] and np.trace(counts) == report["n_frames"]  # all on the diagonal
    assert "per sequence" in headline(report)
    _strict_json(report)
    save_report(report, tmp_path / "f.json", tmp_path / "f.png")
    assert mpimg.imread(tmp_path / "f.png").std() > 0.05

    # A 25 rows/s trace of the same contours is interpolated to 100 frames/s; lengths differ by up to 4 frames.
    coarse = [frames[::4] for frames in own]
    corpus = load_corpus("folder", write_table(tmp_path / "coarse", wavs, coarse, rate=25.0))
    report = evaluate_items(model, corpus.items)
    expected_pred, expected_true = [], []
    for frames, trace in zip(own, corpus.items):
        target = trace.trace.frames(100.0)
        count = min(len(frames), len(target))
        expected_pred.append(frames[:count])
        expected_true.append(target[:count])
    assert report["n_frames"] == sum(len(f) for f in expected_pred)
    for d, name in enumerate(NAMES):
        pooled = metrics.ccc(
            np.concatenate([p[:, d] for p in expected_pred]), np.concatenate([t[:, d] for t in expected_true])
        )
        assert report["metrics"][name]["concatenated"]["ccc"] == pytest.approx(pooled, rel=1e-6)
        assert 0.5 < report["ccc"][name] < 1.0


def test_traces_that_do_not_fit_are_listed_before_decoding(emodb_root, tmp_path):
    wavs = [Path(item.path) for item in emodb_test_items(emodb_root, count=3)]
    short = [np.zeros((20, 2)) for _ in wavs]  # 0.2 s of trace for clips of seconds
    corpus = load_corpus("folder", write_table(tmp_path, wavs, short))
    with pytest.raises(ValueError, match=r"(?s)3 trace\(s\) do not fit .*the trace covers 0.200 s"):
        evaluate_items(toy("toy_frame"), corpus.items)
    # An utterance-level head cannot use traces, and items with neither values nor a trace need a label map.
    with pytest.raises(ValueError, match="pass label_map .* sermodels.labels.av_values"):
        evaluate_items(toy("toy_utterance"), corpus.items)
    with pytest.raises(ValueError, match="have no values .* and not every item has a trace"):
        evaluate_items(toy("toy_frame"), emodb_test_items(emodb_root, count=2))


def test_label_maps_for_dimensions(emodb_root):
    items = emodb_test_items(emodb_root, count=8)
    placed = {label: labels.av_values(label) for label in {item.label for item in items}}
    skipped = next(iter(placed))
    report = evaluate_items(toy("toy_utterance"), items, label_map=dict(placed, **{skipped: None}))
    assert report["excluded"] == {skipped: sum(item.label == skipped for item in items)}
    assert report["n"] == len(items) - report["excluded"][skipped]
    with pytest.raises(ValueError, match="does not place these labels on the dimensions"):
        evaluate_items(toy("toy_utterance"), items, label_map=lambda label: {"arousal": 1.0})


class _Embedder(toy_models.ToyUtteranceModel):
    def __init__(self):
        super().__init__()
        self.head_specs = {"av": outputs.embedding(2)}


def test_embeddings_and_loso_of_dimensions_are_refused(emodb_root):
    items = emodb_test_items(emodb_root, count=2)
    with pytest.raises(ValueError, match="outputs an embedding of 2 numbers, which has no targets"):
        evaluate_items(_Embedder(), items)
    report = evaluate_items(toy("toy_utterance"), items, label_map=labels.av_values)
    with pytest.raises(ValueError, match="aggregates categories reports"):
        loso_report([report])


def test_audio_the_engine_cannot_read_is_a_failure_not_a_trace_error(emodb_root, tmp_path):
    wavs = [Path(item.path) for item in emodb_test_items(emodb_root, count=2)]
    model = toy("toy_frame")
    own = [model_frames(model, wav).numpy() for wav in wavs]
    broken = tmp_path / "audio" / "broken.wav"
    broken.parent.mkdir()
    broken.write_bytes(b"RIFF....not audio")
    duration = math.ceil(sf.info(wavs[0]).duration * 100)
    table = write_table(tmp_path, [*wavs, broken], [*own, np.zeros((duration, 2))])
    report = evaluate_items(model, load_corpus("folder", table).items)
    assert report["n"] == 2 and [f["path"] for f in report["failures"]] == [str(broken)]
