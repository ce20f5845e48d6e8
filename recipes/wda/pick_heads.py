"""Compose the released WDA model from candidate runs of ``sermodels wda``: per head, the candidate (source corpus)
whose semi-supervised epoch scored best on the labelled target items (URDU's dev speakers), never on test speakers.

    python recipes/wda/pick_heads.py runs/wda/emodb runs/wda/ravdess ... --out checkpoints/wda_mlp.urdu --id ID

Every candidate was adapted to the same unlabelled target (URDU's train + dev speakers), so they share the target's
standardiser and each head (its own F and C) can come from another candidate. The choice, the candidates' dev UARs
and their training records go into the release's ``training`` and ``training_log.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import sermodels
from sermodels.training.export import write_release


def best_target_uar(folder: Path, head: str) -> float:
    log = json.loads((folder / "training_log.json").read_text())
    entry = next(e for e in log["history"] if e["head"] == head)
    epoch = entry["best_target_epoch"]
    if epoch is None:
        raise SystemExit(f"{folder}: head {head!r} has no semi-supervised epoch (run sermodels wda with --labelled)")
    return float(next(row["target_uar"] for row in entry["adaptation"] if row["epoch"] == epoch))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidates", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--id", required=True)
    p.add_argument("--description", default=None)
    args = p.parse_args(argv)
    models = {c: sermodels.load(str(c)) for c in args.candidates}
    first = models[args.candidates[0]]
    for folder, model in models.items():
        if not torch.equal(model.standardizer.mean, first.standardizer.mean):
            raise SystemExit(f"{folder} was adapted to another target than {args.candidates[0]}")
    chosen, scores = {}, {}
    for head in first.heads:
        scores[head] = {str(c): best_target_uar(c, head) for c in args.candidates}
        chosen[head] = max(args.candidates, key=lambda c: scores[head][str(c)])  # ties: the first given
    released = first
    for head, folder in chosen.items():
        source = models[folder]
        released.extractor(head).load_state_dict(source.extractor(head).state_dict())
        released.classifier(head).load_state_dict(source.classifier(head).state_dict())
    trainings = {str(c): json.loads((c / "config.json").read_text())["training"] for c in args.candidates}
    chosen_training = {head: trainings[str(folder)] for head, folder in chosen.items()}
    corpora = {c["name"]: c for t in chosen_training.values() for c in t["corpora"]}
    for corpus in corpora.values():
        if corpus.get("role") == "target":  # its labelled items chose the epoch of each candidate and the source
            corpus["labels_used"] = "labelled target items (the dev speakers): epoch and source selection only"
    order = sorted(corpora.values(), key=lambda c: c.get("role") == "target")  # sources first, then the target
    split = {
        c["name"]: "target: train+dev, unlabelled" if c.get("role") == "target" else "fixed train+dev" for c in order
    }
    training = {
        "regime": "adaptation/wda",
        "paper": "NICU paper (Interspeech 2021), §2.2 and §4.2.3",
        "variant": "semi-supervised",
        "selection": "per head, the source whose semi-supervised epoch scored the best UAR on URDU's dev speakers "
        "(labelled target items); URDU's test speakers were used for nothing but the final evaluation",
        "chosen": {
            head: {"candidate": str(folder), "dev_uar": scores[head][str(folder)]} for head, folder in chosen.items()
        },
        "candidates_dev_uar": scores,
        "corpora": order,
        "split": split,
        "heads": {
            head: {
                "candidate": str(folder),
                "sources": [c["name"] for c in chosen_training[head]["corpora"] if c.get("role") == "source"],
                "seed": chosen_training[head]["seed"],
                "lipschitz": chosen_training[head]["lipschitz"],
            }
            for head, folder in chosen.items()
        },
    }
    write_release(released, args.out, model_id=args.id, description=args.description, training=training,
                  history=[{"candidate": c, **t} for c, t in trainings.items()])  # fmt: skip
    print(f"wrote {args.out}: " + ", ".join(f"{h} from {f.name}" for h, f in chosen.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
