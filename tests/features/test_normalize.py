"""Standardizer: fit/apply, constant features, state_dict and safetensors round trips, per-corpus z-scores."""

from __future__ import annotations

import pytest
import torch

from sermodels.features import Standardizer, apply_per_corpus, fit_per_corpus


def sample_features(rows: int = 50, dim: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 20.0, dim)
    return torch.randn(rows, dim, generator=generator) * scale + torch.arange(dim) * 3.0


def test_fit_gives_zero_mean_unit_population_std():
    x = sample_features()
    standardizer = Standardizer(6).fit(x)
    z = standardizer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, correction=0), torch.ones(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardizer.std, x.double().std(0, correction=0).float())
    torch.testing.assert_close(standardizer.inverse(z), x, rtol=1e-5, atol=1e-4)


def test_constant_feature_gets_unit_scale_not_a_blow_up():
    x = sample_features()
    x[:, 2] = 7.25
    x[:, 4] = 0.0
    standardizer = Standardizer(6).fit(x)
    assert standardizer.std[2].item() == 1.0 and standardizer.std[4].item() == 1.0
    assert torch.equal(standardizer(x)[:, 2], torch.zeros(50))
    shifted = x.clone()
    shifted[:, 2] = 8.25
    assert torch.allclose(standardizer(shifted)[:, 2], torch.ones(50))


def test_unfitted_wrong_dim_and_bad_fit_inputs_are_errors():
    standardizer = Standardizer(6)
    assert not standardizer.fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        standardizer(sample_features())
    standardizer.fit(sample_features())
    with pytest.raises(ValueError, match="fitted on 6 features"):
        standardizer(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        Standardizer(6).fit(torch.zeros(10, 4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        Standardizer(6).fit(torch.zeros(1, 6))
    bad = sample_features()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/Inf.*\[3\]"):
        Standardizer(6).fit(bad)


def test_state_dict_round_trip():
    x = sample_features()
    fitted = Standardizer(6).fit(x)
    assert set(fitted.state_dict()) == {"mean", "std"}
    fresh = Standardizer(6)
    fresh.load_state_dict(fitted.state_dict())
    assert fresh.fitted
    assert torch.equal(fresh(x), fitted(x))


def test_state_loaded_through_a_parent_module_or_written_in_place_counts_as_fitted():
    x = sample_features()
    fitted = Standardizer(6).fit(x)
    parent = torch.nn.Sequential(Standardizer(6))
    parent.load_state_dict({"0.mean": fitted.mean, "0.std": fitted.std})
    assert torch.equal(parent(x), fitted(x))
    in_place = Standardizer(6)
    with torch.no_grad():
        in_place.mean.copy_(fitted.mean)
        in_place.std.copy_(fitted.std)
    assert torch.equal(in_place(x), fitted(x))


def test_safetensors_save_load_round_trip(tmp_path):
    x = sample_features()
    fitted = Standardizer(6).fit(x)
    path = tmp_path / "standardizer.safetensors"
    fitted.save(path)
    loaded = Standardizer.load(path)
    assert loaded.dim == 6 and loaded.fitted
    assert torch.equal(loaded(x), fitted(x))
    with pytest.raises(RuntimeError, match="unfitted"):
        Standardizer(6).save(tmp_path / "nothing.safetensors")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        Standardizer.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        Standardizer.load(junk)


def test_per_corpus_normalisation_uses_each_corpus_statistics():
    emodb = sample_features(40, seed=1)
    ravdess = sample_features(30, seed=2) * 5.0 + 100.0
    features = torch.cat([emodb, ravdess])
    corpus_ids = ["emodb"] * 40 + ["ravdess"] * 30
    order = torch.randperm(70, generator=torch.Generator().manual_seed(3))  # corpora interleaved
    features, corpus_ids = features[order], [corpus_ids[i] for i in order]
    standardizers = fit_per_corpus(features, corpus_ids)
    assert list(standardizers) == ["emodb", "ravdess"]
    z = apply_per_corpus(features, corpus_ids, standardizers)
    for corpus in ("emodb", "ravdess"):
        rows = torch.tensor([c == corpus for c in corpus_ids])
        torch.testing.assert_close(z[rows].mean(0), torch.zeros(6), atol=1e-5, rtol=0)
        torch.testing.assert_close(z[rows].std(0, correction=0), torch.ones(6), atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="urdu"):
        apply_per_corpus(features[:2], ["urdu", "emodb"], standardizers)
    with pytest.raises(ValueError, match="one corpus id per row"):
        fit_per_corpus(features, corpus_ids[:-1])


def test_per_corpus_errors_name_the_corpus_and_global_rows():
    features = sample_features(12)
    corpus_ids = ["emodb", "urdu"] * 6  # urdu holds rows 1, 3, 5, ...
    features[7, 2] = float("nan")  # the 4th urdu row, row 7 of features
    features[9, 0] = float("inf")
    with pytest.raises(ValueError, match=r"corpus 'urdu'.*NaN/Inf.*2 of its 6 rows.*\[7, 9\]"):
        fit_per_corpus(features, corpus_ids)
    with pytest.raises(ValueError, match=r"corpus 'ravdess' \(1 rows of features\).*at least 2 rows"):
        fit_per_corpus(sample_features(5), ["emodb"] * 4 + ["ravdess"])
