"""Regenerate the numbers in README.md from JSON: checkpoints/*/metrics.json and benchmarks/results/*.json.

Every table between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` is rewritten; nothing else is touched.
``--check`` exits 1 when README.md is out of date (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CORPUS_NAMES = {"emodb": "EMO-DB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
SYSTEM_NAMES = {
    "logmel600+linear": "log-mel-600 + linear SVM",
    "logmel600+rbf": "log-mel-600 + RBF SVM",
    "egemaps+linear": "eGeMAPS + linear SVM",
    "egemaps+rbf": "eGeMAPS + RBF SVM",
}


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def models_table(checkpoints: Path = REPO / "checkpoints") -> str:
    rows = [
        "| id | architecture | trained on | classes | evaluated on | UAR % | WAR % | licence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for folder in sorted(p for p in checkpoints.iterdir() if (p / "config.json").is_file()):
        config = json.loads((folder / "config.json").read_text())
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        corpora = config.get("training", {}).get("corpora", [])
        trained = ", ".join(
            f"{CORPUS_NAMES.get(c['name'], c['name'])} ({config['training'].get('split', '?')})" for c in corpora
        )
        licences = ", ".join(sorted({c.get("licence", "?") for c in corpora}))
        classes = sum(len(v) for v in config["heads"].values())
        for key in sorted(metrics) or ["–"]:
            m = metrics.get(key, {})
            rows.append(
                f"| `{folder.name}` | {config['architecture']} | {trained} | {classes} | {key} | "
                f"{pct(m.get('uar'))} | {pct(m.get('war'))} | {licences} |"
            )
    return "\n".join(rows)


def baselines_table(path: Path = RESULTS / "baselines.json") -> str:
    if not path.is_file():
        return "_No results yet: run `python benchmarks/baselines.py`._"
    res = json.loads(path.read_text())
    corpora = [c for c in CORPUS_NAMES if c in res["fixed"]]
    head = "| system | " + " | ".join(f"{CORPUS_NAMES[c]} fixed" for c in corpora) + " | EMO-DB LOSO |"
    rows = [head, "|---" * (len(corpora) + 2) + "|"]
    for system, label in SYSTEM_NAMES.items():
        cells = [pct(res["fixed"][c].get(system, {}).get("uar")) for c in corpora]
        loso = res["loso"].get("emodb", {}).get(system, {}).get("uar")
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {pct(loso)} |")
    rows.append("")
    rows.append("Published anchors (quoted, not measured here):")
    rows.append("")
    for a in res["anchors"]:
        rows.append(
            f"- {CORPUS_NAMES[a['corpus']]} {a['protocol']}: {a['system']}: {pct(a['uar'])} % UAR ({a['source']})"
        )
    loso = res["loso"].get("emodb", {})
    if loso:
        best = max(loso, key=lambda k: loso[k]["uar"])
        for a in (a for a in res["anchors"] if a["protocol"] == "loso"):
            gap = 100 * (loso[best]["uar"] - a["uar"])
            verdict = "above" if gap > 0 else "below"
            rows.append("")
            rows.append(
                f"Our best EMO-DB LOSO system ({SYSTEM_NAMES[best]}, {pct(loso[best]['uar'])} %) is {abs(gap):.1f} "
                f"points {verdict} the {a['system']} anchor; the EmoNet anchor uses EmoSet's own EMO-DB partition, "
                "not our fixed split, so it is context rather than a like-for-like comparison."
            )
    env = res["environment"]
    rows.append("")
    rows.append(
        f"UAR in %, test partitions; measured {env['date']} with torch {env['torch']}, scikit-learn "
        f"{env['scikit_learn']} on {env['cpu_threads']} CPU threads by `python benchmarks/baselines.py` "
        "(`benchmarks/results/baselines.json`)."
    )
    return "\n".join(rows)


def setup_table(path: Path = RESULTS / "setup.json") -> str:
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/setup_time.py`._"
    res = json.loads(path.read_text())
    text = (
        f"Set-up time: on a machine of this project's kind ({res['cpu_count']} CPU cores, no pip cache), the first "
        f"`make` creates `.venv` and installs every dependency in {res['setup_s'] / 60:.1f} min ({res['venv_mb']} MB)"
    )
    then = "; ".join(f"then `{t['command']}` took {t['seconds']:.0f} s" for t in res.get("then", []))
    return text + (f"; {then}" if then else "") + f" (measured {res['date']} by `python benchmarks/setup_time.py`)."


def cache_table(path: Path = RESULTS / "datamodule_cache.json") -> str:
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/datamodule_cache.py`._"
    res = json.loads(path.read_text())
    e = res["epoch_s"]
    return "\n".join(
        [
            f"| {res['corpus']}, {res['batches_per_epoch']} batches of 32 | seconds per epoch |",
            "|---|---|",
            f"| cold: decode WAV + downmix + resample 48 → 16 kHz | {e['cold_decode_resample']:.2f} |",
            f"| warm: in-memory cache | {e['warm_memory']:.2f} |",
            f"| fresh DataModule, on-disk cache | {e['disk_cache_fresh_process']:.2f} |",
            f"| warm + the log-mel front-end on every batch | {e['warm_plus_logmel_frontend']:.2f} |",
            "",
            f"The cache makes an epoch {res['speedup_warm_vs_cold']}× faster in memory and "
            f"{res['speedup_disk_vs_cold']}× faster from disk (measured {res['environment']['date']} on "
            f"{res['environment']['cpu_threads']} CPU threads by `python benchmarks/datamodule_cache.py`).",
        ]
    )


SECTIONS = {"models": models_table, "baselines": baselines_table, "setup": setup_table, "cache": cache_table}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if pattern.search(text) is None:
            raise SystemExit(f"README.md has no '<!-- BEGIN {name} -->' ... '<!-- END {name} -->' block")
        match = pattern.search(text)
        text = text[: match.end(1)] + make() + "\n" + text[match.start(2) :]
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    args = parser.parse_args()
    readme = Path(args.readme)
    old = readme.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{readme} is out of date: run `python benchmarks/make_readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
