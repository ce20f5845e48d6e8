"""The log-mel SVM recipe: the export from scikit-learn is exact, the recipe loader refuses what does not export,
and the per-fold refit of ``sermodels evaluate --split loso``. (Refitting the released recipe and comparing the
tensors: tests/test_release.py, ``-m slow``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sermodels.audio import load_audio
from sermodels.classical.release import export_linear, fit_on_items, load_recipe
from sermodels.classical.svm import extract_features, fit_fixed
from sermodels.data import load_corpus
from sermodels.models.svm import LogMelSVM

RECIPE = "recipes/baselines/logmel_svm.emodb.yaml"


@pytest.fixture(scope="module")
def emodb_small():
    from conftest import corpus_root

    corpus = load_corpus("emodb", corpus_root("emodb"))
    split = corpus.split("fixed")
    # A balanced handful per partition keeps this fast while staying real data.
    pick = {name: items[:: max(1, len(items) // 60)] for name, items in split.items()}
    feats = {name: extract_features([it.path for it in items]) for name, items in pick.items()}
    return pick, feats


def test_export_matches_sklearn_on_real_audio(emodb_small):
    pick, feats = emodb_small
    y = {name: np.array([it.label for it in items]) for name, items in pick.items()}
    fit = fit_fixed("linear", feats["train"], y["train"], feats["dev"], y["dev"])
    model = export_linear(fit)
    # End to end from waveforms, padded batch, against scikit-learn on the features of the same files.
    waves = [load_audio(it.path) for it in pick["test"][:8]]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.inference_mode():
        logits = model(batch, lengths)
    ours = [model.label_names()[i] for i in logits.argmax(-1).tolist()]
    assert ours == fit.predict(feats["test"][:8]).tolist()
    decision = fit.pipeline.decision_function(feats["test"][:8])
    np.testing.assert_allclose(logits.numpy(), decision, rtol=1e-3, atol=1e-3)


def test_fold_refit_uses_the_given_features_and_names_the_head(emodb_small):
    pick, feats = emodb_small
    model = fit_on_items(pick["train"], features=feats["train"], head="emodb")
    assert isinstance(model, LogMelSVM) and model.default_head == "emodb" and not model.training
    assert model.label_names() == sorted({it.label for it in pick["train"]})
    # The z-score was fitted on exactly the rows given (the fold's training speakers).
    np.testing.assert_allclose(model.standardizer.mean.numpy(), feats["train"].mean(0), rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        logits = model.classifier(model.standardizer(torch.from_numpy(feats["train"])))
    predicted = [model.label_names()[i] for i in logits.argmax(-1).tolist()]
    assert np.mean([p == it.label for p, it in zip(predicted, pick["train"])]) > 0.8


def test_recipe_loads_with_overrides_and_refuses_what_does_not_export(tmp_path):
    recipe = load_recipe(RECIPE, ["output=runs/x", "evaluate_splits=[]"])
    assert recipe["id"] == "logmel_svm.emodb" and recipe["output"] == "runs/x"
    assert recipe["evaluate_splits"] == [] and recipe["recipe_path"] == RECIPE
    assert load_recipe(RECIPE)["evaluate_splits"] == ["test"]
    with pytest.raises(ValueError, match="only a linear SVM on logmel600"):
        load_recipe(RECIPE, ["svm=rbf"])
    with pytest.raises(ValueError, match="only a linear SVM on logmel600"):
        load_recipe(RECIPE, ["features=egemaps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\ncorpus: emodb\nroot: r\n")
    with pytest.raises(ValueError, match="lacks"):
        load_recipe(bad)
