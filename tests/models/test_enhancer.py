"""The BLSTM feature enhancer (MixedEmotions D4.2 §3): shapes, gradients, padded batches, the safetensors round trip
and training on real EMO-DB audio degraded here with white noise at 6 dB SNR."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import corpus_root, spread_files
from safetensors.torch import load_file, save_file

import sermodels
from sermodels.audio import load_audio
from sermodels.checkpoint import load_folder, save_pretrained
from sermodels.models.enhancer import D42_MFCC, PAPER_LR, PAPER_MOMENTUM, BLSTMEnhancer
from sermodels.training.enhancer import feature_mse, fit_enhancer, make_optimizer, random_crop

pytestmark = pytest.mark.usefixtures("one_thread")

CLIPS = ("03a01Wa.flac", "08a01Na.flac", "11a01Ld.flac")  # three speakers, three lengths
SNR_DB = 6.0
FIT_CLIPS = 24  # 18 to train, 6 to validate
TRAIN_CLIPS = 18


def degrade(waveform: torch.Tensor, snr_db: float, generator: torch.Generator) -> torch.Tensor:
    """``waveform`` plus white Gaussian noise at ``snr_db`` below the clip's mean power."""
    noise_power = waveform.square().mean() / 10 ** (snr_db / 10)
    return waveform + noise_power.sqrt() * torch.randn(waveform.shape, generator=generator)


def padded(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])


@pytest.fixture(scope="module")
def clips() -> list[torch.Tensor]:
    root = corpus_root("emodb") / "wav"
    return [load_audio(root / name) for name in CLIPS]


@pytest.fixture(scope="module")
def paired_features() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """MFCC frames ``(T_i, 13)`` of 24 EMO-DB clips spread over speakers and emotions: noisy copies and clean."""
    generator = torch.Generator().manual_seed(0)
    frontend = BLSTMEnhancer()
    noisy, clean = [], []
    with torch.no_grad():
        for path in spread_files("emodb", FIT_CLIPS):
            wave = load_audio(path)
            clean.append(frontend.features(wave[None])[0][0].numpy())
            noisy.append(frontend.features(degrade(wave, SNR_DB, generator)[None])[0][0].numpy())
    return noisy, clean


def fitted_model(seed: int = 0) -> BLSTMEnhancer:
    """A model with non-trivial statistics in its buffers."""
    torch.manual_seed(seed)
    model = BLSTMEnhancer()
    model.set_statistics(torch.randn(13), torch.rand(13) + 0.5, torch.randn(13), torch.rand(13) + 0.5)
    return model.eval()


def test_registered_with_the_papers_settings():
    model = sermodels.create_model("blstm_enhancer")
    assert isinstance(model, BLSTMEnhancer) and model.arch == "blstm_enhancer"
    spec = model.output_spec()
    assert (spec.kind, spec.level, spec.dim, spec.frame_rate) == ("embedding", "frame", 13, 100.0)
    assert model.default_head == "mfcc" and model.label_names() == []
    melkwargs = model.mfcc.config()["melkwargs"]
    assert (model.mfcc.n_mfcc, melkwargs["win_length"], melkwargs["hop_length"]) == (13, 400, 160)  # 25 ms, 10 ms
    assert melkwargs["n_mels"] == D42_MFCC["melkwargs"]["n_mels"]
    lstm = model.blstm.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional) == (13, 30, 2, True)
    assert all(p.abs().max() <= 0.1 for p in model.blstm.parameters())  # U(-0.1, 0.1) initialisation


def test_shapes_and_backward_on_real_clips(clips):
    model = BLSTMEnhancer().train()
    waves, lengths = padded(clips)
    waves.requires_grad_(True)
    enhanced = model(waves, lengths)
    frames = int(model.mfcc.num_frames(torch.tensor([waves.shape[1]]))[0])
    assert enhanced.shape == (3, frames, 13)
    valid = model.mfcc.num_frames(lengths)
    for row, count in enumerate(valid.tolist()):
        assert (enhanced[row, count:] == 0).all() and (enhanced[row, :count].abs().sum(-1) > 0).all()
    assert model.embed(waves, lengths).shape == (3, 26)
    enhanced.square().mean().backward()
    assert waves.grad is not None and torch.isfinite(waves.grad).all()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_padded_batch_equals_each_clip_alone_and_forward_equals_enhance_features(clips):
    model = fitted_model()
    waves, lengths = padded(clips)
    with torch.no_grad():
        batched = model(waves, lengths)
        frames, valid = model.features(waves, lengths)
        torch.testing.assert_close(model.enhance_features(frames, valid), batched)
        for row, clip in enumerate(clips):
            alone = model(clip[None])
            assert alone.shape[1] == valid[row]
            torch.testing.assert_close(batched[row, : valid[row]], alone[0], rtol=1e-5, atol=1e-5)


def test_input_noise_only_in_training(clips):
    model = fitted_model()
    frames, valid = model.features(clips[0][None])
    with torch.no_grad():
        assert torch.equal(model.enhance_features(frames, valid), model.enhance_features(frames, valid))
        model.train()
        first = model.enhance_features(frames, valid, torch.Generator().manual_seed(1))
        again = model.enhance_features(frames, valid, torch.Generator().manual_seed(1))
        other = model.enhance_features(frames, valid, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    quiet = BLSTMEnhancer(input_noise=0.0)
    with torch.no_grad():
        assert torch.equal(quiet.train().enhance_features(frames, valid), quiet.eval().enhance_features(frames, valid))


def test_safetensors_round_trip_gives_identical_outputs(clips, tmp_path):
    model = fitted_model(seed=3)
    state = model.state_dict()
    assert {"noisy_stats.mean", "noisy_stats.std", "clean_stats.mean", "clean_stats.std"} <= set(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    config = json.loads(json.dumps(model.config()))
    torch.manual_seed(4)
    loaded = BLSTMEnhancer(**config)
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    loaded.eval()
    waves, lengths = padded(clips)
    with torch.no_grad():
        assert torch.equal(loaded(waves, lengths), model(waves, lengths))
    folder = save_pretrained(model, tmp_path / "release")
    with torch.no_grad():
        assert torch.equal(load_folder(folder)(waves, lengths), model(waves, lengths))


def test_fit_lowers_dev_mse_below_the_unenhanced_features(paired_features):
    noisy, clean = paired_features
    train, dev = slice(0, TRAIN_CLIPS), slice(TRAIN_CLIPS, FIT_CLIPS)
    model, history = fit_enhancer(
        noisy[train], clean[train], noisy[dev], clean[dev], max_epochs=10, batch_size=4, lr=3e-3, max_frames=200
    )
    assert not model.training and [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    stacked = torch.from_numpy(np.concatenate(noisy[train]))
    torch.testing.assert_close(model.noisy_stats.mean, stacked.double().mean(0).float())
    enhanced = feature_mse(model, noisy[dev], clean[dev])
    unenhanced = feature_mse(model, noisy[dev], clean[dev], enhance=False)
    assert enhanced == pytest.approx(min(r["dev_mse"] for r in history))  # the best weights were restored
    assert enhanced < unenhanced, f"enhanced dev MSE {enhanced:.3f} >= unenhanced {unenhanced:.3f}"


def test_seeded_fits_are_identical(paired_features):
    noisy, clean = (features[:6] for features in paired_features)
    kwargs = {"max_epochs": 2, "batch_size": 2, "max_frames": 100}
    first, first_history = fit_enhancer(noisy[:4], clean[:4], noisy[4:], clean[4:], seed=5, **kwargs)
    second, second_history = fit_enhancer(noisy[:4], clean[:4], noisy[4:], clean[4:], seed=5, **kwargs)
    other, _ = fit_enhancer(noisy[:4], clean[:4], noisy[4:], clean[4:], seed=6, **kwargs)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and first_history == second_history
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_crops_pair_up_and_the_papers_optimizer_is_available():
    noisy, clean = torch.arange(30.0).reshape(10, 3), -torch.arange(30.0).reshape(10, 3)
    x, y = random_crop(noisy, clean, 4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3) and torch.equal(x, -y)
    assert random_crop(noisy, clean, None, torch.Generator())[0] is noisy
    sgd = make_optimizer(BLSTMEnhancer(), "sgd", None)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"]) == (PAPER_LR, PAPER_MOMENTUM)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer(BLSTMEnhancer(), "rmsprop", None)


def test_errors_are_clear(paired_features):
    noisy, clean = paired_features
    with pytest.raises(ValueError, match="differ"):
        fit_enhancer(noisy[:2], [clean[0], clean[0]], noisy[2:3], clean[2:3], max_epochs=1)
    with pytest.raises(ValueError, match="has 2 sequences but"):
        fit_enhancer(noisy[:2], clean[:1], noisy[2:3], clean[2:3], max_epochs=1)
    with pytest.raises(ValueError, match=r"\(frames >= 1, 13\)"):
        fit_enhancer([n[:, :12] for n in noisy[:2]], clean[:2], noisy[2:3], clean[2:3], max_epochs=1)
    with pytest.raises(ValueError, match="mfcc_frames must be"):
        BLSTMEnhancer().enhance_features(torch.zeros(1, 5, 12))
    with pytest.raises(ValueError, match="positive standard deviations"):
        BLSTMEnhancer().set_statistics(torch.zeros(13), torch.zeros(13), torch.zeros(13), torch.ones(13))
