"""Regenerate the numbers in README.md from JSON: checkpoints/*/{config,metrics}.json and benchmarks/results/*.json.

Every table between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` is rewritten; nothing else is touched.
``--check`` exits 1 when README.md is out of date (the test suite runs it).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from sermodels.checkpoint import read_json_object
from sermodels.labels import LABEL_SPACES, SHARED_SETS
from sermodels.layer_groups import SETTINGS
from sermodels.pretrained import load_index

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CORPUS_NAMES = {"emodb": "EMO-DB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
SYSTEM_NAMES = {
    "logmel600+linear": "log-mel-600 + linear SVM",
    "logmel600+rbf": "log-mel-600 + RBF SVM",
    "egemaps+linear": "eGeMAPS + linear SVM",
    "egemaps+rbf": "eGeMAPS + RBF SVM",
}

#: benchmarks/emonet.py regimes, in the column order of the EmoNet paper's Table 4.
EMONET_REGIMES = {
    "scratch": "scratch",
    "multi": "multi (shared model, own head)",
    "adapters": "adapters",
    "head": "head only",
    "full": "full fine-tune",
}
PROTOCOL_NAMES = {"emonet_split": "EmoSet split", "loso": "leave-one-speaker-out"}
#: A released model: its id, config.json and metrics.json.
Released = tuple[str, dict[str, Any], dict[str, Any]]
MIB = 2**20


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def points(ours: float, theirs: float) -> str:
    """``"6.9 points below"``: the gap between two UARs (fractions) in percentage points, said plainly."""
    gap = round(100 * (ours - theirs), 1)
    if gap == 0:
        return "level with it"
    return f"{abs(gap):.1f} points {'above' if gap > 0 else 'below'}"


def trained_on(training: dict[str, Any]) -> str:
    """``EMO-DB (fixed)``; several corpora on one split: ``EMO-DB, RAVDESS, EMOVO, URDU (fixed)``. ``split`` is a
    string (one corpus, SVM releases) or a mapping corpus -> split (EmoNet releases)."""
    names = [c["name"] for c in training.get("corpora", [])]
    split = training.get("split", "?")
    splits = {name: split.get(name, "?") if isinstance(split, dict) else split for name in names}
    if len(set(splits.values())) == 1:
        return ", ".join(CORPUS_NAMES.get(n, n) for n in names) + f" ({splits[names[0]]})"
    return ", ".join(f"{CORPUS_NAMES.get(n, n)} ({splits[n]})" for n in names)


def pooled_spaces(config: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """``(space, classes)`` of each head of a model whose heads are all categories heads named after pooled label
    spaces (EmoNet's aggregated arousal and valence, §6.2), else an empty list."""
    heads, outputs = config["heads"], config.get("outputs", {})
    spaces = [
        (name, list(labels))
        for name, labels in heads.items()
        if outputs.get(name, {}).get("kind", "categories") == "categories"
        and name in LABEL_SPACES
        and name not in ("categories", *SHARED_SETS)
    ]
    return spaces if len(spaces) == len(heads) else []


def predicts_cell(config: dict[str, Any]) -> str:
    """What a model outputs: ``7 emotions``; several heads (EmoNet, one per corpus): ``4 heads (7/8/7/4 emotions)``;
    pooled label spaces: ``arousal: low/high`` (several: one after the other, as their cells); a dimensions head:
    its dimensions."""
    heads, outputs = config["heads"], config.get("outputs", {})
    proxy = config.get("model_args", {}).get("proxy_heads") or []
    if proxy and set(proxy) == set(heads):  # a front-end with proxy-label heads only (AV-SpNET)
        return "front-end (proxy " + "; ".join(f"{name}: {'/'.join(heads[name])}" for name in proxy) + ")"
    spaces = pooled_spaces(config)
    if spaces:
        return "; ".join(f"{name}: {'/'.join(labels)}" for name, labels in spaces)
    if len(heads) > 1:
        return f"{len(heads)} heads ({'/'.join(str(len(labels)) for labels in heads.values())} emotions)"
    name, labels = next(iter(heads.items()))
    if outputs.get(name, {}).get("kind", "categories") != "categories":
        return f"{', '.join(labels)} (values)"
    return f"{len(labels)} emotions"


def uar_cell(metrics: dict[str, Any], corpus: str, config: dict[str, Any]) -> str:
    """The corpus's test UAR; for a model with several pooled heads, each head's (``95.0 / 61.2``, in head order)."""
    spaces = pooled_spaces(config)
    if len(spaces) > 1:
        found = [metrics.get(f"{corpus}/test/{name}", {}).get("uar") for name, _ in spaces]
        return " / ".join(pct(value) for value in found) if any(v is not None for v in found) else "–"
    return pct(metrics.get(f"{corpus}/test", {}).get("uar"))


def released_models(checkpoints: Path) -> list[Released]:
    """``(id, config, metrics)`` of every checkpoint folder with a config.json and a metrics.json, by id."""
    found = []
    for folder in sorted(p for p in checkpoints.iterdir() if (p / "config.json").is_file()):
        if (folder / "metrics.json").is_file():
            found.append(
                (folder.name, read_json_object(folder / "config.json"), read_json_object(folder / "metrics.json"))
            )
    return found


def scored_corpora(models: list[Released]) -> list[str]:
    """The emotion corpora with a fixed-split test UAR (``<corpus>/test`` with a ``uar`` in a metrics.json), in the
    benchmarks' order. Other entries (the continuous models' session CCCs, a front-end's proxy-label UAR) are not
    emotion UARs of a corpus: their numbers are in their own README sections and cards."""
    scored = {
        key.split("/")[0]
        for _, _, metrics in models
        for key, entry in metrics.items()
        if "/test" in key and isinstance(entry, dict) and "uar" in entry
    }
    return [c for c in CORPUS_NAMES if c in scored]


def models_table(checkpoints: Path = REPO / "checkpoints") -> str:
    """One row per released model, its fixed-split test UAR on each corpus, then the corpora's licences."""
    models = released_models(checkpoints)
    if not models:
        return "_No released models yet: `sermodels evaluate --metrics checkpoints/<id>/metrics.json` writes one._"
    corpora = scored_corpora(models)
    columns = [corpus_header(c, models) for c in corpora]
    rows = [
        "| id | architecture | trained on | predicts | " + " | ".join(columns) + " |",
        "|---" * (4 + len(corpora)) + "|",
    ]
    default = load_index().get("_default")
    for model_id, config, metrics in models:
        training = config.get("training", {})
        trained = trained_on(training) if training.get("corpora") else "–"
        cells = [uar_cell(metrics, c, config) for c in corpora]
        shown = f"`{model_id}` (default)" if model_id == default else f"`{model_id}`"
        rows.append(
            f"| {shown} | {config['architecture']} | {trained} | {predicts_cell(config)} | " + " | ".join(cells) + " |"
        )
    rows += ["", models_caption(models)]
    licences = licence_lines(models)
    if licences:
        rows += ["", "Licences of the training corpora (a model is bound by those of the corpora it learnt from):", ""]
        rows += [f"- {line}" for line in licences]
    return "\n".join(rows)


def models_caption(models: list[Released]) -> str:
    """What the numbers are; for models of a pooled label space (EmoNet's arousal, valence), which space."""
    text = (
        "Test UAR in % on each corpus's fixed speaker-independent test partition (test utterances in the column "
        "header), from the model's `metrics.json`; –: no head for that corpus, or not evaluated on it. A model with a "
        "head per corpus is scored through the corpus's own head."
    )
    pooled = {model_id: spaces for model_id, config, _ in models if (spaces := pooled_spaces(config))}
    if not pooled:
        return text
    names = [f"`{model_id}`" for model_id in pooled]
    ids = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "predicts" if len(pooled) == 1 else "predict"
    every = dict(space for spaces in pooled.values() for space in spaces)
    spaces = "; ".join(f"{name}: {'/'.join(labels)}, chance {pct(1 / len(labels))} %" for name, labels in every.items())
    return (
        f"{text} {ids} {verb} a label space pooled over the corpora (EmoNet §6.2, Table 2): each corpus's categories "
        f"are mapped into it and scored there ({spaces}), so those rows do not compare with the emotion rows of the "
        "same column (chance: 1 / the corpus's number of emotions)."
        + (
            " A model with several pooled heads shows one value per head, in the order of its 'predicts' column."
            if any(len(spaces) > 1 for spaces in pooled.values())
            else ""
        )
    )


def corpus_header(corpus: str, models: list[Released]) -> str:
    """``EMO-DB (107)`` when every model was tested on the same number of utterances, else the name alone."""
    name = CORPUS_NAMES.get(corpus, corpus)
    sizes = {
        entry.get("n")
        for _, _, metrics in models
        for key, entry in metrics.items()
        if key == f"{corpus}/test" or key.startswith(f"{corpus}/test/")
    }
    return f"{name} ({sizes.pop()})" if len(sizes) == 1 and None not in sizes else name


def licence_lines(models: list[Released]) -> list[str]:
    """``EMO-DB (every model): <licence>``, or the ids of the models trained on it; one line per corpus and licence."""
    users: dict[tuple[str, str], list[str]] = {}
    for model_id, config, _ in models:
        for corpus in config.get("training", {}).get("corpora", []):
            users.setdefault((corpus["name"], corpus.get("licence", "?")), []).append(model_id)
    order = list(CORPUS_NAMES)
    lines = []
    for (corpus, licence), ids in sorted(users.items(), key=lambda kv: (_rank(kv[0][0], order), kv[0])):
        who = "every model" if len(ids) == len(models) else ", ".join(f"`{i}`" for i in ids)
        lines.append(f"{CORPUS_NAMES.get(corpus, corpus)} ({who}): {licence}")
    return lines


def _rank(corpus: str, order: list[str]) -> int:
    return order.index(corpus) if corpus in order else len(order)


def baselines_table(path: Path = RESULTS / "baselines.json") -> str:
    if not path.is_file():
        return "_No results yet: run `python benchmarks/baselines.py`._"
    res = read_json_object(path)
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
    res = read_json_object(path)
    text = (
        f"Set-up time: on a machine of this project's kind ({res['cpu_count']} CPU cores, no pip cache), the first "
        f"`make` creates `.venv` and installs every dependency in {res['setup_s'] / 60:.1f} min ({res['venv_mb']} MB)"
    )
    then = "; ".join(f"then `{t['command']}` took {t['seconds']:.0f} s" for t in res.get("then", []))
    return text + (f"; {then}" if then else "") + f" (measured {res['date']} by `python benchmarks/setup_time.py`)."


def cache_table(path: Path = RESULTS / "datamodule_cache.json") -> str:
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/datamodule_cache.py`._"
    res = read_json_object(path)
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


# ------------------------------------------------------------------------------------------------ EmoNet


def emonet_table(path: Path = RESULTS / "emonet.json", baselines: Path = RESULTS / "baselines.json") -> str:
    """The regimes of benchmarks/emonet.py as the paper's Table 4, then LOSO and the published anchors."""
    if not path.is_file():
        return "_No results yet: run `python benchmarks/emonet.py`._"
    res = read_json_object(path)
    fixed = res.get("fixed", {})
    rows = [
        "| corpus (test utterances) | " + " | ".join(EMONET_REGIMES.values()) + " |",
        "|---" * (len(EMONET_REGIMES) + 1) + "|",
    ]
    for corpus, name in CORPUS_NAMES.items():
        runs = fixed.get(corpus, {})
        sizes = {run["n"] for run in runs.values() if "n" in run}
        label = f"{name} ({sizes.pop()})" if len(sizes) == 1 else name
        rows.append(f"| {label} | " + " | ".join(emonet_cell(runs.get(regime)) for regime in EMONET_REGIMES) + " |")
    means = []
    for regime in EMONET_REGIMES:
        uars = [fixed.get(corpus, {}).get(regime, {}).get("uar") for corpus in CORPUS_NAMES]
        means.append(pct(statistics.mean(uars)) if None not in uars else "–")
    rows.append("| mean of the four | " + " | ".join(means) + " |")
    rows += ["", emonet_caption(res)]
    svm = best_svm_fixed(baselines)
    if svm:
        rows += ["", "Best SVM baseline on the same test partitions (see Baselines): " + "; ".join(svm) + "."]
    verdicts = emonet_verdicts(res, baselines)
    if verdicts:
        rows += ["", "Against published numbers and our baselines:", ""] + [f"- {line}" for line in verdicts]
    if any(a["protocol"] == "emonet_split" for a in res.get("anchors", [])):
        rows += [
            "",
            "The paper's numbers come from EmoSet's own EMO-DB partition and a shared model of 26 corpora trained on "
            "the full schedule; ours from our fixed split and four corpora on a CPU schedule: context, not a "
            "like-for-like comparison.",
        ]
    return "\n".join(rows)


def marked_cell(run: dict[str, Any] | None, test_key: str) -> str:
    """Test UAR %, with + / − when the McNemar test stored under ``test_key`` gives p < 0.05 (sign: the UAR
    difference)."""
    if not run or run.get("uar") is None:
        return "–"
    test = run.get(test_key)
    if test and test["p_value"] < 0.05:
        return f"{pct(run['uar'])} {'+' if test['uar_higher'] else '−'}"
    return pct(run["uar"])


def emonet_cell(run: dict[str, Any] | None) -> str:
    """Test UAR %, marked + / − against scratch."""
    return marked_cell(run, "mcnemar_vs_scratch")


def emonet_caption(res: dict[str, Any]) -> str:
    protocol, env = res.get("protocol", {}), res.get("environment", {})
    epochs = protocol.get("epochs", {})
    schedule = ", ".join(f"{epochs[r]} ({EMONET_REGIMES.get(r, r)})" for r in EMONET_REGIMES if r in epochs)
    runs = [run for corpus in res.get("fixed", {}).values() for run in corpus.values()]
    minutes = sum(run.get("seconds", 0.0) for run in runs) / 60
    base = protocol.get("base", "?")
    return (
        "Test UAR in % on our fixed speaker-independent split, with the weights of the epoch with the best dev UAR. "
        "scratch: EmoNet trained on the corpus alone; multi: the shared four-corpus model "
        f"(`{base}`) through the corpus's own head, no further training; adapters: the corpus's adapters, BN and "
        "head retrained on the frozen shared network; head only: a new head on the frozen shared model; full "
        "fine-tune: every parameter, starting from the shared model. **+** / **−**: significantly better / worse "
        "than scratch on the same test utterances (McNemar's test on the two models' errors, p < 0.05; the sign "
        "follows the UAR difference); no mark: no significant difference. Schedule actually run, reduced for a CPU "
        f"and far shorter than the paper's: training epochs at most {schedule or '?'}; learning rate × 0.1 after "
        f"{protocol.get('plateau_patience', '?')} epochs without a better dev UAR (down to 0.001, then training "
        "stops after as many more); batches of "
        f"{protocol.get('batch_size', '?')}; random training crops of at most {protocol.get('max_duration', '?')} s; "
        f"{env.get('precision', '?')} precision; {env.get('torch_threads', '?')} torch threads; seed "
        f"{protocol.get('seed', '?')}; {minutes:.0f} min of training in all (torch {env.get('torch', '?')}). "
        "Measured by `python benchmarks/emonet.py` (`benchmarks/results/emonet.json`)."
    )


def best_svm_fixed(path: Path) -> list[str]:
    if not path.is_file():
        return []
    fixed = read_json_object(path).get("fixed", {})
    cells = []
    for corpus, name in CORPUS_NAMES.items():
        systems = fixed.get(corpus, {})
        if systems:
            best = max(systems, key=lambda k: systems[k]["uar"])
            cells.append(f"{name} {pct(systems[best]['uar'])} ({SYSTEM_NAMES.get(best, best)})")
    return cells


def anchor_regime(anchor: dict[str, Any]) -> str | None:
    """Which of our regimes a published EmoNet number corresponds to (``regime`` if the anchor names one)."""
    if "regime" in anchor:
        return anchor["regime"]
    system = anchor["system"].lower()
    if "emonet" not in system:
        return None
    return "adapters" if "adapter" in system else "scratch" if "scratch" in system else None


def emonet_verdicts(res: dict[str, Any], baselines: Path) -> list[str]:
    """One plain sentence per comparison: ours vs the paper's EmoSet-split numbers, LOSO vs SVM and anchors."""
    lines = []
    fixed = res.get("fixed", {})
    for anchor in (a for a in res.get("anchors", []) if a["protocol"] != "loso"):
        regime = anchor_regime(anchor)
        if regime is None:
            continue
        name = CORPUS_NAMES.get(anchor["corpus"], anchor["corpus"])
        theirs = f"the paper's {pct(anchor['uar'])} % ({PROTOCOL_NAMES.get(anchor['protocol'], anchor['protocol'])})"
        ours = fixed.get(anchor["corpus"], {}).get(regime, {}).get("uar")
        if ours is None:
            lines.append(f"{name} {regime}: not run yet; {theirs}.")
        else:
            lines.append(f"{name} {regime}: {pct(ours)} % vs {theirs} — {points(ours, anchor['uar'])}.")
    svm = read_json_object(baselines).get("loso", {}).get("emodb", {}) if baselines.is_file() else {}
    best = max(svm, key=lambda k: svm[k]["uar"]) if svm else None
    for key, loso in res.get("loso", {}).items():
        if "uar" not in loso:
            continue
        what = key.replace("_from_", " from ")
        line = (
            f"EMO-DB leave-one-speaker-out, {what}: {pct(loso['uar'])} % pooled over {loso['folds_n']} held-out "
            f"speakers (per-speaker UAR {pct(loso['fold_uar_mean'])} ± {pct(loso['fold_uar_std'])})"
        )
        if best:
            line += f"; {points(loso['uar'], svm[best]['uar'])} our best SVM ({SYSTEM_NAMES.get(best, best)}, "
            line += f"{pct(svm[best]['uar'])} %)"
        for anchor in (a for a in res.get("anchors", []) if a["protocol"] == "loso"):
            line += f"; {points(loso['uar'], anchor['uar'])} the published {anchor['system']}, "
            line += f"{pct(anchor['uar'])} %, from {anchor['source']}"
        lines.append(line + ".")
    return lines


def emonet_speed_table(path: Path = RESULTS / "emonet_speed.json") -> str:
    """Throughput against the machine's matmul figure, and the memory of ``predict`` on long recordings."""
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/emonet_speed.py`._"
    res = read_json_object(path)
    rows = [
        "| device | precision | input | × real time | achieved GFLOP/s | matmul GFLOP/s | fraction of matmul |",
        "|---|---|---|---|---|---|---|",
    ]
    for device in ("cpu", "cuda"):
        section = res.get(device, {})
        label = "CPU" if device == "cpu" else f"GPU ({res['machine'].get('cuda_device', 'CUDA')})"
        for e in section.get("throughput", []):
            rows.append(
                f"| {label} | {e['dtype']} | {e['batch']} × {e['clip_seconds']:g} s | {e['x_realtime']:.0f} | "
                f"{e['achieved_gflops']:.1f} | {e['matmul_gflops']:.0f} | {100 * e['fraction_of_matmul']:.0f} % |"
            )
    machine, model = res["machine"], res["model"]
    agree = res.get("cpu", {}).get("bf16_vs_fp32_batch", {}).get("argmax_agree")
    rows += [
        "",
        f"{model['source']}, {model['parameters'] / 1e6:.1f} M parameters, {model['gflop_per_5s_clip']:.1f} GFLOP "
        "per 5 s clip (convolutions, attention and head; the log-mel front-end is not counted). × real time: audio "
        "seconds per wall second (median after a warm-up); achieved GFLOP/s against the GFLOP/s of a square matmul "
        "of the same device and dtype measured in the same run; bf16: autocast around the fp32 model"
        + (f" (same class as fp32 on {100 * agree:.0f} % of the batch)." if agree is not None else "."),
    ]
    rows += ["", *predict_memory_rows(res["predict_memory"])]
    quick = " (a `--quick` smoke run: toy sizes, not the benchmark)" if res.get("quick") else ""
    rows += [
        "",
        f"Measured {res['date']} on {machine['cpu_model']} ({machine['torch_threads']} torch threads"
        + (f", {machine['cuda_device']}" if "throughput" in res.get("cuda", {}) else "")
        + f"), torch {res['torch']}, by `python benchmarks/emonet_speed.py` (`benchmarks/results/emonet_speed.json`)"
        + quick
        + ".",
    ]
    return "\n".join(rows)


def duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def window_cell(run: dict[str, Any]) -> str:
    window, requested = run["chunk_seconds_effective"], run["chunk_seconds_requested"]
    size = f"{window:g} s" if window else "whole file"
    return f"{size} (the default)" if requested is None else f"{size} (`--chunk-seconds {requested:g}`)"


def predict_memory_rows(memory: dict[str, Any]) -> list[str]:
    rows = [
        "| `sermodels predict` on | windows | peak RSS MiB | peak RSS − waveform MiB | × real time |",
        "|---|---|---|---|---|",
    ]
    runs = memory["default_windows"]
    for run in [*runs, memory["whole_file_short"]]:
        rows.append(
            f"| {duration(run['recording_seconds'])} of speech | {window_cell(run)} | "
            f"{run['peak_rss_bytes'] / MIB:.0f} | {run['peak_rss_minus_waveform_bytes'] / MIB:.0f} | "
            f"{run['x_realtime']:.0f} |"
        )
    short, long, whole = runs[0], runs[-1], memory["whole_file_short"]
    growth = long["peak_rss_minus_waveform_bytes"] / short["peak_rss_minus_waveform_bytes"] - 1
    verdict = "stays bounded" if growth < 0.25 else "is not bounded: it grows with the recording"
    rows += [
        "",
        f"With the default {memory['cli_predict_default_chunk_seconds']:g} s windows, in batches of "
        f"{memory['batch_size']}, peak RSS minus the decoded waveform (4 bytes a sample, which the engine holds) "
        f"goes from {short['peak_rss_minus_waveform_bytes'] / MIB:.0f} MiB for {duration(short['recording_seconds'])} "
        f"to {long['peak_rss_minus_waveform_bytes'] / MIB:.0f} MiB for {duration(long['recording_seconds'])} "
        f"({100 * growth:+.0f} % for {long['recording_seconds'] / short['recording_seconds']:g}× the audio): memory "
        f"{verdict}. One pass over the whole {duration(whole['recording_seconds'])} recording instead peaks at "
        f"{whole['peak_rss_bytes'] / MIB:.0f} MiB ({whole['peak_rss_bytes'] / short['peak_rss_bytes']:.2f}× the "
        "windowed run). Real speech (the four corpora concatenated), one fresh process per run, peak RSS from "
        "`getrusage`.",
    ]
    return rows


# ------------------------------------------------------------------------------------------------ Deep Spectrum

#: benchmarks/deep_spectrum.py extractors, in the table's row order.
DS_EXTRACTORS = {
    "mobilenetv2_100.imagenet": "MobileNetV2, ImageNet weights",
    "mobilenetv2_100.random": "MobileNetV2, random init",
    "vgg16.random": "VGG16 fc7, random init",
}
DS_CORPORA = ("emodb", "emovo", "ravdess", "urdu")
DS_REFERENCE = "mobilenetv2_100.imagenet"


def deep_spectrum_table(
    path: Path = RESULTS / "deep_spectrum.json", baselines: Path = RESULTS / "baselines.json"
) -> str:
    """Fixed-split test UAR of each extractor on the four corpora and EMO-DB LOSO, the paper's anchor and the
    speed of the image path and of extraction."""
    if not path.is_file():
        return "_No results yet: run `python benchmarks/deep_spectrum.py`._"
    res = read_json_object(path)
    extractors, facts = res.get("extractors", {}), res.get("corpora", {})
    heads = [f"{CORPUS_NAMES[c]} ({facts[c]['n']['test']})" if c in facts else CORPUS_NAMES[c] for c in DS_CORPORA]
    rows = ["| extractor | " + " | ".join(heads) + " | mean | EMO-DB LOSO |", "|---" * (len(DS_CORPORA) + 3) + "|"]
    for name, label in DS_EXTRACTORS.items():
        entry = extractors.get(name)
        if entry is None:
            continue
        fixed = entry.get("fixed", {})
        uars = [fixed.get(c, {}).get("uar") for c in DS_CORPORA]
        mean = pct(statistics.mean(uars)) if None not in uars else "–"
        loso = entry.get("loso", {}).get("emodb", {}).get("uar")
        cells = [deep_spectrum_cell(fixed.get(c)) for c in DS_CORPORA]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {mean} | {pct(loso)} |")
    if all(c in facts for c in DS_CORPORA):
        chance = [facts[c]["chance_uar"] for c in DS_CORPORA]
        cells = [pct(v) for v in chance] + [pct(statistics.mean(chance)), pct(facts["emodb"]["chance_uar"])]
        rows.append("| chance (1 / classes) | " + " | ".join(cells) + " |")
    rows += ["", deep_spectrum_caption(res)]
    svm = best_svm_fixed(baselines)
    if svm:
        rows += ["", "Best SVM baseline on the same test partitions (see Baselines): " + "; ".join(svm) + "."]
    verdicts = deep_spectrum_verdicts(res)
    if verdicts:
        rows += [""] + [f"- {line}" for line in verdicts]
    if res.get("speed"):
        rows += ["", deep_spectrum_speed(res)]
    machine = res.get("machine", {})
    quick = " (a `--quick` smoke run: a few files, not the benchmark)" if res.get("quick") else ""
    rows += [
        "",
        f"Measured {res.get('date', '?')[:10]} on {machine.get('cpu_model', '?')} ({machine.get('torch_threads', '?')} "
        f"torch threads), torch "
        f"{machine.get('torch', '?')}, timm {machine.get('timm', '?')}, scikit-learn "
        f"{machine.get('scikit_learn', '?')}, "
        "by `python benchmarks/deep_spectrum.py` (`benchmarks/results/deep_spectrum.json`)" + quick + ".",
    ]
    return "\n".join(rows)


def deep_spectrum_cell(run: dict[str, Any] | None) -> str:
    """Test UAR %, marked + / − against the ImageNet extractor."""
    return marked_cell(run, "mcnemar_vs_imagenet")


def deep_spectrum_caption(res: dict[str, Any]) -> str:
    protocol = res.get("protocol", {})
    image = protocol.get("image", {})
    size = "×".join(str(v) for v in image.get("size", [])) or "?"
    return (
        "Test UAR in % on our fixed speaker-independent split. Features of whole files: "
        f"{image.get('n_mels', '?')}-band "
        f"mel spectrogram plots in the {image.get('colormap', '?')} colour map, {size} (EmoNet paper §4.2), rendered "
        f"in torch, {protocol.get('precision', '?')} autocast; z-score and class-balanced linear SVM, C chosen on dev "
        "from 1 down to 1e-9 and refit on train + dev (§4.1); EMO-DB LOSO: C by speaker-grouped inner "
        "cross-validation on the nine training speakers, UAR pooled over the ten held-out speakers. MobileNetV2: "
        "timm `mobilenetv2_100`, pooled pre-logits (1280-d), with torchvision's ImageNet weights converted from its "
        "int8 file (`sermodels.convert`) or randomly initialised (seed 0); VGG16: fc7 (4096-d), random init. "
        "**+** / **−**: significantly better / worse than the ImageNet MobileNetV2 on the same test files "
        "(McNemar's test, p < 0.05); no mark: no significant difference."
    )


def deep_spectrum_verdicts(res: dict[str, Any]) -> list[str]:
    """Each extractor against the ImageNet one; where we stand against the paper; what could not be run."""
    lines = []
    extractors = res.get("extractors", {})
    reference = extractors.get(DS_REFERENCE, {})
    ours = reference.get("fixed", {})
    for name, label in DS_EXTRACTORS.items():
        if name == DS_REFERENCE or name not in extractors:
            continue
        line = versus_imagenet(label, reference, extractors[name])
        if line:
            lines.append(line)
    for anchor in res.get("anchors", []):
        run = ours.get(anchor["corpus"])
        name = CORPUS_NAMES.get(anchor["corpus"], anchor["corpus"])
        theirs = f"the paper's {anchor['system']}, {pct(anchor['uar'])} % in {anchor['source']}"
        if run is None:
            lines.append(f"{name}: not run yet; {theirs}.")
            continue
        lines.append(
            f"{name}: our ImageNet MobileNetV2 {pct(run['uar'])} % vs {theirs} — {points(run['uar'], anchor['uar'])}; "
            "their EmoSet partition and ImageNet VGG16 against our split and MobileNetV2: context, not a like-for-like "
            "comparison."
        )
    for what in res.get("not_available", {}).values():
        lines.append(what)
    return lines


def versus_imagenet(label: str, reference: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """``label``'s test UAR minus the ImageNet MobileNetV2's, per corpus with McNemar's p, and on EMO-DB LOSO."""
    ours, theirs = reference.get("fixed", {}), entry.get("fixed", {})
    shared = [c for c in DS_CORPORA if c in ours and c in theirs]
    if not shared:
        return None
    gaps = []
    for c in shared:
        test = theirs[c].get("mcnemar_vs_imagenet")
        p = f" (p = {test['p_value']:.2g})" if test else ""
        gaps.append(f"{CORPUS_NAMES[c]} {100 * (theirs[c]['uar'] - ours[c]['uar']):+.1f}{p}")
    mean_gap = statistics.mean(theirs[c]["uar"] - ours[c]["uar"] for c in shared)
    significant = sum(bool(theirs[c].get("mcnemar_vs_imagenet", {}).get("significant")) for c in shared)
    line = (
        f"{label} against the ImageNet MobileNetV2: {100 * mean_gap:+.1f} points of test UAR on average, "
        f"significantly different on {significant} of {len(shared)} corpora (per corpus, McNemar's p: "
        + "; ".join(gaps)
        + ")"
    )
    loso_ours = reference.get("loso", {}).get("emodb", {}).get("uar")
    loso_theirs = entry.get("loso", {}).get("emodb", {}).get("uar")
    if loso_ours is not None and loso_theirs is not None:
        line += f"; EMO-DB LOSO {100 * (loso_theirs - loso_ours):+.1f}"
    return line + "."


def deep_spectrum_speed(res: dict[str, Any]) -> str:
    sp = res["speed"]
    img = sp["image_path"]
    ours, theirs = img["torch"], img["matplotlib"]
    e2e = ", ".join(f"{e['backbone']} {e['precision']} {e['x_realtime']:.0f}×" for e in sp["end_to_end"])
    gpu = sp.get("gpu")
    if gpu:
        rates = ", ".join(f"{e['backbone']} {e['precision']} {e['x_realtime']:.0f}×" for e in gpu["end_to_end"])
        gpu_text = (
            f"On the GPU ({gpu['device']}): images {gpu['image_path_torch']['x_realtime']:.0f}×, end to end {rates}."
        )
    else:
        gpu_text = f"GPU: not measured ({sp.get('gpu_reason', 'no GPU')})."
    load = sp.get("load_average_at_start")
    busy = f" (machine load average {load[0]:.1f} at the start)" if load else ""
    return (
        f"Speed on {len(sp['files'])} EMO-DB files ({sp['audio_seconds']:.0f} s of audio), {sp['threads']} torch "
        f"threads{busy}, best of {sp['repeats']} after a warm-up, in × real time (audio seconds per wall second): the "
        f"images (dB spectrogram to normalised backbone input) rendered in torch in batches of {ours['batch']} run at "
        f"{ours['x_realtime']:.0f}× ({ours['images_per_s']:.0f} images/s), the matplotlib round trip (plot, PNG, "
        f"decode) at {theirs['x_realtime']:.0f}× ({theirs['images_per_s']:.1f} images/s): "
        f"{img['torch_over_matplotlib']:.1f}× faster, with {100 * img['pixels_identical']:.2f} % of pixels "
        f"identical. End to end (decode + render + backbone) on the CPU: {e2e} real time. " + gpu_text
    )


ZOO_CORPORA = ("emodb", "ravdess", "emovo", "urdu")
ZOO_NAMES = {"emodb": "EMO-DB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}


def zoo_table(path: Path = RESULTS / "models.json", unseen: Path = RESULTS / "finetune_unseen.json") -> str:
    """benchmarks/models.py: recipes on the fixed splits against the best baseline, EMO-DB LOSO, leave-one-corpus-out
    arousal/valence; benchmarks/finetune_unseen.py: adapter transfer to an unseen corpus."""
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/models.py`._"
    res = read_json_object(path)
    variants = res.get("variants", {})
    baselines = res.get("baselines", {})
    lines = [
        "| recipe | " + " | ".join(ZOO_NAMES[c] for c in ZOO_CORPORA) + " | mean |",
        "|---|" + "---|" * (len(ZOO_CORPORA) + 1),
    ]
    for name, entry in variants.items():
        if entry.get("protocol") not in ("fixed", "per_corpus"):
            continue
        corpora = entry.get("corpora", {})
        cells = [marked_cell(corpora.get(c), "mcnemar_vs_baseline") for c in ZOO_CORPORA]
        mean = entry.get("mean_uar")
        lines.append(f"| `{name}`: {entry.get('description', '')} | " + " | ".join(cells) + f" | {pct(mean)} |")
    if baselines:
        cells = [
            f"{pct(baselines[c]['uar'])} ({baselines[c]['system']})" if c in baselines else "–" for c in ZOO_CORPORA
        ]
        lines.append("| best SVM baseline of the corpus (benchmarks/baselines.py) | " + " | ".join(cells) + " | |")
    env = res.get("environment", {})
    lines += [
        "",
        "Test UAR % on each corpus's fixed speaker-independent test split; + / − : McNemar's exact test against the "
        "corpus's best SVM baseline gives p < 0.05 (sign: which UAR is higher). "
        f"Measured on {env.get('cpu_threads', '?')} CPU threads, {env.get('date', '?')}.",
    ]
    loso = variants.get("loso_emodb")
    if loso:
        lines += ["", "| EMO-DB leave-one-speaker-out | mean fold UAR | pooled UAR | folds |", "|---|---|---|---|"]
        std = loso.get("fold_uar_std")
        spread = f" ± {pct(std)}" if std is not None else ""
        lines.append(
            f"| `loso_emodb`: {loso.get('description', '')} | {pct(loso.get('fold_uar_mean'))}{spread} | "
            f"{pct(loso.get('uar'))} | {loso.get('folds_n', '?')} of {loso.get('folds_total', '?')} |"
        )
        folds = loso.get("folds_total", "?")  # one fold per EMO-DB speaker, for the baselines and anchors too
        for system, base in (loso.get("baselines_loso") or {}).items():
            lines.append(
                f"| {system} + SVM (benchmarks/baselines.py) | {pct(base.get('fold_uar_mean'))} | "
                f"{pct(base.get('uar'))} | {folds} |"
            )
        for anchor in loso.get("anchors") or []:
            lines.append(f"| {anchor['system']}, published ({anchor['source']}) | | {pct(anchor['uar'])} | {folds} |")
    loco = [(name, variants[name]) for name in ("loco_arousal", "loco_valence") if name in variants]
    if loco:
        header = " | ".join(ZOO_NAMES[c] for c in ZOO_CORPORA)
        lines += ["", f"| leave one corpus out, UAR % on every file of the held-out corpus | {header} | mean |"]
        lines.append("|---|" + "---|" * (len(ZOO_CORPORA) + 1))
    for name, entry in loco:
        cells = [pct((entry.get("corpora", {}).get(c) or {}).get("uar")) for c in ZOO_CORPORA]
        lines.append(
            f"| `{name}`: {entry.get('description', '')} | {' | '.join(cells)} | {pct(entry.get('mean_uar'))} |"
        )
    if unseen.is_file():
        runs = read_json_object(unseen).get("results", {})
        if runs:
            lines += [
                "",
                "| adapter fine-tuning on a corpus the base never saw (base / corpus / files per class) | files "
                "(train / test speakers' test) | fine-tuned UAR | eGeMAPS + linear SVM | log-mel functionals + linear "
                "SVM |",
                "|---|---|---|---|---|",
            ]
            for key, run in runs.items():
                if not run.get("complete"):
                    continue
                svms = run.get("svms", {})
                lines.append(
                    f"| `{key}` | {run.get('train', {}).get('n', '?')} / {run.get('test', {}).get('n', '?')} | "
                    f"{pct(run.get('model', {}).get('uar'))} | {pct(svms.get('egemaps+linear', {}).get('uar'))} | "
                    f"{pct(svms.get('logmel600+linear', {}).get('uar'))} |"
                )
    return "\n".join(lines)


DAYLONG_SOURCES = ("emodb", "ravdess", "emovo", "multi3")
DAYLONG_ROWS = (
    ("svm_ccg", "cross-corpus linear SVM (the paper's baseline)"),
    ("nn_ccg", "cross-corpus network (WDA stage 1, not adapted)"),
    ("wda_us", "WDA, unsupervised"),
    ("wda_ss", "WDA, semi-supervised (40 labelled pool items choose the epoch)"),
)
PAPER_SOURCE = {"emodb": "emodb", "ravdess": "ravdess", "multi3": "all"}


def _pm(cell: dict[str, Any] | None) -> str:
    return "–" if not cell else f"{100 * cell['mean']:.1f} ± {100 * cell['sd']:.1f}"


def daylong_table(path: Path = RESULTS / "daylong.json") -> str:
    """Cross-corpus vs WDA vs active learning on URDU as the unlabelled target (benchmarks/daylong.py)."""
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/daylong.py`._"
    res = read_json_object(path)
    uar, paper = res["summary"]["uar"], res["paper"]
    lines = []
    for task in ("arousal", "valence"):
        rows = uar.get(task, {})
        if not rows:
            continue
        counts = sorted({c["n"] for r in rows.values() for c in r.values()})
        shown = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        lines += [f"**Binary {task}**, UAR % on URDU's test speakers (mean ± sd over {shown} runs per cell: "
                  "speaker splits × seeds; the SVM is deterministic, one run per split):", ""]  # fmt: skip
        lines += ["| row | " + " | ".join(DAYLONG_SOURCES) + " | paper (NICU-A; EMO-DB / RAVDESS / all) |"]
        lines += ["|---|" + "---|" * (len(DAYLONG_SOURCES) + 1)]
        for row, text in DAYLONG_ROWS:
            cells = [_pm(rows.get(row, {}).get(src)) for src in DAYLONG_SOURCES]
            quoted = paper.get(task, {}).get(row)
            ref = " / ".join(f"{quoted[PAPER_SOURCE[s]]:.1f}" for s in ("emodb", "ravdess", "multi3")) if quoted else ""
            lines.append(f"| {text} | " + " | ".join(cells) + f" | {ref} |")
        lines += ["", "| active learning on the pool (oracle labels) | " + " | ".join(
            f"{b} labels" for b in ("5", "10", "20", "40", "k")) + " |"]  # fmt: skip
        lines += ["|---|---|---|---|---|---|"]
        for way, text in (("medoids", "medoids (SVM on the labelled medoids)"),
                          ("clusters", "cluster labels (medoid label → its cluster)"),
                          ("random", "random items (baseline)")):  # fmt: skip
            cells = [_pm(rows.get(f"al_{way}@{b}", {}).get("target")) for b in ("5", "10", "20", "40", "k")]
            lines.append(f"| {text} | " + " | ".join(cells) + " |")
        al = paper.get(task, {})
        if "al_medoids" in al:
            lines += ["", f"Paper (AL on NICU-A, log-mel / GeMAPS / eGeMAPS): medoid labels "
                      f"{' / '.join(f'{v:.1f}' for v in al['al_medoids'].values())}, cluster labels "
                      f"{' / '.join(f'{v:.1f}' for v in al['al_clusters'].values())}."]  # fmt: skip
        lines += ["", "Claims of the paper, on these means: " + daylong_claims(task, rows) + "."]
        tests = res["summary"].get("mcnemar", {}).get(task, {})
        if tests:
            lines += ["", "McNemar (errors, p < 0.05) per source: runs where the first has significantly fewer "
                      "errors / the second has / all runs:"]  # fmt: skip
            for pair, by_source in tests.items():
                cells = ", ".join(
                    f"{src} {c['a_better_p05']}/{c['b_better_p05']}/{c['runs']}" for src, c in sorted(by_source.items())
                )
                lines.append(f"- {pair}: {cells}")
        lines.append("")
    lines.append(
        "Measured by `python benchmarks/daylong.py` (`benchmarks/results/daylong.json`, which also holds every "
        "run's predictions). " + res.get("paper_note", "")
    )
    return "\n".join(lines)


def daylong_claims(task: str, rows: dict[str, Any]) -> str:
    """Which of the paper's claims hold on the mean UARs of one task (computed, never typed)."""

    def mean(row: str, source: str) -> float | None:
        cell = rows.get(row, {}).get(source)
        return None if cell is None else cell["mean"]

    def count(better: str, worse: str, strict: bool = True) -> str:
        pairs = [(mean(better, s), mean(worse, s)) for s in DAYLONG_SOURCES]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        won = sum(a > b if strict else a >= b for a, b in pairs)
        return f"{won} of {len(pairs)} sources"

    budgets = ("5", "10", "20", "40", "k")
    medoids = [(mean(f"al_medoids@{b}", "target"), mean(f"al_random@{b}", "target")) for b in budgets]
    medoids_won = sum(a > b for a, b in medoids if a is not None and b is not None)
    small = max((mean(f"al_medoids@{b}", "target") or 0.0) for b in ("5", "10", "20"))
    best_wda = max((mean(r, s) or 0.0) for r in ("wda_us", "wda_ss") for s in DAYLONG_SOURCES)
    best_ccg = max((mean("svm_ccg", s) or 0.0) for s in DAYLONG_SOURCES)
    return (
        f"WDA (unsupervised) above the cross-corpus SVM for {count('wda_us', 'svm_ccg')}; semi-supervised ≥ "
        f"unsupervised for {count('wda_ss', 'wda_us', strict=False)}; medoids above random items at "
        f"{medoids_won} of {len(budgets)} budgets; the best medoid result with at most 20 labels "
        f"({100 * small:.1f}) {'above' if small > max(best_wda, best_ccg) else 'not above'} the best WDA "
        f"({100 * best_wda:.1f}) and cross-corpus SVM ({100 * best_ccg:.1f}) of any source"
    )


def daylong_speed_table(path: Path = RESULTS / "daylong_speed.json") -> str:
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/daylong_speed.py`._"
    entries = read_json_object(path)["entries"]
    lines = [
        "| recording | detector | model | × real time | wall | peak memory | segments | speech found / placed "
        "| precision / recall (10 ms frames) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(entries, key=lambda k: (entries[k]["model"], entries[k]["hours"], entries[k]["vad"])):
        e = entries[key]
        lines.append(
            f"| {e['hours']:g} h | {e['vad']} | {e['model']} | {e['x_real_time']:.0f}× | {e['wall_s'] / 60:.1f} min "
            f"| {e['peak_rss_mb']:.0f} MB | {e['segments']} | {e['speech_found_s'] / 60:.0f} / "
            f"{e['speech_manifest_s'] / 60:.0f} min | {e.get('vad_precision', float('nan')):.2f} / "
            f"{e.get('vad_recall', float('nan')):.2f} |"
        )
    growth = []
    for vad, model in sorted({(e["vad"], e["model"]) for e in entries.values()}):
        mine = sorted((e for e in entries.values() if (e["vad"], e["model"]) == (vad, model)), key=lambda e: e["hours"])
        if len(mine) > 1:
            growth.append(
                f"{model} + {vad}: {mine[-1]['peak_rss_mb'] - mine[0]['peak_rss_mb']:+.0f} MB from "
                f"{mine[0]['hours']:g} h to {mine[-1]['hours']:g} h"
            )
    if growth:
        lines += ["", "Peak memory against the recording's length: " + "; ".join(growth) + " (a 16 h waveform is "
                  "3.7 GB as float32). The same pipeline with the SVM grows least, so the audio is not held; the extra "
                  "growth with the CNN and with silero is in those models' runtime (per-input-shape kernel caches "
                  "are the likely cause; not verified)."]  # fmt: skip
    env = next(iter(entries.values()))["environment"]
    lines += ["", f"{env['cpu_count']} CPU cores, torch {env['torch']}, {next(iter(entries.values()))['threads']} "
              "threads, whole command in a fresh process (peak resident memory of that process); synthetic "
              "recordings of the four corpora's test speakers (`sermodels.data.longform`: gaps 0.3-30 s; silence, "
              "pink noise or babble of other talkers at 0-20 dB SNR; babble is speech to any detector, so the speech "
              "found exceeds the speech placed). Measured by "
              "`python benchmarks/daylong_speed.py` (`benchmarks/results/daylong_speed.json`)."]  # fmt: skip
    return "\n".join(lines)


AV_DIMS = ("arousal", "valence")
#: A raw test CCC below this is "did not learn much" in the generated claims.
WEAK_CCC = 0.1
CONTINUOUS_ROWS = (
    ("end_to_end", "ccc", "conv-BLSTM, raw audio (§5.2), the paper's settings", "1 − CCC"),
    ("end_to_end", "mse", "conv-BLSTM, raw audio (§5.2), the paper's settings", "MSE"),
    ("end_to_end", "ccc_tuned", "conv-BLSTM, dropout 0.1, Adam 1e-3, clipping (the release)", "1 − CCC"),
    ("handcrafted", "logmel_svr", "log-mel LLD functionals (3 s) + linear SVR", "L2 (C on dev)"),
    ("handcrafted", "logmel_blstm_ccc", "log-mel LLD functionals (3 s) + BLSTM 3 × 64", "1 − CCC"),
    ("handcrafted", "logmel_blstm_mse", "log-mel LLD functionals (3 s) + BLSTM 3 × 64", "MSE"),
    ("handcrafted", "egemaps_svr", "eGeMAPS LLD functionals (3 s) + linear SVR", "L2 (C on dev)"),
    ("handcrafted", "egemaps_blstm_ccc", "eGeMAPS LLD functionals (3 s) + BLSTM 3 × 64", "1 − CCC"),
    ("handcrafted", "egemaps_blstm_mse", "eGeMAPS LLD functionals (3 s) + BLSTM 3 × 64", "MSE"),
)


def _ccc_pair(row: dict[str, Any], dim: str) -> str:
    raw, post = row["test_raw"]["ccc"][dim], row["test_postprocessed"]["ccc"][dim]
    return f"{raw:.3f} → {post:.3f}"


def continuous_table(path: Path = RESULTS / "continuous.json") -> str:
    """Time-continuous arousal/valence on the pseudo-session task (benchmarks/continuous.py)."""
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/continuous.py`._"
    res = read_json_object(path)
    lines = ["Test sessions of the four corpora, CCC of all frames concatenated (raw → after the post-processing chain "
             "fitted on dev):", "",
             "| system | training loss | arousal | valence | steps kept (arousal; valence) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for part, key, text, loss in CONTINUOUS_ROWS:
        row = res.get(part, {}).get(key)
        if row is None:
            continue
        kept = "; ".join(_kept_steps(row["chain"][dim]) for dim in ("arousal", "valence"))
        lines.append(f"| {text} | {loss} | {_ccc_pair(row, 'arousal')} | {_ccc_pair(row, 'valence')} | {kept} |")
    claims = continuous_claims(res)
    if claims:
        lines += ["", "On these numbers: " + "; ".join(claims) + "."]
    lag = res.get("lag", {}).get("logmel_svr")
    if lag:
        shifts = {dim: lag["chain"][dim].get("shift_seconds") for dim in ("arousal", "valence")}
        lines += ["", f"Gold traces delayed by {res['lag']['lag_seconds']:g} s (a rater's reaction time), log-mel SVR: "
                  f"arousal {_ccc_pair(lag, 'arousal')}, valence {_ccc_pair(lag, 'valence')}; the fitted time shift "
                  + ", ".join(_shift_text(d, v) for d, v in shifts.items()) + "."]  # fmt: skip
    speed = res.get("speed", {})
    if "model_x_realtime_1_threads" in speed:
        hour, ten = speed.get("predict_60min", {}), speed.get("predict_10min", {})
        where = "this machine's CPU" if speed.get("device", "cpu") == "cpu" else f"the device {speed['device']}"
        lines += ["", f"conv-BLSTM speed on {where}: {speed['model_x_realtime_1_threads']:g}× real time "
                  f"on 1 thread, {speed['model_x_realtime_2_threads']:g}× on 2 (batches of 6 s sequences). "
                  f"`sermodels predict` on a one-hour recording: {hour.get('x_realtime', 0):g}× real time, peak "
                  f"memory {hour.get('peak_rss_mb', 0):.0f} MB ({ten.get('peak_rss_mb', 0):.0f} MB for ten minutes)."
                  + (" No GPU was available for these rows." if speed.get("gpu") is None else "")]  # fmt: skip
    quotes = res.get("paper", {}).get("quotes", [])
    if quotes:
        lines += [
            "",
            "The paper, for context (RECOLA: spontaneous speech with real continuous ratings; not like for like):",
        ]
        lines += [f"- {quote}" for quote in quotes]
    task = res.get("task", {})
    lines += ["", f"Measured by `python benchmarks/continuous.py` (`benchmarks/results/continuous.json`); sessions "
              f"per partition {task.get('sessions')}. The paper's numbers (RECOLA, real ratings; not like for like) "
              "are in its `paper` entry."]  # fmt: skip
    return "\n".join(lines)


def _shift_text(dim: str, seconds: float | None) -> str:
    return f"{dim} {'none' if seconds is None else f'{seconds:g} s'}"


def _kept_steps(steps: dict[str, Any]) -> str:
    kept = []
    if steps.get("median_seconds") is not None:
        kept.append(f"median {steps['median_seconds']:g} s")
    if steps.get("bias") is not None:
        kept.append("centre")
    if steps.get("scale") is not None:
        kept.append(f"scale ×{steps['scale']:.2f}")
    if steps.get("shift_seconds") is not None:
        kept.append(f"shift {steps['shift_seconds']:g} s")
    return ", ".join(kept) or "none"


def continuous_claims(res: dict[str, Any]) -> list[str]:
    """The paper's claims (§4.5.3, §5.3) checked on the raw test CCCs of the table's rows (computed, never typed)."""
    rows = {key: res.get(part, {}).get(key) for part, key, _, _ in CONTINUOUS_ROWS}
    rows = {key: row for key, row in rows.items() if isinstance(row, dict) and "test_raw" in row}
    hand = {key: row for key, row in rows.items() if key not in ("ccc", "mse", "ccc_tuned")}
    claims = []
    for dim in ("arousal", "valence"):
        raw = {key: row["test_raw"]["ccc"][dim] for key, row in rows.items()}
        if "ccc" in raw and "mse" in raw:
            verdict = "beats" if raw["ccc"] > raw["mse"] else "does not beat"
            weak = max(raw["ccc"], raw["mse"]) < WEAK_CCC
            claims.append(f"{dim}: CCC training {verdict} MSE training for the conv-BLSTM "
                          f"({raw['ccc']:.3f} vs {raw['mse']:.3f}"
                          + (f"; both below {WEAK_CCC:g}: neither run learnt much" + ")" if weak else ")"))  # fmt: skip
        ours = max((key for key in ("ccc", "ccc_tuned", "mse") if key in raw), key=lambda key: raw[key], default=None)
        if ours and hand:
            best = max(hand, key=lambda key: raw[key])
            verdict = "beats" if raw[ours] > raw[best] else "does not beat"
            claims.append(f"{dim}: the best end-to-end model ({ours}, {raw[ours]:.3f}) {verdict} the best "
                          f"hand-crafted system ({best}, {raw[best]:.3f})")  # fmt: skip
    helped = sum(
        row["test_postprocessed"]["ccc"][d] > row["test_raw"]["ccc"][d] for row in rows.values() for d in AV_DIMS
    )
    if rows:
        claims.append(f"post-processing fitted on dev raised test CCC in {helped} of {2 * len(rows)} cases")
    return claims


def continuous_enhancement_table(path: Path = RESULTS / "continuous.json") -> str:
    """Feature enhancement rows (benchmarks/continuous_enhancement.py)."""
    res = read_json_object(path) if path.is_file() else {}
    if "enhancement" not in res:
        return "_Not measured yet: run `python benchmarks/continuous_enhancement.py`._"
    sys.path.insert(0, str(REPO / "benchmarks"))
    from continuous_enhancement import enhancement_table

    paper = res["enhancement"].get("paper", {})
    quote = f'\n\nThe paper, for context ({paper.get("not_like_for_like", "")}): "{paper["quote"]}"' if paper else ""
    summary = res["enhancement"].get("summary", {})
    counts = "; ".join(
        f"{name}: matched beats no enhancement in {row['matched_better']} of {summary['conditions']} conditions, "
        f"mixed in {row['mixed_better']}"
        for name, row in summary.items()
        if isinstance(row, dict)
    )
    settings = res["enhancement"].get("settings", {})
    note = (f"\n\nOn these numbers: {counts}. Settings: SNRs {settings.get('snrs_db')} dB, at most "
            f"{settings.get('max_epochs')} epochs per enhancer. "
            "Measured by `python benchmarks/continuous_enhancement.py`.")  # fmt: skip
    return enhancement_table(res).rstrip("\n") + note + quote


AV_ROWS = ("R", "R_trainable", "W_a", "AE", "W_AE_a", "AV-SpNET_a")
AV_TEXT = {
    "R": "R (random encoder, frozen)",
    "R_trainable": "R (random encoder, trained)",
    "W_a": "W_a (proxy labels only)",
    "AE": "AE (reconstruction only)",
    "W_AE_a": "W_AE_a (AE, then proxy labels)",
    "AV-SpNET_a": "AV-SpNET_a (joint)",
}


def _mean_sd(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "–"
    return f"{cell['mean']:.3f}" + (f" ± {cell['sd']:.3f}" if cell.get("sd") is not None else "")


def av_spnet_table(path: Path = RESULTS / "av_spnet.json") -> str:
    """AV-SpNET initialisations, leave one corpus out (benchmarks/av_spnet.py): a Table 3 analogue."""
    res = read_json_object(path) if path.is_file() else {}
    if "downstream" not in res:
        return "_Not measured yet: run `python benchmarks/av_spnet.py`._"
    fractions = [str(f) for f in res.get("protocol", {}).get("fractions", [0.25, 0.5, 0.75, 1.0])]
    down = res["downstream"]
    seeds = sorted({len(cells["per_seed_fold"]) for e in down.values() for row, r in e["rows"].items()
                    if row != "R_trainable" for f, cells in r.items() if f in fractions})  # fmt: skip
    steps = sorted({r.get("steps") for runs in res.get("pretrain", {}).values() for r in runs.values()} - {None})
    header = " | ".join(f"{float(f):.0%}" for f in fractions)
    lines = [
        "UAR on each held-out corpus's own categories: 5 speaker-grouped folds, mean ± sd over "
        f"{'/'.join(map(str, seeds))} seeds (head initialisation, batch order and fraction draw; each front-end is "
        "pre-trained once). A recognition head is trained on the frozen front-end with a fraction of each fold's "
        "training utterances. The front-ends are pre-trained on the other three corpora's training audio "
        f"({'/'.join(map(str, steps))} steps of 32 segments).",
        "",
        f"| held-out corpus | front-end | {header} |",
        "|---|---|" + "---|" * len(fractions),
    ]
    for corpus, entry in down.items():
        for row in AV_ROWS:
            cells = entry["rows"].get(row)
            if cells is not None:
                values = " | ".join(_mean_sd(cells.get(f)) for f in fractions)
                lines.append(f"| {corpus} ({len(entry['classes'])} classes) | {AV_TEXT[row]} | {values} |")
    trainable = res.get("protocol", {}).get("trainable")
    if trainable:
        lines += ["", f"R (random encoder, trained) trains the whole network per run, so it ran with "
                  f"{len(trainable['seeds'])} seed(s) and {', '.join(f'{f:.0%}' for f in trainable['fractions'])} "
                  "of the data only (–: not run)."]  # fmt: skip
    paper = res.get("paper", {}).get("iemocap_4class", {})
    if paper:
        note = (
            "The paper (Table 3, IEMOCAP, 4 classes; front-ends pre-trained on 14 h of Chinese TV; not like for like):"
        )
        lines += ["", note, "", f"| front-end | {header} |", "|---|" + "---|" * len(fractions)]
        lines += [f"| {row} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for row, values in paper.items()]
    claims = av_spnet_claims(down, fractions)
    if claims:
        lines += ["", "On these numbers: " + "; ".join(claims) + "."]
    agreement = res.get("proxy", {}).get("agreement", {})
    if agreement:
        lines += ["", "Proxy arousal labels (pitch and intensity ranks per speaker, §2.2.2) against each corpus's own "
                  "arousal, UAR: " + ", ".join(f"{c} {v['uar']:.3f}" for c, v in agreement.items() if c != "all")
                  + ". EMO-DB is peak-normalised, which turns its intensity ranks against arousal. Most URDU speakers "
                  "(26 of 29) have a single emotion, so per-speaker ranks cannot carry it."]  # fmt: skip
    pre = res.get("pretrain", {})
    if pre:
        held = [f"without {c}: proxy UAR W_a {r.get('W_a', {}).get('test_proxy_uar')}, AV-SpNET_a "
                f"{r.get('AV-SpNET_a', {}).get('test_proxy_uar')}, W_AE_a {r.get('W_AE_a', {}).get('test_proxy_uar')}"
                f"; reconstruction MSE AE {r.get('AE', {}).get('test_reconstruction_mse')}, AV-SpNET_a "
                f"{r.get('AV-SpNET_a', {}).get('test_reconstruction_mse')}" for c, r in pre.items()]  # fmt: skip
        lines += ["", "Pre-training, scored on the held-out test speakers of the pre-training corpora (standardised "
                  "log spectrogram: an MSE of 1 is the mean's): " + "; ".join(held) + "."]  # fmt: skip
    lines += ["", "Measured by `python benchmarks/av_spnet.py` (`benchmarks/results/av_spnet.json`, with every "
              "(seed, fold) value)."]  # fmt: skip
    return "\n".join(lines)


def av_spnet_claims(down: dict[str, Any], fractions: list[str]) -> list[str]:
    """The paper's claims (§3.2) checked on the Table 3 analogue (computed, never typed). The paired t-tests are
    over the 5 folds (seed means), uncorrected for the number of cells."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from av_spnet import paired

    claims = []
    pairs = [c for c, e in down.items() if {"R", "AV-SpNET_a"} <= set(e["rows"])]
    cells = [(c, f) for c in pairs for f in fractions]
    if cells:
        tests = {c: paired(down[c]["rows"]["AV-SpNET_a"], down[c]["rows"]["R"]) for c in pairs}
        wins = [(c, f) for c, f in cells if tests[c][f]["difference"] > 0]
        significant = [(c, f) for c, f in wins if tests[c][f]["p"] < 0.05]
        losses = [(c, f) for c, f in cells if tests[c][f]["difference"] < 0 and tests[c][f]["p"] < 0.05]
        claims.append(
            f"AV-SpNET_a beats the random frozen encoder R in {len(wins)} of {len(cells)} (corpus, fraction) cells, "
            f"{len(significant)} of them with p < 0.05 (paired t-test over the 5 folds, uncorrected); R is better "
            f"with p < 0.05 in {len(losses)}"
        )
        small_wins = [c for c in pairs if (c, fractions[0]) in wins]
        claims.append(f"at {float(fractions[0]):.0%} of the data AV-SpNET_a beats R on {len(small_wins)} of "
                      f"{len(pairs)} corpora")  # fmt: skip
    for other in ("W_a", "AE", "W_AE_a"):
        both = [(c, f) for c, f in cells if other in down[c]["rows"]]
        if both:
            better = sum(down[c]["rows"]["AV-SpNET_a"][f]["mean"] > down[c]["rows"][other][f]["mean"] for c, f in both)
            claims.append(f"joint training beats {other} in {better} of {len(both)} cells")
    if len(fractions) > 1 and pairs:
        half, full = fractions[1], fractions[-1]
        ok = [c for c in pairs if down[c]["rows"]["AV-SpNET_a"][half]["mean"] >= down[c]["rows"]["R"][full]["mean"]]
        claims.append(f"AV-SpNET_a with {float(half):.0%} of the data reaches R with {float(full):.0%} on "
                      f"{len(ok)} of {len(pairs)} corpora")  # fmt: skip
    return claims


CNN_LSTM_SETTINGS = SETTINGS
CNN_LSTM_SYSTEMS = {
    "svm_logmel600": "SVM, log-mel 600",
    "svm_egemaps": "SVM, eGeMAPS",
    "cnn": "CNN",
    "cnn_lstm": "CNN+LSTM",
}


def _gain(value: float) -> str:
    return f"{value:+.3f}"


def _marked(cell: dict[str, Any], key: str = "gain", p: str = "p_vs_tt") -> str:
    """A gain (or UAR) with * when its paired t-test over the folds gives p < 0.05."""
    text = _gain(cell[key]) if key in ("gain", "delta") else f"{cell[key]:.3f}"
    return text + ("*" if cell.get(p) is not None and cell[p] < 0.05 else "")


def cnn_lstm_table(path: Path = RESULTS / "cnn_lstm.json") -> str:
    """The CNN+LSTM transfer study's Tables 2-4 on our corpora (benchmarks/cnn_lstm.py), the paper's beside."""
    res = read_json_object(path) if path.is_file() else {}
    summary = res.get("summary", {})
    if not summary.get("table3"):
        return "_Not measured yet: run `python benchmarks/cnn_lstm.py`._"
    run, paper = res.get("run", {}), res.get("paper", {})
    folds = sorted({row["folds"] for row in summary["table3"].values()})
    lines = [
        f"Four classes ({', '.join(run.get('classes', []))}) in every corpus "
        f"({', '.join(f'{c} {n}' for c, n in run.get('clips', {}).items())} clips), "
        f"{'/'.join(map(str, folds))} speaker-grouped folds, the same in every setting; the {run.get('frontend')} "
        f"variant on the {run.get('device', 'cpu').upper()}, {run.get('pretrain_epochs')} epochs from scratch "
        f"(pre-training, TT, CNN), {run.get('finetune_epochs')} of fine-tuning, seed {run.get('seed')}.",
    ]
    lines += ["", *cnn_lstm_table2(summary.get("table2", {}), paper.get("table2", {}))]
    lines += ["", *cnn_lstm_table3(summary, paper.get("table3", {}))]
    if summary.get("table4"):
        lines += ["", *cnn_lstm_table4(summary["table4"], paper.get("table4", {}))]
    claims = cnn_lstm_claims(summary)
    if claims:
        lines += ["", "On these numbers: " + "; ".join(claims) + "."]
    lines += ["", "Measured by `python benchmarks/cnn_lstm.py` (`benchmarks/results/cnn_lstm.json`, with every fold's "
              "value, the training curves that chose the epochs and the wall times)."]  # fmt: skip
    return "\n".join(lines)


def cnn_lstm_table2(table2: dict[str, Any], paper: dict[str, Any]) -> list[str]:
    if not table2:
        return ["_Table 2 (SVM / CNN / CNN+LSTM) not measured yet._"]
    systems = [k for k in CNN_LSTM_SYSTEMS if any(k in row for row in table2.values())]
    lines = [
        "**Table 2 analogue** (no transfer: every model trained on the training folds of all four corpora pooled, "
        "UAR on each corpus's test fold; * CNN+LSTM differs from the CNN with p < 0.05, paired t-test over the "
        "folds). The paper (six emotions, SVM on the IS10 set) in the last column:",
        "",
        "| corpus | " + " | ".join(CNN_LSTM_SYSTEMS[k] for k in systems) + " | paper: SVM / CNN / CNN+LSTM |",
        "|---|" + "---|" * (len(systems) + 1),
    ]
    for corpus, row in table2.items():
        cells = []
        for key in systems:
            p = row.get("p_cnn_lstm_vs_cnn")
            star = "*" if key == "cnn_lstm" and p is not None and p < 0.05 else ""
            cells.append(f"{row[key]:.3f}{star}" if key in row else "–")
        theirs = paper.get(corpus)
        quoted = " / ".join(f"{theirs[k]:.3f}" for k in ("svm", "cnn", "cnn_lstm")) if theirs else "–"
        lines.append(f"| {corpus} | " + " | ".join(cells) + f" | {quoted} |")
    return lines


def cnn_lstm_table3(summary: dict[str, Any], paper: dict[str, Any]) -> list[str]:
    table3, across = summary["table3"], summary.get("table3_across", {})
    lines = [
        "**Table 3 analogue**: UAR of TT (trained on the target's training folds only) and the relative gain over it, "
        "(UAR − UAR_TT) / UAR_TT, of each setting: S1 pre-trains on every corpus without the test fold (the "
        "target's training folds included), S2 on the other corpora only; A1 no fine-tuning, A2 all layers, A3–A5 "
        "C1 / C1+C2 / C1+C2+L frozen, A6–A8 the same frozen and the rest re-initialised. * p < 0.05 against TT "
        "(paired t-test over the folds). Mean and sd are across the four corpora; the paper's rows (six corpora, "
        "EMO-DB and EMOVO among them) below ours.",
    ]
    for scenario in ("S1", "S2"):
        lines += ["", f"| {scenario} | TT | " + " | ".join(CNN_LSTM_SETTINGS) + " |",
                  "|---|---|" + "---|" * len(CNN_LSTM_SETTINGS)]  # fmt: skip
        for corpus, row in table3.items():
            cells = " | ".join(_marked(row[scenario][a]) for a in CNN_LSTM_SETTINGS)
            lines.append(f"| {corpus} | {row['TT']:.3f} | {cells} |")
        if across:
            for stat in ("mean", "sd"):
                values = [across[scenario][a][stat] for a in CNN_LSTM_SETTINGS]
                if None not in values:
                    lines.append(f"| {stat} | | " + " | ".join(_gain(v) if stat == "mean" else f"{v:.3f}"
                                                            for v in values) + " |")  # fmt: skip
        for name, row in paper.items():
            if scenario in row:
                tt = f"{row['TT']:.3f}" if "TT" in row else ""
                label = f"paper {name}" if name in ("mean", "sd") else f"paper: {name}"
                lines.append(f"| {label} | {tt} | " + " | ".join(
                    _gain(v) if name != "sd" else f"{v:.3f}" for v in row[scenario]) + " |")  # fmt: skip
    return lines


def cnn_lstm_table4(table4: dict[str, Any], paper: dict[str, Any]) -> list[str]:
    settings = ("A1", "A2", "A3", "A4")
    lines = [
        "**Table 4 analogue**: UAR when one source corpus is left out of the pre-training (S1 and S2, A1–A4 as the "
        f"paper shows), on {'/'.join(str(n) for n in sorted({r['folds'] for r in table4.values()}))} of the 5 folds "
        "(All: Table 3 on the same folds); ↑ / ↓ a significant rise / drop against All (p < 0.05, paired t-test over "
        "the folds).",
        "",
        "| target | pre-training | " + " | ".join(f"S1 {a}" for a in settings) + " | "
        + " | ".join(f"S2 {a}" for a in settings) + " |",
        "|---|---|" + "---|" * (2 * len(settings)),
    ]  # fmt: skip
    for corpus, row in table4.items():
        all_cells = [f"{row['All'][s][a]:.3f}" for s in ("S1", "S2") for a in settings]
        lines.append(f"| {corpus} | All | " + " | ".join(all_cells) + " |")
        for dropped, per in row.items():
            if not dropped.startswith("-"):
                continue
            cells = []
            for s in ("S1", "S2"):
                for a in settings:
                    cell = per[s][a]
                    mark = ""
                    if cell.get("p_vs_all") is not None and cell["p_vs_all"] < 0.05:
                        mark = "↑" if cell["delta"] > 0 else "↓"
                    cells.append(f"{cell['uar']:.3f}{mark}")
            lines.append(f"| {corpus} | − {dropped[1:]} | " + " | ".join(cells) + " |")
        for dropped, per in paper.get(corpus, {}).items():
            name = "All" if dropped == "All" else f"− {dropped[1:]}"
            cells = [f"{v:.3f}" for s in ("S1", "S2") for v in per[s]]
            lines.append(f"| paper: {corpus} | {name} | " + " | ".join(cells) + " |")
    return lines


def cnn_lstm_claims(summary: dict[str, Any]) -> list[str]:
    """The paper's conclusions (§4.4) checked on our tables (computed, never typed)."""
    claims = []
    across = summary.get("table3_across", {})
    table3 = summary.get("table3", {})
    if across:
        mean = {s: {a: across[s][a]["mean"] for a in CNN_LSTM_SETTINGS} for s in ("S1", "S2")}
        best = max(((s, a) for s in mean for a in CNN_LSTM_SETTINGS), key=lambda k: mean[k[0]][k[1]])
        claims.append(f"the best mean gain is {best[0]}-{best[1]} ({_gain(mean[best[0]][best[1]])}; the paper's is "
                      "S1-A2, +0.073)")  # fmt: skip
        below = [c for c, row in table3.items() if row["S2"]["A1"]["gain"] < 0]
        claims.append(f"without fine-tuning, S2 (zero-shot to a new corpus) is below TT on {len(below)} of "
                      f"{len(table3)} corpora (mean {_gain(mean['S2']['A1'])}; the paper's −0.321) and fine-tuning "
                      f"(S2-A2) gives {_gain(mean['S2']['A2'])}")  # fmt: skip
        s1_wins = [a for a in CNN_LSTM_SETTINGS if mean["S1"][a] >= mean["S2"][a]]
        claims.append(f"S1 ≥ S2 in mean gain for {len(s1_wins)} of 8 settings ({', '.join(s1_wins) or 'none'})")
        for s in ("S1", "S2"):
            holds = all(mean[s][x] >= mean[s][y] for x, y in zip(("A2", "A3", "A4"), ("A3", "A4", "A5")))
            claims.append(f"{s}: gains fall as more layers are frozen (A2 ≥ A3 ≥ A4 ≥ A5) "
                          f"{'holds' if holds else 'does not hold'} "
                          f"({', '.join(f'{a} {_gain(mean[s][a])}' for a in ('A2', 'A3', 'A4', 'A5'))})")  # fmt: skip
        conv = [a for s in ("S1", "S2") for a in ("A3", "A4") if mean[s][a] >= mean[s]["A5"]]
        claims.append(f"freezing only convolutions (A3, A4) does at least as well as freezing the LSTM too (A5) in "
                      f"{len(conv)} of 4 (scenario, setting) pairs, where the paper's reading (features general in "
                      "the convolutions, domain-specific in the LSTM and dense layers) expects 4")  # fmt: skip
        tested = [row[s][a] for row in table3.values() for s in ("S1", "S2") for a in CNN_LSTM_SETTINGS]
        significant = [c for c in tested if c["p_vs_tt"] is not None and c["p_vs_tt"] < 0.05]
        rises = sum(c["gain"] > 0 for c in significant)
        claims.append(f"of the {len(tested)} (corpus, scenario, setting) cells, {rises} are significantly above TT "
                      f"and {len(significant) - rises} significantly below (p < 0.05, uncorrected)")  # fmt: skip
    table2 = summary.get("table2", {})
    if table2:
        over_cnn = [c for c, r in table2.items() if r["cnn_lstm"] > r["cnn"]]
        claim = f"CNN+LSTM beats the CNN on {len(over_cnn)} of {len(table2)} corpora"
        svm_keys = [k for k in ("svm_logmel600", "svm_egemaps") if all(k in r for r in table2.values())]
        if svm_keys:
            over_svm = [c for c, r in table2.items() if all(r["cnn_lstm"] > r[k] for k in svm_keys)]
            claim += f" and every SVM on {len(over_svm)}"
        claims.append(claim)
    table4 = summary.get("table4", {})
    for s, word, paper_word in (
        ("S1", "raises", "it almost always raises it"),
        ("S2", "lowers", "it mostly lowers it"),
    ):
        cells = [per[s][a] for row in table4.values() for d, per in row.items() if d.startswith("-")
                 for a in ("A1", "A2", "A3", "A4")]  # fmt: skip
        if cells:
            moved = sum(1 for c in cells if (c["delta"] > 0 if word == "raises" else c["delta"] < 0))
            claims.append(f"leaving one source out of {s} pre-training {word} UAR in {moved} of {len(cells)} cells "
                          f"(the paper: {paper_word})")  # fmt: skip
    return claims


# ------------------------------------------------------------------------------------------------------ speed


def speed_table(path: Path = RESULTS / "speed.json", cuda: Path = RESULTS / "speed_cuda.json") -> str:
    """benchmarks/speed.py: × real time and fraction of the matmul rate per family and row kind (CPU, and the GPU
    when ``speed_cuda.json`` exists), the fast path's steps one by one, and predict's memory on a long recording."""
    if not path.is_file():
        return "_Not measured yet: run `python benchmarks/speed.py`._"
    res = read_json_object(path)
    section = res["cpu"]
    rows = [*speed_rows(section["families"], "CPU"), "", speed_fastest(section["families"]), ""]
    rows += speed_ablation_rows(section.get("ablation", {}))
    rows += ["", speed_reference(res, section, "CPU")]
    if cuda.is_file():
        gpu = read_json_object(cuda)
        label = f"GPU ({gpu['cuda']['device_name']})"
        rows += ["", *speed_rows(gpu["cuda"]["families"], label), "", *speed_e2e_rows(gpu["cuda"]["end_to_end"])]
        rows += ["", speed_reference(gpu, gpu["cuda"], label)]
    else:
        rows += ["", "GPU: not measured yet (`bash benchmarks/speed_gpu.sh` on a CUDA machine)."]
    if "predict_memory" in res:
        rows += ["", speed_memory_line(res["predict_memory"])]
    return "\n".join(rows)


def speed_rows(families: dict[str, Any], device: str) -> list[str]:
    rows = [
        f"| {device} | checkpoint | path | batch | × real time | GFLOP/s | fraction of matmul | labels as fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family, entry in families.items():
        if "error" in entry:
            rows.append(f"| {family} | {entry['model_id']} | failed: {entry['error'].splitlines()[0][:80]} | | | | | |")
            continue
        for row in entry["rows"]:
            if "skipped" in row:
                rows.append(f"| {family} | {entry['model_id']} | {row['kind']}: not run | | | | | |")
                continue
            rows.append(
                f"| {family} | {entry['model_id']} | {row['kind']} | {row['batch']} × {row['clip_seconds']:g} s | "
                f"{speed_cells(row)} | {agreement_cell(row)} |"
            )
    return rows


def speed_fastest(families: dict[str, Any]) -> str:
    """Which path is fastest for each family on the CPU, and how much faster than fp32 (medians)."""
    parts = []
    for family, entry in families.items():
        rows = [row for row in entry.get("rows", []) if "x_realtime" in row]
        if not rows:
            continue
        best = max(rows, key=lambda row: row["x_realtime"])
        parts.append(f"{family} {best['kind']} ({best['x_realtime'] / rows[0]['x_realtime']:.1f}× fp32)")
    return "Fastest on this CPU: " + ", ".join(parts) + "."


def speed_cells(row: dict[str, Any]) -> str:
    """× real time, GFLOP/s and the fraction of the matmul rate: the median repetition, the fastest in brackets."""
    return (
        f"{row['x_realtime']:.0f} ({row['x_realtime_best']:.0f}) | {row['achieved_gflops']:.1f} | "
        f"{100 * row['fraction_of_matmul']:.0f} % ({100 * row['fraction_of_matmul_best']:.0f} %) of "
        f"{row['matmul_dtype']}" + (" (1 thread)" if "matmul_1_thread" in row else "")
    )


def agreement_cell(row: dict[str, Any]) -> str:
    """Label agreement with fp32 (categories heads), else the largest output difference; ``–`` for fp32 itself."""
    agreement = row.get("agreement")
    if agreement is None:
        return "–"
    if "labels_agree" in agreement:
        return f"{100 * agreement['labels_agree']:.1f} % of {agreement['clips']}"
    return f"relative error {agreement['relative_error']:.1g}"


def speed_ablation_rows(ablation: dict[str, list[dict[str, Any]]]) -> list[str]:
    if not ablation:
        return []
    rows = [
        "| CPU fast path, step by step | × real time | GFLOP/s | fraction of matmul | labels as fp32 |",
        "|---|---|---|---|---|",
    ]
    for family, steps in ablation.items():
        for row in steps:
            rows.append(f"| {family}: {row['kind']} | {speed_cells(row)} | {agreement_cell(row)} |")
    return rows


def speed_e2e_rows(runs: list[dict[str, Any]]) -> list[str]:
    rows = ["| end to end (`run_predictions`, WAV files) | files | × real time |", "|---|---|---|"]
    for run in runs:
        if "error" in run:
            rows.append(f"| {run['family']} | failed: {run['error'].splitlines()[0][:80]} | |")
        else:
            rows.append(
                f"| {run['family']} ({run['model_id']}) | {run['files']} × {run['file_seconds']:g} s | "
                f"{run['x_realtime']:.0f} |"
            )
    return rows


def speed_reference(res: dict[str, Any], section: dict[str, Any], device: str) -> str:
    machine, matmul = res["machine"], section["matmul"]
    load = [machine.get("load_average_at_start"), machine.get("load_average_at_end")]
    loads = " → ".join(f"{value[0]:.1f}" for value in load if value)
    quick = " (a `--quick` smoke run: toy sizes, not the benchmark)" if res.get("quick") else ""
    quick += "" if res.get("complete", True) else " (the run was cut short: what it measured before)"
    name = "speed.json" if res["device"] == "cpu" else "speed_cuda.json"
    return (
        f"{device} matmul reference, measured in the same run: fp32 {matmul['fp32']['gflops']:.0f} GFLOP/s, bf16 "
        f"{matmul['bf16']['gflops']:.0f} GFLOP/s ({matmul['fp32']['n']}² products). fp32: the model as loaded; bf16: "
        '`prepare_for_inference(model, precision="bf16", channels_last=True)` (autocast, front-end kept in fp32); '
        "bf16+compile: the same with `compile=True` (inductor with frozen weights: BN folded, oneDNN weights "
        "pre-packed); onnxruntime: the exported graph on its CPU provider, fp32. × real time and fraction of matmul: "
        "the median repetition, the fastest in brackets. Labels as fp32: the fraction of further real-speech clips "
        "whose label equals the fp32 model's (default head). FLOP from `model.flops` (EmoNet) or `FlopCounterMode` "
        "(the others). Measured "
        f"{res['date']} on {machine['cpu_model']} ({machine['torch_threads']} torch threads, load average {loads}; "
        f"the machine is shared), torch {res['torch']}, by `python benchmarks/speed.py` "
        f"(`benchmarks/results/{name}`){quick}."
    )


def speed_memory_line(memory: dict[str, Any]) -> str:
    run = memory["run"]
    return (
        f"`sermodels predict` with {memory['model_id']} on {memory['recording_hours']:g} h of speech "
        f"({duration(run['recording_seconds'])}, 16 kHz 16-bit WAV): peak RSS {run['peak_rss_bytes'] / MIB:.0f} "
        f"MiB, of which the decoded waveform is {run['waveform_bytes'] / MIB:.0f} MiB (the engine holds a file whole "
        f"and runs the model window by window), {run['x_realtime']:.0f}× real time."
    )


SECTIONS = {
    "models": models_table,
    "zoo": zoo_table,
    "emonet": emonet_table,
    "emonet_speed": emonet_speed_table,
    "speed": speed_table,
    "deep_spectrum": deep_spectrum_table,
    "baselines": baselines_table,
    "setup": setup_table,
    "cache": cache_table,
    "daylong": daylong_table,
    "daylong_speed": daylong_speed_table,
    "continuous": continuous_table,
    "continuous_enhancement": continuous_enhancement_table,
    "av_spnet": av_spnet_table,
    "cnn_lstm": cnn_lstm_table,
}


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
