"""Time-continuous baselines (D4.2 §5.3, §3.4.2): LLDs, window functionals, the linear SVR and the BLSTM."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from conftest import spread_files

from sermodels.audio import load_audio
from sermodels.classical.continuous import (
    AVEC_STATS,
    SVR_C_GRID,
    ContinuousSVR,
    concatenated_ccc,
    fit_lld_blstm,
    fit_svr,
    lld_frames,
    mfcc_window_stats,
    window_functionals,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 16000


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_audio(spread_files("emodb", 3)[1]).numpy()


def _naive(lld: np.ndarray, ratio: float, half: int, stats) -> np.ndarray:
    """Row by row: the frames within ``half`` of the row's centre frame, clipped to the sequence."""
    rows = math.ceil(len(lld) / ratio - 1e-9)
    out = []
    for k in range(rows):
        c = min(int(math.floor(k * ratio + 0.5)), len(lld) - 1)
        w = lld[max(0, c - half) : min(len(lld), c + half)]
        by_name = {
            "mean": w.mean(0),
            "std": w.std(0),
            "var": w.var(0),
            "max": w.max(0),
            "min": w.min(0),
            "range": w.max(0) - w.min(0),
        }
        out.append(np.concatenate([by_name[s] for s in stats]))
    return np.array(out)


@pytest.mark.parametrize("frames", [1, 7, 150, 301, 1003])
def test_window_functionals_equal_a_naive_loop(frames):
    rng = np.random.default_rng(frames)
    lld = rng.normal(3.0, 2.0, size=(frames, 5))
    stats = (*AVEC_STATS, "var")
    fast = window_functionals(lld, stats=stats)
    np.testing.assert_allclose(fast, _naive(lld, 4.0, 150, stats), atol=1e-6, rtol=1e-6)
    assert fast.dtype == np.float32 and fast.shape == (math.ceil(frames / 4), 5 * len(stats))


def test_mfcc_window_stats_are_mean_and_variance_over_8_seconds():
    mfcc = np.random.default_rng(0).normal(size=(2000, 13))
    out = mfcc_window_stats(mfcc)
    assert out.shape == (500, 26)
    np.testing.assert_allclose(out, _naive(mfcc, 4.0, 400, ("mean", "var")), atol=1e-6, rtol=1e-6)


def test_lld_frames_of_a_real_clip(clip):
    lld = lld_frames(clip)
    assert lld.shape == (math.ceil(len(clip) / 160), 41) and lld.dtype == np.float32
    assert np.isfinite(lld).all()
    # Speech is louder than its pauses: the log-energy spans tens of dB.
    assert lld[:, -1].max() - lld[:, -1].min() > math.log(10**3)


@pytest.mark.parametrize("samples", [400, 16000, 16001, 16159, 16160, 37337, 48000])
def test_rows_align_with_25_hz_traces(clip, samples):
    x = np.resize(clip, samples)
    rows = window_functionals(lld_frames(x))
    assert rows.shape == (math.ceil(samples / RATE * 25 - 1e-9), 41 * len(AVEC_STATS))


def test_egemaps_llds_or_a_clear_error(clip, monkeypatch):
    try:
        import opensmile  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="smile"):
            lld_frames(clip, lld_set="egemaps")
        return
    lld = lld_frames(clip, lld_set="egemaps")
    assert lld.shape == (math.ceil(len(clip) / 160), 25) and np.isfinite(lld).all()
    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(ImportError, match="smile"):
        lld_frames(clip, lld_set="egemaps")


def test_lld_errors():
    with pytest.raises(ValueError, match="unknown LLD set"):
        lld_frames(np.zeros(16000), lld_set="compare")
    with pytest.raises(ValueError, match="at least 400 samples"):
        lld_frames(np.zeros(100))
    with pytest.raises(ValueError, match="NaN"):
        lld_frames(np.full(1000, np.nan))
    with pytest.raises(ValueError, match="unknown or no statistics"):
        window_functionals(np.zeros((10, 2)), stats=("median",))


def _linear_task(seed: int, sequences: int, length: int = 300, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(12, 2))
    xs = [rng.normal(size=(length, 12)) * 3.0 + 5.0 for _ in range(sequences)]
    ys = [(x - 5.0) @ w / 10 + 0.2 + noise * rng.normal(size=(length, 2)) for x in xs]
    return xs, ys


def test_fit_svr_recovers_a_linear_map_and_picks_c_from_the_grid():
    train_x, train_y = _linear_task(0, 6)
    dev_x, dev_y = _linear_task(1, 3)
    fit = fit_svr(train_x, train_y, dev_x, dev_y, ["arousal", "valence"])
    assert isinstance(fit, ContinuousSVR)
    assert all(c in SVR_C_GRID for c in fit.C)
    assert min(fit.dev_ccc) > 0.9
    assert len(fit.selection) == 2 * len(SVR_C_GRID)
    predictions = fit.predict(dev_x)
    assert [p.shape for p in predictions] == [y.shape for y in dev_y]
    np.testing.assert_allclose(concatenated_ccc(predictions, dev_y), fit.dev_ccc, atol=1e-5)
    again = fit_svr(train_x, train_y, dev_x, dev_y, ["arousal", "valence"])
    np.testing.assert_array_equal(again.coef, fit.coef)


def test_fit_svr_errors():
    xs, ys = _linear_task(0, 2)
    with pytest.raises(ValueError, match="targets"):
        fit_svr(xs, [y[:, :1] for y in ys], xs, ys, ["arousal", "valence"])
    with pytest.raises(ValueError, match="one target sequence per feature sequence"):
        fit_svr(xs, ys[:1], xs, ys, ["arousal", "valence"])


def _smoothed_task(seed: int, sequences: int, length: int = 120):
    """Targets: a moving average (9 frames) of a fixed nonlinear function of the inputs."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(7).normal(size=6)
    xs, ys = [], []
    for _ in range(sequences):
        x = rng.normal(size=(length, 6)).cumsum(axis=0) / 3
        raw = np.tanh(x @ w / 3)
        ys.append(np.convolve(np.pad(raw, 4, mode="edge"), np.ones(9) / 9, mode="valid")[:, None])
        xs.append(x)
    return xs, ys


def test_blstm_learns_a_smoothed_target_and_is_deterministic():
    train_x, train_y = _smoothed_task(0, 10)
    dev_x, dev_y = _smoothed_task(1, 4)
    kwargs = {"hidden": 16, "layers": 2, "epochs": 12, "patience": 12, "lr": 1e-2, "seed": 3}
    state = torch.random.get_rng_state()
    model, history = fit_lld_blstm(train_x, train_y, dev_x, dev_y, ["arousal"], **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    predictions = model.predict(dev_x)
    assert [p.shape for p in predictions] == [y.shape for y in dev_y]
    best = max(row["dev_ccc"] for row in history)
    assert concatenated_ccc(predictions, dev_y)[0] == pytest.approx(best, abs=1e-5)
    assert best > 0.5  # a constant prediction has CCC 0
    again, history_again = fit_lld_blstm(train_x, train_y, dev_x, dev_y, ["arousal"], **kwargs)
    assert history_again == history
    for p, q in zip(predictions, again.predict(dev_x)):
        np.testing.assert_array_equal(p, q)


def test_blstm_paper_defaults_with_mse_and_early_stopping():
    train_x, train_y = _smoothed_task(2, 5, length=60)
    dev_x, dev_y = _smoothed_task(3, 2, length=60)
    model, history = fit_lld_blstm(train_x, train_y, dev_x, dev_y, ["v"], loss="mse", epochs=3, patience=1)
    assert model.lstm.num_layers == 3 and model.lstm.hidden_size == 64 and model.input_noise == 0.1
    assert 1 <= len(history) <= 3
    with pytest.raises(ValueError, match="unknown loss"):
        fit_lld_blstm(train_x, train_y, dev_x, dev_y, ["v"], loss="l1")
