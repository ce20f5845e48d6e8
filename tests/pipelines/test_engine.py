"""The batch engine on its own, on real EMO-DB files: the steps it yields, cuts and their failures, windows, the
module's mode, and the partial folder of resumable jobs."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from energy_model import LogEnergyModel

from sermodels.audio import load_audio
from sermodels.pipelines.engine import BatchEngine, Cut, chunks, steps, weighted_mean
from sermodels.pipelines.resume import OutputInUse, PartialFolder, differences, locked

STEMS = ["03a01Fa", "08a01Ab", "10b03Wb", "13a05Tc", "16b10Lb", "09b02Na"]


@pytest.fixture
def files(emodb_root):
    return [emodb_root / "wav" / f"{stem}.flac" for stem in STEMS]


def _engine(model, **options) -> BatchEngine:
    def forward(waveforms, lengths):
        return list(model(waveforms, lengths).cpu())

    return BatchEngine(module=model, sample_rate=16_000, forward=forward, min_duration=model.min_duration, **options)


def test_chunks_cover_the_file_and_merge_a_short_tail():
    assert chunks(100, None, 10) == [(0, 100)]
    assert chunks(100, 100, 10) == [(0, 100)]
    assert chunks(100, 30, 10) == [(0, 30), (30, 60), (60, 90), (90, 100)]  # a 10-sample tail is not under 10
    assert chunks(95, 30, 10) == [(0, 30), (30, 60), (60, 95)]  # the 5-sample tail joins the chunk before
    outputs = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
    mean = weighted_mean(outputs, Cut([(0, 30), (30, 40)]))
    torch.testing.assert_close(mean, torch.tensor([0.75, 0.25]))
    assert weighted_mean(outputs[:1], Cut([(0, 7)])) is outputs[0]  # one piece: exactly its output


def test_steps_failures_first_windows_and_results_in_any_order(tmp_path, files):
    missing = tmp_path / "gone.wav"
    model = LogEnergyModel()
    # batch_size 2 x window_batches 2: windows of four pieces; the missing file fails as it is decoded.
    engine = _engine(model, batch_size=2, window_batches=2)
    paths = [files[0], missing, *files[1:]]
    with steps(engine, paths, progress=False) as run:
        stream = list(run)
    assert [s.finished[0].index for s in stream[:1]] == [1] and stream[0].finished[0].problem == "no such file"
    assert [s.window_end for s in stream[1:]] == [False, True, True]  # 2 + 2 pieces, then 2 pieces
    done = {f.index: f for s in stream for f in s.finished}
    assert sorted(done) == list(range(len(paths)))
    for index, path in enumerate(paths):
        if index == 1:
            continue
        waveform = load_audio(path)
        assert done[index].samples == waveform.shape[0] and done[index].cut.spans == [(0, waveform.shape[0])]
        torch.testing.assert_close(done[index].result, model(waveform[None])[0].detach(), atol=1e-5, rtol=1e-5)


def test_a_cut_that_fails_is_the_files_failure_and_chunks_are_averaged(files):
    model = LogEnergyModel()

    def cut(samples):
        if samples < 30_000:
            raise ValueError(f"only {samples} samples")
        return Cut(chunks(samples, 16_000, 1_600), info="chunked")

    with steps(_engine(model, cut=cut), files, progress=False) as run:
        done = {f.index: f for s in run for f in s.finished}
    for index, path in enumerate(files):
        waveform = load_audio(path)
        if waveform.shape[0] < 30_000:
            assert done[index].problem == f"only {waveform.shape[0]} samples"
            continue
        pieces = [waveform[a:b] for a, b in done[index].cut.spans]
        expected = weighted_mean([model(p[None])[0].detach() for p in pieces], done[index].cut)
        torch.testing.assert_close(done[index].result, expected, atol=1e-5, rtol=1e-5)
        assert done[index].cut.info == "chunked" and len(pieces) > 1
    assert any(not f.ok for f in done.values()) and any(f.ok for f in done.values())


def test_non_finite_results_are_failures_and_the_mode_is_restored_when_stopped_early(files):
    model = LogEnergyModel().train()
    engine = _engine(model, combine=lambda outputs, cut: outputs[0] * float("nan"), nonfinite="NaN here")
    with steps(engine, files, progress=False) as run:
        first = next(iter(run))
        assert not model.training  # eval mode while running
    assert model.training  # restored when the run is closed early
    assert all(f.problem == "NaN here" for f in first.finished) and first.finished
    with pytest.raises(ValueError, match="batch_size"):
        _engine(model, batch_size=0)


def test_partial_folder_round_trip_settings_and_lock(tmp_path):
    folder = tmp_path / "out.csv.partial"
    with locked(folder):
        partial = PartialFolder.open(folder, {"a": 1, "b": {"c": (1, 2)}})
        values = np.arange(6, dtype=np.float32).reshape(3, 2)
        partial.write_shard([("k1", [0.0, 0.5, 1.0], values), ("k2", "broken")])
        with pytest.raises(OutputInUse, match="in use by another run"), locked(folder):
            pass
    again = PartialFolder.open(folder, {"a": 1, "b": {"c": [1, 2]}})  # tuples are stored as lists
    assert again.done("k1") and again.failed("k2") and not again.done("k3")
    starts, rows = again.rows("k1")
    assert starts.tolist() == [0.0, 0.5, 1.0] and np.array_equal(rows, values)
    with pytest.raises(ValueError, match=r"b\.c: \[1, 2\] then, \[1, 3\] now"):
        PartialFolder.open(folder, {"a": 1, "b": {"c": [1, 3]}})
    restarted = PartialFolder.open(folder, {"a": 2}, restart=True)
    assert restarted.entries == {} and sorted(p.name for p in folder.iterdir()) == ["lock", "settings.json"]
    assert differences({"x": 1}, {"x": 1}) == [] and differences({"x": 1}, {}) == ["x: 1 then, None now"]
    restarted.remove()
    assert not folder.exists()
    with contextlib.suppress(FileNotFoundError):
        folder.rmdir()
