"""Model cards: ``README.md`` of a checkpoint folder, generated from its ``config.json`` and ``metrics.json``.

Nothing in a card is typed by hand: labels, training corpora with their licences, split, recipe and schedule come
from config.json (written by :func:`sermodels.checkpoint.save_pretrained`, ``extra["training"]``), results from
metrics.json. The output depends only on those two files, so regenerating a card reproduces it byte for byte and a
test can check that a released card is current.

``config["training"]`` is read as: ``corpora`` (a list of objects, or an object name -> object, each with a
``name`` and a ``licence``/``license`` and any further descriptive fields; ``citation`` is moved to the citations
section), an optional explicit ``license`` (a Hub licence id), ``split``, ``recipe``, ``schedule`` and any other
keys, rendered as they are. Optional top-level ``description``, ``limitations`` and ``citation``/``citations``
extend the card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from sermodels.checkpoint import CARD_NAME, METRICS_NAME, read_config, read_json_object

# Licence texts -> Hugging Face Hub licence ids, after lower-casing and turning spaces/underscores into '-'.
HUB_LICENCES = {
    "cc-by-nc-sa-4.0": "cc-by-nc-sa-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0",
    "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc-by-4.0": "cc-by-4.0",
    "cc0-1.0": "cc0-1.0",
    "cc0": "cc0-1.0",
    "apache-2.0": "apache-2.0",
    "mit": "mit",
}
# A share-alike non-commercial corpus (RAVDESS) binds the whole model to its licence.
SHARE_ALIKE = "cc-by-nc-sa-4.0"
SHARE_ALIKE_CORPORA = {"ravdess"}
TAGS = ["audio-classification", "speech-emotion-recognition", "sermodels"]
FIRST_TRAINING_KEYS = ("split", "recipe", "schedule")
SKIPPED_TRAINING_KEYS = ("corpora", "license", "licence", "citation", "citations")
# Corpus fields shown as columns of the training-data table (after name and licence); the others of each corpus go
# to a table of its own, except its citation (in the citations section) and "root", a path on the training machine.
CORPUS_COLUMNS = ("title", "language", "speakers", "files", "url")
CORPUS_NOT_SHOWN = ("name", "licence", "license", "citation", "root")


def write_model_card(folder: str | Path, model_id: str | None = None) -> Path:
    """Write ``folder/README.md`` from ``config.json`` (+ ``metrics.json`` if present) and return its path.

    ``model_id`` (used in the usage examples) defaults to config["id"], then to the folder name.
    """
    folder = Path(folder)
    config = read_config(folder)
    metrics_path = folder / METRICS_NAME
    metrics = read_json_object(metrics_path) if metrics_path.is_file() else None
    text = render_model_card(config, metrics, model_id or config.get("id") or folder.name)
    path = folder / CARD_NAME
    path.write_text(text)
    return path


def render_model_card(config: dict[str, Any], metrics: dict[str, Any] | None, model_id: str) -> str:
    """The card's text: YAML front matter for the Hub, then the sections."""
    training = config.get("training") or {}
    if not isinstance(training, dict):
        raise ValueError(f"config.json 'training' must be an object, got {type(training).__name__}")
    corpora = _corpora(training)
    sections = [
        _front_matter(config, training, corpora, metrics),
        f"# {model_id}\n",
        _description(config),
        _labels(config),
        _usage(model_id, config),
        _training(training, corpora),
        _evaluation(metrics),
        _limitations(config, corpora),
        _citations(config, training, corpora),
        _software(config),
    ]
    return "\n".join(s.rstrip("\n") + "\n" for s in sections)


# -- front matter ---------------------------------------------------------------------------------------------------


def _corpora(training: dict[str, Any]) -> list[dict[str, Any]]:
    raw = training.get("corpora") or []
    if isinstance(raw, dict):
        raw = [{"name": name, **(info if isinstance(info, dict) else {"licence": info})} for name, info in raw.items()]
    corpora = []
    for item in raw:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise ValueError(f"config.json training.corpora entries must be objects or names, got {item!r}")
        name = item.get("name") or item.get("corpus") or item.get("id")
        if not name:
            raise ValueError(f"config.json training.corpora entry without a name: {item}")
        corpora.append({"name": str(name), **{k: v for k, v in item.items() if k not in ("name", "corpus", "id")}})
    return corpora


def _licence_text(corpus: dict[str, Any]) -> str | None:
    value = corpus.get("licence", corpus.get("license"))
    return None if value is None else str(value)


def hub_licence(training: dict[str, Any], corpora: list[dict[str, Any]]) -> str:
    """The Hub ``license`` of a model: cc-by-nc-sa-4.0 when a share-alike corpus (RAVDESS) is in (a licence given in
    training may not override that), else the one given in training, else the corpora's common licence when all
    have the same recognised one, else "other"."""
    given = training.get("license", training.get("licence"))
    ids = []
    for corpus in corpora:
        text = _licence_text(corpus)
        ids.append(None if text is None else HUB_LICENCES.get(re.sub(r"[\s_]+", "-", text.strip().lower())))
    if SHARE_ALIKE in ids or any(c["name"].lower() in SHARE_ALIKE_CORPORA for c in corpora):
        if given and str(given).lower() != SHARE_ALIKE:
            raise ValueError(
                f"training licence {given!r} contradicts the share-alike licence ({SHARE_ALIKE}) of its corpora"
            )
        return SHARE_ALIKE
    if given:
        return str(given)
    if ids and None not in ids and len(set(ids)) == 1:
        return ids[0]
    return "other"


def _front_matter(config, training, corpora, metrics) -> str:
    front: dict[str, Any] = {
        "library_name": "sermodels",
        "license": hub_licence(training, corpora),
        "pipeline_tag": "audio-classification",
        "tags": TAGS + [config["architecture"]],
    }
    if corpora:
        front["datasets"] = [c["name"] for c in corpora]
    names = sorted(_score_names(metrics or {}))
    if names:
        front["metrics"] = names
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _score_names(node: dict[str, Any]) -> set[str]:
    """Names of the real-valued results in metrics.json (counts and lists are not metrics)."""
    names: set[str] = set()
    for key, value in node.items():
        if isinstance(value, dict):
            names |= _score_names(value)
        elif isinstance(value, float):
            names.add(str(key))
    return names


# -- sections -------------------------------------------------------------------------------------------------------


def _description(config: dict[str, Any]) -> str:
    lines = ["## Model description", ""]
    if config.get("description"):
        lines += [str(config["description"]), ""]
    lines += [
        f"Architecture `{config['architecture']}` (sermodels), trained for speech emotion recognition. Input: a mono "
        f"waveform at {config.get('sample_rate', 'the configured')} Hz; the front-end is part of the model. Output: "
        f"{_output_summary(config)}",
        "",
        "Constructor arguments (`model_args` in config.json):",
        "",
        _table(("argument", "value"), _flatten(config["model_args"])),
    ]
    return "\n".join(lines)


def _output_summary(config: dict[str, Any]) -> str:
    kinds = {spec.kind for spec in _specs(config).values()}
    if kinds <= {"categories"}:
        return "one score per emotion class of the chosen head."
    return "per head, as listed under Labels and outputs (class scores, dimension values or an embedding)."


def _specs(config: dict[str, Any]) -> dict[str, Any]:
    """Output specs of config.json (none in a checkpoint saved before specs existed: categories heads only)."""
    from sermodels.outputs import specs_from_json

    return specs_from_json(config["outputs"]) if "outputs" in config else {}


def _describe_spec(spec) -> str:
    level = "per utterance" if spec.level == "utterance" else f"per frame, {spec.frame_rate:g} frames/s"
    if spec.kind == "categories":
        scores = "probabilities" if spec.score == "probability" else "SVM decision values"
        return f"{spec.dim} classes ({scores}, {level}): {', '.join(spec.names)}"
    if spec.kind == "dimensions":
        bounds = "" if spec.range is None else f" in [{spec.range[0]:g}, {spec.range[1]:g}]"
        return f"{spec.dim} dimensions{bounds} ({level}): {', '.join(spec.names)}"
    return f"an embedding of {spec.dim} numbers ({level})"


def _labels(config: dict[str, Any]) -> str:
    heads = config.get("heads") or {}
    specs = _specs(config)
    lines = ["## Labels and outputs", ""]
    for head, labels in heads.items():
        default = " (default head)" if head == config.get("default_head") else ""
        text = _describe_spec(specs[head]) if head in specs else f"{len(labels)} classes: {', '.join(map(str, labels))}"
        lines.append(f"- `{head}`{default}, {text}")
    if not heads:
        lines.append("config.json lists no heads.")
    return "\n".join(lines) + "\n"


def _usage(model_id: str, config: dict[str, Any]) -> str:
    rate = config.get("sample_rate", 16000)
    heads = list(config.get("heads") or {})
    other = next((h for h in heads if h != config.get("default_head")), None)
    several = []
    if other is not None:
        several = [
            f"This model has {len(heads)} heads ({', '.join(f'`{h}`' for h in heads)}); the default is "
            f"`{config.get('default_head')}`. Pick another with `head=`:",
            "",
            "```python",
            f'scores = model.scores(model(wave[None], head="{other}"))',
            f'print(dict(zip(model.label_names("{other}"), scores[0].tolist())))',
            "```",
            "",
            f"and on the command line with `--head {other}`.",
            "",
        ]
    return "\n".join(
        [
            "## How to use",
            "",
            "```python",
            "import sermodels",
            "from sermodels.audio import load_audio",
            "",
            f'model = sermodels.load("{model_id}")',
            f'wave = load_audio("speech.wav", sample_rate=model.sample_rate)  # (samples,) at {rate} Hz',
            "scores = model.scores(model(wave[None]))  # (1, classes)",
            "print(dict(zip(model.label_names(), scores[0].tolist())))",
            "```",
            "",
            "From the command line:",
            "",
            "```bash",
            f"sermodels predict --model {model_id} speech.wav",
            "```",
            "",
            *several,
        ]
    )


def _training(training: dict[str, Any], corpora: list[dict[str, Any]]) -> str:
    lines = ["## Training data", ""]
    if corpora:
        columns = [k for k in CORPUS_COLUMNS if any(c.get(k) is not None for c in corpora)]
        rows = [[c["name"], _licence_text(c) or "not given"] + [_cell(c.get(k, "")) for k in columns] for c in corpora]
        lines += [_table(["corpus", "licence", *columns], rows), ""]
        for corpus in corpora:
            details = {k: v for k, v in corpus.items() if k not in (*CORPUS_COLUMNS, *CORPUS_NOT_SHOWN)}
            if details:
                lines += [f"### {corpus['name']}", "", _table(("key", "value"), _flatten(details)), ""]
    else:
        lines += ["config.json names no training corpora.", ""]
    licence = hub_licence(training, corpora)
    given = training.get("license", training.get("licence"))
    origin = "as given in config.json" if given else "derived from the training corpora's licences"
    lines += [f"Model licence (Hub metadata): `{licence}`, {origin}.", ""]
    keys = [k for k in FIRST_TRAINING_KEYS if k in training]
    keys += [k for k in training if k not in keys and k not in SKIPPED_TRAINING_KEYS]
    if keys:
        lines += ["### Split and schedule", ""]
    for key in keys:
        value = training[key]
        if isinstance(value, dict):
            lines += [f"**{key}**:", "", _table(("key", "value"), _flatten(value)), ""]
        else:
            lines += [f"**{key}**: {_cell(value)}", ""]
    return "\n".join(lines)


def _metric_groups(metrics: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, list[tuple[str, str]]]]:
    """Descend while every value is an object (corpus, then split, ...); below that, one flat table."""
    if metrics and all(isinstance(v, dict) for v in metrics.values()):
        return [group for key, value in metrics.items() for group in _metric_groups(value, (*path, str(key)))]
    if not metrics:
        return []
    return [(" / ".join(path) or "all", _flatten(metrics))]


def _evaluation(metrics: dict[str, Any] | None) -> str:
    lines = ["## Evaluation results", ""]
    if metrics is None:
        return "\n".join([*lines, "No metrics.json in this checkpoint folder: the model has not been evaluated.", ""])
    groups = _metric_groups(metrics)
    if not groups:
        return "\n".join([*lines, "metrics.json is empty.", ""])
    lines += ["From metrics.json, per evaluated corpus/split:", ""]
    for name, rows in groups:
        lines += [f"### {name}", "", _table(("metric", "value"), rows), ""]
    return "\n".join(lines)


def _limitations(config: dict[str, Any], corpora: list[dict[str, Any]]) -> str:
    names = ", ".join(c["name"] for c in corpora) or "the training corpora"
    languages = sorted({str(c["language"]) for c in corpora if c.get("language")})
    spoken = f" ({', '.join(languages)})" if languages else ""
    lines = [
        "## Limitations",
        "",
        f"- Trained on {names}{spoken} only. How well it works on other corpora, languages, microphones, noise "
        "and speaking styles is known only as far as the evaluation results above show.",
        "- It can only output the classes listed under Labels; categorical emotions simplify how people express "
        "and perceive affect.",
        "- Not for decisions about individuals (hiring, health, policing): emotion recognition from voice is error"
        "-prone and its errors differ between groups of speakers.",
        "- The training corpora's licences (above) bind the use of this model.",
    ]
    extra = config.get("limitations") or []
    lines += [f"- {item}" for item in ([extra] if isinstance(extra, str) else extra)]
    return "\n".join(lines) + "\n"


def _citations(config: dict[str, Any], training: dict[str, Any], corpora: list[dict[str, Any]]) -> str:
    entries: list[str] = []
    for source in (config, training):
        for key in ("citation", "citations"):
            value = source.get(key) or []
            entries += [value] if isinstance(value, str) else [str(v) for v in value]
    entries += [str(c["citation"]) for c in corpora if c.get("citation")]
    lines = ["## Citation", ""]
    if not entries:
        return "\n".join([*lines, "config.json gives no citation; cite the training corpora listed above.", ""])
    for entry in dict.fromkeys(entries):  # de-duplicated, first occurrence order
        lines += ["```bibtex", entry.strip(), "```", ""] if entry.lstrip().startswith("@") else [f"- {entry}", ""]
    return "\n".join(lines)


def _software(config: dict[str, Any]) -> str:
    rows = _flatten(config.get("software") or {})
    rows.append(("checkpoint format_version", _cell(config.get("format_version"))))
    return "\n".join(["## Software", "", _table(("package", "version"), rows), ""])


# -- formatting -----------------------------------------------------------------------------------------------------


def _flatten(node: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{name}.")
        else:
            rows.append((name, _cell(value)))
    return rows


def _cell(value: Any) -> str:
    """A JSON value as table text: floats with 4 decimals (4 significant digits when tiny or huge, so that an
    epsilon of 1e-6 does not print as 0), containers as compact JSON."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4g}"
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        text = json.dumps(value, separators=(", ", ": "))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
