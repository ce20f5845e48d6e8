"""The SVM protocols (dev selection and refit, leave-one-speaker-out) and the utterance-functional cache."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sermodels.classical.svm import (
    LINEAR_C_GRID,
    extract_features,
    feature_cache_path,
    fit_fixed,
    make_svm,
    run_loso,
    select_on_dev,
)

CLASSES = ("a", "b", "c")


def _blobs(n_per_class: int, seed: int, dim: int = 8, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian classes ``(3 n, dim)`` around distinct means, with their labels ``(3 n,)``."""
    rng = np.random.default_rng(seed)
    means = np.eye(3, dim) * 4.0
    x = np.concatenate([rng.normal(means[i], spread, size=(n_per_class, dim)) for i in range(3)])
    y = np.repeat(np.array(CLASSES), n_per_class)
    return x, y


def test_dev_selection_picks_the_best_grid_point_and_the_largest_c_on_ties():
    x_train, y_train = _blobs(20, seed=0)
    x_dev, y_dev = _blobs(10, seed=1)
    params, scores = select_on_dev("linear", x_train, y_train, x_dev, y_dev)
    assert [s["C"] for s in scores] == list(LINEAR_C_GRID)
    best = max(s["uar"] for s in scores)
    assert params == {"C": next(s["C"] for s in scores if s["uar"] == best)}


def test_fixed_fit_refits_on_train_and_dev():
    x_train, y_train = _blobs(20, seed=0)
    x_dev, y_dev = _blobs(10, seed=1)
    fit = fit_fixed("linear", x_train, y_train, x_dev, y_dev)
    assert fit.labels == list(CLASSES)
    # The z-score is the first step of the pipeline: fitted on exactly the rows the SVM was refitted on.
    np.testing.assert_allclose(fit.pipeline.named_steps["zscore"].mean_, np.concatenate([x_train, x_dev]).mean(0))
    x_test, y_test = _blobs(10, seed=2)
    assert (fit.predict(x_test) == y_test).mean() > 0.9


def test_loso_holds_out_each_speaker_once():
    x, y = _blobs(12, seed=3, spread=1.5)
    speakers = np.tile(np.array(["s1", "s2", "s3", "s4"]), len(y) // 4)
    items = [SimpleNamespace(label=label, speaker=speaker) for label, speaker in zip(y, speakers)]
    result = run_loso("linear", x, items)
    assert sorted(result["folds"]) == ["s1", "s2", "s3", "s4"]
    assert sum(f["n"] for f in result["folds"].values()) == result["n"] == len(y)
    uars = [f["uar"] for f in result["folds"].values()]
    assert result["fold_uar_mean"] == pytest.approx(np.mean(uars))
    assert result["uar"] > 0.8


def test_unknown_svm_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown SVM kind"):
        make_svm("poly", C=1.0)


def test_feature_cache_key_follows_settings_and_files(tmp_path):
    first = tmp_path / "a.bin"
    first.write_bytes(b"x")
    key = feature_cache_path([first], ["set", {"n": 1}], tmp_path / "cache")
    assert key.parent == tmp_path / "cache" and key.name.startswith("set-")
    assert feature_cache_path([first], ["set", {"n": 2}], tmp_path / "cache") != key
    first.write_bytes(b"xy")  # a changed file (size) is another key
    assert feature_cache_path([first], ["set", {"n": 1}], tmp_path / "cache") != key
    assert feature_cache_path([first], ["set"], None) is None


def test_feature_cache_follows_the_extractor_settings(tmp_path, emodb_root):
    paths = sorted(str(p) for p in (emodb_root / "wav").glob("03a01*.flac"))
    default = extract_features(paths, cache_dir=tmp_path)
    other = extract_features(paths, frontend={"log_eps": 1e-2}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.allclose(default, other)
    np.testing.assert_array_equal(extract_features(paths, cache_dir=tmp_path), default)


def test_too_short_file_is_named(tmp_path):
    import soundfile as sf

    short = tmp_path / "blip.wav"
    sf.write(short, np.zeros(400, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="blip.wav: too short"):
        extract_features([str(short)])


def test_unknown_feature_set_is_an_error():
    with pytest.raises(ValueError, match="unknown feature set"):
        extract_features([], "mfcc")
