"""What feeds the model and takes its outputs away, on real audio: parallel decoding (same steps, order and failure
messages as serial, bounded read-ahead), the padded batch and the pinned-memory decision, the background snapshot
writer, the device resampler against soxr, resampling on the device in the engine, and precision/preparation
options of predict."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from energy_model import LogEnergyModel, SnapshotReadingModel

import sermodels
from sermodels.audio import load_audio
from sermodels.features.resample import resample
from sermodels.pipelines import engine as engine_module
from sermodels.pipelines import predict as predict_module
from sermodels.pipelines.engine import BatchEngine, fill_padded, pad_batch, pins_memory, steps, to_device
from sermodels.pipelines.predict import SnapshotWriter, predict_files

STEMS = ["03a01Fa", "08a01Ab", "10b03Wb", "13a05Tc", "16b10Lb", "09b02Na", "11a02Ac", "12b01Ta", "14a05Fb"]
CLIPS = Path(sermodels.__file__).parent / "assets" / "clips"
WAIT_SECONDS = 30.0  # how long a test waits for a background thread before calling it stuck (never a measurement)


@pytest.fixture
def good_files(emodb_root) -> list[Path]:
    files = [emodb_root / "wav" / f"{stem}.flac" for stem in STEMS]
    return [f for f in files if f.exists()] or pytest.skip("EMO-DB files missing")


@pytest.fixture
def mixed_files(tmp_path, good_files) -> list[Path]:
    """Good EMO-DB files with broken ones between them: empty, truncated, NaN samples, not audio, missing, too
    short, a folder."""
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.flac"
    data = good_files[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    nan = tmp_path / "nan.wav"
    samples = load_audio(good_files[1]).numpy().copy()
    samples[1000:1010] = np.nan
    sf.write(nan, samples, 16_000, subtype="FLOAT")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(800, dtype=np.float32), 16_000)
    folder = tmp_path / "folder"
    folder.mkdir()
    bad = [empty, truncated, nan, text, tmp_path / "gone.wav", short, folder]
    mixed: list[Path] = []
    for index, good in enumerate(good_files):
        mixed.append(good)
        if index < len(bad):
            mixed.append(bad[index])
    return mixed


def _engine(model, **options) -> BatchEngine:
    def forward(waveforms, lengths):
        return list(model(waveforms, lengths).cpu())

    return BatchEngine(module=model, sample_rate=16_000, forward=forward, min_duration=model.min_duration, **options)


def _trace(engine: BatchEngine, paths) -> list:
    """Every step as plain values: per finished file its index, problem, samples and result."""
    with steps(engine, paths, progress=False) as run:
        return [
            (step.window_end, [(f.index, f.problem, f.samples, None if f.result is None else f.result.tolist())
                               for f in step.finished])
            for step in run
        ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- parallel decoding


@pytest.mark.parametrize("workers, read_ahead", [(2, None), (3, 1), (4, 2)])
def test_parallel_decoding_gives_the_serial_steps_results_and_failures(mixed_files, workers, read_ahead):
    model = LogEnergyModel()
    serial = _trace(_engine(model, batch_size=2, window_batches=2), mixed_files)
    parallel = _trace(
        _engine(model, batch_size=2, window_batches=2, decode_workers=workers, read_ahead=read_ahead), mixed_files
    )
    assert parallel == serial
    problems = [problem for _, finished in serial for _, problem, _, _ in finished if problem]
    assert len(problems) == 7 and any("NaN" in p for p in problems) and any("truncated" in p for p in problems)


def test_parallel_prediction_table_equals_the_serial_one(tmp_path, mixed_files):
    serial = predict_files(LogEnergyModel(), mixed_files, batch_size=3, progress=False, out=tmp_path / "a.csv")
    parallel = predict_files(
        LogEnergyModel(), mixed_files, batch_size=3, progress=False, out=tmp_path / "b.csv", decode_workers=3
    )
    assert parallel.records() == serial.records()
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_read_ahead_is_bounded_and_used(good_files, monkeypatch):
    """At most ``read_ahead`` files are decoded or being decoded beyond those the engine has taken."""
    read_ahead = 3
    paths = good_files * 2
    engine = _engine(LogEnergyModel(), decode_workers=2, read_ahead=read_ahead)
    started = 0
    changed = threading.Condition()
    load = engine_module._load_file

    def counting_load(*args):
        nonlocal started
        with changed:
            started += 1
            changed.notify_all()
        return load(*args)

    monkeypatch.setattr(engine_module, "_load_file", counting_load)
    taken = 0
    for item in engine._loaded(paths):
        assert item.index == taken  # input order
        expected = min(taken + read_ahead, len(paths))  # submitted before this item was handed over
        with changed:  # the workers do read ahead, and no further
            assert changed.wait_for(lambda wanted=expected: started >= wanted, timeout=WAIT_SECONDS)
            assert started <= expected
        taken += 1
    assert taken == started == len(paths)


@pytest.mark.slow
def test_decode_processes_give_the_serial_steps(mixed_files):
    model = LogEnergyModel()
    serial = _trace(_engine(model, batch_size=2, window_batches=2), mixed_files)
    processes = _trace(_engine(model, batch_size=2, window_batches=2, decode_workers=2, decode_processes=True),
                       mixed_files)  # fmt: skip
    assert processes == serial


def test_stopping_early_ends_the_decode_workers(good_files):
    engine = _engine(LogEnergyModel(), batch_size=1, window_batches=1, decode_workers=3)
    with steps(engine, good_files * 3, progress=False) as run:
        next(iter(run))
        assert any(t.name.startswith("sermodels-decode") for t in threading.enumerate())
    assert not any(t.name.startswith("sermodels-decode") for t in threading.enumerate())
    with pytest.raises(ValueError, match="decode_workers"):
        _engine(LogEnergyModel(), decode_workers=-1)
    with pytest.raises(ValueError, match="read_ahead"):
        _engine(LogEnergyModel(), read_ahead=0)


# ---------------------------------------------------------------------------------------------- batches, devices


def test_padded_batch_and_the_pinned_memory_decision(good_files, monkeypatch):
    waveforms = [load_audio(p) for p in good_files[:4]]
    batch = pad_batch(waveforms)
    longest = max(w.shape[0] for w in waveforms)
    assert batch.shape == (4, longest) and batch.dtype == torch.float32
    for row, waveform in zip(batch, waveforms):
        assert torch.equal(row[: waveform.shape[0]], waveform) and not row[waveform.shape[0] :].any()
    # The CPU never pins; CUDA pins only when a device is there (page-locked memory needs the driver).
    assert not pins_memory("cpu") and not pins_memory(torch.device("cpu"))
    assert pins_memory("cuda") == torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pins_memory("cuda") and pins_memory("cuda:1") and not pins_memory("cpu")
    monkeypatch.undo()
    assert to_device(batch, "cpu") is batch  # on the CPU nothing is copied
    # How a pinned batch is filled (the buffer itself needs CUDA): the same rows, stale contents overwritten.
    stale = torch.full((4, longest + 7), 9.0)
    filled = fill_padded(stale, waveforms)
    assert filled is stale and torch.equal(filled[:, :longest], batch) and not filled[:, longest:].any()


def test_batches_prepared_ahead_give_the_same_steps(mixed_files, good_files):
    """The CUDA default (the next batch built in a helper thread while the module runs), forced on the CPU."""
    model = LogEnergyModel()
    serial = _trace(_engine(model, batch_size=2, window_batches=2), mixed_files)
    ahead = _trace(_engine(model, batch_size=2, window_batches=2, prefetch_batches=True, decode_workers=2), mixed_files)
    assert ahead == serial
    engine = _engine(model, batch_size=1, window_batches=8, prefetch_batches=True)
    with steps(engine, good_files, progress=False) as run:
        next(iter(run))  # the first batch of a window of eight: the second is being prepared
    assert not any(t.name.startswith("sermodels-batch") for t in threading.enumerate())


def test_pinned_path_pins_then_copies_without_blocking(monkeypatch):
    """The CUDA branch of ``to_device`` with the two tensor calls it makes recorded (no GPU here)."""
    calls = []

    class Recorded(torch.Tensor):
        def is_pinned(self):
            return False

        def pin_memory(self):
            calls.append("pin")
            return self

        def to(self, *args, **kwargs):
            calls.append(("to", str(args[0]), kwargs))
            return torch.Tensor.to(self.as_subclass(torch.Tensor), "cpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    moved = to_device(torch.ones(2, 3).as_subclass(Recorded), "cuda")
    assert calls == ["pin", ("to", "cuda", {"non_blocking": True})] and torch.equal(moved, torch.ones(2, 3))


# ---------------------------------------------------------------------------------------------- snapshot writer


def test_writer_writes_one_at_a_time_and_the_latest_first():
    began, release = threading.Event(), threading.Event()
    written: list[int] = []
    active = []
    changed = threading.Condition()

    def write(snapshot):
        active.append(snapshot)
        assert len(active) == 1  # never two writes at once
        if snapshot == 1:
            began.set()
            release.wait(WAIT_SECONDS)
        with changed:
            written.append(snapshot)
            active.remove(snapshot)
            changed.notify_all()

    writer = SnapshotWriter(write)
    writer.submit(1)
    assert began.wait(WAIT_SECONDS)
    writer.submit(2)  # waits for 1 ...
    writer.submit(3)  # ... and is replaced by 3: an older table is not worth writing
    release.set()
    with changed:
        assert changed.wait_for(lambda: len(written) == 2, timeout=WAIT_SECONDS)
    assert writer.stop() is None and written == [1, 3]
    assert not writer._thread.is_alive()


def test_a_failed_write_is_raised_in_the_calling_thread():
    def write(snapshot):
        raise OSError("No space left on device")

    writer = SnapshotWriter(write)
    writer.submit(1)
    writer._thread.join(WAIT_SECONDS)
    with pytest.raises(RuntimeError, match="writing a snapshot failed: No space left"):
        writer.submit(2)
    error = writer.stop()
    assert isinstance(error, RuntimeError) and isinstance(error.__cause__, OSError)


def test_background_snapshots_are_complete_and_the_final_table_is_the_serial_one(tmp_path, mixed_files):
    out = tmp_path / "snapshot.json"
    model = SnapshotReadingModel(out)
    result = predict_files(model, mixed_files, batch_size=2, progress=False, out=out, save_every_seconds=0.0)
    counts = [0 if seen is None else seen for seen in model.seen]
    assert counts == sorted(counts) and counts[-1] <= len(result.rows)  # every snapshot parsed, none went back
    payload = json.loads(out.read_text())
    assert payload["complete"] is True and payload["predictions"] == result.rows
    serial_out = tmp_path / "serial.json"
    serial = predict_files(
        LogEnergyModel(), mixed_files, batch_size=2, progress=False, out=serial_out, background_writes=False
    )
    assert result.records() == serial.records() and out.read_text() == serial_out.read_text()
    assert not any(t.name == "sermodels-snapshots" for t in threading.enumerate())


class InterruptedModel(LogEnergyModel):
    def forward(self, waveforms, lengths=None, head=None):
        if len(self.batch_shapes) == 2:
            raise KeyboardInterrupt
        return super().forward(waveforms, lengths, head)


def test_an_interruption_leaves_the_finished_files_on_disk(tmp_path, good_files):
    out = tmp_path / "partial.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_files(InterruptedModel(), good_files, batch_size=2, progress=False, out=out, save_every_seconds=0.0)
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 4  # the header and the two finished batches: the final write came last
    assert not any(t.name == "sermodels-snapshots" for t in threading.enumerate())


class WaitsForTheWriterToDie(LogEnergyModel):
    """Its second batch starts only once the snapshot thread has ended (after its first write failed)."""

    def forward(self, waveforms, lengths=None, head=None):
        if len(self.batch_shapes) == 1:
            for thread in threading.enumerate():
                if thread.name == "sermodels-snapshots":
                    thread.join(WAIT_SECONDS)
        return super().forward(waveforms, lengths, head)


def test_a_failed_background_write_is_raised_and_a_complete_snapshot_stays(tmp_path, good_files, monkeypatch):
    write = predict_module.write_predictions
    calls = []

    def first_write_fails(result, path, **options):
        calls.append(result.complete)
        if len(calls) == 1:
            raise OSError("No space left on device")
        return write(result, path, **options)

    monkeypatch.setattr(predict_module, "write_predictions", first_write_fails)
    out = tmp_path / "out.json"
    # Batch 1 -> a timed snapshot that fails in the thread; after batch 2 the next one raises the failure in the
    # loop, and the final snapshot (the two batches) is written on the way out, as with synchronous writes.
    with pytest.raises(RuntimeError, match="writing a snapshot failed: No space left"):
        predict_files(
            WaitsForTheWriterToDie(), good_files, batch_size=2, progress=False, out=out, save_every_seconds=0.0
        )
    payload = json.loads(out.read_text())
    assert calls == [False, False] and payload["complete"] is False and len(payload["predictions"]) == 4


# ---------------------------------------------------------------------------------------------- resampling


def _snr(reference: np.ndarray, estimate: np.ndarray, rate: int, below: float | None = None) -> float:
    """Signal-to-difference ratio in dB, over the whole band or the band below ``below`` Hz."""
    spectrum, error = np.fft.rfft(reference), np.fft.rfft(estimate - reference)
    if below is not None:
        keep = np.fft.rfftfreq(len(reference), 1 / rate) < below
        spectrum, error = spectrum[keep], error[keep]
    return float(10 * np.log10((np.abs(spectrum) ** 2).sum() / (np.abs(error) ** 2).sum()))


@pytest.mark.parametrize("orig, new", [(16_000, 8_000), (16_000, 22_050), (16_000, 44_100), (16_000, 12_345)])
def test_resampler_agrees_with_soxr_on_speech(good_files, orig, new):
    speech = load_audio(good_files[0])
    ours = resample(speech, orig, new)
    reference = soxr.resample(speech.numpy(), orig, new, quality="VHQ")
    assert ours.shape[0] == -(-new * speech.shape[0] // orig)  # ceil(new * samples / orig)
    assert abs(ours.shape[0] - len(reference)) <= 1
    n = min(ours.shape[0], len(reference))
    ours, reference = ours[:n].numpy().astype(np.float64), reference[:n].astype(np.float64)
    # Both are linear-phase low-pass interpolators; they differ in the transition band (soxr VHQ is far steeper).
    assert _snr(reference, ours, new, below=0.8 * min(orig, new) / 2) > 40.0
    assert _snr(reference, ours, new) > 25.0


def test_resampler_downsampling_recovers_the_original(good_files):
    speech = load_audio(good_files[1])
    for rate in (48_000, 44_100):
        high = torch.from_numpy(soxr.resample(speech.numpy(), 16_000, rate, quality="VHQ"))
        back = resample(high, rate, 16_000)
        n = min(back.shape[0], speech.shape[0])
        assert _snr(speech[:n].double().numpy(), back[:n].double().numpy(), 16_000, below=0.8 * 8_000) > 40.0


def test_resampler_shapes_dtypes_and_options(good_files):
    speech = load_audio(good_files[2])[:20_000]
    assert resample(speech, 16_000, 16_000) is speech
    batch = torch.stack([speech, speech.flip(0), speech * 0.5]).reshape(3, 1, -1)
    out = resample(batch, 48_000, 32_000)  # reduces to 3 -> 2
    assert out.shape == (3, 1, 20_000 * 2 // 3 + 1)
    torch.testing.assert_close(out[1, 0], resample(speech.flip(0), 3, 2))
    assert resample(speech.double(), 16_000, 8_000).dtype == torch.float64
    kaiser = resample(speech, 16_000, 8_000, resampling_method="sinc_interp_kaiser", beta=8.0)
    hann = resample(speech, 16_000, 8_000)
    assert _snr(hann.double().numpy(), kaiser.double().numpy(), 8_000, below=3_000) > 30.0
    dc = resample(torch.ones(4_000), 16_000, 44_100)
    torch.testing.assert_close(dc[500:-500], torch.ones_like(dc[500:-500]), atol=2e-3, rtol=0)  # unit gain at DC
    with pytest.raises(ValueError, match="resampling_method"):
        resample(speech, 16_000, 8_000, resampling_method="linear")
    with pytest.raises(TypeError, match="floating-point"):
        resample(torch.ones(10, dtype=torch.long), 2, 1)


def test_resampling_on_the_device_matches_soxr_on_the_host(tmp_path, good_files):
    """Files at 44.1 and 8 kHz: the workers decode at the file's rate, the engine resamples where the model runs."""
    paths = []
    for rate, good in zip((44_100, 8_000, 16_000), good_files):
        path = tmp_path / f"{good.stem}_{rate}.wav"
        sf.write(path, soxr.resample(load_audio(good).numpy(), 16_000, rate, quality="VHQ"), rate, subtype="FLOAT")
        paths.append(path)
    short = tmp_path / "short_8k.wav"
    sf.write(short, np.zeros(400, dtype=np.float32), 8_000)  # 0.05 s, under the model's minimum
    paths.append(short)
    model = LogEnergyModel()

    def waveforms_back(waveforms, lengths):  # the engine's input itself: each file's waveform as its result
        return [row[:length].cpu() for row, length in zip(waveforms, lengths.tolist())]

    options = {"forward": waveforms_back, "min_duration": model.min_duration}
    with steps(BatchEngine(model, 16_000, **options), paths, progress=False) as run:
        host = {f.index: f for step in run for f in step.finished}
    device = BatchEngine(model, 16_000, **options, resample_on_device=True, decode_workers=2)
    with steps(device, paths, progress=False) as run:
        on_device = {f.index: f for step in run for f in step.finished}
    assert on_device[3].problem == host[3].problem and "too short" in host[3].problem
    for index, rate in enumerate((44_100, 8_000)):
        ours, theirs = on_device[index].result.double().numpy(), host[index].result.double().numpy()
        n = min(len(ours), len(theirs))
        assert abs(len(ours) - len(theirs)) <= 1
        assert _snr(theirs[:n], ours[:n], 16_000, below=0.8 * min(rate, 16_000) / 2) > 40.0
    assert torch.equal(on_device[2].result, host[2].result)  # at the model's rate nothing is resampled


# ---------------------------------------------------------------------------------------------- predict options


def test_bf16_on_the_cpu_gives_the_fp32_labels_of_the_default_model():
    model = sermodels.load("default")
    fp32 = predict_files(model, [CLIPS], progress=False)
    bf16 = predict_files(model, [CLIPS], progress=False, precision="bf16", decode_workers=2, channels_last=True)
    assert len(fp32.rows) == 5 and [r["label"] for r in bf16.rows] == [r["label"] for r in fp32.rows]
    torch.testing.assert_close(bf16.logits, fp32.logits, atol=0.2, rtol=0.05)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        predict_files(model, [CLIPS], progress=False, precision="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        predict_files(model, [CLIPS], progress=False, precision="int3")


@pytest.mark.slow
def test_compiled_prediction_equals_eager(good_files):
    model = LogEnergyModel()
    eager = predict_files(model, good_files, batch_size=4, progress=False)
    compiled = predict_files(model, good_files, batch_size=4, progress=False, compile=True)
    torch.testing.assert_close(compiled.logits, eager.logits, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- GPU tier


@pytest.mark.gpu
def test_the_cuda_feeding_path_gives_the_cpu_table(tmp_path, mixed_files):
    """Decode threads, pinned non-blocking copies, batches prepared ahead and background snapshots on CUDA."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = LogEnergyModel()
    cpu = predict_files(model, mixed_files, batch_size=4, progress=False)
    gpu = predict_files(
        model, mixed_files, batch_size=4, progress=False, device="cuda", decode_workers=2, out=tmp_path / "gpu.json",
        save_every_seconds=0.0,
    )  # fmt: skip
    assert gpu.paths == cpu.paths and gpu.failures == cpu.failures
    torch.testing.assert_close(gpu.logits, cpu.logits, atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "gpu.json").read_text())["complete"] is True


@pytest.mark.gpu
def test_the_resampler_on_cuda_equals_the_cpu(good_files):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    speech = load_audio(good_files[0])
    for new in (8_000, 22_050, 44_100):
        torch.testing.assert_close(resample(speech.cuda(), 16_000, new).cpu(), resample(speech, 16_000, new),
                                   atol=1e-5, rtol=0)  # fmt: skip


def test_rows_of_a_step_computed_together_equal_the_rows_of_each_file(mixed_files):
    """predict scores a step's files in one call; the rows are those of :func:`_outcome` file by file."""
    model = LogEnergyModel()
    head = model.resolve_head(None)
    spec = model.output_spec(head)
    engine = _engine(model, batch_size=4)
    with steps(engine, mixed_files, progress=False) as run:
        for step in run:
            together = predict_module._outcomes(model, head, spec, mixed_files, step.finished, None, True)
            for done, outcome in zip(step.finished, together):
                alone = predict_module._outcome(model, head, spec, mixed_files[done.index], done, None)
                assert outcome == alone if isinstance(alone, str) else outcome.row == alone.row


def test_resampler_refuses_rates_that_share_no_factor():
    from sermodels.features.resample import resample

    with pytest.raises(ValueError, match="44101 -> 16000 Hz needs a 16000 x 44101"):
        resample(torch.zeros(1, 100), 44101, 16000)
