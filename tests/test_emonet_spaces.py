"""EmoNet's A+V setting: arousal and valence as two domains of one network (SpacesDataModule, §6.2)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from sermodels.data.spaces import SpacesDataModule
from sermodels.tasks import MultitaskTask

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOTS = {"emodb": str(DATA / "EMODB"), "urdu": str(DATA / "URDU")}
TINY = {"stem": 4, "widths": [8, 8, 16], "hidden": 8, "attention_units": 8}

pytestmark = pytest.mark.skipif(not (DATA / "EMODB").is_dir(), reason="corpora not available")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_spaces_data_module_tags_every_batch_with_its_space():
    data = SpacesDataModule(["emodb", "urdu"], roots=ROOTS, batch_size=4, max_duration=0.5)
    data.setup("fit")
    assert data.label_names == {"arousal": ["low", "high"], "valence": ["negative", "neutral", "positive"]}
    assert data.streams == [("arousal", "emodb"), ("arousal", "urdu"), ("valence", "emodb"), ("valence", "urdu")]
    step, _, _ = next(iter(data.train_dataloader()))  # CombinedLoader yields (batch, batch_idx, loader_idx)
    assert set(step) == {"arousal", "valence"}
    for space, batch in step.items():
        assert batch["domain"] == [space] * len(batch["labels"])
        assert int(batch["labels"].max()) < len(data.label_names[space])
    val = data.val_dataloader()
    assert len(val) == 4
    assert [next(iter(loader))["domain"][0] for loader in val] == ["arousal", "arousal", "valence", "valence"]
    # per-corpus balancing happens in each space (§6.2): every class of a corpus has its minority-class count
    for space, part in data.parts.items():
        for corpus in data.corpus_names:
            counts = torch.bincount(torch.tensor(part.datasets[corpus]["train"].label_indices))
            present = counts[counts > 0]
            assert present.min() == present.max(), (space, corpus, counts)


def test_bad_spaces_are_refused():
    with pytest.raises(ValueError, match="two different"):
        SpacesDataModule(["emodb"], roots={"emodb": ROOTS["emodb"]}, spaces=["arousal"])
    with pytest.raises(ValueError, match="not an aggregated"):
        SpacesDataModule(["emodb"], roots={"emodb": ROOTS["emodb"]}, spaces=["arousal", "categories"])
    with pytest.raises(ValueError, match="concat"):
        SpacesDataModule(["emodb"], roots={"emodb": ROOTS["emodb"]}, multi_corpus="round_robin")


def test_av_fit_trains_both_heads_and_scores_every_stream(tmp_path):
    from sermodels.training.train import export

    L.seed_everything(0, verbose=False)
    data = SpacesDataModule(["emodb", "urdu"], roots=ROOTS, batch_size=4, max_duration=0.5)
    task = MultitaskTask({"arch": "emonet_wrn", **TINY}, schedule={"name": "steps", "stage_steps": 2})
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    task.trainer = trainer  # configure_from reads nothing from it; set up the network to snapshot its weights
    task.configure_from(data)
    assert sorted(task.net.heads) == ["arousal", "valence"]
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    trainer.fit(task, datamodule=data)
    after = task.net.state_dict()
    for space in ("arousal", "valence"):
        changed = [k for k in after if k.startswith(f"classifiers.{space}.") and not torch.equal(before[k], after[k])]
        assert changed, f"the {space} head was not trained"
    assert not torch.equal(before["stem.conv.weight"], after["stem.conv.weight"])
    history = task.history[-1]
    assert {"arousal/emodb", "arousal/urdu", "valence/emodb", "valence/urdu"} <= set(history)
    folder = export(task, data, tmp_path / "av", model_id="av.test", splits=("dev",))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"arousal/emodb/dev", "arousal/urdu/dev", "valence/emodb/dev", "valence/urdu/dev"}
    assert metrics["valence/urdu/dev"]["head"] == "valence"
    assert all(0.0 <= m["uar"] <= 1.0 and m["n"] > 0 for m in metrics.values())
