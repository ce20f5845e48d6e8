"""Released checkpoints keep predicting exactly as they did when they were released.

``fixtures/released_predictions.json`` holds the labels and scores that each released checkpoint gave, head by head,
on the bundled clips and on files of the four corpora, written when it was released (the older ones by the code
before the training-core refactor; the newer ones by recipes/record_predictions.py). The labels must be identical
and every score within 1e-4; a dimensions or embedding head's values within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA, REPO

import sermodels
from sermodels.pipelines.predict import predict_files

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "released_predictions.json").read_text())


def _files() -> list[str]:
    files = [str(DATA / f[5:]) if f.startswith("data:") else str(REPO / f) for f in FIXTURE["files"]]
    if not all(Path(f).is_file() for f in files):
        pytest.skip(f"the shared corpora are not at {DATA}")
    return files


@pytest.mark.parametrize("model_id", sorted(FIXTURE["models"]))
def test_released_checkpoint_predicts_as_before(model_id):
    files = _files()
    model = sermodels.load(model_id)
    assert sorted(model.heads) == sorted(FIXTURE["models"][model_id])
    for head, expected in FIXTURE["models"][model_id].items():
        result = predict_files(model, files, head=head, progress=False)
        assert not result.failures
        if "values" in expected[0]:  # a dimensions or embedding head: the file's values (recipes/record_predictions.py)
            columns = model.output_spec(head).columns
            for row, want in zip(result.rows, expected, strict=True):
                assert [row[c] for c in columns] == pytest.approx(want["values"], abs=1e-4), (head, row["path"])
            continue
        assert [row["label"] for row in result.rows] == [e["label"] for e in expected], head
        for row, want in zip(result.rows, expected):
            got = [row[k] for k in row if k.startswith("score_")]
            assert got == pytest.approx(want["scores"], abs=1e-4), (head, row["path"])
