"""Time the README's set-up on a fresh clone: ``make setup`` creates .venv and installs everything.

Clones the committed HEAD, runs ``make setup`` there with pip's cache disabled (a fresh machine has none), then
optionally the README's commands (``--then "make demo" "make test"``), each timed, and writes
``benchmarks/results/setup.json``. ``--workdir`` places the clone (default: a temporary folder); put it beside
``shared/`` (e.g. ``--workdir ..``) for the data tests to find the corpora.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: str, cwd: Path, env: dict) -> dict:
    start = time.perf_counter()
    code = subprocess.run(cmd, shell=True, cwd=cwd, env=env).returncode
    return {"command": cmd, "seconds": round(time.perf_counter() - start, 1), "exit_code": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="where to clone (default: a temporary folder)")
    parser.add_argument("--then", nargs="*", default=[], help="commands to run in the clone after the set-up")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp())
    clone = workdir / "sermodels-setup-check"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = os.environ | {"PIP_NO_CACHE_DIR": "1"}
    try:
        setup = timed("make setup", clone, env)
        if setup["exit_code"] != 0:
            raise SystemExit(f"make setup failed with exit code {setup['exit_code']}")
        venv_mb = int(
            subprocess.run(["du", "-sm", str(clone / ".venv")], capture_output=True, text=True).stdout.split()[0]
        )
        then = [timed(cmd, clone, env) for cmd in args.then]
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    result = {
        "setup_s": setup["seconds"],
        "venv_mb": venv_mb,
        "then": then,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = REPO / "benchmarks" / "results" / "setup.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    failed = [t for t in then if t["exit_code"] != 0]
    if failed:
        raise SystemExit(f"failed in the fresh clone: {failed}")


if __name__ == "__main__":
    main()
