"""Model cards are generated from config.json + metrics.json only, carry the licences and metrics, and regenerate
byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sermodels.card import hub_licence, write_model_card

RAVDESS = {"name": "RAVDESS", "licence": "CC BY-NC-SA 4.0", "language": "English", "speakers": 24}
EMODB = {
    "name": "EMODB",
    "licence": "free for research (republished by audEERING as CC0-1.0)",
    "language": "German",
    "speakers": 10,
    "citation": "@inproceedings{burkhardt2005, title={A database of German emotional speech}, year={2005}}",
}


def _config(corpora, **training_extra) -> dict:
    return {
        "architecture": "logmel_svm",
        "model_args": {"labels": ["anger", "happiness", "neutral"], "head": "emodb", "frontend": {"n_mels": 40}},
        "sample_rate": 16000,
        "heads": {"emodb": ["anger", "happiness", "neutral"]},
        "default_head": "emodb",
        "format_version": 1,
        "software": {"sermodels": "0.1.0", "torch": "2.14.1", "python": "3.11.7"},
        "id": "logmel_svm.emodb_ravdess",
        "training": {
            "corpora": corpora,
            "split": "fixed",
            "recipe": "recipes/baselines/logmel_svm_emodb.yaml",
            "schedule": {"C_grid": [1.0, 0.1, 0.01], "selected_C": 0.01},
            **training_extra,
        },
    }


METRICS = {
    "emodb/test": {"uar": 0.61234, "war": 0.65, "n": 107},
    "ravdess/test": {"uar": 0.40512, "war": 0.4187, "n": 288, "confusion": [[3, 1], [2, 4]]},
}


def _folder(tmp_path: Path, config: dict, metrics: dict | None = METRICS) -> Path:
    folder = tmp_path / "logmel_svm.emodb_ravdess"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return folder


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_has_licences_metrics_and_usage(tmp_path):
    folder = _folder(tmp_path, _config([EMODB, RAVDESS]))
    path = write_model_card(folder)
    assert path == folder / "README.md"
    text = path.read_text()

    front = _front_matter(text)
    assert front["library_name"] == "sermodels"
    assert front["license"] == "cc-by-nc-sa-4.0"
    assert {"audio-classification", "speech-emotion-recognition"} <= set(front["tags"])
    assert front["datasets"] == ["EMODB", "RAVDESS"]
    assert front["metrics"] == ["uar", "war"]

    assert "| EMODB | free for research (republished by audEERING as CC0-1.0) | German | 10 |" in text
    assert "| RAVDESS | CC BY-NC-SA 4.0 | English | 24 |" in text
    assert "### emodb/test" in text and "### ravdess/test" in text
    assert "| uar | 0.6123 |" in text and "| war | 0.4187 |" in text and "| n | 288 |" in text
    assert "| confusion | [[3, 1], [2, 4]] |" in text
    assert "`emodb` (default head), 3 classes: anger, happiness, neutral" in text
    assert 'sermodels.load("logmel_svm.emodb_ravdess")' in text
    assert "sermodels predict --model logmel_svm.emodb_ravdess" in text
    assert "**split**: fixed" in text and "**recipe**: recipes/baselines/logmel_svm_emodb.yaml" in text
    assert "| selected_C | 0.0100 |" in text and "| frontend.n_mels | 40 |" in text
    assert "@inproceedings{burkhardt2005" in text
    assert "| torch | 2.14.1 |" in text
    for section in (
        "Model description",
        "Labels and outputs",
        "How to use",
        "Training data",
        "Evaluation results",
        "Limitations",
        "Citation",
        "Software",
    ):
        assert f"## {section}\n" in text


def test_regeneration_is_identical(tmp_path):
    folder = _folder(tmp_path, _config([EMODB, RAVDESS]))
    first = write_model_card(folder).read_text()
    assert write_model_card(folder).read_text() == first
    (folder / "metrics.json").write_text(json.dumps({**METRICS, "emodb/test": {"uar": 0.7, "war": 0.65, "n": 107}}))
    changed = write_model_card(folder).read_text()
    assert changed != first and "| uar | 0.7000 |" in changed


def test_nested_metrics_are_grouped_per_corpus_and_split(tmp_path):
    metrics = {"emodb": {"test": {"uar": 0.5, "per_class": {"anger": 0.9}}, "dev": {"uar": 0.25}}}
    text = write_model_card(_folder(tmp_path, _config([EMODB]), metrics)).read_text()
    assert "### emodb / test" in text and "### emodb / dev" in text
    assert "| per_class.anger | 0.9000 |" in text and "| uar | 0.2500 |" in text


def test_without_metrics_or_share_alike_corpora(tmp_path):
    text = write_model_card(_folder(tmp_path, _config([EMODB]), metrics=None)).read_text()
    front = _front_matter(text)
    assert front["license"] == "other" and "metrics" not in front
    assert "No metrics.json" in text


def test_licence_rules():
    assert hub_licence({}, [{"name": "RAVDESS"}]) == "cc-by-nc-sa-4.0"
    assert hub_licence({}, [{"name": "A", "licence": "CC0-1.0"}, {"name": "B", "license": "cc0 1.0"}]) == "cc0-1.0"
    assert (
        hub_licence({}, [{"name": "A", "licence": "CC0-1.0"}, {"name": "URDU", "licence": "research only"}]) == "other"
    )
    # A share-alike corpus binds the model: a given licence may repeat it but not replace it.
    assert hub_licence({"license": "cc-by-nc-sa-4.0"}, [{"name": "RAVDESS"}]) == "cc-by-nc-sa-4.0"
    with pytest.raises(ValueError, match="share-alike"):
        hub_licence({"license": "cc-by-4.0"}, [{"name": "RAVDESS"}])
    assert hub_licence({}, []) == "other"


def test_bad_inputs_are_reported(tmp_path):
    folder = _folder(tmp_path, _config([EMODB]))
    (folder / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"metrics\.json must hold a JSON object"):
        write_model_card(folder)
    (folder / "metrics.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_model_card(folder)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        write_model_card(tmp_path)
    (folder / "metrics.json").unlink()
    (folder / "config.json").write_text(json.dumps(_config([{"licence": "x"}])))
    with pytest.raises(ValueError, match="without a name"):
        write_model_card(folder)


def test_a_given_licence_cannot_override_share_alike_corpora():
    from sermodels.card import hub_licence

    ravdess = [{"name": "ravdess", "licence": "CC BY-NC-SA 4.0"}]
    assert hub_licence({}, ravdess) == "cc-by-nc-sa-4.0"
    with pytest.raises(ValueError, match="contradicts the share-alike"):
        hub_licence({"license": "mit"}, ravdess)
    assert hub_licence({"license": "mit"}, [{"name": "emodb", "licence": "CC0-1.0"}]) == "mit"
