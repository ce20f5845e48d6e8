"""The D4.2 post-processing chain (:mod:`sermodels.postprocess`) on synthetic traces with known distortions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.ndimage import median_filter

from sermodels.metrics import ccc, concatenated
from sermodels.postprocess import (
    DEFAULT_MEDIAN_SECONDS,
    DEFAULT_SHIFT_SECONDS,
    DimensionSteps,
    PostProcessing,
    fit_postprocessing,
    median_window,
    shift_frames,
    trace_std,
)

FRAME_RATE = 25.0  # RECOLA's gold standard: one frame every 40 ms
NAMES = ("arousal", "valence")
FRAMES = 1500  # 60 s per sequence


def smooth(rng: np.random.Generator, frames: int, extra: int = 0, width: float = 12.0) -> np.ndarray:
    """A slowly varying trace of ``frames + extra`` frames: white noise through a Gaussian kernel, std 1."""
    half = int(4 * width)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / width) ** 2)
    trace = np.convolve(rng.normal(size=frames + extra + 2 * half), kernel, mode="valid")
    return (trace - trace.mean()) / trace.std()


def lagged_pair(rng: np.random.Generator, lag_frames: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, gold)`` of one dimension where the prediction runs ``lag_frames`` ahead: pred[t] = gold[t + lag].

    The gold trace varies over seconds (a 2 s kernel), as rated emotion does, so a lag of a few seconds still leaves
    the raw prediction correlated with it.
    """
    signal = smooth(rng, FRAMES, extra=lag_frames, width=50.0)
    gold = signal[:FRAMES]
    pred = signal[lag_frames : lag_frames + FRAMES] + noise * rng.normal(size=FRAMES)
    return pred, gold


def lagged_set(seed: int, lags: dict[str, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three ``(T, 2)`` sequence pairs, each dimension lagged by ``lags[name]`` frames."""
    rng = np.random.default_rng(seed)
    pred, gold = [], []
    for _ in range(3):
        x, y = two_dimensions([lagged_pair(rng, lags[name], noise=0.2) for name in NAMES])
        pred.append(x)
        gold.append(y)
    return pred, gold


def two_dimensions(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack one ``(pred, gold)`` pair per dimension into a ``(T, 2)`` sequence pair."""
    return np.stack([p for p, _ in pairs], axis=1), np.stack([g for _, g in pairs], axis=1)


def dev_scores(chain: PostProcessing, pred: list[np.ndarray], gold: list[np.ndarray]) -> dict[str, float]:
    """Concatenated CCC of the chain's output, per dimension."""
    out = chain.apply(pred)
    return {name: concatenated("ccc", [x[:, d] for x in out], [y[:, d] for y in gold]) for d, name in enumerate(NAMES)}


def distorted_dev_set(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Predictions that are lagged (2 s), shrunk, offset and spiky: every step of the chain has work to do."""
    rng = np.random.default_rng(seed)
    pred, gold = [], []
    for _ in range(3):
        sequence = []
        for _ in NAMES:
            p, g = lagged_pair(rng, lag_frames=50, noise=0.1)
            spikes = rng.random(FRAMES) < 0.05
            p = 0.4 * p - 0.5 + spikes * rng.choice([-3.0, 3.0], size=FRAMES)
            sequence.append((p, 0.8 * g + 0.2))
        x, y = two_dimensions(sequence)
        pred.append(x)
        gold.append(y)
    return pred, gold


# ------------------------------------------------------------------------------------------- frame counts


def test_window_and_shift_frames():
    assert median_window(0.4, 25) == 11  # 10 frames: an even count goes up to the next odd one
    assert median_window(0.44, 25) == 11
    assert median_window(0.36, 25) == 9
    assert median_window(0.01, 25) == 1
    assert median_window(20.0, 25) == 501
    assert shift_frames(0.04, 25) == 1
    assert shift_frames(10.0, 25) == 250
    assert shift_frames(2.0, 100) == 200
    assert (DEFAULT_MEDIAN_SECONDS[0], DEFAULT_MEDIAN_SECONDS[-1]) == (0.4, 20.0)
    assert [shift_frames(s, 25) for s in DEFAULT_SHIFT_SECONDS] == list(range(1, 251))


# ------------------------------------------------------------------------------------------------ fitting


def test_fit_recovers_rater_lag_and_raises_dev_ccc():
    pred, gold = lagged_set(seed=0, lags={name: 50 for name in NAMES})  # 2 s at 25 Hz

    chain = fit_postprocessing(pred, gold, FRAME_RATE, NAMES)

    for name in NAMES:
        assert chain.steps[name].shift_seconds == pytest.approx(2.0, abs=1 / FRAME_RATE + 1e-9)
        assert chain.dev_ccc[name]["final"] > chain.dev_ccc[name]["raw"] + 0.1
    # the fit scores each sequence's shift on its own, exactly as apply() shifts them
    for name, score in dev_scores(chain, pred, gold).items():
        assert score == pytest.approx(chain.dev_ccc[name]["final"], abs=1e-12)


def test_each_dimension_gets_its_own_shift():
    pred, gold = lagged_set(seed=1, lags={"arousal": 50, "valence": 80})  # 2 s and 3.2 s

    chain = fit_postprocessing(pred, gold, FRAME_RATE, NAMES, medians=())

    assert chain.steps["arousal"].shift_seconds == pytest.approx(2.0, abs=1 / FRAME_RATE + 1e-9)
    assert chain.steps["valence"].shift_seconds == pytest.approx(3.2, abs=1 / FRAME_RATE + 1e-9)


def test_centring_and_scaling_are_kept_for_a_biased_shrunk_prediction():
    rng = np.random.default_rng(1)
    gold = [np.stack([0.8 * smooth(rng, FRAMES) + 0.3 for _ in NAMES], axis=1) for _ in range(2)]
    pred = [0.3 * g - 0.4 + 0.05 * rng.normal(size=g.shape) for g in gold]

    chain = fit_postprocessing(pred, gold, FRAME_RATE, NAMES, medians=(), shifts=())

    pred_all, gold_all = np.concatenate(pred), np.concatenate(gold)
    for d, name in enumerate(NAMES):
        steps = chain.steps[name]
        assert steps.median_seconds is None and steps.shift_seconds is None
        assert steps.bias == pytest.approx(gold_all[:, d].mean() - pred_all[:, d].mean())
        assert steps.scale == pytest.approx(gold_all[:, d].std() / pred_all[:, d].std())
        assert steps.scale_center == pytest.approx(gold_all[:, d].mean())
        assert chain.dev_ccc[name]["final"] > chain.dev_ccc[name]["centring"] > chain.dev_ccc[name]["raw"]
    out = np.concatenate(chain.apply(pred))
    np.testing.assert_allclose(out.mean(axis=0), gold_all.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), gold_all.std(axis=0), rtol=1e-12)


def test_scaling_targets_the_training_gold_std():
    rng = np.random.default_rng(2)
    train_gold = [np.stack([0.5 * smooth(rng, FRAMES) for _ in NAMES], axis=1)]
    gold = [np.stack([smooth(rng, FRAMES) for _ in NAMES], axis=1)]
    pred = [0.2 * gold[0] + 0.02 * rng.normal(size=gold[0].shape)]
    train_std = trace_std(train_gold, NAMES)
    assert train_std == pytest.approx({name: 0.5 for name in NAMES})

    chain = fit_postprocessing(pred, gold, FRAME_RATE, NAMES, gold_std=train_std, medians=(), shifts=())

    out = chain.apply(pred)[0]
    for d, name in enumerate(NAMES):
        assert chain.steps[name].scale == pytest.approx(0.5 / pred[0][:, d].std())
        assert out[:, d].std() == pytest.approx(0.5)


def test_a_perfect_prediction_keeps_no_step():
    rng = np.random.default_rng(3)
    gold = [np.stack([smooth(rng, FRAMES) for _ in NAMES], axis=1) for _ in range(2)]
    pred = [g.copy() for g in gold]

    chain = fit_postprocessing(pred, gold, FRAME_RATE, NAMES)

    assert chain.steps == PostProcessing.identity(NAMES, FRAME_RATE).steps
    for name in NAMES:
        assert chain.dev_ccc[name]["raw"] == chain.dev_ccc[name]["final"] == 1.0
        assert chain.dev_ccc[name]["median"] < 1.0 and chain.dev_ccc[name]["shift"] < 1.0
    for out, g in zip(chain.apply(pred), gold):
        np.testing.assert_array_equal(out, g)


def test_median_filter_removes_spikes_and_is_kept():
    rng = np.random.default_rng(4)
    gold = [np.stack([smooth(rng, FRAMES, width=25.0) for _ in NAMES], axis=1) for _ in range(2)]
    spikes = [(rng.random(g.shape) < 0.05) * rng.choice([-4.0, 4.0], size=g.shape) for g in gold]
    pred = [g + s for g, s in zip(gold, spikes)]

    chain = fit_postprocessing(pred, gold, FRAME_RATE, NAMES)

    median_only = PostProcessing(
        names=NAMES,
        frame_rate=FRAME_RATE,
        steps={name: DimensionSteps(median_seconds=chain.steps[name].median_seconds) for name in NAMES},
    )
    filtered = np.concatenate(median_only.apply(pred))
    gold_all, pred_all = np.concatenate(gold), np.concatenate(pred)
    for d, name in enumerate(NAMES):
        assert chain.steps[name].median_seconds is not None
        assert chain.dev_ccc[name]["median"] > chain.dev_ccc[name]["raw"] + 0.1
        spiky_frames = np.sum(np.abs(pred_all[:, d] - gold_all[:, d]) > 1.0)
        assert np.sum(np.abs(filtered[:, d] - gold_all[:, d]) > 1.0) < 0.1 * spiky_frames
        assert ccc(filtered[:, d], gold_all[:, d]) > ccc(pred_all[:, d], gold_all[:, d])


def test_median_pads_edges_with_the_nearest_value():
    chain = PostProcessing(NAMES[:1], FRAME_RATE, {"arousal": DimensionSteps(median_seconds=0.2)})  # 5 frames
    trace = np.array([[5.0], [1.0], [1.0], [2.0], [1.0], [1.0], [9.0]])
    out = chain.apply([trace])[0][:, 0]
    # a shrinking window (median of 5, 1, 1) or reflecting the edge (1, 5, 5, 1, 1) would give 1 at the first frame
    np.testing.assert_array_equal(out, [5.0, 2.0, 1.0, 1.0, 1.0, 2.0, 9.0])


# ------------------------------------------------------------------------------------------- applying


def manual_chain(x: np.ndarray, steps: DimensionSteps) -> np.ndarray:
    """The four steps written out by hand from the module docstring's formulas."""
    x = median_filter(x, size=median_window(steps.median_seconds, FRAME_RATE), mode="nearest")
    x = x + steps.bias
    x = steps.scale_center + (x - steps.scale_center) * steps.scale
    k = shift_frames(steps.shift_seconds, FRAME_RATE)
    return np.array([x[max(t - k, 0)] for t in range(len(x))])


def test_dev_fitted_chain_is_applied_unchanged_to_test_data():
    dev_pred, dev_gold = distorted_dev_set(seed=5)
    test_pred, _ = distorted_dev_set(seed=6)
    test_copy = [x.copy() for x in test_pred]

    chain = fit_postprocessing(dev_pred, dev_gold, FRAME_RATE, NAMES)
    out = chain.apply(test_pred)

    for name in NAMES:
        assert None not in (chain.steps[name].median_seconds, chain.steps[name].bias)
        assert None not in (chain.steps[name].scale, chain.steps[name].shift_seconds)
    for x, y in zip(test_pred, out):
        for d, name in enumerate(NAMES):
            np.testing.assert_allclose(y[:, d], manual_chain(x[:, d], chain.steps[name]), rtol=0, atol=1e-12)
    for x, original in zip(test_pred, test_copy):
        np.testing.assert_array_equal(x, original)  # apply() does not write into its input
    assert fit_postprocessing(dev_pred, dev_gold, FRAME_RATE, NAMES) == chain


def test_json_round_trip_gives_identical_output():
    dev_pred, dev_gold = distorted_dev_set(seed=7)
    chain = fit_postprocessing(dev_pred, dev_gold, FRAME_RATE, NAMES)

    restored = PostProcessing.from_json(json.loads(json.dumps(chain.to_json())))

    assert restored == chain
    for a, b in zip(chain.apply(dev_pred), restored.apply(dev_pred)):
        np.testing.assert_array_equal(a, b)
    identity = PostProcessing.identity(NAMES, FRAME_RATE)
    assert PostProcessing.from_json(json.loads(json.dumps(identity.to_json()))) == identity


def test_shift_never_crosses_sequence_boundaries():
    chain = PostProcessing(NAMES[:1], FRAME_RATE, {"arousal": DimensionSteps(shift_seconds=0.4)})  # 10 frames
    first = 100.0 + np.arange(40.0)[:, None]
    second = -100.0 - np.arange(30.0)[:, None]
    short = np.array([[7.0], [8.0], [9.0]])

    out = chain.apply([first, second, short])

    np.testing.assert_array_equal(out[1][:10], np.full((10, 1), second[0, 0]))
    np.testing.assert_array_equal(out[1][10:], second[:-10])
    np.testing.assert_array_equal(out[0][:10], np.full((10, 1), first[0, 0]))
    np.testing.assert_array_equal(out[2], np.full((3, 1), 7.0))  # a shift longer than the sequence


# ------------------------------------------------------------------------------------------- validation


def good_pair() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(8)
    return [rng.normal(size=(100, 2)), rng.normal(size=(80, 2))], [rng.normal(size=(100, 2)), rng.normal(size=(80, 2))]


def with_nan(traces: list[np.ndarray]) -> list[np.ndarray]:
    traces = [x.copy() for x in traces]
    traces[1][5, 1] = math.nan
    return traces


FIT_ERRORS = {
    "count": (lambda p, g: dict(predictions=p, gold=g[:1]), "predictions has 2 sequences but gold has 1"),
    "shape": (
        lambda p, g: dict(predictions=p, gold=[g[0], g[1][:79]]),
        r"sequence 1: predictions \(80, 2\) and gold \(79, 2\) differ",
    ),
    "nan prediction": (lambda p, g: dict(predictions=with_nan(p), gold=g), "predictions sequence 1 contains NaN"),
    "nan gold": (lambda p, g: dict(predictions=p, gold=with_nan(g)), "gold sequence 1 contains NaN"),
    "empty": (lambda p, g: dict(predictions=[], gold=[]), "predictions is empty"),
    "no frames": (
        lambda p, g: dict(predictions=[p[0][:0]], gold=[g[0][:0]]),
        "predictions sequence 0 is empty: it has no frames",
    ),
    "dims": (lambda p, g: dict(predictions=[x[:, :1] for x in p], gold=g), r"must be \(frames, 2\), got \(100, 1\)"),
    "one array": (lambda p, g: dict(predictions=p[0], gold=g[0]), "must be a list of"),
    "frame rate zero": (lambda p, g: dict(predictions=p, gold=g, frame_rate=0), "frame_rate must be a positive"),
    "frame rate negative": (lambda p, g: dict(predictions=p, gold=g, frame_rate=-25.0), "frame_rate must be"),
    "frame rate nan": (lambda p, g: dict(predictions=p, gold=g, frame_rate=math.nan), "frame_rate must be"),
    "duplicate names": (lambda p, g: dict(predictions=p, gold=g, names=("a", "a")), "names has duplicates"),
    "gold_std missing": (
        lambda p, g: dict(predictions=p, gold=g, gold_std={"arousal": 1.0}),
        r"gold_std has no value for \['valence'\]",
    ),
    "gold_std negative": (
        lambda p, g: dict(predictions=p, gold=g, gold_std={"arousal": 1.0, "valence": -1.0}),
        r"gold_std\['valence'\] must be a positive number",
    ),
    "median grid": (lambda p, g: dict(predictions=p, gold=g, medians=(0.4, 0.0)), "medians must hold positive"),
    "shift grid": (lambda p, g: dict(predictions=p, gold=g, shifts=(-0.04,)), "shifts must hold positive"),
}


@pytest.mark.parametrize("case", FIT_ERRORS, ids=list(FIT_ERRORS))
def test_fit_rejects_bad_input(case):
    make, message = FIT_ERRORS[case]
    kwargs = dict(frame_rate=FRAME_RATE, names=NAMES) | make(*good_pair())
    with pytest.raises(ValueError, match=message):
        fit_postprocessing(**kwargs)


def test_apply_rejects_bad_traces():
    chain = PostProcessing.identity(NAMES, FRAME_RATE)
    pred, _ = good_pair()
    with pytest.raises(ValueError, match="traces sequence 1 contains NaN"):
        chain.apply(with_nan(pred))
    with pytest.raises(ValueError, match=r"traces sequence 0 must be \(frames, 2\), got \(100, 3\)"):
        chain.apply([np.zeros((100, 3))])
    with pytest.raises(ValueError, match="traces is empty"):
        chain.apply([])


def edited(change) -> dict:
    """A valid to_json() dict with ``change`` applied to it."""
    data = PostProcessing(
        NAMES,
        FRAME_RATE,
        {"arousal": DimensionSteps(median_seconds=0.4, scale=1.2, scale_center=0.1), "valence": DimensionSteps()},
        {"arousal": {"raw": 0.5, "final": 0.6}},
    ).to_json()
    change(data)
    return data


JSON_ERRORS = {
    "missing frame_rate": (lambda d: d.pop("frame_rate"), r"post-processing is missing \['frame_rate'\]"),
    "bad frame_rate": (lambda d: d.update(frame_rate=-1), "frame_rate must be a positive"),
    "bool frame_rate": (lambda d: d.update(frame_rate=True), "frame_rate must be a positive"),
    "unknown top key": (lambda d: d.update(extra=1), r"post-processing has unknown fields \['extra'\]"),
    "names not a list": (lambda d: d.update(names="arousal"), "names must be a list"),
    "steps keys": (lambda d: d["steps"].pop("valence"), "steps must have one entry per name"),
    "negative scale": (lambda d: d["steps"]["arousal"].update(scale=-1.0), "steps.arousal: scale must be a positive"),
    "string bias": (lambda d: d["steps"]["valence"].update(bias="0.1"), "steps.valence.bias must be a number or null"),
    "zero shift": (lambda d: d["steps"]["valence"].update(shift_seconds=0), "steps.valence: shift_seconds must be"),
    "unknown step": (
        lambda d: d["steps"]["arousal"].update(smooth=1.0),
        r"steps.arousal has unknown fields \['smooth'\]",
    ),
    "scale alone": (
        lambda d: d["steps"]["arousal"].update(scale_center=None),
        "steps.arousal: scale and scale_center go together",
    ),
    "dev_ccc value": (lambda d: d["dev_ccc"]["arousal"].update(raw=None), "dev_ccc.arousal.raw must be a finite"),
    "dev_ccc name": (lambda d: d["dev_ccc"].update(dominance={}), "dev_ccc has dimensions that are not in names"),
}


@pytest.mark.parametrize("case", JSON_ERRORS, ids=list(JSON_ERRORS))
def test_from_json_names_the_bad_field(case):
    change, message = JSON_ERRORS[case]
    with pytest.raises(ValueError, match=message):
        PostProcessing.from_json(edited(change))


def test_from_json_accepts_the_unedited_dict_and_rejects_a_non_object():
    assert PostProcessing.from_json(edited(lambda d: None)).steps["arousal"].scale == 1.2
    with pytest.raises(ValueError, match="must be a JSON object"):
        PostProcessing.from_json([1, 2])
