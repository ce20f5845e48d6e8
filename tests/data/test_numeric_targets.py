"""Numeric targets in batches: pad_collate's targets/traces, and SERDataModule's av_values, dimensions and trace
label spaces on real EMO-DB files."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sermodels import labels
from sermodels.data import CorpusError, SERDataModule, pad_collate

RATE = 16_000
FRAME_RATE = 100.0


def _sample(samples: int, label: int = 0, **extra) -> dict:
    base = {"waveform": torch.ones(samples), "label": label, "domain": 0, "corpus": "c", "path": f"{samples}.wav"}
    return base | extra


def test_pad_collate_keeps_its_keys_and_adds_numeric_targets():
    plain = pad_collate([_sample(3), _sample(5, 1)])
    assert list(plain) == ["waveforms", "lengths", "labels", "domains", "corpus", "paths", "speakers"]
    assert plain["speakers"] == [None, None]  # samples without a speaker
    valued = pad_collate([_sample(3, values=torch.tensor([0.5, -1.0])), _sample(5, values=[1.0, 0.0])])
    assert valued["targets"].dtype == torch.float32 and valued["targets"].tolist() == [[0.5, -1.0], [1.0, 0.0]]
    traced = pad_collate([_sample(3, trace=torch.full((2, 2), 7.0)), _sample(5, trace=torch.full((4, 2), 9.0))])
    assert traced["traces"].shape == (2, 4, 2) and traced["traces"].dtype == torch.float32
    assert traced["trace_lengths"].tolist() == [2, 4]
    assert traced["trace_mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert traced["traces"][0, 2:].abs().sum() == 0 and traced["traces"][0, :2].eq(7).all()
    assert traced["waveforms"].shape == (2, 5) and traced["labels"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="1 of 2 samples carry 'values'"):
        pad_collate([_sample(3, values=[1.0]), _sample(4)])
    with pytest.raises(ValueError, match="same dims"):
        pad_collate([_sample(3, trace=torch.zeros(2, 2)), _sample(4, trace=torch.zeros(2, 3))])


def _emodb(emodb_root: Path, **kwargs) -> SERDataModule:
    return SERDataModule(["emodb"], roots={"emodb": str(emodb_root)}, **kwargs)


def test_av_values_on_emodb(emodb_root):
    dm = _emodb(emodb_root, label_space="av_values", batch_size=8, max_duration=1.0, seed=1)
    dm.setup()
    assert dm.label_names == ["arousal", "valence"] and dm.num_classes == 2
    spec = dm.target_spec()
    assert (spec.kind, spec.level, spec.names, spec.range) == (
        "dimensions",
        "utterance",
        ("arousal", "valence"),
        (-1, 1),
    )
    by_path = {item.path: item.label for item in dm.partitions["emodb"]["train"]}
    classes = dm.corpora["emodb"].classes
    for batch in (next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))):
        assert batch["targets"].dtype == torch.float32 and batch["targets"].shape == (8, 2)
        by_path |= {item.path: item.label for item in dm.partitions["emodb"]["dev"]}
        expected = [list(labels.av_values(by_path[path]).values()) for path in batch["paths"]]
        assert batch["targets"].tolist() == expected
        assert batch["labels"].tolist() == [classes.index(by_path[path]) for path in batch["paths"]]
        assert "traces" not in batch
    values = {tuple(v) for v in dm.datasets["emodb"]["train"].values.tolist()}
    assert values <= {(a, v) for a in (-1.0, 1.0) for v in (-1.0, 0.0, 1.0)}
    assert dm.info()["label_names"] == ["arousal", "valence"]
    with pytest.raises(ValueError, match="class weights are for class label spaces"):
        dm.class_weights()


def test_av_values_balance_by_placement(emodb_root):
    dm = _emodb(emodb_root, label_space="av_values", balance=True)
    dm.setup()
    cells = Counter(tuple(v) for v in dm.datasets["emodb"]["train"].values.tolist())
    # EMO-DB fills four of the six (arousal, valence) cells; each is cut to the smallest.
    assert len(cells) == 4 and len(set(cells.values())) == 1


def _table(tmp_path: Path, emodb_root: Path, stride: int = 60, trace_seconds=None) -> tuple[Path, list[Path]]:
    """A CSV over every ``stride``-th EMO-DB file with arousal/valence columns and a trace per file (value = time)."""
    wavs = sorted((emodb_root / "wav").glob("*.flac"))[::stride]
    rng = np.random.default_rng(0)
    lines = ["path,arousal,valence,trace,speaker"]
    for number, path in enumerate(wavs):
        seconds = sf.info(path).duration if trace_seconds is None else trace_seconds
        frames = math.ceil(seconds * FRAME_RATE - 1e-9)
        times = (np.arange(frames) / FRAME_RATE).tolist()
        trace = tmp_path / "traces" / f"{path.stem}.csv"
        trace.parent.mkdir(exist_ok=True)
        trace.write_text("time,arousal,valence\n" + "".join(f"{t!r},{t!r},{-t!r}\n" for t in times))
        a, v = rng.uniform(-1, 1, size=2).tolist()
        lines.append(f"{path},{a!r},{v!r},{trace},spk{number % 4}")
    table = tmp_path / "rated.csv"
    table.write_text("\n".join(lines) + "\n")
    return table, wavs


def test_dimensions_space_reads_the_items_values(emodb_root, tmp_path):
    table, _ = _table(tmp_path, emodb_root)
    dm = SERDataModule(["folder:rated"], roots={"rated": str(table)}, label_space="dimensions", batch_size=3)
    dm.setup()
    assert dm.label_names == ["arousal", "valence"] and dm.target_spec().range is None
    values = {item.path: item.values for item in dm.corpora["rated"].items}
    batch = next(iter(dm.train_dataloader()))
    expected = [[values[p]["arousal"], values[p]["valence"]] for p in batch["paths"]]
    assert torch.allclose(batch["targets"], torch.tensor(expected, dtype=torch.float32))
    assert batch["labels"].tolist() == [-1, -1, -1]  # no categories in this table
    with pytest.raises(ValueError, match="balance cuts classes"):
        SERDataModule(["folder:rated"], roots={"rated": str(table)}, label_space="dimensions", balance=True)
    with pytest.raises(ValueError, match="has no numeric dimension columns"):
        _emodb(emodb_root, label_space="dimensions").setup()


def test_trace_space_cuts_traces_with_the_training_crop(emodb_root, tmp_path):
    table, _ = _table(tmp_path, emodb_root)
    common = {"roots": {"rated": str(table)}, "label_space": "trace", "batch_size": 4}
    with pytest.raises(ValueError, match="frame_rate"):
        SERDataModule(["folder:rated"], **common)
    with pytest.raises(ValueError, match="frame_rate"):
        _emodb(emodb_root, frame_rate=FRAME_RATE)
    dm = SERDataModule(["folder:rated"], frame_rate=FRAME_RATE, max_duration=0.7, seed=2, **common)
    dm.setup()
    spec = dm.target_spec()
    assert (spec.level, spec.frame_rate, spec.names) == ("frame", FRAME_RATE, ("arousal", "valence"))
    assert dm.info()["frame_rate"] == FRAME_RATE
    batch = next(iter(dm.train_dataloader()))
    assert batch["traces"].shape[0] == 4 and batch["traces"].shape[2] == 2 and "targets" not in batch
    for row, path in enumerate(batch["paths"]):
        length = int(batch["lengths"][row])
        frames = int(batch["trace_lengths"][row])
        assert frames == math.ceil(length / RATE * FRAME_RATE)  # one target per frame of the crop
        assert batch["trace_mask"][row].sum() == frames
        # The trace's value is the time: its first frame tells where the crop starts in the file.
        start = float(batch["traces"][row, 0, 0])
        offset = round(start * RATE)
        whole = torch.from_numpy(sf.read(path, dtype="float32")[0])
        assert torch.equal(batch["waveforms"][row, :length], whole[offset : offset + length])
        expected = start + torch.arange(frames, dtype=torch.float64) / FRAME_RATE
        assert torch.allclose(batch["traces"][row, :frames, 0].double(), expected, atol=1e-5)
        assert torch.allclose(batch["traces"][row, :frames, 1], -batch["traces"][row, :frames, 0])
    assert any(float(batch["traces"][row, 0, 0]) > 0 for row in range(4))  # crops are not all at the start
    dev = next(iter(dm.val_dataloader()))  # whole clips: the trace from 0 s
    assert dev["traces"][:, 0, 0].tolist() == [0.0] * len(dev["paths"])


def test_trace_that_does_not_fit_its_audio_is_listed(emodb_root, tmp_path):
    table, wavs = _table(tmp_path, emodb_root, stride=150, trace_seconds=0.5)
    dm = SERDataModule(["folder:rated"], roots={"rated": str(table)}, label_space="trace", frame_rate=FRAME_RATE)
    with pytest.raises(CorpusError) as err:
        dm.setup()
    assert len(err.value.offenders) == len(wavs)
    assert "the trace covers 0.500 s (50 frames at 100/s)" in err.value.offenders[0]
