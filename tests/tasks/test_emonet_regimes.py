"""EmoNet (Gerczuk et al., IEEE TAC, §5.2.2, §6) as configurations of the training regimes: multi-domain round robin,
transfer (adapters / head / full), tiny real fits on EMODB + URDU, the plateau and step schedules, determinism, and
the aggregated arousal/valence label space."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from sermodels.checkpoint import save_pretrained
from sermodels.data import SERDataModule
from sermodels.models.emonet import EmoNet
from sermodels.outputs import categories
from sermodels.tasks import ClassificationTask, MultiDomainTask, TransferTask
from sermodels.tasks.transfer import load_base, prepare_domains

EMODB = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
URDU = ["angry", "happy", "neutral", "sad"]
RAVDESS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
# A narrow EmoNet: the task logic does not depend on the widths, and the fits stay at a second or two.
TINY = {"stem": 4, "widths": [8, 8, 16], "attention_units": 8, "hidden": 8}
MODEL = {"arch": "emonet_wrn", **TINY}


def _heads(**heads: list[str]):
    return {name: categories(labels) for name, labels in heads.items()}


def prepare_transfer(base, domains, mode, like=None, keep_base_domains=False):
    return prepare_domains(base, _heads(**domains), mode, like, keep_base_domains)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def roots(emodb_root, urdu_root) -> dict[str, str]:
    return {"emodb": str(emodb_root), "urdu": str(urdu_root)}


def _data(roots, corpora=("emodb", "urdu"), **kwargs) -> SERDataModule:
    options = {"batch_size": 4, "max_duration": 1.0, "multi_corpus": "round_robin", "seed": 0} | kwargs
    return SERDataModule(list(corpora), roots={name: roots[name] for name in corpora}, **options)


class Recorder(L.Callback):
    """What the real training loop did: corpus and learning rate of every batch, the network's mode, the start."""

    def __init__(self):
        self.corpora: list[str] = []
        self.sizes: list[int] = []
        self.states: list[dict[str, torch.Tensor]] = []  # at the start of every batch, then at the end of training
        self.lrs: list[float] = []
        self.all_training: list[bool] = []
        self.training_modules: set[str] = set()
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module):
        self.initial = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.corpora.append(batch["corpus"][0])
        self.sizes.append(len(batch["labels"]))
        self.states.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.all_training.append(all(m.training for m in pl_module.net.modules()))
        self.training_modules = {name for name, m in pl_module.net.named_modules() if m.training}

    def on_train_end(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})


def _fit(task, data: SERDataModule, steps: int | None = 4, val_batches: int = 1) -> Recorder:
    """``steps`` optimizer steps (``None``: one whole epoch)."""
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        max_steps=-1 if steps is None else steps,
        limit_train_batches=1.0 if steps is None else steps,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(task, datamodule=data)
    return recorder


def _saved_base(tmp_path) -> tuple[EmoNet, str]:
    torch.manual_seed(1)
    base = EmoNet({"emodb": EMODB, "urdu": URDU}, **TINY)
    with torch.no_grad():  # a "pretrained" base: non-trivial adapters and BN statistics
        for name, tensor in base.state_dict().items():
            if tensor.is_floating_point() and ("adapters" in name or "running_mean" in name):
                tensor.normal_(0, 0.05)
    folder = save_pretrained(base.eval(), tmp_path / "base")
    return base, str(folder)


# ---------------------------------------------------------------------------------------------------------------------
# Transfer regimes (§5.2.2, §6.1).


def _trainable(model: EmoNet) -> set[int]:
    return {id(p) for p in model.parameters() if p.requires_grad}


def test_prepare_transfer_freezes_what_each_regime_keeps():
    torch.manual_seed(0)
    base = EmoNet({"emodb": EMODB, "urdu": URDU}, **TINY)
    with torch.no_grad():
        base.stem.adapters["emodb"].normal_(0, 0.1)
        base.final_bns["emodb"].running_mean.normal_(0, 0.1)

    net = prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS}, "adapters", like="emodb")
    assert net.heads == {"ravdess": RAVDESS} and net.default_head == "ravdess"  # base domains dropped
    assert _trainable(net) == {id(p) for p in net.domain_parameters("ravdess")}  # adapters + BN + head
    assert torch.count_nonzero(net.stem.adapters["ravdess"]) == 0  # §6.1: adapters re-initialised
    assert torch.equal(net.final_bns["ravdess"].running_mean, base.final_bns["emodb"].running_mean)
    assert torch.equal(net.stem.conv.weight, base.stem.conv.weight) and not net.stem.conv.weight.requires_grad

    net = prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS}, "head", like="emodb")
    assert _trainable(net) == {id(p) for p in net.classifiers["ravdess"].parameters()}
    assert torch.equal(net.stem.adapters["ravdess"], base.stem.adapters["emodb"])  # the base as seen by "like"

    net = prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS, "urdu": URDU}, "full", like="emodb")
    assert net.domains == ["urdu", "ravdess"] and _trainable(net) == {id(p) for p in net.parameters()}
    assert torch.equal(net.stem.adapters["urdu"], base.stem.adapters["emodb"])  # re-initialised from "like"

    net = prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS}, "adapters", like="emodb", keep_base_domains=True)
    assert net.domains == ["emodb", "urdu", "ravdess"] and net.default_head == "ravdess"
    assert _trainable(net) == {id(p) for p in net.domain_parameters("ravdess")}
    with pytest.raises(ValueError, match="full fine-tuning"):
        prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS}, "full", keep_base_domains=True)
    with pytest.raises(ValueError, match="transfer mode"):
        prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS}, "groups")
    with pytest.raises(KeyError, match="no head 'nope'"):
        prepare_transfer(copy.deepcopy(base), {"ravdess": RAVDESS}, "adapters", like="nope")


def test_task_arguments_are_checked():
    for make, message in [
        (lambda: TransferTask("x", mode="partial"), "transfer mode"),
        (lambda: TransferTask("x", mode="adapters", freeze=["stem"]), "mode='groups'"),
        (lambda: ClassificationTask(MODEL, schedule={"name": "cosine2"}), "schedule name"),
        (lambda: ClassificationTask(MODEL, schedule={"patience": 0}), "positive"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()
    # §5.2.2: 0.1 from scratch and for adapters, 0.01 for a new head or full fine-tuning.
    assert ClassificationTask(MODEL).lr == 0.1 and TransferTask("x", mode="adapters").lr == 0.1
    assert TransferTask("x", mode="head").lr == 0.01 and TransferTask("x", mode="full").lr == 0.01
    assert TransferTask("x", mode="head", optimizer={"lr": 0.5}).lr == 0.5


# ---------------------------------------------------------------------------------------------------------------------
# Real fits.


def test_round_robin_fit_trains_both_domains_on_the_step_schedule_and_is_deterministic(roots):
    """§6.1 round robin, §5.2.2 steps schedule: a stage of ``stage_steps`` rounds = 2 optimizer steps per round."""
    runs = []
    for _ in range(2):
        L.seed_everything(0, verbose=False)
        task = MultiDomainTask(MODEL, schedule={"name": "steps", "stage_steps": 1, "min_lr": 1e-4})
        recorder = _fit(task, _data(roots))
        runs.append((task, recorder))
    task, recorder = runs[0]
    assert recorder.corpora == ["emodb", "urdu", "emodb", "urdu"]
    assert recorder.lrs == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert recorder.all_training == [True] * 4
    assert task.net.heads == {"emodb": EMODB, "urdu": URDU}
    final = task.net.state_dict()
    for key in ("stem.conv.weight", "attention.project.weight", "stem.adapters.emodb", "stem.adapters.urdu"):
        assert not torch.equal(final[key], recorder.initial[key]), key
    for domain in ("emodb", "urdu"):
        assert not torch.equal(
            final[f"classifiers.{domain}.4.weight"], recorder.initial[f"classifiers.{domain}.4.weight"]
        )
    assert len(task.history) == 1 and set(task.history[0]) >= {"val_score", "emodb", "urdu"}
    assert 0 <= task.best_score <= 1
    scheduler = task.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.lr_lambdas[0](1000) == pytest.approx(1e-4 / 0.1)  # floored at min_lr
    # Determinism: the same seed gives the same weights, bit for bit.
    again = runs[1][0].net.state_dict()
    assert all(torch.equal(final[key], again[key]) for key in final)


def test_adapter_transfer_changes_only_adapters_batch_norms_and_head(roots, tmp_path):
    base, folder = _saved_base(tmp_path)
    L.seed_everything(0, verbose=False)
    task = TransferTask(folder, mode="adapters", like="emodb")
    recorder = _fit(task, _data(roots, corpora=("urdu",), multi_corpus="concat"), steps=3)
    net = task.net
    assert net.heads == {"urdu": URDU}
    # The loaded base is in eval mode; training must still use (and update) the new domain's BN batch statistics.
    assert recorder.all_training == [True] * 3
    base_state, state = base.state_dict(), net.state_dict()
    shared = [k for k in state if k.endswith("conv.weight") or k.startswith("attention.")]
    assert len(shared) == 13 + 3
    assert all(torch.equal(state[k], base_state[k]) for k in shared)  # bit-identical shared network
    assert not torch.equal(state["stem.adapters.urdu"], torch.zeros_like(state["stem.adapters.urdu"]))
    assert not torch.equal(state["blocks.5.conv2.adapters.urdu"], recorder.initial["blocks.5.conv2.adapters.urdu"])
    for key in ("stem.bns.urdu.running_mean", "final_bns.urdu.running_mean"):
        assert torch.equal(recorder.initial[key], base_state[key.replace("urdu", "emodb")])  # copied from "like"
        assert not torch.equal(state[key], recorder.initial[key]), key  # then adapted to the new corpus


def test_head_transfer_keeps_base_batch_statistics(roots, tmp_path):
    base, folder = _saved_base(tmp_path)
    L.seed_everything(0, verbose=False)
    task = TransferTask(folder, mode="head", like="urdu", keep_base_domains=True)
    recorder = _fit(task, _data(roots, corpora=("urdu",), multi_corpus="concat"), steps=2, val_batches=0)
    state, base_state = task.net.state_dict(), base.state_dict()
    assert task.net.domains == ["emodb", "urdu"]
    # The frozen base's BatchNorm layers run in eval mode (their statistics stay); only the new head's BN trains.
    modules = dict(task.net.named_modules())
    training_bns = {
        n for n in recorder.training_modules if isinstance(modules[n], torch.nn.modules.batchnorm._BatchNorm)
    }
    assert training_bns == {"classifiers.urdu.1"}
    unchanged = [k for k in state if not k.startswith("classifiers.urdu.")]
    assert all(torch.equal(state[k], base_state[k]) for k in unchanged)  # BN statistics included
    for key in ("classifiers.urdu.0.weight", "classifiers.urdu.1.running_mean"):
        assert not torch.equal(state[key], recorder.initial[key]), key


def test_single_clip_batch_is_skipped(roots):
    """URDU has 286 training clips: batches of 95 leave one clip, which the head's BatchNorm1d cannot normalise in
    training mode (it raised "Expected more than 1 value per channel"); the step is skipped."""
    task = ClassificationTask(MODEL)
    recorder = _fit(task, _data(roots, corpora=("urdu",), multi_corpus="concat", batch_size=95), None, 0)
    assert recorder.sizes == [95, 95, 95, 1]
    before_last, after = recorder.states[-2], recorder.states[-1]
    assert not all(torch.equal(recorder.states[-3][k], before_last[k]) for k in after)  # full batches train
    assert all(torch.equal(before_last[k], after[k]) for k in after)  # the single clip changed nothing


def test_plateau_schedule_divides_floors_and_stops(roots):
    """§4.3/§5.2.2: ×0.1 after ``patience`` epochs without a better dev UAR, twice; then stop after ``patience``
    more stale epochs. Driven through a module whose Trainer and optimizer are real (after a one-step fit)."""
    task = ClassificationTask(MODEL, schedule={"patience": 2, "min_lr": 0.002})
    _fit(task, _data(roots, corpora=("urdu",), multi_corpus="concat"), steps=1, val_batches=0)
    trainer, group = task.trainer, task.trainer.optimizers[0].param_groups[0]
    trainer.should_stop = False
    assert group["lr"] == 0.1
    seen = []
    for uar in [0.5, 0.4, 0.5, 0.6, 0.55, 0.6, 0.7, 0.1, 0.2]:
        task.after_validation(uar)
        seen.append((pytest.approx(group["lr"]), trainer.should_stop))
    assert seen == [
        (0.1, False),  # best
        (0.1, False),  # stale 1
        (0.01, False),  # stale 2 = patience: ×0.1 (equal is no improvement)
        (0.01, False),  # best
        (0.01, False),
        (0.002, False),  # 0.001 floored at min_lr
        (0.002, False),  # best
        (0.002, False),
        (0.002, True),  # patience more stale epochs at min_lr: stop
    ]
    assert task.best_score == 0.7


# ---------------------------------------------------------------------------------------------------------------------
# Label spaces (§6.2).


def test_aggregated_arousal_space_has_one_domain_fed_by_all_corpora(roots):
    data = _data(roots, label_space="arousal", multi_corpus="concat", batch_size=16)
    task = ClassificationTask(MODEL, schedule={"name": "steps", "stage_steps": 3})
    task.configure_from(data)
    assert task.net.heads == {"arousal": ["low", "high"]}
    assert task.stream_head == {"emodb": "arousal", "urdu": "arousal"}
    assert list(task.class_weights) == ["arousal"]
    assert torch.equal(task.class_weights["arousal"], data.class_weights(None))
    batch = next(b for b in data.train_dataloader() if len(set(b["corpus"])) == 2)
    assert task.head_of(batch) == "arousal"
    loss = task.training_step(batch, 0)  # one loss over both corpora through the one head
    loss.backward()
    assert torch.isfinite(loss) and task.net.classifiers["arousal"][-1].weight.grad.abs().sum() > 0
    factor = task.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [factor(2), factor(3)] == pytest.approx([1.0, 0.1])  # concat: one batch is one step

    # Round robin over the same space: a round (one batch per corpus) is one step of the schedule (§5.2.2).
    task = ClassificationTask(MODEL, schedule={"name": "steps", "stage_steps": 3})
    task.configure_from(_data(roots, label_space="arousal", multi_corpus="round_robin"))
    factor = task.configure_optimizers()["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert [factor(5), factor(6)] == pytest.approx([1.0, 0.1])

    with pytest.raises(ValueError, match="round_robin"):
        ClassificationTask(MODEL).configure_from(_data(roots, multi_corpus="concat"))


def test_load_base_from_folder_and_instance(tmp_path):
    base, folder = _saved_base(tmp_path)
    loaded = load_base(folder)
    assert isinstance(loaded, EmoNet) and loaded.heads == base.heads
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), base.state_dict().values()))
    copied = load_base(base)
    assert copied is not base and copied.stem.conv.weight.data_ptr() != base.stem.conv.weight.data_ptr()
