"""`predict` on the batch engine with real EMO-DB files and broken ones, with a small but real SERModel."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from energy_model import EMOTIONS, LogEnergyModel, SnapshotReadingModel

from sermodels.audio import load_audio
from sermodels.pipelines.inputs import expand_inputs
from sermodels.pipelines.predict import PredictionResult, predict_files, write_predictions

EMODB_FILES = ["03a01Fa", "08a01Ab", "10b03Wb", "13a05Tc", "16b10Lb", "09b02Na"]


class FailingModel(LogEnergyModel):
    """Raises on its n-th call: stands in for an interruption (Ctrl-C, out of memory) in the middle of a run."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.fail_at = fail_at

    def forward(self, waveforms, lengths=None, head=None):
        if len(self.batch_shapes) + 1 == self.fail_at:
            raise KeyboardInterrupt
        return super().forward(waveforms, lengths, head)


@pytest.fixture
def good_files(emodb_root) -> list[Path]:
    return [emodb_root / "wav" / f"{stem}.flac" for stem in EMODB_FILES]


@pytest.fixture
def bad_files(tmp_path, good_files) -> dict[str, Path]:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    truncated = tmp_path / "truncated.flac"
    data = good_files[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(800, dtype=np.float32), 16_000)  # 0.05 s < min_duration
    return {"empty": empty, "text": text, "truncated": truncated, "short": short, "missing": tmp_path / "gone.wav"}


def test_rows_failures_and_input_order(good_files, bad_files):
    inputs = [
        good_files[0],
        bad_files["empty"],
        good_files[1],
        bad_files["missing"],
        good_files[2],
        bad_files["text"],
        good_files[3],
        bad_files["truncated"],
        good_files[4],
        bad_files["short"],
        good_files[5],
    ]
    model = LogEnergyModel()
    result = predict_files(model, inputs, batch_size=3, progress=False)
    assert result.paths == [str(p) for p in good_files]
    assert result.logits.shape == (len(good_files), len(EMOTIONS))
    reasons = dict(result.failures)
    assert [path for path, _ in result.failures] == [str(bad_files[k]) for k in ("empty", "missing", "text")] + [
        str(bad_files[k]) for k in ("truncated", "short")
    ]
    assert "empty" in reasons[str(bad_files["empty"])]
    assert "no such file" in reasons[str(bad_files["missing"])]
    assert "not an audio file" in reasons[str(bad_files["text"])]
    assert "truncated" in reasons[str(bad_files["truncated"])]
    assert "too short" in reasons[str(bad_files["short"])]
    for row, logits in zip(result.rows, result.logits):
        assert row["label"] == EMOTIONS[int(logits.argmax())]
        scores = [row[f"score_{name}"] for name in EMOTIONS]
        assert scores == pytest.approx(logits.softmax(-1).tolist(), abs=1e-6)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    # The logits are the model's on the decoded file, alone.
    alone = model(load_audio(good_files[2]).unsqueeze(0))[0]
    torch.testing.assert_close(result.logits[2], alone.detach(), atol=1e-5, rtol=1e-5)


def test_batched_equals_one_by_one_and_batches_are_length_sorted(good_files):
    model = LogEnergyModel()
    single = predict_files(model, good_files, batch_size=1, progress=False)
    model.batch_shapes.clear()
    batched = predict_files(model, good_files, batch_size=4, progress=False)
    assert batched.paths == single.paths
    torch.testing.assert_close(batched.logits, single.logits, atol=1e-5, rtol=1e-5)
    assert [r["label"] for r in batched.rows] == [r["label"] for r in single.rows]
    lengths = sorted((load_audio(p).shape[0] for p in good_files), reverse=True)
    # Longest first: the first batch is padded to the longest file, the second to the fifth longest.
    assert model.batch_shapes == [(4, lengths[0]), (2, lengths[4])]


def test_head_and_max_batch_seconds(good_files):
    model = LogEnergyModel()
    result = predict_files(model, good_files, head="arousal", batch_size=8, max_batch_seconds=6.0, progress=False)
    assert result.head == "arousal" and result.label_names == ["low", "high"]
    assert result.logits.shape == (len(good_files), 2)
    assert all(batch * width <= 6.0 * 16_000 or batch == 1 for batch, width in model.batch_shapes)
    assert len(model.batch_shapes) > 1
    with pytest.raises(KeyError, match="no head 'valence'"):
        predict_files(model, good_files, head="valence", progress=False)


def test_model_mode_is_restored(good_files):
    model = LogEnergyModel().train()
    predict_files(model, good_files[:1], progress=False)
    assert model.training


def test_progress_bar_goes_to_stderr(good_files, capsys):
    predict_files(LogEnergyModel(), good_files[:2], progress=True)
    captured = capsys.readouterr()
    assert "predict" in captured.err and "2/2" in captured.err
    assert captured.out == ""
    predict_files(LogEnergyModel(), good_files[:2], progress=False)
    assert capsys.readouterr().err == ""


def test_chunked_equals_full_for_a_short_file(good_files):
    model = LogEnergyModel()
    full = predict_files(model, good_files, progress=False)
    chunked = predict_files(model, good_files, progress=False, max_chunk_seconds=30.0)
    assert torch.equal(full.logits, chunked.logits)


def test_chunked_long_file_is_bounded_and_averages_chunks(tmp_path, good_files):
    waveform = torch.cat([load_audio(p) for p in good_files] * 3)  # about 40 s
    long_file = tmp_path / "long.wav"
    sf.write(long_file, waveform.numpy(), 16_000, subtype="FLOAT")
    model = LogEnergyModel()
    chunk = 2.5 * 16_000
    result = predict_files(model, [long_file], max_chunk_seconds=2.5, batch_size=4, progress=False)
    min_frames = int(model.min_duration * 16_000)
    assert max(width for _, width in model.batch_shapes) <= chunk + min_frames
    assert max(batch for batch, _ in model.batch_shapes) <= 4
    # Reference: the length-weighted mean of the model's logits on each chunk on its own.
    decoded = load_audio(long_file)
    starts = list(range(0, len(decoded), int(chunk)))
    if len(decoded) - starts[-1] < min_frames:
        starts.pop()
    bounds = starts[1:] + [len(decoded)]
    with torch.no_grad():
        pieces = [decoded[a:b] for a, b in zip(starts, bounds)]
        logits = torch.stack([model(piece.unsqueeze(0))[0] for piece in pieces])
    weights = torch.tensor([len(piece) for piece in pieces], dtype=torch.float64)
    expected = (logits.double() * weights[:, None]).sum(0) / weights.sum()
    torch.testing.assert_close(result.logits[0].double(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="shorter than the model's minimum"):
        predict_files(model, [long_file], max_chunk_seconds=0.05, progress=False)


def test_write_csv_and_json(tmp_path, good_files, bad_files):
    inputs = [good_files[0], bad_files["missing"], good_files[1]]
    result = predict_files(LogEnergyModel(), inputs, progress=False)
    csv_path = write_predictions(result, tmp_path / "out" / "predictions.csv")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert reader.fieldnames == ["path", "label", *[f"score_{e}" for e in EMOTIONS], "error"]
    assert [line["path"] for line in lines] == [str(p) for p in inputs]
    assert lines[1]["error"] == "no such file" and lines[1]["label"] == "" and lines[1]["score_anger"] == ""
    assert lines[0]["error"] == "" and lines[0]["label"] == result.rows[0]["label"]
    assert float(lines[2]["score_fear"]) == pytest.approx(result.rows[1]["score_fear"])

    json_path = write_predictions(result, tmp_path / "predictions.json")
    payload = json.loads(json_path.read_text())
    assert payload["labels"] == EMOTIONS and payload["head"] == "emotion" and payload["complete"] is True
    assert payload["score_kind"] == "probability"
    assert payload["predictions"] == result.rows
    assert payload["failures"] == [{"path": str(bad_files["missing"]), "reason": "no such file"}]
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    with pytest.raises(ValueError, match=r"predictions.txt: unsupported output format 'txt'"):
        write_predictions(result, tmp_path / "predictions.txt")
    # An open stream (the CLI writes to stdout) gets CSV unless told otherwise.
    stream = io.StringIO()
    assert write_predictions(result, stream) is None
    assert stream.getvalue() == csv_path.read_text()
    stream = io.StringIO()
    write_predictions(result, stream, format="json")
    assert json.loads(stream.getvalue()) == payload


def test_interrupted_run_keeps_finished_work(tmp_path, good_files):
    # batch_size 1 -> windows of 16 files; the failure comes in the second window, after 16 finished files.
    inputs = (good_files * 4)[:20]
    out = tmp_path / "partial.json"
    with pytest.raises(KeyboardInterrupt):
        predict_files(FailingModel(fail_at=18), inputs, batch_size=1, progress=False, out=out)
    payload = json.loads(out.read_text())
    assert payload["complete"] is False
    # The whole first window, and the one file that the second window finished (its longest, batched first).
    written = [row["path"] for row in payload["predictions"]]
    assert written[:16] == [str(p) for p in inputs[:16]]
    assert written[16:] == [str(max(inputs[16:], key=lambda p: load_audio(p).shape[0]))]
    done = predict_files(LogEnergyModel(), inputs, batch_size=1, progress=False, out=out)
    assert json.loads(out.read_text())["complete"] is True
    assert len(done.rows) == 20


def test_interruption_inside_a_window_keeps_the_finished_batches(tmp_path, good_files):
    # Six files make one window; the model is interrupted in its third batch, after two batches of two files.
    out = tmp_path / "partial.json"
    with pytest.raises(KeyboardInterrupt):
        predict_files(FailingModel(fail_at=3), good_files, batch_size=2, progress=False, out=out)
    payload = json.loads(out.read_text())
    assert payload["complete"] is False
    longest_four = sorted(good_files, key=lambda p: -load_audio(p).shape[0])[:4]
    assert [row["path"] for row in payload["predictions"]] == [str(p) for p in good_files if p in longest_four]
    full = predict_files(LogEnergyModel(), good_files, batch_size=2, progress=False)
    by_path = {row["path"]: row for row in full.rows}
    for row in payload["predictions"]:
        assert row["label"] == by_path[row["path"]]["label"]
        assert row["score_anger"] == pytest.approx(by_path[row["path"]]["score_anger"], abs=1e-6)


def test_snapshot_timer_is_checked_after_every_batch(tmp_path, good_files):
    out = tmp_path / "snapshot.json"
    model = SnapshotReadingModel(out)
    # Written in the loop, so the file each batch sees is exactly the one before it (background writes: test_engine_io).
    predict_files(
        model, good_files, batch_size=2, progress=False, out=out, save_every_seconds=0.0, background_writes=False
    )
    assert model.seen == [None, 2, 4]
    assert json.loads(out.read_text())["complete"] is True


def test_a_chunked_file_is_recorded_only_when_all_its_chunks_are_done(tmp_path, good_files):
    long_file = tmp_path / "long.wav"
    sf.write(long_file, torch.cat([load_audio(p) for p in good_files]).numpy(), 16_000, subtype="FLOAT")
    out = tmp_path / "partial.json"
    # Two-second chunks, one per batch: the file has more than two chunks, so the third call interrupts it.
    with pytest.raises(KeyboardInterrupt):
        predict_files(
            FailingModel(fail_at=3), [long_file], batch_size=1, max_chunk_seconds=2.0, progress=False, out=out
        )
    assert not out.exists()  # nothing finished, nothing to write: no partial average of the first chunks
    model = SnapshotReadingModel(out)
    predict_files(model, [long_file], batch_size=1, max_chunk_seconds=2.0, progress=False, out=out,
                  save_every_seconds=0.0)  # fmt: skip
    assert len(model.seen) > 2 and set(model.seen) <= {None, 0}  # no prediction on disk before the last chunk
    assert len(json.loads(out.read_text())["predictions"]) == 1


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and umask")
def test_written_files_get_the_umask_mode_without_touching_the_umask(tmp_path, good_files, monkeypatch):
    result = predict_files(LogEnergyModel(), good_files[:1], progress=False)
    previous = os.umask(0o027)
    try:

        def no_umask(mask):
            raise AssertionError("os.umask changed while writing (a race with other threads)")

        monkeypatch.setattr(os, "umask", no_umask)
        new = write_predictions(result, tmp_path / "new.csv")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0o666 less the umask 0o027
        existing = tmp_path / "existing.json"
        existing.write_text("{}")
        existing.chmod(0o604)
        write_predictions(result, existing)
        assert stat.S_IMODE(existing.stat().st_mode) == 0o604  # a replaced file keeps its mode
        assert json.loads(existing.read_text())["complete"] is True
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.json", "new.csv"]  # no temporary files left


def test_expand_inputs(tmp_path, good_files):
    root = tmp_path / "corpus"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.wav").write_bytes(b"x")
    (root / "sub" / "a.FLAC").write_bytes(b"x")
    (root / "sub" / "deeper" / "c.ogg").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    (root / "._b.wav").write_bytes(b"x")
    (root / ".git" / "d.wav").write_bytes(b"x")
    (tmp_path / "empty_dir").mkdir()
    explicit = tmp_path / "explicit.txt"
    explicit.write_text("x")
    missing = tmp_path / "missing.wav"
    expanded = expand_inputs([explicit, root, str(missing), tmp_path / "empty_dir"])
    assert expanded == [
        explicit,
        root / "b.wav",
        root / "sub" / "a.FLAC",
        root / "sub" / "deeper" / "c.ogg",
        missing,
        tmp_path / "empty_dir",
    ]
    result = predict_files(LogEnergyModel(), [tmp_path / "empty_dir", good_files[0]], progress=False)
    assert len(result.rows) == 1
    assert result.failures[0][0] == str(tmp_path / "empty_dir")
    assert "folder with no audio files" in result.failures[0][1]


def test_empty_result_has_empty_logits(bad_files):
    result = predict_files(LogEnergyModel(), [bad_files["missing"]], progress=False)
    assert isinstance(result, PredictionResult)
    assert result.rows == [] and result.logits.shape == (0, len(EMOTIONS))
    assert len(result.failures) == 1


@pytest.mark.gpu
def test_cuda_matches_cpu(good_files):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = LogEnergyModel()
    cpu = predict_files(model, good_files, batch_size=4, progress=False)
    gpu = predict_files(model, good_files, batch_size=4, device="cuda", progress=False)
    assert gpu.logits.device.type == "cpu"
    torch.testing.assert_close(gpu.logits, cpu.logits, atol=1e-4, rtol=1e-4)
