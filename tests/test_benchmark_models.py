"""benchmarks/models.py: the variants table, the schedules it derives, McNemar against the baseline, and what a
resumed run keeps. Nothing is trained or evaluated here."""

from __future__ import annotations

import json

import pytest
from bench_scripts import load_script

from sermodels.metrics import mcnemar

models = load_script("models")
VARIANTS = {v.name: v for v in models.VARIANTS}


def _bench(tmp_path, *args: str):
    argv = ["--results", str(tmp_path / "models.json"), "--workdir", str(tmp_path / "work"), *args]
    return models.Bench(models.parse_args(argv))


def test_every_variant_names_a_recipe_a_protocol_and_its_source():
    assert len(VARIANTS) == len(models.VARIANTS)
    for v in models.VARIANTS:
        assert (models.REPO / v.recipe).is_file(), v.recipe
        assert v.protocol in models.PROTOCOLS and v.source in ("train", "checkpoint")
        assert (v.source == "checkpoint") == (v.checkpoint is not None)
        assert set(v.corpora) <= set(models.CORPORA)
        assert (v.protocol == "loco") == (v.head is not None)
    assert VARIANTS["imagenet"].overrides == ("--model.init_args.augment", "null")


def test_per_corpus_runs_take_a_quarter_of_the_steps_and_validate_as_often():
    config = {"trainer": {"max_steps": 1600, "val_check_interval": 100}}
    assert models.schedule_args(config, 1, 1.0) == []
    assert models.schedule_args(config, 4, 1.0) == ["--trainer.max_steps", "400", "--trainer.val_check_interval", "25"]
    # A smoke scale still validates once, at the last step.
    assert models.schedule_args(config, 1, 0.002) == ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3"]
    variant = VARIANTS["imagenet_aug_percorpus"]
    recipe = models.read_recipe(variant.recipe)
    run = models.per_corpus_run(variant, "emodb", 1.0)
    assert run.name == "imagenet_aug_percorpus/emodb" and run.corpora == ("emodb",)
    assert run.args[:2] == ("--data.corpora", '["emodb"]')
    steps = recipe["trainer"]["max_steps"] // len(models.recipe_corpora(recipe))
    assert run.args[run.args.index("--trainer.max_steps") + 1] == str(steps)


def test_a_steps_schedule_is_scaled_in_rounds_and_data_modules_get_their_prefix():
    schedule = {"name": "steps", "stage_steps": 34, "min_lr": 0.001}
    emonet = {"trainer": {"max_steps": 408}, "model": {"init_args": {"schedule": schedule}}}
    args = models.schedule_args(emonet, 1, 0.5)
    assert args[:2] == ["--trainer.max_steps", "204"]
    assert json.loads(args[args.index("--model.init_args.schedule") + 1]) == schedule | {"stage_steps": 17}
    assert models.data_prefix(models.read_recipe("recipes/emonet/multi4.yaml")) == "--data."
    assert models.data_prefix(models.read_recipe("recipes/adapted_cnn/av.yaml")) == "--data.init_args."


def test_mcnemar_against_the_baseline_is_the_exact_binomial_test():
    files = [f"f{i}.flac" for i in range(30)]
    true = ["a"] * 15 + ["b"] * 15
    base_pred = ["a"] * 30
    model_pred = ["a"] * 5 + ["b"] * 10 + ["b"] * 12 + ["a"] * 3
    baseline = {
        "system": "egemaps+rbf",
        "uar": 0.5,
        "predictions": {f: {"true": t, "predicted": p} for f, t, p in zip(files, true, base_pred)},
    }
    test = models.mcnemar_vs_baseline(dict(zip(files, model_pred)), baseline, model_uar=0.57)
    index = {"a": 0, "b": 1}.get
    # sermodels.metrics: b = A (the baseline) wrong and B (the model) right.
    reference = mcnemar([*map(index, true)], [*map(index, base_pred)], [*map(index, model_pred)], exact=True)
    assert (test["b"], test["c"]) == (reference["b"], reference["c"]) == (12, 10)
    assert test["p_value"] == pytest.approx(reference["p_value"])
    assert test["better"] == "model" and not test["significant"] and test["uar_higher"]


def test_compare_adds_the_test_the_mean_and_the_wall_time():
    baseline = {"system": "s", "uar": 0.5, "predictions": {"x": {"true": "a", "predicted": "b"}}}
    score = {"run": "r", "uar": 1.0, "predictions": {"x": "a"}, "train_wall_s": 10.0, "eval_wall_s": 2.0}
    results = {"baselines": {"emodb": baseline}, "variants": {"v": {"corpora": {"emodb": score, "urdu": dict(score)}}}}
    models.compare(results)
    entry = results["variants"]["v"]
    assert entry["corpora"]["emodb"]["mcnemar_vs_baseline"]["b"] == 1
    assert "mcnemar_vs_baseline" not in entry["corpora"]["urdu"]  # no baseline cached for it yet
    assert entry["mean_uar"] is None and entry["wall_s"] == 14.0  # one training, two scorings


def test_loso_pools_the_folds_predictions():
    labels = ["a", "b"]
    folds = {
        "03": {"run": "f0", "labels": labels, "uar": 1.0, "predictions": {"1": ["a", "a"], "2": ["b", "b"]}},
        "08": {"run": "f1", "labels": labels, "uar": 0.5, "predictions": {"3": ["a", "a"], "4": ["a", "b"]}},
    }
    entry = {"folds": folds}
    models.pool_loso(entry, n_folds=10)
    assert entry["n"] == 4 and entry["uar"] == pytest.approx((2 / 3 + 1) / 2)
    assert entry["fold_uar_mean"] == pytest.approx(0.75) and entry["folds_n"] == 2 and not entry["complete"]


def test_smoke_settings_may_not_touch_the_real_results_or_runs():
    for smoke in (["--steps-scale", "0.01"], ["--override=--trainer.precision", "--override=32"], ["--folds", "0"]):
        with pytest.raises(SystemExit):
            models.parse_args(smoke)


def test_scores_are_kept_only_while_the_variant_settings_match(tmp_path):
    variant = VARIANTS["imagenet"]
    bench = _bench(tmp_path)
    bench.entry(variant)["corpora"] = {"emodb": {"run": "imagenet", "uar": 0.5}}
    bench.save()
    assert "emodb" in _bench(tmp_path).entry(variant)["corpora"]
    assert "corpora" not in _bench(tmp_path, "--force").entry(variant)
    assert "corpora" not in _bench(tmp_path, "--steps-scale", "0.5").entry(variant)


def test_a_trained_folder_is_reused_only_when_trained_alike(tmp_path, monkeypatch):
    bench = _bench(tmp_path)
    run = models.Run("imagenet", "recipes/adapted_cnn/multi4.yaml", ("--model.init_args.augment", "null"))
    folder = bench.workdir / run.name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"training": {"schedule_run": {"max_steps": 1600}}}))
    done = {"settings": bench.run_settings(run), "train_wall_s": 5.0}
    (folder / models.MARKER).write_text(json.dumps(done))
    trained = []
    monkeypatch.setattr(bench, "train", lambda run, folder, settings: trained.append(run.name) or folder)
    assert bench.model(run) == folder and not trained
    assert bench.results["runs"]["imagenet"]["train_wall_s"] == 5.0
    bench.model(models.Run(run.name, run.recipe, ()))  # other overrides: trained again
    assert trained == ["imagenet"]
