"""Classical baselines: utterance functionals + SVM on the four corpora.

Writes ``benchmarks/results/baselines.json``:
- EMO-DB leave-one-speaker-out UAR/WAR for log-mel-600 and eGeMAPS, linear and RBF SVMs (C, gamma by
  speaker-grouped inner cross-validation on the training speakers);
- fixed-split test UAR/WAR on EMO-DB, RAVDESS, EMOVO and URDU for the same four systems (C, gamma on dev, refit on
  train + dev).

    python benchmarks/baselines.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import sklearn
import torch

import sermodels
from sermodels.classical.svm import extract_features, run_fixed, run_loso
from sermodels.data import load_corpus

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}
SYSTEMS = [("logmel600", "linear"), ("logmel600", "rbf"), ("egemaps", "linear"), ("egemaps", "rbf")]
# Published numbers we compare with; quoted, not measured here.
ANCHORS = [
    {
        "corpus": "emodb",
        "protocol": "loso",
        "system": "ComParE functionals + SVM (7 classes)",
        "uar": 0.771,
        "source": "audEERING w2v2-how-to notebook (EMO-DB leave-one-speaker-out)",
    },
    {
        "corpus": "emodb",
        "protocol": "emonet_split",
        "system": "eGeMAPS + linear SVM",
        "uar": 0.484,
        "source": "Gerczuk et al., EmoNet, IEEE TAC, Table 3 (EMO-DB test partition of EmoSet)",
    },
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "baselines.json"))
    parser.add_argument("--cache", default=str(REPO / ".cache" / "features"))
    args = parser.parse_args()

    corpora = {name: load_corpus(name, Path(args.data) / folder) for name, folder in FOLDERS.items()}
    result = {"environment": _environment(), "anchors": ANCHORS, "fixed": {}, "loso": {}, "timing_s": {}}
    features = {}
    for name, corpus in corpora.items():
        for feature_set in ("logmel600", "egemaps"):
            start = time.perf_counter()
            features[name, feature_set] = extract_features(
                [it.path for it in corpus.items], feature_set, cache_dir=args.cache
            )
            result["timing_s"][f"features/{name}/{feature_set}"] = round(time.perf_counter() - start, 2)
    for name, corpus in corpora.items():
        split = corpus.split("fixed")
        for feature_set, kind in SYSTEMS:
            start = time.perf_counter()
            res = run_fixed(kind, features[name, feature_set], corpus.items, split)
            result["fixed"].setdefault(name, {})[f"{feature_set}+{kind}"] = res
            result["timing_s"][f"fixed/{name}/{feature_set}+{kind}"] = round(time.perf_counter() - start, 2)
            print(f"fixed {name:8s} {feature_set}+{kind}: UAR {res['uar']:.3f}", flush=True)
    emodb = corpora["emodb"]
    for feature_set, kind in SYSTEMS:
        start = time.perf_counter()
        res = run_loso(kind, features["emodb", feature_set], emodb.items)
        result["loso"].setdefault("emodb", {})[f"{feature_set}+{kind}"] = res
        result["timing_s"][f"loso/emodb/{feature_set}+{kind}"] = round(time.perf_counter() - start, 2)
        print(f"loso  emodb    {feature_set}+{kind}: UAR {res['uar']:.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=_jsonable) + "\n")
    print(f"wrote {out}")


def _environment() -> dict:
    return {
        "sermodels": sermodels.__version__,
        "torch": torch.__version__,
        "scikit_learn": sklearn.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
    main()
