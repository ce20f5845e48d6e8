"""``sermodels``: the command line.

sermodels corpora                                   supported corpora
sermodels models                                    architectures and pretrained ids
sermodels predict --model ID PATH... [--out F]      emotions of files or folders, as a table on the terminal
                                                    (F: also write .csv, .json, .parquet; '-': CSV on stdout)
                  [--timeline-seconds S]            frame-level heads: a timeline row per S seconds, not per frame
                  [--attention OUT.png|DIR]         + EmoNet attention maps (sermodels/plots.py)
                  [--backend onnx] [--precision bf16] [--decode-workers N] [--compile]   speed options
                  [--devices N --accelerator gpu --num-nodes M]   Lightning's multi-device predict loop, resumable
sermodels evaluate --model ID --corpus NAME --root DIR [--split test|dev|loso|cv6|cv5]
sermodels fit-svm --config RECIPE.yaml [key=value ...]
sermodels fit-deep-spectrum --config RECIPE.yaml [key=value ...]   Deep Spectrum features + SVM or linear head
sermodels finetune --from ID --data DIR_OR_CSV --out DIR [--regime adapters|head|full | --setting A1..A8]
                                                    (EmoNet, AV-SpNET, CNN+LSTM, ...) on your corpus [--name NAME]
sermodels features deepspectrum IN... -o OUT.csv|.npy|.parquet [--backbone NAME --window S ...]   Deep Spectrum features
sermodels features av_spnet IN... -o OUT --model ID [--layer conv|shared_fc --window S ...]   AV-SpNET features
sermodels daylong RECORDING... --out DIR [--model ID --vad auto|silero|energy --devices N]   speech segments of long
                                                    recordings with arousal/valence: tables, plot, HTML, TextGrid/ELAN
sermodels annotate select DAYLONG_OUT... --out SEL [--budget N]   medoid-ranked segments to label (TextGrid/ELAN/CSV)
sermodels annotate import SEL [LABELLED...] --out CORPUS [--propagate]   labels back as a corpus table for finetune
sermodels wda --source NAME=ROOT... --target NAME=ROOT|PATH...|--target-daylong OUT... --out DIR [--labelled CSV]
                                                    adapt the NICU WDA model to unlabelled target audio (a release)
sermodels export onnx ID -o DIR [--head H]           ONNX graph (front-end inside) for onnxruntime and audonnx
sermodels card ID_OR_FOLDER                         (re)generate a model card
sermodels hub push ID_OR_FOLDER --repo-id ORG/NAME  upload a checkpoint folder
sermodels hub index ID --repo-id ORG/NAME [--revision SHA] [--default]   pin it in the pretrained index
sermodels convert-weights mobilenet_v2_int8 SRC -o DST.safetensors   torchvision int8 TorchScript -> timm float weights
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sermodels import predict_cli

BINARY_VALENCE = ("non-positive", "positive")  # sermodels.labels.BINARY_VALENCE_CLASSES (not imported at start-up)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # LightningCLI parses the recipe and its overrides itself (``sermodels train --help`` lists them all).
        from sermodels.training.train import train

        folder = train(argv[1:])
        if folder is not None:
            print(f"wrote {folder}", file=sys.stderr)
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (KeyError, ValueError, OSError, RuntimeError, ImportError) as err:
        # Exit status 2: the job could not run (bad arguments, model, output path); 1 is kept for "some inputs failed".
        print(f"sermodels {args.command}: error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sermodels", description="Speech emotion recognition model zoo")
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("train", help="train any Lightning recipe: sermodels train --config recipes/<family>/<setting>.yaml")
    p = sub.add_parser("corpora", help="list the supported corpora")
    p.set_defaults(run=_corpora)

    p = sub.add_parser("models", help="list architectures and pretrained models")
    p.set_defaults(run=_models)

    predict_cli.add_parser(sub, _model_args)

    p = sub.add_parser("evaluate", help="evaluate a model on a corpus partition and write a JSON report")
    _model_args(p)
    p.add_argument(
        "--corpus", required=True, help="corpus name (see `sermodels corpora`); folder:NAME names a generic one"
    )
    p.add_argument("--root", required=True, help="the corpus folder")
    p.add_argument(
        "--split",
        default="test",
        help="test, dev or train of the fixed split; or a fold scheme (loso, cv6, cv5: see `sermodels corpora`), "
        "for which the model's recipe is refitted on each fold's training speakers",
    )
    p.add_argument("--out", help="report JSON (default: reports/<model>-<corpus>-<split>.json)")
    p.add_argument("--png", help="confusion-matrix PNG (default: next to the report)")
    p.add_argument("--metrics", help="also merge the headline metrics into this metrics.json")
    p.add_argument(
        "--label-space",
        choices=("categories", "arousal", "valence", "binary_valence", "basic4", "basic6", "av_values"),
        default=None,
        help="map the corpus's categories into this space (EmoNet Table 2; av_values: arousal/valence numbers in "
        "[-1, 1] for a dimensions head, a coarse placement of the categories; basic4/basic6: the classes corpora "
        "share, items outside left out); default: the head's own space when the head is named after a space, else "
        "categories; a dimensions head: the items' own "
        "values or traces",
    )
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("fit-svm", help="fit a baseline recipe and write its checkpoint folder")
    p.add_argument("--config", required=True, help="recipe YAML (recipes/baselines/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    p.set_defaults(run=_fit_svm)

    p = sub.add_parser(
        "fit-deep-spectrum",
        help="fit a Deep Spectrum recipe (recipes/deep_spectrum/*.yaml): the SVM head of a flat recipe, or the "
        "linear head of a LightningCLI one through `sermodels train`",
    )
    p.add_argument("--config", required=True, help="recipe YAML (recipes/deep_spectrum/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys in a LightningCLI recipe)")
    p.set_defaults(run=_fit_deep_spectrum)

    _finetune_parser(sub)

    from sermodels.pipelines import features_cli

    p = sub.add_parser("features", help="extract features of audio files to CSV/NPY/Parquet")
    features_cli.add_parser(p.add_subparsers(dest="features_command", required=True))

    from sermodels.pipelines import daylong_cli

    daylong_cli.add_parser(sub)
    daylong_cli.add_annotate_parser(sub)
    from sermodels.training import wda_cli

    wda_cli.add_parser(sub)

    from sermodels.deploy import export_cli

    export_cli.add_parser(sub)

    p = sub.add_parser("card", help="generate README.md of a checkpoint folder from config.json and metrics.json")
    p.add_argument("model")
    p.set_defaults(run=_card)

    p = sub.add_parser("hub", help="Hugging Face Hub commands")
    hub_sub = p.add_subparsers(dest="hub_command", required=True)
    push = hub_sub.add_parser("push", help="upload a checkpoint folder to a Hub repository")
    push.add_argument("model", help="pretrained id or folder")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--revision", help="branch to push to (default: main)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="Hub token (default: the one saved by `hf auth login` / HF_TOKEN)")
    push.set_defaults(run=_hub_push)
    index = hub_sub.add_parser(
        "index", help="record a released folder in the pretrained index (sermodels/_pretrained.json)"
    )
    index.add_argument("model", help="pretrained id (a folder checkpoints/<id>/)")
    index.add_argument("--repo-id", required=True, help="the Hub repository it is (or will be) published under")
    index.add_argument(
        "--revision", default=None, help="the pushed commit sha to pin (default: none, i.e. not published yet)"
    )
    index.add_argument("--default", action="store_true", help="also make it the model behind the alias 'default'")
    index.set_defaults(run=_hub_index)

    p = sub.add_parser(
        "convert-weights", help="convert pretrained weights into safetensors, offline (trusted files only)"
    )
    p.add_argument(
        "source_format",
        choices=("mobilenet_v2_int8",),
        help="mobilenet_v2_int8: torchvision's int8 TorchScript ImageNet MobileNetV2 -> timm mobilenetv2_100",
    )
    p.add_argument("src", help="the file to convert (TorchScript runs code when loaded: only files you trust)")
    p.add_argument("-o", "--out", required=True, help="the .safetensors file to write")
    p.set_defaults(run=_convert_weights)
    return parser


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="pretrained id, checkpoint folder, or 'default'")
    p.add_argument("--revision", default=None, help="Hub revision (commit or branch) to pin")
    p.add_argument("--head", default=None, help="head of a multi-head model (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _corpora(args) -> int:
    from sermodels.data import describe_corpora

    for row in describe_corpora():
        print(f"{row['name']:<8} {row['description']}")
        if row.get("classes"):
            print(f"{'':<8} classes: {', '.join(row['classes'])}")
        print(f"{'':<8} licence: {row['licence']}")
    return 0


def _models(args) -> int:
    import sermodels

    print("architectures:", ", ".join(sermodels.list_models()))
    print("pretrained:   ", ", ".join(sermodels.list_pretrained()))
    return 0


def _evaluate(args) -> int:
    import sermodels
    from sermodels.data import load_corpus
    from sermodels.evaluation import evaluate_items, headline, loso_report, save_report

    if args.corpus.startswith("folder:"):  # a generic corpus under its own name (several in one metrics.json)
        args.corpus = args.corpus.split(":", 1)[1]
        corpus = load_corpus("folder", args.root, name=args.corpus)
    else:
        corpus = load_corpus(args.corpus, args.root)
    model_name = Path(args.model).name if Path(args.model).is_dir() else args.model
    scored_head, heads = args.head, 1
    if args.split not in ("train", "dev", "test"):
        refit = _fold_refitter(args, corpus)
        report = loso_report([_evaluate_fold(args, refit(train), test) for train, test in corpus.folds(args.split)])
    else:
        model = sermodels.load(args.model, revision=args.revision, device=args.device)
        head, label_map = _evaluation_head(model, args)
        scored_head, heads = model.resolve_head(head), len(model.heads)
        report = evaluate_items(
            model,
            corpus.split("fixed")[args.split],
            head=head,
            label_map=label_map,
            batch_size=args.batch_size,
            corpus=args.corpus,
            split=args.split,
            model_id=model_name,
            device=args.device,
            progress=not args.no_progress,
        )
    report.update({"corpus": args.corpus, "split": args.split})
    if isinstance(report.get("model"), dict):
        report["model"]["id"] = model_name
    else:
        report["model"] = {"id": model_name}
    out = Path(args.out or f"reports/{model_name}-{args.corpus}-{args.split}.json")
    png = args.png or str(out.with_suffix(".png"))
    save_report(report, out, png)
    print(f"{model_name} on {args.corpus}/{args.split}: {headline(report)} -> {out}")
    if args.metrics:
        _merge_metrics(Path(args.metrics), _metrics_key(args.corpus, args.split, scored_head, heads), report)
    failures = report.get("failures") or []
    for failure in failures:
        print(f"skipped {failure['path']}: {failure['reason']}", file=sys.stderr)
    if failures:
        scored = report["n"]
        files = "1 file" if len(failures) == 1 else f"{len(failures)} files"
        print(f"{files} could not be scored; the metrics cover the other {scored}", file=sys.stderr)
        return 1
    return 0


def _evaluation_head(model, args):
    """The head to score (``--head``; else the head named after the corpus, as multi-corpus models have one per
    corpus; else the default) and the label map into its space (``--label-space``, else the head's name when it
    names an arousal/valence space). A dimensions head takes the items' own values or traces, or ``av_values``."""
    from sermodels import labels as label_maps

    head = args.head or (args.corpus if args.corpus in model.heads else model.default_head)
    head = model.resolve_head(head)
    if model.output_spec(head).kind == "dimensions":
        if args.label_space in (None, *label_maps.VALUE_SPACES):
            return head, None if args.label_space is None else label_maps.value_mapper(args.label_space)
        spaces = list(label_maps.VALUE_SPACES)
        raise ValueError(f"head {head!r} outputs dimensions: --label-space must be one of {spaces} or left out")
    if args.label_space in label_maps.VALUE_SPACES:
        raise ValueError(f"--label-space {args.label_space} places categories on numbers, for a dimensions head")
    space = args.label_space or (head if head in label_maps.LABEL_SPACES and head != "categories" else "categories")
    if args.label_space is None and space == "valence" and model.label_names(head) == list(BINARY_VALENCE):
        space = "binary_valence"  # a head named valence over positive / the rest (the NICU paper's WDA models)
    if space == "categories":
        return head, None
    if model.label_names(head) != list(label_maps.label_names(space)):
        raise ValueError(
            f"head {head!r} predicts {model.label_names(head)}, not the {space} classes; pick a {space} head (--head)"
        )
    return head, label_maps.scoring_map(space)


def _fold_refitter(args, corpus):
    """Fold schemes refit the model's architecture on each fold's training speakers. The utterance features of the
    whole corpus are computed once, with the checkpoint's own front-end, and each fold takes its rows."""
    import sermodels
    from sermodels.classical.release import fit_on_items
    from sermodels.classical.svm import extract_features

    config = sermodels.hub.read_config(args.model, revision=args.revision)
    if config["architecture"] != "logmel_svm":
        raise ValueError(
            f"--split {args.split} refits the model per fold; {config['architecture']} has no refit recipe"
        )
    model_args = config["model_args"]
    rate, frontend = model_args["sample_rate"], model_args.get("frontend")
    features = extract_features([it.path for it in corpus.items], sample_rate=rate, frontend=frontend)
    row = {it.path: i for i, it in enumerate(corpus.items)}

    def refit(train):
        rows = [row[it.path] for it in train]
        return fit_on_items(train, rate, frontend=frontend, features=features[rows], head=model_args["head"])

    return refit


def _evaluate_fold(args, model, test) -> dict:
    """Score a refitted model end to end (from the audio files) on the fold's held-out speakers."""
    from sermodels.evaluation import evaluate_items

    return evaluate_items(
        model,
        test,
        head=args.head,
        batch_size=args.batch_size,
        corpus=args.corpus,
        device=args.device,
        progress=not args.no_progress,
    )


def _metrics_key(corpus: str, split: str, head: str | None, heads: int) -> str:
    """``corpus/split``, or ``corpus/split/head`` when a model with several heads is scored through another head
    than the corpus's own (a model with an arousal and a valence head is scored on each corpus through both)."""
    key = f"{corpus}/{split}"
    return f"{key}/{head}" if head and head != corpus and heads > 1 else key


def _merge_metrics(path: Path, key: str, report: dict) -> None:
    from sermodels._io import atomic_write_text
    from sermodels.checkpoint import read_json_object
    from sermodels.evaluation import metrics_entry

    metrics = read_json_object(path) if path.is_file() else {}
    metrics[key] = metrics_entry(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(f"updated {path} [{key}]")


def _fit_svm(args) -> int:
    from sermodels.classical.release import load_recipe, release

    out = release(load_recipe(args.config, args.overrides))  # the card and metrics.json come with the folder
    print(f"wrote {out}")
    return 0


def _fit_deep_spectrum(args) -> int:
    """A classical recipe fits the paper's SVM head; a LightningCLI one (the linear head) is `sermodels train`'s,
    its ``key=value`` overrides passed on as ``--key=value``."""
    from sermodels.classical.deep_spectrum import load_recipe, release
    from sermodels.classical.recipe import is_lightning_recipe

    if not is_lightning_recipe(args.config):
        out = release(load_recipe(args.config, args.overrides))
        print(f"wrote {out}")
        return 0
    from sermodels.training.train import train

    bad = [o for o in args.overrides if "=" not in o or o.startswith("-")]
    if bad:
        raise ValueError(f"overrides are key=value (as in `sermodels train --key=value`), got {bad}")
    out = train(["--config", str(args.config), *(f"--{o}" for o in args.overrides)])
    if out is not None:
        print(f"wrote {out}")
    return 0


def _finetune_parser(sub) -> None:
    from sermodels.layer_groups import SETTINGS
    from sermodels.training import finetune as ft  # light: Lightning is imported when the command runs

    p = sub.add_parser(
        "finetune",
        help="fine-tune a pretrained multi-domain model (EmoNet, AV-SpNET, ...) on your class folders or CSV/TSV",
    )
    p.add_argument(
        "--from",
        dest="base",
        required=True,
        help="pretrained multi-domain model: id (default, emonet_wrn.multi4, av_spnet.proxy4, ...) or folder",
    )
    p.add_argument("--data", required=True, help="folder with one sub-folder per class, or a CSV/TSV table")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--regime", choices=ft.REGIMES, default=None, help="what is trained (default: adapters)")
    p.add_argument(
        "--setting",
        choices=SETTINGS,
        default=None,
        help="transfer setting instead of a regime, for any model with layer groups (CNN+LSTM study §3.2): A1 no "
        "fine-tuning, A2 all layers, A3-A5 freeze up to the 1st/2nd/3rd cut-off, A6-A8 the same and re-initialise "
        "the rest",
    )
    p.add_argument(
        "--cutoffs",
        nargs=3,
        default=None,
        metavar="GROUP",
        help="the three cut-off layer groups of A3-A8 (default: the model's; CNN+LSTM: C1 C2 L)",
    )
    p.add_argument("--epochs", type=int, default=ft.DEFAULT_EPOCHS, help=f"default: {ft.DEFAULT_EPOCHS}")
    p.add_argument("--batch-size", type=int, default=ft.DEFAULT_BATCH_SIZE, help=f"default: {ft.DEFAULT_BATCH_SIZE}")
    p.add_argument(
        "--max-duration",
        type=float,
        default=None,
        help=f"training crop in seconds (default: the family's, AV-SpNET 0.81 = one segment; else "
        f"{ft.DEFAULT_MAX_DURATION:g})",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="default: the base family's (AdaptedCNN: AdamW at 1e-3), else SGD at 0.1 (adapters), 0.01 (head, full)",
    )
    p.add_argument("--patience", type=int, default=None, help="plateau epochs before lr x0.1 (default: epochs/4)")
    p.add_argument(
        "--name",
        default=None,
        help="name of the new head: letters, digits, '_' and '-' (default: the data folder's name, other characters "
        "replaced by '_')",
    )
    p.add_argument("--like", default=None, help="base head to start BN/adapters from (default: its default head)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=ft.PRECISIONS, default="32")
    p.add_argument("--devices", default="1", help="Lightning devices: a count, 'auto' or a list like 0,1")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (default: auto)")
    p.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--cache-dir", default=None, help="folder for the decoded-audio cache (default: memory only)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=_finetune)


def _finetune(args) -> int:
    from sermodels.training.finetune import finetune, summary

    if args.setting is not None and args.regime is not None:
        raise ValueError("--setting replaces --regime: give one of them")
    folder = finetune(
        args.base,
        args.data,
        args.out,
        regime=args.regime or "adapters",
        setting=args.setting,
        cutoffs=args.cutoffs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_duration="auto" if args.max_duration is None else args.max_duration,
        lr=args.lr,
        patience=args.patience,
        name=args.name,
        like=args.like,
        seed=args.seed,
        precision=args.precision,
        devices=int(args.devices) if args.devices.isdigit() else args.devices,
        accelerator=args.accelerator,
        num_workers=args.num_workers,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    if folder is not None:  # None on the other ranks of a multi-device run
        print(summary(folder))
    return 0


def _card(args) -> int:
    from sermodels.card import write_model_card
    from sermodels.hub import resolve

    print(write_model_card(resolve(args.model, local_only=True)))
    return 0


def _hub_push(args) -> int:
    from sermodels.hub import push, resolve

    sha = push(
        resolve(args.model, local_only=True),
        args.repo_id,
        revision=args.revision,
        token=args.token,
        private=args.private,
    )
    print(f"pushed {args.model} to {args.repo_id} at commit {sha}")
    return 0


def _hub_index(args) -> int:
    from sermodels._io import atomic_write_text
    from sermodels.checkpoint import read_json_object
    from sermodels.hub import index_entry
    from sermodels.pretrained import DEFAULT_KEY, checkpoints_dir, index_path

    folder = checkpoints_dir() / args.model
    path = index_path()
    index = read_json_object(path) if path.is_file() else {}
    index[args.model] = index_entry(folder, args.repo_id, args.revision)
    if args.default:
        index[DEFAULT_KEY] = args.model
    atomic_write_text(path, json.dumps(index, indent=2, sort_keys=True) + "\n")
    where = f"{args.repo_id}@{args.revision}" if args.revision else f"{args.repo_id} (not published yet)"
    print(f"pinned {args.model} -> {where} in {path}")
    return 0


def _convert_weights(args) -> int:
    from sermodels._io import sha256_of
    from sermodels.convert import convert_mobilenet_v2_int8

    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"{args.out}: the output must be a .safetensors file")
    convert_mobilenet_v2_int8(args.src, args.out)
    print(f"{sha256_of(args.out)}  {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
