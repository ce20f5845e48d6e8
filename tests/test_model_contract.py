"""The contract every registered architecture keeps, checked on a small instance of each on real EMO-DB audio.

For every name of ``sermodels.list_models()`` (the zoo and the test-only toy heads of ``toy_models``):

- every head's output has the shape its output spec declares, and a frame-level head covers the frames that
  ``output_lengths`` says are valid;
- a backward pass from every head gives a finite gradient to every trainable parameter;
- ``save_pretrained`` -> ``load_folder`` gives a model with equal outputs (eval mode), and config.json holds the
  output specs;
- two builds under the same seed give identical weights and outputs.

A new architecture gets these checks by registering; it needs one entry in :data:`SMALL_BUILDS` (constructor
arguments of a small, fast instance), and the test fails until it has one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import toy_models  # noqa: F401 - registers toy_frame and toy_utterance
from conftest import corpus_root

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import load_folder, save_pretrained
from sermodels.models.base import SERModel
from sermodels.outputs import specs_to_json

EMODB_CLIPS = (("03a01Wa.flac", 16_000), ("08a01Na.flac", 9_600))  # anger 1.0 s, neutral 0.6 s (two speakers)
SEED = 0


@dataclass(frozen=True)
class SmallBuild:
    """How the contract builds a small instance: ``create_model(arch, **kwargs())``. ``unused_in_forward``:
    parameter-name prefixes that no head's forward reaches (e.g. a decoder trained only through another method);
    they are left out of the gradient check."""

    kwargs: Callable[[], dict[str, Any]]
    unused_in_forward: tuple[str, ...] = field(default=())


EMODB_LABELS = ["anger", "neutral", "sadness"]
SMALL_BUILDS: dict[str, SmallBuild] = {
    "logmel_svm": SmallBuild(lambda: {"labels": EMODB_LABELS}),
    "wda_mlp": SmallBuild(lambda: {"heads": {"arousal": ["low", "high"], "valence": ["non-positive", "positive"]}}),
    "emonet_wrn": SmallBuild(
        lambda: {
            # two categories domains and a dimensions head, at a sixteenth of the paper's widths
            "domains": {"emodb": EMODB_LABELS, "urdu": ["angry", "happy"], "av": ["arousal", "valence"]},
            "head_specs": {"av": {"kind": "dimensions", "names": ["arousal", "valence"], "range": [-1, 1]}},
            "stem": 4,
            "widths": [4, 8, 16],
            "attention_units": 8,
            "hidden": 8,
        }
    ),
    "deep_spectrum": SmallBuild(
        # timm's 0.36 M-parameter test EfficientNet on 64 x 64 images; random weights (no download)
        lambda: {"labels": EMODB_LABELS, "backbone": "test_efficientnet", "image": {"size": [64, 64]}}
    ),
    "adapted_cnn": SmallBuild(
        # timm's test EfficientNet (random weights, no download) with two categories domains and a dimensions head;
        # rank-2 adapters beside its 1x1 convolutions
        lambda: {
            "domains": {"emodb": EMODB_LABELS, "urdu": ["angry", "happy"], "av": ["arousal", "valence"]},
            "head_specs": {"av": {"kind": "dimensions", "names": ["arousal", "valence"], "range": [-1, 1]}},
            "backbone": "test_efficientnet",
            "adapter_rank": 2,
            "hidden": 8,
            "frontend": {"n_mels": 32},
        }
    ),
    # a 50 ms long kernel and 1 s sequences keep the FFT convolution small; the layers are the paper's
    "conv_blstm": SmallBuild(lambda: {"long_kernel_ms": 50.0, "sequence_seconds": 1.0, "lstm_cells": 16}),
    "blstm_enhancer": SmallBuild(lambda: {}),
    # 40 bins x 20 frames segments and 4 channels; a proxy head on the shared FC, a recognition head and a dimensions
    # head on the conv encoder; the decoder is reached through reconstruct() only
    "av_spnet": SmallBuild(
        lambda: {
            "domains": {"proxy": ["high", "low"], "emodb": EMODB_LABELS, "av": ["arousal", "valence"]},
            "head_specs": {"av": {"kind": "dimensions", "names": ["arousal", "valence"], "range": [-1, 1]}},
            "proxy_heads": ["proxy"],
            "channels": 4,
            "n_bins": 40,
            "segment_frames": 20,
        },
        unused_in_forward=("decoder_fc", "unstage2", "unstage1", "to_input"),
    ),
    # narrow CNN+LSTM layers on the log-mel front-end, a categories and a dimensions head
    "cnn_lstm": SmallBuild(
        lambda: {
            "domains": {"basic4": ["anger", "happiness", "neutral", "sadness"], "av": ["arousal", "valence"]},
            "head_specs": {"av": {"kind": "dimensions", "names": ["arousal", "valence"], "range": [-1, 1]}},
            "filters": 8,
            "lstm_units": 6,
            "dense_units": 12,
        }
    ),
    "toy_frame": SmallBuild(lambda: {}),
    "toy_utterance": SmallBuild(lambda: {}),
}


def _build(arch: str) -> SERModel:
    if arch not in SMALL_BUILDS:
        cls = sermodels.get_model_class(arch)
        pytest.fail(
            f"architecture {arch!r} ({cls.__module__}.{cls.__qualname__}) has no small build: add "
            f"SMALL_BUILDS[{arch!r}] = SmallBuild(lambda: {{...constructor arguments of a small, fast instance...}}) "
            "to tests/test_model_contract.py so that the model contract checks it"
        )
    torch.manual_seed(SEED)
    return sermodels.create_model(arch, **SMALL_BUILDS[arch].kwargs())


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two real clips of different lengths as a zero-padded batch ``(2, 16000)`` and their lengths."""
    root = corpus_root("emodb") / "wav"
    waves = [load_audio(root / name)[:samples] for name, samples in EMODB_CLIPS]
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])


def _outputs(model: SERModel, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    waves, lengths = batch
    return {head: model(waves, lengths, head=head) for head in model.heads}


ARCHITECTURES = sermodels.list_models()


def test_every_architecture_has_a_small_build():
    missing = sorted(set(ARCHITECTURES) - set(SMALL_BUILDS))
    assert not missing, f"add SMALL_BUILDS entries for {missing} in tests/test_model_contract.py"
    assert {"toy_frame", "toy_utterance", "logmel_svm", "emonet_wrn", "deep_spectrum"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_head_outputs_its_spec(arch, batch):
    model = _build(arch).eval()
    waves, lengths = batch
    specs = model.output_specs()
    assert list(specs) == list(model.heads) and model.default_head in specs
    with torch.inference_mode():
        outputs = _outputs(model, batch)
    for head, output in outputs.items():
        spec = specs[head]
        spec.check(output, len(waves), head)
        assert torch.isfinite(output).all(), head
        if spec.kind != "embedding":
            assert spec.columns == model.label_names(head), head
        if spec.level == "frame":
            valid = model.output_lengths(lengths, head)
            assert valid.shape == lengths.shape and (valid >= 1).all()
            assert output.shape[1] >= int(valid.max()), f"{head}: {output.shape[1]} frames, {valid.tolist()} valid"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_backward_gives_finite_gradients_to_trainable_parameters(arch, batch):
    model = _build(arch).train()
    loss = sum(output.float().square().mean() for output in _outputs(model, batch).values())
    loss.backward()
    skip = SMALL_BUILDS[arch].unused_in_forward
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith(skip)]
    assert trainable, f"{arch} has no trainable parameters"
    missing = [name for name, param in trainable if param.grad is None]
    assert not missing, f"no gradient reached {missing[:5]} (list parameters no head uses in unused_in_forward)"
    bad = [name for name, param in trainable if not torch.isfinite(param.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"
    assert any(param.grad.abs().sum() > 0 for _, param in trainable)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_gives_equal_outputs_and_stores_the_specs(arch, batch, tmp_path):
    model = _build(arch)
    with torch.no_grad():  # a training-mode forward moves batch-norm statistics off their initial values
        model.train()
        _outputs(model, batch)
    model.eval()
    folder = save_pretrained(model, tmp_path / arch)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == arch
    assert config["outputs"] == specs_to_json(model.output_specs())
    torch.manual_seed(SEED + 1)  # the loaded model is built under another seed: only the weights can make it equal
    loaded = load_folder(folder)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.output_specs() == model.output_specs() and loaded.config() == model.config()
    with torch.inference_mode():
        want, got = _outputs(model, batch), _outputs(loaded, batch)
    for head in want:
        assert torch.equal(got[head], want[head]), head


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_builds_under_one_seed_are_identical(arch, batch):
    first, second = _build(arch).eval(), _build(arch).eval()
    a, b = first.state_dict(), second.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    with torch.inference_mode():
        want, got = _outputs(first, batch), _outputs(second, batch)
    for head in want:
        assert torch.equal(got[head], want[head]), head
