"""`sermodels features av_spnet` on real EMO-DB files: rows equal to ``AVSpNet.embed`` of each file or window (both
layers, CSV and NPY), bad and too-short files listed in the errors file, resuming with another model refused, and a
window shorter than one 810 ms segment refused before any work.

The models are fresh seeded AV-SpNETs written with the checkpoint writer into a temporary folder; the engine and
the formats are tested in depth with Deep Spectrum (``test_features.py``).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.cli import main
from sermodels.features.windows import plan_windows
from sermodels.pipelines.features import extract_to_file
from sermodels.pipelines.model_features import AVSpNetFeatures, load_av_spnet

RATE = 16000
STEMS = ("03a01Fa", "03a01Nc", "03a01Wa", "03a02Fc")  # sorted, as a folder lists them
# The encoder sees the segments of a whole batch in one pass, the reference those of one clip: kernels may differ with
# the number of segments (features of order 1).
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _fresh_model(seed: int) -> sermodels.SERModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = sermodels.create_model("av_spnet", domains={"proxy": ["high", "low"]}, proxy_heads=["proxy"])
    return model.eval()


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> dict[int, Path]:
    """Checkpoint folders of two fresh models (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("models")
    return {seed: save_pretrained(_fresh_model(seed), root / f"seed{seed}") for seed in (0, 1)}


@pytest.fixture(scope="module")
def model(model_folders) -> sermodels.SERModel:
    """The model of seed 0 as the command loads it."""
    return sermodels.load(model_folders[0])


@pytest.fixture
def inputs(tmp_path, emodb_root) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for stem in STEMS:
        shutil.copyfile(emodb_root / "wav" / f"{stem}.flac", folder / f"{stem}.flac")
    return folder


def _cli(model_folder: Path, *args: str) -> int:
    return main(["features", "av_spnet", "--model", str(model_folder), "--no-progress", *args])


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _features(header: list[str], rows: list[list[str]]) -> np.ndarray:
    columns = [i for i, name in enumerate(header) if name.startswith("neuron_")]
    return np.array([[float(row[i]) for i in columns] for row in rows], dtype=np.float32)


def _embed(model, path: Path, layer: str = "conv", spans: list[tuple[int, int]] | None = None) -> np.ndarray:
    """``model.embed`` of the decoded file (or of each span of it), one clip at a time."""
    waveform = load_audio(path, RATE)
    spans = spans or [(0, waveform.shape[0])]
    with torch.inference_mode():
        return np.concatenate([model.embed(waveform[None, a:b], layer=layer).numpy() for a, b in spans])


def test_csv_and_npy_rows_equal_embed_of_each_file(tmp_path, inputs, model, model_folders):
    out = tmp_path / "av.csv"
    assert _cli(model_folders[0], str(inputs), "-o", str(out)) == 0
    header, rows = _read_csv(out)
    assert header == ["name", *[f"neuron_{i}" for i in range(model.flat_dim)]] and model.flat_dim == 5376
    assert [row[0] for row in rows] == [f"{stem}.flac" for stem in STEMS]
    got = _features(header, rows)
    want = np.concatenate([_embed(model, inputs / f"{stem}.flac") for stem in STEMS])
    np.testing.assert_allclose(got, want, **TOLERANCE)
    assert got.std() > 0 and not np.allclose(got[0], got[1])  # real, file-dependent features

    npy = tmp_path / "av.npy"
    assert _cli(model_folders[0], str(inputs), "-o", str(npy), "--batch-size", "3") == 0
    np.testing.assert_allclose(np.load(npy, allow_pickle=False), got, **TOLERANCE)
    assert _read_csv(tmp_path / "av.index.csv")[1] == [[row[0]] for row in rows]
    assert not (tmp_path / "av.csv.partial").exists() and not (tmp_path / "av.errors.csv").exists()


def test_shared_fc_layer_gives_1024_features(tmp_path, inputs, model, model_folders):
    out = tmp_path / "fc.npy"
    assert _cli(model_folders[0], str(inputs), "--layer", "shared_fc", "-o", str(out)) == 0
    got = np.load(out)
    assert got.shape == (len(STEMS), 1024) and got.dtype == np.float32
    want = np.concatenate([_embed(model, inputs / f"{stem}.flac", "shared_fc") for stem in STEMS])
    np.testing.assert_allclose(got, want, **TOLERANCE)


def test_windows_give_a_row_per_window_with_timestamps(tmp_path, inputs, model, model_folders):
    window, hop = 1.0, 0.5
    files = [inputs / "03a01Fa.flac", inputs / "03a01Wa.flac"]
    out = tmp_path / "win.csv"
    assert _cli(model_folders[0], *map(str, files), "--window", str(window), "--hop", str(hop), "-o", str(out)) == 0
    header, rows = _read_csv(out)
    assert header[:3] == ["name", "timeStamp", "neuron_0"]
    for path in files:
        mine = [row for row in rows if row[0] == path.name]
        plan = plan_windows(sf.info(str(path)).frames, RATE, window, hop, 0.0, None)
        assert len(mine) == len(plan.starts) > 1
        assert [float(row[1]) for row in mine] == pytest.approx([k * hop for k in range(len(mine))])
        np.testing.assert_allclose(_features(header, mine), _embed(model, path, spans=plan.spans), **TOLERANCE)


def test_a_clip_gives_the_same_row_alone_and_in_a_padded_batch(model, emodb_root):
    """25540 samples make 160 centred frames, two whole segments whose last frame reads past the end: the padded
    batch must not put its zeros there (``model.embed`` of the padded batch does, by about 1e-2)."""
    clip = load_audio(emodb_root / "wav" / "03a01Wa.flac", RATE)[:25540]
    longer = load_audio(emodb_root / "wav" / "03a01Fa.flac", RATE)[:29540]
    waveforms = torch.zeros(2, 29540)
    waveforms[0, :25540], waveforms[1] = clip, longer
    lengths = torch.tensor([25540, 29540])
    with torch.inference_mode():
        rows = AVSpNetFeatures(model).features(waveforms, lengths, None)
        alone = torch.cat([model.embed(clip[None]), model.embed(longer[None])])
    assert rows.shape == (2, model.flat_dim) and rows.dtype == torch.float32
    torch.testing.assert_close(rows, alone, **TOLERANCE)


def test_too_short_empty_and_corrupt_files_skipped_and_listed(tmp_path, inputs, model_folders, capsys):
    clip, rate = sf.read(str(inputs / "03a01Fa.flac"), frames=8000)
    sf.write(str(inputs / "short.wav"), clip, rate)  # 0.5 s: under one 810 ms segment
    (inputs / "empty.flac").write_bytes(b"")
    (inputs / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    out = tmp_path / "av.csv"
    assert _cli(model_folders[0], str(inputs), "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "short.wav: too short: 0.500 s, the minimum is 0.810 s" in err and "3 of 7 files failed" in err
    assert [row[0] for row in _read_csv(out)[1]] == [f"{stem}.flac" for stem in STEMS]
    header, errors = _read_csv(tmp_path / "av.errors.csv")
    assert header == ["path", "error"]
    assert [Path(path).name for path, _ in errors] == ["corrupt.wav", "empty.flac", "short.wav"]  # input order
    assert "not an audio file" in errors[0][1] and "empty file" in errors[1][1] and "too short" in errors[2][1]


def test_resuming_with_another_model_refused_then_restart(tmp_path, inputs, model_folders, capsys):
    extractor, weights_id = load_av_spnet(model_folders[0])
    assert weights_id.startswith("sha256:")
    out = tmp_path / "av.csv"
    first = extract_to_file([inputs], out, extractor, weights_id=weights_id, progress=False, max_files=1)
    assert first["complete"] is False
    partial = tmp_path / "av.csv.partial"
    shard = next(partial.glob("shard-*.npz")).read_bytes()

    assert _cli(model_folders[1], str(inputs), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--restart" in err
    assert f"weights: '{weights_id}' then, 'sha256:" in err and "weights_state_sha256: '" in err
    assert next(partial.glob("shard-*.npz")).read_bytes() == shard and not out.exists()  # nothing lost

    assert _cli(model_folders[0], str(inputs), "--layer", "shared_fc", "-o", str(out)) == 2  # another layer too
    assert "extractor.layer: 'conv' then, 'shared_fc' now" in capsys.readouterr().err

    assert _cli(model_folders[1], str(inputs), "--restart", "-o", str(out)) == 0
    assert len(_read_csv(out)[1]) == len(STEMS) and not partial.exists()


def test_window_shorter_than_a_segment_refused_before_any_work(tmp_path, inputs, model_folders, capsys):
    out = tmp_path / "av.csv"
    assert _cli(model_folders[0], str(inputs), "--window", "0.5", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "window 0.5 s is 8000 samples at 16000 Hz; an AV-SpNET segment needs at least 12960 samples" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written

    assert _cli(model_folders[0], str(inputs / "03a01Fa.flac"), "--end", "0.5", "-o", str(out)) == 1
    assert "the window/crop leaves 8000 samples (0.500 s); an AV-SpNET segment needs at least 12960" in (
        capsys.readouterr().err
    )


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["features", "av_spnet", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--layer", "--window", "--labels", "--folder-labels", "--precision", "--restart"):
        assert option in text


def test_the_released_front_end_by_id(tmp_path, inputs):
    released = sermodels.load("av_spnet.proxy4").eval()
    out = tmp_path / "released.npy"
    code = main(["features", "av_spnet", str(inputs), "--model", "av_spnet.proxy4", "--layer", "shared_fc",
                 "-o", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    want = np.concatenate([_embed(released, inputs / f"{stem}.flac", "shared_fc") for stem in STEMS])
    np.testing.assert_allclose(np.load(out), want, **TOLERANCE)
