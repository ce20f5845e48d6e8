"""``sermodels wda``: adapt the NICU paper's WDA model from labelled source corpora to unlabelled target audio.

The target is a corpus (``--target urdu=ROOT``, its labels never read), audio files and folders (``--target
PATH...``), or the speech segments of ``sermodels daylong`` outputs (``--target-daylong OUT...``: the use case of
the paper, adapting to a hospital's recordings). ``--labelled`` takes a table of labelled target items (``sermodels
annotate import``'s ``labels.csv``: ``path,label``; labels may be emotion categories or ``high``/``low``,
``positive``/``non-positive``), which choose the semi-supervised epoch and nothing else. The result is a release
folder (``config.json``, ``model.safetensors``, ``training_log.json``, card) of the ``wda_mlp`` model that runs on
raw audio: ``sermodels daylong --model OUT``, ``sermodels predict --model OUT``.

    sermodels wda --source emodb=../shared/data/EMODB --source ravdess=../shared/data/RAVDESS \\
        --target urdu=../shared/data/URDU --partitions train dev --out checkpoints/wda_mlp.multi3_urdu
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

DEFAULT_CACHE = ".cache/features"
VARIANTS = ("unsupervised", "semi-supervised")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "wda",
        help="Wasserstein domain adaptation (NICU paper) of a log-mel-functionals model to unlabelled target audio",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--source", action="append", required=True, metavar="NAME=ROOT", help="labelled source corpus")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", nargs="+", metavar="NAME=ROOT|PATH", help="target corpus, or audio files/folders")
    target.add_argument("--target-daylong", nargs="+", metavar="OUT", help="sermodels daylong output folders")
    p.add_argument("--partitions", nargs="+", default=None, help="fixed-split partitions of the corpora to use")
    p.add_argument("--labelled", default=None, help="CSV path,label of labelled target items (semi-supervised)")
    p.add_argument("--variant", choices=VARIANTS, default="unsupervised", help="which adapted model is written")
    p.add_argument("--spaces", nargs="+", default=["arousal", "binary_valence"], help="label spaces (heads)")
    p.add_argument("--lipschitz", choices=("clip", "gp"), default="clip", help="critic constraint (default clip)")
    p.add_argument("--source-epochs", type=int, default=None, help="most epochs of stage 1 (default 1000)")
    p.add_argument("--adapt-epochs", type=int, default=None, help="most epochs of stage 2 (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="feature cache folder")
    p.add_argument("--out", required=True, help="release folder to write")
    p.add_argument("--id", default=None, help="model id stored in config.json (default: the folder name)")
    p.add_argument("--description", default=None)
    p.set_defaults(run=run_cli)
    return p


def _pair(text: str) -> tuple[str, str]:
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise ValueError(f"expected NAME=ROOT (e.g. emodb=../shared/data/EMODB), got {text!r}")
    return name.strip().lower(), root


def _labelled(path: str) -> list[tuple[str, str]]:
    table = Path(path)
    with open(table, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise ValueError(f"{table}: expected a CSV with path and label columns")
    return [(str((table.parent / r["path"]).resolve()), r["label"].strip()) for r in rows if r["label"].strip()]


def run_cli(args) -> int:
    from sermodels.data import load_corpus
    from sermodels.pipelines.inputs import expand_inputs
    from sermodels.training.export import write_release
    from sermodels.training.wda import fit_wda

    sources = dict(_pair(s) for s in args.source)
    target_features, target, target_info = None, None, {}
    if args.target_daylong:
        from sermodels.pipelines.annotate import read_daylong_outputs, segment_features

        segments = read_daylong_outputs(args.target_daylong)
        import torch

        target_features = torch.from_numpy(segment_features(segments))
        target_info = {"daylong": [str(Path(d).resolve()) for d in args.target_daylong], "segments": len(segments)}
    elif len(args.target) == 1 and "=" in args.target[0]:
        target = _pair(args.target[0])
        target_info = {"corpus": target[0], "transductive": args.partitions is None}
        if args.partitions is None:
            print(
                f"sermodels wda: adapting to every speaker of {target[0]}, test speakers included (transductive); "
                "give --partitions train dev to keep its test speakers unseen for evaluation",
                file=sys.stderr,
            )
    else:
        target = [str(p) for p in expand_inputs(args.target)]
        target_info = {"files": len(target)}
    labelled = _labelled(args.labelled) if args.labelled else None
    if args.variant == "semi-supervised" and not labelled:
        raise ValueError("--variant semi-supervised needs --labelled target items to choose the epoch")
    result = fit_wda(
        sources,
        target,
        labelled,
        label_spaces=args.spaces,
        seed=args.seed,
        cache_dir=args.cache_dir,
        source_options=None if args.source_epochs is None else {"max_epochs": args.source_epochs},
        adapt_options={"lipschitz": args.lipschitz}
        | ({} if args.adapt_epochs is None else {"max_epochs": args.adapt_epochs}),
        partitions=args.partitions,
        target_features=target_features,
    )
    model = result.semi_supervised if args.variant == "semi-supervised" else result.unsupervised
    used = {"split": "fixed", "partitions": args.partitions}
    corpora = [load_corpus(name, root).info() | used | {"role": "source"} for name, root in sources.items()]
    if target and isinstance(target, tuple):
        labels_used = f"{len(labelled)} labelled items: epoch selection only" if labelled else False
        corpora.append(load_corpus(*target).info() | used | {"role": "target", "labels_used": labels_used})
    training = {
        "regime": "adaptation/wda",
        "paper": "NICU paper (Interspeech), §2.2 and §4.2.3",
        "variant": args.variant,
        "lipschitz": args.lipschitz,
        "seed": args.seed,
        "label_spaces": list(args.spaces),
        "target": target_info,
        "labelled_target_items": len(labelled or []),
        "corpora": corpora,
        "command": "sermodels " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["wda"] else None,
    }
    history = [{"space": space, **entry} for space, entry in result.history.items()]
    folder = write_release(model, args.out, model_id=args.id, description=args.description, training=training,
                           history=json.loads(json.dumps(history, default=float)))  # fmt: skip
    print(f"wrote {folder}", file=sys.stderr)
    return 0
