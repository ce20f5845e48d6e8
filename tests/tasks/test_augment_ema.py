"""Training-time augmentation, EMA of the weights and validation by steps in the training core, on real corpora."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import corpus_root

from sermodels.data import SERDataModule
from sermodels.tasks import ClassificationTask, MultiDomainTask

SMALL_CNN = {"arch": "adapted_cnn", "backbone": "test_efficientnet", "adapter_rank": 2, "hidden": 8}
AUGMENT = {
    "seed": 3,
    "gain": {"p": 0.5},
    "noise": {"p": 1.0, "snr_db": [5.0, 20.0], "colors": ["pink", "babble"]},
    "shift": {"p": 0.5},
    "speed": {"p": 0.5},
    "spec": {},
    "mixup": {"p": 1.0, "alpha": 0.4},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(corpora=("emodb", "urdu")) -> SERDataModule:
    roots = {name: str(corpus_root(name)) for name in corpora}
    return SERDataModule(list(corpora), roots, batch_size=4, max_duration=1.0, multi_corpus="round_robin")


class EmaProbe(L.Callback):
    """Whether validation ran on the averaged weights, and training on the live ones."""

    def __init__(self) -> None:
        self.validated_on_average: list[bool] = []
        self.trained_on_live: list[bool] = []

    def _same(self, task) -> bool:
        params = dict(task.net.named_parameters())
        return all(torch.equal(params[k].detach(), v) for k, v in task.ema_state.items())

    def on_validation_epoch_end(self, trainer, task) -> None:  # runs before the task's hook swaps the live ones back
        self.validated_on_average.append(self._same(task))

    def on_train_batch_start(self, trainer, task, batch, batch_idx) -> None:
        if task.ema_state is not None and trainer.global_step > 1:
            self.trained_on_live.append(not self._same(task))


def test_augmented_ema_training_validates_by_steps_and_releases_the_best_averaged_weights():
    L.seed_everything(0, verbose=False)
    task = MultiDomainTask(SMALL_CNN, optimizer={"name": "adamw", "lr": 1e-3}, augment=AUGMENT, ema=0.9)
    probe = EmaProbe()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(task, datamodule=_data())
    assert [row["step"] for row in task.history] == [3, 6]
    assert probe.validated_on_average == [True, True] and probe.trained_on_live and all(probe.trained_on_live)
    # The released weights are the averaged ones of the best validation; the average is gone after fitting.
    best = task.best_state
    assert all(torch.equal(best[k], v.cpu()) for k, v in task.net.state_dict().items())
    assert task.ema_state is None and task._live is None
    summary = task.training_summary()
    assert summary["ema"] == 0.9 and summary["augment"]["mixup"]["alpha"] == 0.4


def test_augmentation_changes_training_batches_only():
    data = _data(("emodb",))
    task = ClassificationTask(SMALL_CNN, augment=AUGMENT)
    task.configure_from(data)
    batch = next(iter(data.train_dataloader()))
    augmented = task.augmented(batch)
    assert augmented["waveforms"].shape[0] == batch["waveforms"].shape[0]
    assert not torch.equal(augmented["waveforms"][:, : batch["waveforms"].shape[1]], batch["waveforms"])
    task.net.train()
    loss = task.augmented_loss(batch, "emodb")
    assert torch.isfinite(loss)
    # Evaluation ignores the augmentation: the model in eval mode scores a batch the same every time.
    task.net.eval()
    with torch.no_grad():
        first = task.head_output(batch, "emodb")
        second = task.head_output(batch, "emodb")
    torch.testing.assert_close(first, second)


def test_spectrogram_masks_need_a_model_with_a_spectrogram_hook():
    task = ClassificationTask({"arch": "deep_spectrum", "backbone": "test_efficientnet"}, augment={"spec": {}})
    with pytest.raises(ValueError, match="spectrogram hook"):
        task.configure_from(_data(("emodb",)))


def test_emonet_takes_spectrogram_masks_and_bad_settings_are_refused():
    task = MultiDomainTask(
        {"arch": "emonet_wrn", "stem": 4, "widths": [4, 8, 8], "attention_units": 4, "hidden": 4},
        augment={"spec": {"freq_masks": 1}},
    )
    task.configure_from(_data())
    assert task.net._spectrogram_augment is task.augmentation.spec
    with pytest.raises(ValueError, match="ema"):
        MultiDomainTask(SMALL_CNN, ema=1.5)
    with pytest.raises(ValueError):
        MultiDomainTask(SMALL_CNN, augment={"reverb": {}})


def test_multitask_training_applies_waveform_augmentation_and_mixup():
    from sermodels.data.spaces import SpacesDataModule
    from sermodels.tasks import MultitaskTask

    roots = {name: str(corpus_root(name)) for name in ("emodb", "urdu")}
    data = SpacesDataModule(["emodb", "urdu"], roots=roots, batch_size=4, max_duration=1.0)
    losses = {}
    for name, augment in {"plain": None, "noisy": {"noise": {"p": 1.0, "snr_db": [0.0, 0.0]}}}.items():
        torch.manual_seed(0)
        task = MultitaskTask(SMALL_CNN, augment=augment)
        task.configure_from(data)
        task.net.eval()  # deterministic forward: only the augmentation can change the loss
        batch = next(iter(data.train_dataloader()))
        while "waveforms" not in batch:  # one batch of every space (a tuple or dict of them): the first
            batch = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
        part = batch
        with torch.no_grad():
            losses[name] = float(task.batch_loss(part))
    assert losses["plain"] != pytest.approx(losses["noisy"], abs=1e-6)
