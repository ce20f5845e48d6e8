"""benchmarks/emonet.py: runs are recorded with their settings, resumed only when the settings match."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SCRIPT = REPO / "benchmarks" / "emonet.py"

pytestmark = pytest.mark.skipif(not (DATA / "URDU").is_dir(), reason="corpora not available")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_smoke_runs_may_not_write_the_real_results():
    done = _run("--limit-batches", "1")
    assert done.returncode == 2 and "--limit-batches is a smoke run" in done.stderr


def test_transfer_loso_needs_a_base():
    done = _run("--loso", "adapters", "--out", "/tmp/unused.json")
    assert done.returncode == 2 and "--loso-base" in done.stderr


@pytest.mark.slow
def test_resume_skips_runs_with_the_same_settings_and_reruns_others(tmp_path):
    out = tmp_path / "emonet.json"
    common = [
        "--out",
        str(out),
        "--corpora",
        "urdu",
        "--regimes",
        "scratch",
        "multi",
        "--epochs",
        '{"scratch": 1}',
        "--batch-size",
        "8",
        "--max-duration",
        "0.5",
        "--limit-batches",
        "1",
        "--precision",
        "32",
    ]
    first = _run(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads(out.read_text())
    runs = result["fixed"]["urdu"]
    assert set(runs) == {"scratch", "multi"}
    assert runs["scratch"]["settings"]["limit_batches"] == 1 and runs["multi"]["settings"]["base_sha256"]
    assert len(runs["scratch"]["true"]) == runs["scratch"]["n"] == 80
    assert "mcnemar_vs_scratch" in runs["multi"]
    again = _run(*common)
    assert again.returncode == 0 and "[emonet bench] urdu" not in again.stdout
    reseeded = _run(*common, "--seed", "1")
    assert "[emonet bench] urdu scratch" in reseeded.stdout and "[emonet bench] urdu multi" in reseeded.stdout
