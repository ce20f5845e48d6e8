"""Time the README's set-up on a fresh clone: ``make setup`` creates .venv and installs everything.

Clones the committed HEAD into a temporary folder, runs ``make setup`` there with pip's cache disabled (a fresh
machine has none), and writes ``benchmarks/results/setup.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "sermodels"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        env = os.environ | {"PIP_NO_CACHE_DIR": "1"}
        start = time.perf_counter()
        subprocess.run(["make", "setup"], cwd=clone, env=env, check=True)
        elapsed = time.perf_counter() - start
        size = subprocess.run(["du", "-sm", str(clone / ".venv")], capture_output=True, text=True, check=True)
    result = {
        "setup_s": round(elapsed, 1),
        "venv_mb": int(size.stdout.split()[0]),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = REPO / "benchmarks" / "results" / "setup.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
