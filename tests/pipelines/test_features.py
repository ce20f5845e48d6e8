"""`sermodels features deepspectrum` on real EMO-DB files: output formats, windows and crops, labels, bad files,
resuming an interrupted run (replaced and failed files redone), the image options, the output lock, and the errors
that stop a job (exit 2).

A small random-init MobileNetV2 (seeded, 32 x 32 images) keeps it fast; the reference features come from
:class:`DeepSpectrum` applied to each decoded file (or window) directly.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import inspect
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sermodels.audio import load_audio
from sermodels.cli import main
from sermodels.features.deepspectrum import DeepSpectrum
from sermodels.features.spectrogram_image import DS_HOP, DS_N_FFT, SpectrogramImage
from sermodels.features.windows import plan_windows
from sermodels.pipelines import features_cli
from sermodels.pipelines.features import build_extractor, extract_to_file

BACKBONE = "mobilenetv2_100"
SIZE = 32
RATE = 16000
STEMS = ("03a01Fa", "03a01Nc", "03a01Wa", "03a02Fc")  # sorted, as a folder lists them
# The images of a clip are the same alone or in a padded batch; the CNN's kernels differ with the batch size by a
# few 1e-6 on features of order 1.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
CLASS_FOLDERS = [("anger", "03a01Wa"), ("happiness", "03a01Fa"), ("happiness", "03a02Fc"), ("neutral", "03a01Nc")]


def _cli(*args: str) -> int:
    base = ["features", "deepspectrum", "--backbone", BACKBONE, "--random-init", "--size", str(SIZE)]
    return main([*base, "--no-progress", *args])


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _features(header: list[str], rows: list[list[str]]) -> np.ndarray:
    columns = [i for i, name in enumerate(header) if name.startswith("neuron_")]
    return np.array([[float(row[i]) for i in columns] for row in rows], dtype=np.float32)


def _direct(reference: DeepSpectrum, path: Path, spans: list[tuple[int, int]] | None = None) -> np.ndarray:
    """Features of the decoded file (or of each span of it), one clip per forward."""
    waveform = load_audio(path, RATE)
    spans = spans or [(0, waveform.shape[0])]
    with torch.inference_mode():
        return np.concatenate([reference(waveform[None, a:b]).numpy() for a, b in spans])


@pytest.fixture(scope="module")
def reference() -> DeepSpectrum:
    """The extractor `--random-init` builds (timm's initialisation from torch.manual_seed(--seed=0))."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DeepSpectrum(BACKBONE, pretrained=False, image={"size": (SIZE, SIZE)}).eval()


@pytest.fixture
def inputs(tmp_path, emodb_root) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for stem in STEMS:
        (folder / f"{stem}.flac").symlink_to(emodb_root / "wav" / f"{stem}.flac")
    return folder


def test_csv_one_row_per_file_equal_to_direct_extraction(tmp_path, inputs, reference):
    out = tmp_path / "ds.csv"
    assert _cli(str(inputs), "-o", str(out)) == 0
    header, rows = _read_csv(out)
    # The toolkit numbers the features from 0; no timeStamp (whole files), no class (no labels).
    assert header == ["name", *[f"neuron_{i}" for i in range(reference.dim)]]
    assert [row[0] for row in rows] == [f"{stem}.flac" for stem in STEMS]
    got = _features(header, rows)
    want = np.concatenate([_direct(reference, inputs / f"{stem}.flac") for stem in STEMS])
    np.testing.assert_allclose(got, want, **TOLERANCE)
    assert got.std() > 0 and not np.allclose(got[0], got[1])  # real, file-dependent features
    assert not (tmp_path / "ds.csv.partial").exists() and not (tmp_path / "ds.errors.csv").exists()


@pytest.mark.parametrize("crop", [(0.0, None), (0.3, 1.6)])
def test_windowed_rows_timestamps_and_crop(tmp_path, inputs, reference, crop):
    window, hop = 0.5, 0.25
    start, end = crop
    out = tmp_path / "win.csv"
    files = [inputs / "03a01Fa.flac", inputs / "03a01Nc.flac"]
    extra = ["--start", str(start)] + (["--end", str(end)] if end is not None else [])
    assert _cli(*map(str, files), "--window", str(window), "--hop", str(hop), *extra, "-o", str(out)) == 0
    header, rows = _read_csv(out)
    assert header[:3] == ["name", "timeStamp", "neuron_0"] and header[-1] == f"neuron_{reference.dim - 1}"
    for path in files:
        mine = [row for row in rows if row[0] == path.name]
        frames = sf.info(str(path)).frames
        duration = frames / RATE
        usable = (end if end is not None else duration) - start
        count = int((usable - window) / hop + 1e-9) + 1
        plan = plan_windows(frames, RATE, window, hop, start, end)
        assert len(mine) == len(plan.starts) == count
        stamps = [float(row[1]) for row in mine]
        assert stamps == pytest.approx([start + k * hop for k in range(count)])
        assert stamps[-1] + window <= (end if end is not None else duration) + 1e-9
        np.testing.assert_allclose(_features(header, mine), _direct(reference, path, plan.spans), **TOLERANCE)


def test_npy_with_index_and_parquet_equal_the_csv(tmp_path, inputs):
    common = [str(inputs), "--window", "1.0", "--folder-labels"]
    paths = {suffix: tmp_path / f"ds{suffix}" for suffix in (".csv", ".npy", ".parquet")}
    for path in paths.values():
        assert _cli(*common, "-o", str(path)) == 0
    header, rows = _read_csv(paths[".csv"])
    assert header[:2] == ["name", "timeStamp"] and header[-1] == "class"
    from_csv = _features(header, rows)
    matrix = np.load(paths[".npy"], allow_pickle=False)
    assert matrix.dtype == np.float32 and matrix.shape == from_csv.shape
    np.testing.assert_array_equal(matrix, from_csv)  # 9 significant digits round-trip float32
    index_header, index_rows = _read_csv(tmp_path / "ds.index.csv")
    assert index_header == ["name", "timeStamp", "class"]
    assert index_rows == [[row[0], row[1], row[-1]] for row in rows]

    import pyarrow.parquet as pq

    table = pq.read_table(paths[".parquet"])
    assert table.column_names == ["name", "timeStamp", "class", "features"]
    assert table["name"].to_pylist() == [row[0] for row in rows]
    assert table["timeStamp"].to_pylist() == [float(row[1]) for row in rows]
    assert set(table["class"].to_pylist()) == {"in"}  # the parent folder
    parquet = table["features"].combine_chunks().flatten().to_numpy().reshape(len(rows), -1)
    np.testing.assert_array_equal(parquet, matrix)


@pytest.fixture
def class_folders(tmp_path, emodb_root) -> Path:
    """A corpus laid out as one folder per class."""
    root = tmp_path / "corpus"
    for folder, stem in [
        ("anger", "03a01Wa"),
        ("happiness", "03a01Fa"),
        ("happiness", "03a02Fc"),
        ("neutral", "03a01Nc"),
    ]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{stem}.flac").symlink_to(emodb_root / "wav" / f"{stem}.flac")
    return root


def test_labels_from_a_table_and_from_folders(tmp_path, class_folders, capsys):
    names = ["anger/03a01Wa.flac", "happiness/03a01Fa.flac", "happiness/03a02Fc.flac", "neutral/03a01Nc.flac"]
    table = tmp_path / "labels.csv"
    # By relative path, by file name, by the .wav original's name, by the relative path without extension.
    table.write_text("file,emotion\nanger/03a01Wa.flac,W\n03a01Fa.flac,F\n03a02Fc.wav,F\nneutral/03a01Nc,N\n")
    out = tmp_path / "labelled.csv"
    assert _cli(str(class_folders), "--labels", str(table), "-o", str(out)) == 0
    header, rows = _read_csv(out)
    assert header[0] == "name" and header[-1] == "class" and header[1] == "neuron_0"
    assert [(row[0], row[-1]) for row in rows] == list(zip(names, ["W", "F", "F", "N"]))

    assert _cli(str(class_folders), "--folder-labels", "-o", str(out)) == 0
    assert [row[-1] for row in _read_csv(out)[1]] == ["anger", "happiness", "happiness", "neutral"]

    partial_table = tmp_path / "some.csv"
    partial_table.write_text("name,label\n03a01Fa.flac,F\n")
    assert _cli(str(class_folders), "--labels", str(partial_table), "--folder-labels", "-o", str(out)) == 0
    assert [row[-1] for row in _read_csv(out)[1]] == ["anger", "F", "happiness", "neutral"]  # the table wins

    assert _cli(str(class_folders), "--labels", str(partial_table), "-o", str(tmp_path / "x.csv")) == 2
    err = capsys.readouterr().err
    assert "no label for 3 of 4 input files" in err and "anger/03a01Wa.flac" in err
    assert not (tmp_path / "x.csv").exists()


def test_bad_files_reported_skipped_and_listed(tmp_path, inputs, capsys):
    (inputs / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (inputs / "empty.flac").write_bytes(b"")
    short, rate = sf.read(str(inputs / "03a01Fa.flac"), frames=100)
    sf.write(str(inputs / "short.wav"), short, rate)  # 100 samples: under the 512 of one uncentred STFT frame
    out = tmp_path / "ds.csv"
    assert _cli(str(inputs), "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "corrupt.wav: not an audio file" in err and "empty.flac: empty file" in err and "short.wav: too short" in err
    assert "3 of 7 files failed" in err
    _, rows = _read_csv(out)
    assert [row[0] for row in rows] == [f"{stem}.flac" for stem in STEMS]
    header, errors = _read_csv(tmp_path / "ds.errors.csv")
    assert header == ["path", "error"]
    assert [Path(path).name for path, _ in errors] == ["corrupt.wav", "empty.flac", "short.wav"]  # input order
    assert "not an audio file" in errors[0][1] and "empty file" in errors[1][1] and "too short" in errors[2][1]


def test_interrupted_run_resumes_with_the_rest_only(tmp_path, inputs, capsys):
    extractor, weights_id = build_extractor(BACKBONE, weights="random", image={"size": (SIZE, SIZE)})
    out = tmp_path / "ds.csv"
    options = {"window": 0.5, "weights_id": weights_id, "progress": False}
    first = extract_to_file([inputs], out, extractor, batch_size=2, max_files=2, **options)
    partial = tmp_path / "ds.csv.partial"
    assert first["complete"] is False and first["processed"] == 2 and not out.exists()
    assert (partial / "settings.json").is_file() and list(partial.glob("shard-*.npz"))

    second = extract_to_file([inputs], out, extractor, batch_size=3, **options)
    assert (second["already_done"], second["processed"], second["complete"]) == (2, 2, True)
    assert "2 of 4 files already done" in capsys.readouterr().err
    assert not partial.exists()

    whole = tmp_path / "whole.csv"  # uninterrupted, through the command line
    assert _cli(str(inputs), "--window", "0.5", "-o", str(whole)) == 0
    header, rows = _read_csv(out)
    whole_header, whole_rows = _read_csv(whole)
    assert header == whole_header and [row[:2] for row in rows] == [row[:2] for row in whole_rows]
    np.testing.assert_allclose(_features(header, rows), _features(header, whole_rows), **TOLERANCE)


def test_changed_settings_refused_then_restart(tmp_path, inputs, capsys):
    extractor, weights_id = build_extractor(BACKBONE, weights="random", image={"size": (SIZE, SIZE)})
    out = tmp_path / "ds.csv"
    extract_to_file([inputs], out, extractor, weights_id=weights_id, progress=False, max_files=1)
    partial = tmp_path / "ds.csv.partial"
    shard = next(partial.glob("shard-*.npz")).read_bytes()

    assert _cli(str(inputs), "--colormap", "magma", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "colormap: 'viridis' then, 'magma' now" in err and "--restart" in err
    assert next(partial.glob("shard-*.npz")).read_bytes() == shard and not out.exists()  # nothing lost

    assert _cli(str(inputs), "--colormap", "magma", "--restart", "-o", str(out)) == 0
    assert "already done" not in capsys.readouterr().err
    assert len(_read_csv(out)[1]) == len(STEMS) and not partial.exists()


def test_bf16_autocast_on_cpu_close_to_fp32(tmp_path, inputs, reference):
    path = inputs / "03a01Wa.flac"
    out = tmp_path / "bf16.npy"
    assert _cli(str(path), "--precision", "bf16", "-o", str(out)) == 0
    got, want = np.load(out)[0], _direct(reference, path)[0]
    assert got.dtype == np.float32 and not np.array_equal(got, want)  # the backbone did run in bfloat16
    assert np.corrcoef(got, want)[0, 1] > 0.99 and np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_jobs_that_cannot_run_exit_2(tmp_path, inputs, capsys):
    assert _cli(str(inputs), "--precision", "fp16", "-o", str(tmp_path / "a.csv")) == 2
    err = capsys.readouterr().err
    assert "fp16 needs a CUDA device" in err and "bf16" in err

    missing = tmp_path / "missing.safetensors"
    args = ["features", "deepspectrum", "--backbone", BACKBONE, "--weights", str(missing), "--no-progress"]
    assert main([*args, str(inputs), "-o", str(tmp_path / "b.csv")]) == 2
    assert f"{missing}: backbone weights file not found" in capsys.readouterr().err

    assert _cli(str(inputs), "-o", str(tmp_path / "c.txt")) == 2
    assert "unsupported output format" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "deepspectrum", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--weights", "--pretrained", "--random-init", "--window", "--labels", "--precision", "--restart"):
        assert option in text


def _random_extractor(**image):
    return build_extractor(BACKBONE, weights="random", image={"size": (SIZE, SIZE), **image})


def test_replaced_or_touched_files_are_recomputed_on_resume(tmp_path, inputs, emodb_root, reference):
    copy = inputs / "03a01Fa.flac"
    copy.unlink()
    shutil.copyfile(emodb_root / "wav" / "03a01Fa.flac", copy)  # a real file of ours, to touch
    extractor, weights_id = _random_extractor()
    out = tmp_path / "ds.csv"
    options = {"weights_id": weights_id, "progress": False, "verbose": False}
    first = extract_to_file([inputs], out, extractor, max_files=2, **options)  # 03a01Fa and 03a01Nc done
    assert (first["processed"], first["complete"]) == (2, False)

    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, a newer mtime
    replaced = inputs / "03a01Nc.flac"
    replaced.unlink()
    replaced.symlink_to(emodb_root / "wav" / "03a04Ad.flac")  # replaced: same name, another recording

    second = extract_to_file([inputs], out, extractor, **options)
    assert (second["already_done"], second["processed"], second["complete"]) == (0, 4, True)
    header, rows = _read_csv(out)
    assert [row[0] for row in rows] == [f"{stem}.flac" for stem in STEMS]  # each once: stale entries unused
    got = dict(zip([row[0] for row in rows], _features(header, rows)))
    np.testing.assert_allclose(got["03a01Nc.flac"], _direct(reference, replaced)[0], **TOLERANCE)
    np.testing.assert_allclose(got["03a01Fa.flac"], _direct(reference, copy)[0], **TOLERANCE)
    assert not np.allclose(got["03a01Nc.flac"], _direct(reference, emodb_root / "wav" / "03a01Nc.flac")[0])


def test_failed_files_are_retried_on_resume(tmp_path, inputs, emodb_root, reference, capsys):
    fixed, broken = inputs / "00fixed.flac", inputs / "zz_broken.flac"
    good = (emodb_root / "wav" / "03a04Ad.flac").read_bytes()
    fixed.write_bytes(bytes(len(good)))  # zeros: not an audio file
    stamp = fixed.stat().st_mtime_ns
    broken.write_bytes(b"")
    extractor, weights_id = _random_extractor()
    out = tmp_path / "ds.csv"
    options = {"weights_id": weights_id, "progress": False}
    first = extract_to_file([inputs], out, extractor, max_files=2, **options)  # 00fixed (fails) and 03a01Fa
    assert (first["processed"], first["failed"], first["complete"]) == (2, 1, False)
    assert "00fixed.flac: not an audio file" in capsys.readouterr().err

    # Fixed between the runs without a new size or mtime (as when a decoder or a permission was the problem): the
    # file keeps its key, and is retried because it failed.
    fixed.write_bytes(good)
    os.utime(fixed, ns=(stamp, stamp))
    second = extract_to_file([inputs], out, extractor, **options)
    assert (second["already_done"], second["processed"], second["failed"]) == (1, 5, 1)
    assert "1 of 6 files already done; retrying 1 that failed" in capsys.readouterr().err
    header, rows = _read_csv(out)
    assert [row[0] for row in rows] == ["00fixed.flac", *[f"{stem}.flac" for stem in STEMS]]
    np.testing.assert_allclose(_features(header, rows[:1]), _direct(reference, fixed), **TOLERANCE)
    _, errors = _read_csv(tmp_path / "ds.errors.csv")
    assert [Path(path).name for path, _ in errors] == ["zz_broken.flac"]  # the earlier error is gone


def test_settings_hold_versions_and_the_autocast_device(tmp_path, inputs):
    extractor, weights_id = _random_extractor()
    options = {"weights_id": weights_id, "progress": False, "verbose": False, "max_files": 0}
    import timm

    extract_to_file([inputs], tmp_path / "a.csv", extractor, **options)
    stored = json.loads((tmp_path / "a.csv.partial" / "settings.json").read_text())
    versions = {"python": platform.python_version(), "sermodels": "0.1.0", "torch": torch.__version__}
    assert stored["versions"] == {**versions, "timm": timm.__version__}
    assert "device_type" not in stored  # fp32 features do not depend on the device
    assert stored["extractor"]["image"] == {**SpectrogramImage(size=(SIZE, SIZE)).config()}

    extract_to_file([inputs], tmp_path / "b.csv", extractor, precision="bf16", **options)
    settings = tmp_path / "b.csv.partial" / "settings.json"
    stored = json.loads(settings.read_text())
    assert (stored["precision"], stored["device_type"]) == ("bf16", "cpu")

    stored["versions"]["torch"] = "1.0.0"  # as if written by another torch
    settings.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"versions\.torch: '1\.0\.0' then"):
        extract_to_file([inputs], tmp_path / "b.csv", extractor, precision="bf16", **options)


def test_a_second_run_on_the_same_output_is_refused(tmp_path, inputs, capsys):
    out = tmp_path / "ds.csv"
    partial = tmp_path / "ds.csv.partial"
    partial.mkdir()
    with open(partial / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run, as far as the command can tell
        assert _cli(str(inputs / "03a01Fa.flac"), "-o", str(out)) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by another run" in err
        assert not out.exists() and sorted(p.name for p in partial.iterdir()) == ["lock"]  # nothing written
    assert _cli(str(inputs / "03a01Fa.flac"), "-o", str(out)) == 0  # released: the run goes ahead
    assert len(_read_csv(out)[1]) == 1 and not partial.exists()


def test_too_short_window_refused_and_too_short_crop_reported(tmp_path, inputs, capsys):
    out = tmp_path / "ds.csv"
    assert _cli(str(inputs), "--window", "0.02", "-o", str(out)) == 2  # 320 samples < n_fft
    err = capsys.readouterr().err
    assert "window 0.02 s is 320 samples" in err and f"at least {DS_N_FFT} samples" in err
    assert f"n_fft={DS_N_FFT}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # refused before any work

    assert _cli(str(inputs / "03a01Fa.flac"), "--end", "0.02", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert f"the window/crop leaves 320 samples (0.020 s); a spectrogram image needs at least {DS_N_FFT}" in err


def test_image_options_reach_the_extractor(tmp_path, inputs, reference):
    path = inputs / "03a01Wa.flac"
    out = tmp_path / "opts.npy"
    options = ["--f-min", "100", "--f-max", "6000", "--top-db", "60", "--center", "--mel-scale", "htk"]
    assert _cli(str(path), *options, "--mel-norm", "none", "-o", str(out)) == 0
    image = {"size": (SIZE, SIZE), "f_min": 100.0, "f_max": 6000.0, "top_db": 60.0, "center": True}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tuned = DeepSpectrum(BACKBONE, image={**image, "mel_scale": "htk", "mel_norm": None}).eval()
    got = np.load(out)
    np.testing.assert_allclose(got, _direct(tuned, path), **TOLERANCE)
    assert not np.allclose(got, _direct(reference, path), **TOLERANCE)  # the options changed the features

    assert _cli(str(path), "--f-min", "9000", "-o", str(tmp_path / "bad.csv")) == 2  # above the Nyquist
    assert _cli(str(path), "--top-db", "0", "-o", str(tmp_path / "bad.csv")) == 2


def test_cli_image_defaults_are_the_module_defaults():
    parser = argparse.ArgumentParser()
    features_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["deepspectrum", "in.wav", "-o", "out.csv"])
    assert (args.n_fft, args.hop_length) == (DS_N_FFT, DS_HOP)
    defaults = {name: p.default for name, p in inspect.signature(SpectrogramImage).parameters.items()}
    for name in ("n_mels", "n_fft", "hop_length", "f_min", "f_max", "top_db", "center", "mel_scale", "colormap"):
        assert getattr(args, name) == defaults[name], name
    assert defaults["mel_norm"] == "slaney" == args.mel_norm and args.window is None
