"""Attention maps of an EmoNet on real EMO-DB clips: the map's arithmetic, the PNG, the baseline's refusal, the CLI."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import save_pretrained
from sermodels.cli import main
from sermodels.models.emonet import EmoNet
from sermodels.plots import DPI, FIGSIZE, attention_map, attention_targets, plot_attention

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "sermodels" / "assets" / "clips"
EMODB = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
URDU = ["angry", "happy", "neutral", "sad"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def emonet_folder(tmp_path_factory) -> Path:
    """A narrow two-head EmoNet (the real architecture, fewer filters) saved as a checkpoint folder."""
    torch.manual_seed(0)
    model = EmoNet({"emodb": EMODB, "urdu": URDU}, stem=8, widths=(8, 16, 32), attention_units=16, hidden=16)
    with torch.no_grad():  # fresh adapters are zeros: give the urdu domain its own network
        for param in model.domain_parameters("urdu"):
            if param.dim() == 4:
                param.normal_(std=0.2)
    return save_pretrained(model.eval(), tmp_path_factory.mktemp("emonet") / "tiny_emonet")


@pytest.fixture(scope="module")
def emonet(emonet_folder) -> EmoNet:
    return sermodels.load(emonet_folder)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return load_audio(CLIPS / "03a01Wa.flac", 16000)


def test_map_sits_on_the_spectrogram_grid_and_sums_to_one(emonet, clip):
    found = attention_map(emonet, clip)
    frames = int(emonet.melspec.num_frames(torch.tensor([clip.shape[0]]))[0])
    assert found["log_mel"].shape == found["attention"].shape == (64, frames)
    assert found["attention"].min() >= 0 and found["attention"].sum() == pytest.approx(1.0, abs=1e-6)
    # The model's own weights: three stride-2 stacks, each halving both axes and rounding up.
    cells = found["attention_cells"]
    assert cells.shape == (8, -(-frames // 8)) and found["cell_size"] == (8, 8)
    with torch.inference_mode():
        _, expected = emonet.attend(clip[None])
        logits = emonet(clip[None])[0]
    np.testing.assert_allclose(cells, expected[0].numpy(), rtol=1e-5, atol=1e-9)
    # Summing the spread map back over each cell's bins gives the cell's weight: nothing moved between cells.
    grid = found["attention"]
    padded = np.zeros((64, cells.shape[1] * 8))
    padded[:, :frames] = grid
    np.testing.assert_allclose(padded.reshape(8, 8, cells.shape[1], 8).sum(axis=(1, 3)), cells, rtol=1e-9)
    # Times are frame centres of the centred STFT (hop 256 at 16 kHz) and cover the clip.
    np.testing.assert_allclose(np.diff(found["times"]), 256 / 16000)
    assert found["times"][0] == 0 and found["times"][-1] <= found["duration"]
    # The prediction is the model's forward pass, through the default head.
    np.testing.assert_allclose(found["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
    assert found["head"] == "emodb" and found["label"] == EMODB[int(logits.argmax())]
    assert found["scores"].sum() == pytest.approx(1.0, abs=1e-5)


def test_map_of_another_head_uses_its_labels_and_adapters(emonet, clip):
    emodb, urdu = attention_map(emonet, clip), attention_map(emonet, clip, head="urdu")
    assert urdu["head"] == "urdu" and urdu["label"] in URDU and len(urdu["scores"]) == 4
    np.testing.assert_allclose(emodb["log_mel"], urdu["log_mel"])  # same input, different domain network
    assert not np.allclose(emodb["attention_cells"], urdu["attention_cells"])
    with pytest.raises(KeyError, match="no head 'ravdess'"):
        attention_map(emonet, clip, head="ravdess")


def test_plot_writes_a_png_of_the_figure_size(emonet, tmp_path):
    out = tmp_path / "maps" / "anger.png"
    found = plot_attention(emonet, CLIPS / "03a01Wa.flac", out)
    assert png_size(out) == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
    assert found["attention"].sum() == pytest.approx(1.0, abs=1e-6)
    # A waveform in memory draws the same map as the file it was decoded from.
    again = plot_attention(emonet, load_audio(CLIPS / "03a01Wa.flac", 16000), tmp_path / "wave.png", head="emodb")
    np.testing.assert_allclose(again["attention"], found["attention"])
    assert png_size(tmp_path / "wave.png") == png_size(out)


def test_too_long_and_badly_shaped_inputs_are_refused(emonet, clip, tmp_path):
    with pytest.raises(ValueError, match=r"03a01Wa.flac: waveform is 1\.9 s long.*at most 1 s"):
        plot_attention(emonet, CLIPS / "03a01Wa.flac", tmp_path / "x.png", max_seconds=1.0)
    with pytest.raises(ValueError, match="one mono waveform"):
        attention_map(emonet, torch.stack([clip, clip]))
    assert not (tmp_path / "x.png").exists()


def test_the_baseline_has_no_attention_to_draw(tmp_path, clip):
    svm = sermodels.load("logmel_svm.emodb")
    with pytest.raises(ValueError, match="logmel_svm has no attention pooling"):
        plot_attention(svm, CLIPS / "03a01Wa.flac", tmp_path / "svm.png")
    assert not (tmp_path / "svm.png").exists()


def test_predict_attention_for_one_file(emonet_folder, tmp_path):
    out, rows = tmp_path / "a.png", tmp_path / "p.csv"
    args = ["predict", "--model", str(emonet_folder), "--no-progress", str(CLIPS / "08a01Fd.flac")]
    assert main([*args, "--out", str(rows), "--attention", str(out)]) == 0
    assert png_size(out) == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
    assert rows.read_text().count("\n") == 2  # the predictions are still written


def test_predict_attention_for_a_folder_writes_one_png_per_file(emonet_folder, tmp_path, capsys):
    inputs = tmp_path / "in"
    for name in ("03a01Wa.flac", "08a02La.flac"):
        (inputs / name[:2]).mkdir(parents=True, exist_ok=True)
        (inputs / name[:2] / name).write_bytes((CLIPS / name).read_bytes())
    out = tmp_path / "maps"
    args = ["predict", "--model", str(emonet_folder), "--no-progress", "--head", "urdu", str(inputs)]
    assert main([*args, "--attention", str(out)]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["03/03a01Wa.png", "08/08a02La.png"]
    assert "wrote 2 attention maps" in capsys.readouterr().err


def test_predict_attention_errors_before_any_work(emonet_folder, tmp_path, capsys):
    two = [str(CLIPS / "03a01Wa.flac"), str(CLIPS / "03a02Ta.flac")]
    base = ["predict", "--no-progress", "--out", str(tmp_path / "p.csv")]
    assert main([*base, "--model", str(emonet_folder), *two, "--attention", str(tmp_path / "one.png")]) == 2
    assert "several inputs; give a folder" in capsys.readouterr().err
    assert main([*base, "--model", "logmel_svm.emodb", two[0], "--attention", str(tmp_path / "svm.png")]) == 2
    assert "has no attention pooling" in capsys.readouterr().err
    assert main([*base, "--model", str(emonet_folder), two[0], "--attention", str(tmp_path / "map.jpg")]) == 2
    assert "give a .png file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither predictions nor figures


def test_figure_names_keep_sub_folders_and_refuse_clashes(urdu_root, tmp_path):
    targets = attention_targets([urdu_root], tmp_path / "maps")
    angry = urdu_root / "Angry" / "SM1_F10_A010.flac"
    assert targets[str(angry)] == tmp_path / "maps" / "Angry" / "SM1_F10_A010.png"
    assert len(targets) == 400 and len(set(targets.values())) == 400
    # A single file into a folder; files given one by one are named by their stem, so two with the same stem clash.
    assert attention_targets([angry], tmp_path / "maps") == {str(angry): tmp_path / "maps" / "SM1_F10_A010.png"}
    with pytest.raises(ValueError, match="would both be drawn to"):
        attention_targets([angry, tmp_path / "SM1_F10_A010.wav"], tmp_path / "maps")
