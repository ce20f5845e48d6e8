"""benchmarks/make_readme.py: the EmoNet blocks and the model table, generated from JSON in the producers' layout.

The EmoNet results are assembled with benchmarks/emonet.py's own ``compare`` (McNemar against scratch) and ``_pool``
(LOSO pooling), so a change of that script's JSON layout breaks these tests rather than the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_scripts import load_script

from sermodels.metrics import uar

REPO = Path(__file__).resolve().parents[1]


make_readme = load_script("make_readme")

# 20 test utterances of two classes; scratch gets the first half of each class right.
TRUE = [0] * 10 + [1] * 10
PREDICTIONS = {
    "scratch": [0] * 5 + [1] * 5 + [1] * 5 + [0] * 5,  # 10 right, UAR 0.5
    "multi": [1] * 5 + [0] * 5 + [1] * 5 + [0] * 5,  # 10 right but others: 5 gained, 5 lost -> p = 1
    "adapters": TRUE,  # all right: 10 gained, none lost -> p = 2 / 2**10
    "head": [1] * 10 + [0] * 10,  # all wrong: 10 lost -> p = 2 / 2**10
}


def _run(predicted: list[int]) -> dict:
    return {
        "uar": float(uar(TRUE, predicted)),
        "war": sum(t == p for t, p in zip(TRUE, predicted)) / len(TRUE),
        "n": len(TRUE),
        "labels": ["anger", "neutral"],
        "true": TRUE,
        "predicted": predicted,
        "paths": [f"{i:02d}.flac" for i in range(len(TRUE))],
        "epochs": 8,
        "seconds": 60.0,
    }


@pytest.fixture
def emonet_results(tmp_path) -> tuple[Path, Path]:
    emonet = load_script("emonet")
    result = {
        "fixed": {"emodb": {regime: _run(predicted) for regime, predicted in PREDICTIONS.items()}},
        "loso": {},
        "anchors": emonet.ANCHORS,
        "environment": {"torch": "2.x", "torch_threads": 2, "precision": "bf16-mixed"},
        "protocol": {
            "epochs": {"scratch": 8, "adapters": 6, "head": 6, "full": 6},
            "plateau_patience": 2,
            "batch_size": 64,
            "max_duration": 5.0,
            "seed": 0,
            "base": "emonet_wrn.multi4",
        },
    }
    for corpus in ("ravdess", "emovo", "urdu"):
        result["fixed"][corpus] = {"scratch": _run(PREDICTIONS["scratch"])}
    emonet.compare(result)
    loso = {"folds": {"03": _run(PREDICTIONS["scratch"]), "08": _run(PREDICTIONS["adapters"])}}
    emonet._pool(loso)  # pooled UAR 0.75 over 40 utterances; per speaker 0.5 and 1.0
    result["loso"]["scratch"] = loso
    path = tmp_path / "emonet.json"
    path.write_text(json.dumps(result))
    baselines = tmp_path / "baselines.json"
    svm = {"logmel600+rbf": {"uar": 0.70}, "egemaps+linear": {"uar": 0.654}}
    baselines.write_text(json.dumps({"fixed": {"emodb": svm}, "loso": {"emodb": svm}}))
    return path, baselines


def test_emonet_table_marks_mcnemar_against_scratch(emonet_results):
    text = make_readme.emonet_table(*emonet_results)
    lines = text.splitlines()
    assert lines[0] == (
        "| corpus (test utterances) | scratch | multi (shared model, own head) | adapters | head only | "
        "full fine-tune |"
    )
    # adapters: significantly better (+), head: significantly worse (−), multi: no difference, full: not run.
    assert "| EMO-DB (20) | 50.0 | 50.0 | 100.0 + | 0.0 − | – |" in lines
    assert "| URDU (20) | 50.0 | – | – | – | – |" in lines
    assert "| mean of the four | 50.0 | – | – | – | – |" in lines  # a mean only over all four corpora
    assert "McNemar's test on the two models' errors, p < 0.05" in text
    assert "training epochs at most 8 (scratch), 6 (adapters), 6 (head only), 6 (full fine-tune)" in text
    assert "batches of 64; random training crops of at most 5.0 s; bf16-mixed precision; 2 torch threads" in text
    assert "Best SVM baseline on the same test partitions (see Baselines): EMO-DB 70.0 (log-mel-600 + RBF SVM)." in text


def test_emonet_table_says_plainly_where_we_stand(emonet_results):
    text = make_readme.emonet_table(*emonet_results)
    assert "- EMO-DB scratch: 50.0 % vs the paper's 59.2 % (EmoSet split) — 9.2 points below." in text
    assert "- EMO-DB adapters: 100.0 % vs the paper's 72.6 % (EmoSet split) — 27.4 points above." in text
    loso = next(line for line in text.splitlines() if "leave-one-speaker-out, scratch" in line)
    assert "75.0 % pooled over 2 held-out speakers (per-speaker UAR 75.0 ± 25.0)" in loso
    assert "5.0 points above our best SVM (log-mel-600 + RBF SVM, 70.0 %)" in loso
    assert "2.1 points below the published ComParE functionals + SVM (7 classes), 77.1 %" in loso


def test_missing_results_give_placeholders(tmp_path):
    assert make_readme.emonet_table(tmp_path / "none.json") == "_No results yet: run `python benchmarks/emonet.py`._"
    assert make_readme.emonet_speed_table(tmp_path / "none.json").startswith("_Not measured yet")


def test_models_table_has_a_row_per_released_model_and_a_column_per_corpus(tmp_path):
    from sermodels.checkpoint import save_pretrained
    from sermodels.labels import label_names
    from sermodels.models.emonet import EmoNet

    svm = REPO / "checkpoints" / "logmel_svm.emodb"
    (tmp_path / svm.name).mkdir()
    for name in ("config.json", "metrics.json"):
        (tmp_path / svm.name / name).write_text((svm / name).read_text())
    corpora = [{"name": n, "licence": f"{n} licence"} for n in ("emodb", "ravdess", "urdu")]
    multi = EmoNet({n: label_names("categories", n) for n in ("emodb", "ravdess", "urdu")}, widths=(8, 8, 8))
    arousal = EmoNet({"arousal": ["low", "high"]}, widths=(8, 8, 8))
    releases = {
        "emonet_wrn.a": (multi, "fixed", {"emodb/test": (0.5, 107), "urdu/test": (0.5, 80)}),
        "emonet_wrn.b": (multi, {"emodb": "fixed", "ravdess": "cv6"}, {"ravdess/test": (0.25, 240)}),
        "emonet_wrn.arousal": (arousal, "fixed", {"emodb/test": (0.9, 107), "emodb/loso": (0.8, 535)}),
        "emonet_wrn.unscored": (multi, "fixed", None),  # no metrics.json: not a released row
    }
    for folder, (model, split, metrics) in releases.items():
        save_pretrained(model, tmp_path / folder, extra={"training": {"corpora": corpora, "split": split}})
        if metrics is not None:
            scores = {key: {"uar": uar, "war": 0.1, "n": n} for key, (uar, n) in metrics.items()}
            (tmp_path / folder / "metrics.json").write_text(json.dumps(scores))
    text = make_readme.models_table(tmp_path)
    rows = text.splitlines()
    assert rows[0] == "| id | architecture | trained on | predicts | EMO-DB (107) | RAVDESS (240) | URDU (80) |"
    trained = "EMO-DB, RAVDESS, URDU (fixed)"
    assert rows[2:5] == [
        f"| `emonet_wrn.a` | emonet_wrn | {trained} | 3 heads (7/8/4 emotions) | 50.0 | – | 50.0 |",
        f"| `emonet_wrn.arousal` | emonet_wrn | {trained} | arousal: low/high | 90.0 | – | – |",
        "| `emonet_wrn.b` | emonet_wrn | EMO-DB (fixed), RAVDESS (cv6), URDU (?) | 3 heads (7/8/4 emotions) | – | "
        "25.0 | – |",
    ]
    assert rows[5].startswith("| `logmel_svm.emodb` | logmel_svm | EMO-DB (fixed) | 7 emotions | 55.1 | – | – |")
    assert "unscored" not in text and "WAR" not in text and "10.0" not in text and "80.0" not in text
    assert "`emonet_wrn.arousal` predicts a label space pooled over the corpora" in text
    assert "(arousal: low/high, chance 50.0 %)" in text
    # The licences once each, below the table, with the models trained on each corpus.
    assert "licence |" not in text and text.count("urdu licence") == 1
    ids = "`emonet_wrn.a`, `emonet_wrn.arousal`, `emonet_wrn.b`"
    assert f"- EMO-DB ({ids}): emodb licence" in rows
    assert f"- URDU ({ids}): urdu licence" in rows
    released = json.loads((svm / "config.json").read_text())["training"]["corpora"][0]["licence"]
    assert f"- EMO-DB (`logmel_svm.emodb`): {released}" in rows


def test_render_needs_every_block(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert make_readme.render(readme).count("<!-- BEGIN emonet_speed -->") == 1
    broken = readme.replace("<!-- BEGIN emonet -->", "")
    with pytest.raises(SystemExit, match="no '<!-- BEGIN emonet -->'"):
        make_readme.render(broken)


def _continuous_row(raw: tuple[float, float], post: tuple[float, float]) -> dict:
    steps = {"median_seconds": None, "bias": 0.1, "scale": 1.5, "scale_center": 0.0, "shift_seconds": 2.0}
    return {
        "test_raw": {"ccc": dict(zip(("arousal", "valence"), raw))},
        "test_postprocessed": {"ccc": dict(zip(("arousal", "valence"), post))},
        "chain": {"arousal": steps, "valence": {**steps, "bias": None, "scale": None, "shift_seconds": None}},
    }


def test_continuous_table_computes_its_claims(tmp_path):
    """The layout benchmarks/continuous.py writes (parts with a wall_seconds entry beside the rows)."""
    results = {
        "end_to_end": {"ccc": _continuous_row((0.5, 0.2), (0.55, 0.25)),
                       "mse": _continuous_row((0.4, 0.3), (0.45, 0.2)), "wall_seconds": 3.0},
        "handcrafted": {"logmel_svr": _continuous_row((0.45, 0.1), (0.5, 0.1)), "wall_seconds": 9.0},
        "lag": {"lag_seconds": 2.0, "logmel_svr": _continuous_row((0.3, 0.1), (0.5, 0.2)), "wall_seconds": 1.0},
        "task": {"sessions": {"train": 53, "dev": 16, "test": 22}},
    }  # fmt: skip
    path = tmp_path / "continuous.json"
    path.write_text(json.dumps(results))
    text = make_readme.continuous_table(path)
    assert "| conv-BLSTM, raw audio (§5.2), the paper's settings | 1 − CCC | 0.500 → 0.550 | 0.200 → 0.250 |" in text
    assert "arousal: CCC training beats MSE training for the conv-BLSTM (0.500 vs 0.400)" in text
    assert "valence: CCC training does not beat MSE training for the conv-BLSTM (0.200 vs 0.300)" in text
    assert (
        "arousal: the best end-to-end model (ccc, 0.500) beats the best hand-crafted system (logmel_svr, 0.450)" in text
    )
    assert (
        "valence: the best end-to-end model (mse, 0.300) beats the best hand-crafted system (logmel_svr, 0.100)" in text
    )
    # raised in 4 of 6 cases: (0.5, 0.2), (0.4, 0.3 -> 0.2 lowers), (0.45 -> 0.5, 0.1 -> 0.1 equal)
    assert "raised test CCC in 4 of 6 cases" in text
    assert "centre, scale ×1.50, shift 2 s; none" in text
    assert "the fitted time shift arousal 2 s, valence none" in text
