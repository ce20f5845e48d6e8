"""`predict` by output kind: frame-level timelines (CSV, JSON, Parquet, through the command line), dimensions and
embedding columns, chunked frame-level input, the spec check, and the terminal table, on real corpus files.

The toy architectures of ``toy_models`` compute their outputs from the log energy of 10 ms frames, so every value
can be checked against the model run on the decoded file directly.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import toy_models
from energy_model import EMOTIONS, LogEnergyModel

from sermodels import outputs
from sermodels.audio import load_audio
from sermodels.cli import main
from sermodels.hub import save_pretrained
from sermodels.pipelines.predict import predict_files, run_predictions, write_predictions
from sermodels.pipelines.terminal import prediction_table

STEMS = ["03a01Fa", "08a01Ab", "10b03Wb", "13a05Tc"]
HOP = 160  # samples per 10 ms frame at 16 kHz
RATE = 16_000


@pytest.fixture
def files(emodb_root) -> list[Path]:
    return [emodb_root / "wav" / f"{stem}.flac" for stem in STEMS]


@pytest.fixture
def toy_frame() -> toy_models.ToyFrameModel:
    torch.manual_seed(0)
    return toy_models.ToyFrameModel().eval()


def _direct(model, path: Path) -> torch.Tensor:
    """The model's frame outputs on the decoded file alone, ``(frames, 2)``."""
    waveform = load_audio(path)
    with torch.no_grad():
        return model(waveform[None])[0]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def test_frame_level_timeline_csv_json_parquet_through_the_cli(tmp_path, files, toy_frame, capsys):
    folder = save_pretrained(toy_frame, tmp_path / "toy_frame")
    missing = tmp_path / "missing.wav"
    inputs = [str(files[0]), str(missing), *map(str, files[1:])]
    written = {}
    for suffix in (".csv", ".json", ".parquet"):
        out = tmp_path / f"timeline{suffix}"
        assert main(["predict", "--model", str(folder), "--no-progress", *inputs, "--out", str(out)]) == 1
        written[suffix] = out
        captured = capsys.readouterr()
        assert "no such file" in captured.err and "1 of 5 inputs failed" in captured.err
        header, _, *table = captured.out.splitlines()
        assert header.split() == ["file", "seconds", "frames", "arousal", "valence"]
        assert [line.split()[0] for line in table] == [str(f) for f in files]  # one row per predicted file
        frames = [_direct(toy_frame, f) for f in files]
        assert [int(line.split()[2]) for line in table] == [len(f) for f in frames]
        means = [float(v) for line in table for v in line.split()[3:]]
        assert means == pytest.approx(torch.stack([f.mean(0) for f in frames]).flatten().tolist(), abs=5e-4)

    header, rows = _read_csv(written[".csv"])
    assert header == ["path", "start", "end", "arousal", "valence", "error"]
    failed = [row for row in rows if row["error"]]
    assert [(row["path"], row["error"]) for row in failed] == [(str(missing), "no such file")]
    assert rows.index(failed[0]) == len(_direct(toy_frame, files[0]))  # in input order, after the first timeline
    for path in files:
        mine = [row for row in rows if row["path"] == str(path) and not row["error"]]
        frames = _direct(toy_frame, path)
        samples = sf.info(str(path)).frames
        assert len(mine) == frames.shape[0] == -(-samples // HOP)
        starts = [float(row["start"]) for row in mine]
        assert starts == pytest.approx([i / 100 for i in range(len(mine))])
        assert float(mine[-1]["end"]) == pytest.approx(samples / RATE)  # the last frame ends with the file
        values = torch.tensor([[float(row["arousal"]), float(row["valence"])] for row in mine])
        torch.testing.assert_close(values, frames, atol=1e-6, rtol=1e-6)

    payload = json.loads(written[".json"].read_text())
    assert payload["output"] == {
        "kind": "dimensions",
        "level": "frame",
        "names": ["arousal", "valence"],
        "frame_rate": 100.0,
        "range": [-1.0, 1.0],
    }
    assert payload["complete"] is True and payload["timeline_seconds"] is None
    good = [row for row in rows if not row["error"]]
    assert len(payload["predictions"]) == len(good)
    assert [p["path"] for p in payload["predictions"]] == [row["path"] for row in good]
    assert [p["arousal"] for p in payload["predictions"]] == [float(row["arousal"]) for row in good]
    assert payload["failures"] == [{"path": str(missing), "reason": "no such file"}]

    import pyarrow.parquet as pq

    table = pq.read_table(written[".parquet"])
    assert table.column_names == header
    assert str(table.schema.field("start").type) == "double" and str(table.schema.field("path").type) == "string"
    assert table["path"].to_pylist() == [row["path"] for row in rows]
    assert table["valence"].to_pylist() == [float(row["valence"]) if row["valence"] else None for row in rows]
    assert table["error"].to_pylist() == [row["error"] for row in rows]


def test_timeline_seconds_averages_frames_over_windows(tmp_path, files, toy_frame):
    folder = save_pretrained(toy_frame, tmp_path / "toy_frame")
    out = tmp_path / "pooled.csv"
    assert main(["predict", "--model", str(folder), "--no-progress", *map(str, files), "--out", str(out),
                 "--timeline-seconds", "0.5"]) == 0  # fmt: skip
    _, rows = _read_csv(out)
    for path in files:
        mine = [row for row in rows if row["path"] == str(path)]
        frames = _direct(toy_frame, path)
        duration = sf.info(str(path)).frames / RATE
        assert len(mine) == int(np.ceil(duration / 0.5))
        assert [float(row["start"]) for row in mine] == pytest.approx([0.5 * k for k in range(len(mine))])
        assert float(mine[-1]["end"]) == pytest.approx(duration)
        for k, row in enumerate(mine):
            expected = frames[50 * k : 50 * (k + 1)].double().mean(0)
            assert [float(row["arousal"]), float(row["valence"])] == pytest.approx(expected.tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="utterance-level"):
        predict_files(toy_models.ToyUtteranceModel(), files, timeline_seconds=1.0, progress=False)


def test_dimensions_head_has_one_column_per_dimension(tmp_path, files):
    torch.manual_seed(0)
    model = toy_models.ToyUtteranceModel().eval()
    result = predict_files(model, files, batch_size=3, progress=False)
    assert result.spec.kind == "dimensions" and result.score_kind is None
    assert result.columns == ["path", "arousal", "valence"]
    assert [list(row) for row in result.rows] == [["path", "arousal", "valence"]] * len(files)
    for row, output, path in zip(result.rows, result.outputs, files):
        direct = model(load_audio(path)[None])[0].detach()
        torch.testing.assert_close(output, direct, atol=1e-6, rtol=1e-6)
        assert [row["arousal"], row["valence"]] == pytest.approx(direct.tolist(), abs=1e-6)
    torch.testing.assert_close(result.logits, torch.stack(result.outputs))
    header, rows = _read_csv(write_predictions(result, tmp_path / "av.csv"))
    assert header == ["path", "arousal", "valence", "error"]
    assert [float(row["valence"]) for row in rows] == [row["valence"] for row in result.rows]
    header, _, *lines = prediction_table(result)
    assert header.split() == ["file", "arousal", "valence"] and len(lines) == len(files)
    assert [float(v) for v in lines[0].split()[1:]] == pytest.approx(
        [result.rows[0]["arousal"], result.rows[0]["valence"]], abs=5e-4
    )


def test_chunked_frame_level_input_is_the_unchunked_timeline(tmp_path, files, toy_frame):
    long_file = tmp_path / "long.wav"
    sf.write(long_file, torch.cat([load_audio(p) for p in files] * 2).numpy(), RATE, subtype="FLOAT")
    whole = predict_files(toy_frame, [long_file], max_chunk_seconds=0, progress=False)
    # 2.345 s is not a whole number of 10 ms frames: chunks are rounded down to 2.34 s so no frame straddles two.
    for seconds in (2.5, 2.345):
        chunked = predict_files(toy_frame, [long_file], max_chunk_seconds=seconds, batch_size=3, progress=False)
        assert chunked.outputs[0].shape == whole.outputs[0].shape
        chunk_frames = int(seconds * 100)
        boundary = torch.zeros(whole.outputs[0].shape[0], dtype=torch.bool)
        for edge in range(chunk_frames, len(boundary), chunk_frames):
            boundary[edge - 1 : edge + 1] = True
        assert boundary.any()
        # Frames away from chunk boundaries see the same audio; this model's frames are local, so all of them match.
        torch.testing.assert_close(chunked.outputs[0][~boundary], whole.outputs[0][~boundary], atol=0, rtol=0)
        torch.testing.assert_close(chunked.outputs[0], whole.outputs[0], atol=1e-6, rtol=1e-6)
        assert [row["start"] for row in chunked.timeline] == [row["start"] for row in whole.timeline]


def test_frame_level_failures_and_snapshot(tmp_path, files, toy_frame):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "snapshot.json"
    result = run_predictions(toy_frame, [empty, files[0]], out=out, save_every_seconds=0.0, progress=False)
    assert result.failures == [(str(empty), "empty file (0 bytes)")]
    assert [row["path"] for row in result.rows] == [str(files[0])]
    assert result.rows[0]["start"] == 0.0 and result.rows[0]["end"] == pytest.approx(sf.info(str(files[0])).duration)
    assert result.outputs[0].shape == (len(result.timelines[0]), 2)
    torch.testing.assert_close(result.logits[0], result.outputs[0].mean(0))
    assert json.loads(out.read_text())["complete"] is True


class EmbeddingModel(LogEnergyModel):
    """The log-energy statistics as a two-number embedding head."""

    def __init__(self):
        super().__init__()
        self.heads = {"emotion": list(EMOTIONS), "energy": []}
        self.head_specs = {"energy": outputs.embedding(2)}

    def forward(self, waveforms, lengths=None, head=None):
        if self.resolve_head(head) == "energy":
            return self.embed(waveforms, lengths)
        return super().forward(waveforms, lengths, head)


def test_embedding_head_columns(tmp_path, files):
    model = EmbeddingModel()
    result = predict_files(model, files, head="energy", progress=False)
    assert result.columns == ["path", "emb_0", "emb_1"]
    direct = model.embed(load_audio(files[1])[None])[0]
    assert [result.rows[1]["emb_0"], result.rows[1]["emb_1"]] == pytest.approx(direct.tolist(), abs=1e-5)
    header, _ = _read_csv(write_predictions(result, tmp_path / "emb.csv"))
    assert header == ["path", "emb_0", "emb_1", "error"]
    header, _, first, *_ = prediction_table(result)
    assert header.split()[:2] == ["file", "values"] and first.split()[1] == "2"


class WrongShapeModel(LogEnergyModel):
    """Declares a frame-level head but returns one vector per clip."""

    def __init__(self):
        super().__init__()
        self.head_specs = {"emotion": outputs.categories(EMOTIONS, level="frame", frame_rate=100.0)}


def test_outputs_are_checked_against_the_spec(files):
    with pytest.raises(RuntimeError, match=r"frame-level categories spec expects \(1, frames, 7\)"):
        predict_files(WrongShapeModel(), files[:1], progress=False)
    clashing = toy_models.ToyUtteranceModel(names=["path", "valence"])
    with pytest.raises(ValueError, match=r"clash with the columns"):
        predict_files(clashing, files[:1], progress=False)


def test_categories_table_on_the_terminal(tmp_path, files, capsys):
    out = tmp_path / "pred.csv"
    assert main(["predict", "--no-progress", *map(str, files[:2]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    _, rows = _read_csv(out)
    header, _, *lines = captured.out.splitlines()
    assert header.split() == ["file", "label", "probability"] and len(lines) == 2
    for line, row in zip(lines, rows):
        path, label, score = line.split()
        assert (path, label) == (row["path"], row["label"])
        assert float(score) == pytest.approx(float(row[f"score_{label}"]), abs=5e-4)
    assert f"wrote 2 predictions to {out}" in captured.err


def test_parquet_without_pyarrow_is_a_clear_error_before_any_work(tmp_path, files, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    out = tmp_path / "pred.parquet"
    assert main(["predict", "--no-progress", str(files[0]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs the package pyarrow" in err and "pip install pyarrow" in err
    assert not out.exists()


class ThirtyFrames(toy_models.ToyFrameModel):
    """30 frames per second at 16 kHz: a frame is 533 1/3 samples, not a whole number. Frame k is the mean square of
    the samples in [k * 1600/3, (k + 1) * 1600/3)."""

    def __init__(self):
        super().__init__()
        self.head_specs = {"av": outputs.dimensions(self.names, level="frame", frame_rate=30.0)}

    def forward(self, waveforms, lengths=None, head=None):
        lengths = torch.full((len(waveforms),), waveforms.shape[1]) if lengths is None else lengths
        frames = int(self.output_lengths(lengths.max().reshape(1), head)[0])
        index = (torch.arange(waveforms.shape[1]) * 30 // RATE).clamp(max=frames - 1)
        energy = torch.zeros(len(waveforms), frames).index_add_(1, index, waveforms.square())
        count = torch.zeros(frames).index_add_(0, index, torch.ones(waveforms.shape[1]))
        return (energy / count).unsqueeze(-1).repeat(1, 1, 2)


def test_chunks_keep_the_frame_grid_when_a_frame_is_not_a_whole_number_of_samples(tmp_path, files):
    long_file = tmp_path / "long.wav"
    audio = torch.cat([load_audio(p) for p in files])[: int(10.5 * RATE)]
    sf.write(long_file, audio.numpy(), RATE, subtype="FLOAT")
    model = ThirtyFrames().eval()
    whole = predict_files(model, [long_file], max_chunk_seconds=0, progress=False)
    assert whole.outputs[0].shape[0] == 315
    chunked = predict_files(model, [long_file], max_chunk_seconds=1.05, progress=False)  # 1.0 s = 30 frames
    torch.testing.assert_close(chunked.outputs[0], whole.outputs[0], atol=1e-6, rtol=1e-5)
    assert all(row["end"] > row["start"] for row in chunked.timeline)
    assert chunked.timeline[-1]["end"] == pytest.approx(10.5)
    with pytest.raises(ValueError, match="whole frames"):
        predict_files(model, [long_file], max_chunk_seconds=0.05, progress=False)
    with pytest.raises(ValueError, match="shorter than one frame"):
        predict_files(model, [long_file], timeline_seconds=0.01, progress=False)


def test_an_unwritable_output_is_refused_before_any_work(tmp_path, files, capsys):
    folder = tmp_path / "taken.csv"
    folder.mkdir()
    assert main(["predict", "--model", "default", str(files[0]), "--out", str(folder), "--no-progress"]) == 2
    assert "is a folder" in capsys.readouterr().err
