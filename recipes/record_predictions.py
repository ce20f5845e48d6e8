"""Record what released checkpoints predict on the fixture files (tests/fixtures/released_predictions.json).

    .venv/bin/python recipes/record_predictions.py MODEL_ID [MODEL_ID ...]

Run once when a checkpoint is released (or re-released on purpose); tests/test_released_predictions.py then checks
that it keeps predicting exactly so. Categories heads record the label and scores per file; dimensions and
embedding heads the file's values (a frame-level head's mean over its frames, after any stored post-processing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sermodels
from sermodels.pipelines.predict import predict_files

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "released_predictions.json"
DATA = REPO.parent / "shared" / "data"


def record(model_id: str, files: list[str]) -> dict[str, list[dict]]:
    model = sermodels.load(model_id)
    out = {}
    for head in model.heads:
        result = predict_files(model, files, head=head, progress=False)
        if result.failures:
            raise SystemExit(f"{model_id}: {result.failures}")
        spec = model.output_spec(head)
        if spec.kind == "categories":
            out[head] = [
                {"label": r["label"], "scores": [r[k] for k in r if k.startswith("score_")]} for r in result.rows
            ]
        else:
            out[head] = [{"values": [float(r[c]) for c in spec.columns]} for r in result.rows]
    return out


def main(argv: list[str]) -> int:
    fixture = json.loads(FIXTURE.read_text())
    files = [str(DATA / f[5:]) if f.startswith("data:") else str(REPO / f) for f in fixture["files"]]
    for model_id in argv:
        fixture["models"][model_id] = record(model_id, files)
        print(f"recorded {model_id}")
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
