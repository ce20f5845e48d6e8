"""benchmarks/deep_spectrum.py: a --quick run on real EMO-DB files (its JSON's structure and arithmetic, and the
README block made from it), and the committed full results have every key the README needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import load_script
from conftest import DATA, corpus_root

from sermodels.metrics import uar

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "deep_spectrum.py"
RESULTS = REPO / "benchmarks" / "results" / "deep_spectrum.json"
EXTRACTORS = {"mobilenetv2_100.imagenet": 1280, "mobilenetv2_100.random": 1280, "vgg16.random": 4096}
CORPORA = ("emodb", "emovo", "ravdess", "urdu")
C_GRID = [10.0**-k for k in range(10)]  # EmoNet paper §4.1: 1 .. 1e-9


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    corpus_root("emodb")
    bench = load_script("deep_spectrum")
    if not bench.IMAGENET_WEIGHTS.is_file() and not bench.INT8_SOURCE.is_file():
        pytest.skip(f"neither {bench.IMAGENET_WEIGHTS} nor the int8 MobileNetV2 {bench.INT8_SOURCE} to convert it from")
    out = tmp_path_factory.mktemp("bench") / "deep_spectrum.json"
    done = _run("--quick", "--no-gpu", "--data", str(DATA), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text()), out


def test_quick_may_not_write_the_real_results():
    done = _run("--quick")
    assert done.returncode == 2 and "--quick numbers are not the benchmark" in done.stderr


def test_quick_accuracy_is_recorded_and_consistent(quick):
    res, _ = quick
    assert res["quick"] is True and res["benchmark"] == "deep_spectrum"
    assert res["protocol"]["precision"] == "bf16" and res["protocol"]["image"]["colormap"] == "magma"
    assert res["protocol"]["image"]["n_mels"] == 128 and res["protocol"]["image"]["size"] == [224, 224]
    facts = res["corpora"]["emodb"]
    assert set(res["corpora"]) == {"emodb"}  # --quick: EMO-DB only
    assert facts["n"] == {"train": 7, "dev": 7, "test": 7} and facts["chance_uar"] == pytest.approx(1 / 7)
    assert set(res["extractors"]) == set(EXTRACTORS)
    for name, dim in EXTRACTORS.items():
        entry = res["extractors"][name]
        assert entry["dim"] == dim and entry["settings"]["precision"] == "bf16" and "loso" not in entry
        run = entry["fixed"]["emodb"]
        assert 0.0 <= run["uar"] <= 1.0 and 0.0 <= run["dev_uar"] <= 1.0 and 0.0 <= run["war"] <= 1.0
        assert run["params"]["C"] in C_GRID and run["n_test"] == facts["n"]["test"]
        assert run["features"] == {"dim": dim, "seconds": run["features"]["seconds"], "computed": True}
        pred = run["predictions"]
        assert len(pred["true"]) == len(pred["predicted"]) == len(pred["ids"]) == run["n_test"]
        assert pred["labels"] == sorted(pred["labels"]) and len(pred["labels"]) == 7
        assert run["uar"] == pytest.approx(uar(pred["true"], pred["predicted"], num_classes=7))
    assert res["extractors"]["mobilenetv2_100.imagenet"]["settings"]["sha256"]
    assert res["extractors"]["vgg16.random"]["settings"]["seed"] == 0
    for name in ("mobilenetv2_100.random", "vgg16.random"):
        test = res["extractors"][name]["fixed"]["emodb"]["mcnemar_vs_imagenet"]
        assert 0.0 <= test["p_value"] <= 1.0 and test["b"] + test["c"] <= 7
    assert "mcnemar_vs_imagenet" not in res["extractors"]["mobilenetv2_100.imagenet"]["fixed"]["emodb"]
    assert [a["uar"] for a in res["anchors"]] == [0.613] and "Table 3" in res["anchors"][0]["source"]
    assert "vgg16" in res["not_available"]["vgg16_imagenet_weights"].lower()


def test_quick_speed_is_recorded_and_consistent(quick):
    res, _ = quick
    sp = res["speed"]
    assert len(sp["files"]) == res["settings"]["speed_files"] and sp["audio_seconds"] > 0 and sp["threads"] == 2
    img = sp["image_path"]
    for path in ("torch", "matplotlib"):
        r = img[path]
        assert len(r["wall_seconds"]) == sp["repeats"] and r["best_seconds"] == min(r["wall_seconds"]) > 0
        assert r["x_realtime"] == pytest.approx(sp["audio_seconds"] / r["best_seconds"]) and r["x_realtime"] > 0
        assert r["images_per_s"] == pytest.approx(len(sp["files"]) / r["best_seconds"])
    assert img["torch_over_matplotlib"] == pytest.approx(img["torch"]["x_realtime"] / img["matplotlib"]["x_realtime"])
    assert img["torch_over_matplotlib"] > 0
    assert img["pixels_identical"] > 0.99  # the two renderers draw the same pictures
    entries = {(e["backbone"], e["precision"]): e for e in sp["end_to_end"]}
    assert set(entries) == {(b, p) for b in ("mobilenetv2_100", "vgg16") for p in ("fp32", "bf16")}
    for (_, precision), e in entries.items():
        assert e["x_realtime"] == pytest.approx(sp["audio_seconds"] / e["best_seconds"]) and e["x_realtime"] > 0
        assert e["device"] == "cpu" and e["files"] == len(sp["files"])
        assert e["cosine_to_fp32"]["min"] > (0.9999 if precision == "fp32" else 0.99)
    assert sp["gpu"] is None and sp["gpu_reason"] == "disabled with --no-gpu"


def test_readme_block_renders_the_quick_run(quick):
    res, path = quick
    text = load_script("make_readme").deep_spectrum_table(path)
    lines = text.splitlines()
    assert lines[0] == "| extractor | EMO-DB (7) | EMOVO | RAVDESS | URDU | mean | EMO-DB LOSO |"
    uars = {name: 100 * entry["fixed"]["emodb"]["uar"] for name, entry in res["extractors"].items()}
    imagenet = f"| MobileNetV2, ImageNet weights | {uars['mobilenetv2_100.imagenet']:.1f}"
    assert any(line.startswith(imagenet) for line in lines)
    assert any(line.startswith(f"| VGG16 fc7, random init | {uars['vgg16.random']:.1f}") for line in lines)
    assert "61.3 %" in text and "Table 3" in text
    ratio = res["speed"]["image_path"]["torch_over_matplotlib"]
    assert f"{ratio:.1f}× faster" in text and "GPU: not measured (disabled with --no-gpu)" in text
    assert "a `--quick` smoke run" in text


def test_committed_results_have_every_key():
    if not RESULTS.is_file():
        pytest.skip(f"{RESULTS} not produced yet (python benchmarks/deep_spectrum.py)")
    res = json.loads(RESULTS.read_text())
    assert res["quick"] is False and res["anchors"] and res["not_available"]
    assert set(res["corpora"]) == set(CORPORA)
    for corpus in CORPORA:
        facts = res["corpora"][corpus]
        assert set(facts["n"]) == {"train", "dev", "test"} and 0 < facts["chance_uar"] < 1
    for name, dim in EXTRACTORS.items():
        entry = res["extractors"][name]
        assert entry["dim"] == dim and entry["settings"]["precision"] == "bf16"
        for corpus in CORPORA:
            run = entry["fixed"][corpus]
            assert 0.0 <= run["uar"] <= 1.0 and 0.0 <= run["dev_uar"] <= 1.0 and run["params"]["C"] in C_GRID
            assert run["n_test"] == res["corpora"][corpus]["n"]["test"] == len(run["predictions"]["true"])
            assert (name == "mobilenetv2_100.imagenet") != ("mcnemar_vs_imagenet" in run)
        loso = entry["loso"]["emodb"]
        assert 0.0 <= loso["uar"] <= 1.0 and len(loso["folds"]) == 10 and loso["n"] == 535
    sp = res["speed"]
    assert sp["image_path"]["torch_over_matplotlib"] > 0 and len(sp["end_to_end"]) == 4 and "gpu" in sp
    block = load_script("make_readme").deep_spectrum_table(RESULTS)
    assert block in (REPO / "README.md").read_text()  # the README shows these numbers
