"""``sermodels daylong``: the arguments of :func:`~sermodels.pipelines.daylong.run_daylong` on the command line.

On a cluster, one node with several GPUs: ``sermodels daylong RECORDINGS/ --out OUT --accelerator gpu --devices 4``
(Lightning starts one process per GPU and shards the recordings). Several nodes under SLURM:
``srun --ntasks-per-node=4 sermodels daylong RECORDINGS/ --out OUT --accelerator gpu --devices 4 --num-nodes N``
(Lightning reads the SLURM environment). Every rank writes whole recordings into their own folders, so a rerun of
the same command resumes whatever an interrupted job left unfinished.
"""

from __future__ import annotations

import argparse
import sys

from sermodels.pipelines.daylong import BATCH_SIZE, BLOCK_SECONDS, WARMUP_SECONDS, DaylongSettings
from sermodels.pipelines.daylong_report import ANNOTATION_FORMATS, BIN_MINUTES, TABLE_FORMATS
from sermodels.pipelines.vad import SegmentRules

DEFAULT_MODEL = "mobilenetv2_adapters.av"  # the released model with arousal and valence heads


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    rules = SegmentRules()
    p = sub.add_parser(
        "daylong",
        help="speech segments of long recordings with arousal/valence: tables, plots, HTML, annotation files",
        description="Streams each recording in blocks, finds speech with a voice-activity detector, cuts it into "
        "segments and scores them. Writes OUT/<recording>/ (segments table, timeline.png, summary.html, TextGrid, "
        "ELAN and Audacity files) and OUT/index.csv. Rerun the same command to resume an interrupted run.",
    )
    p.add_argument("paths", nargs="+", metavar="RECORDING", help="audio files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"pretrained id or checkpoint folder ({DEFAULT_MODEL})")
    p.add_argument("--revision", default=None, help="Hub revision (commit or branch) to pin")
    p.add_argument(
        "--head",
        action="append",
        default=None,
        help="head to score (repeatable; default: the model's arousal and valence heads, else its default head)",
    )
    p.add_argument("--vad", default="auto", choices=("auto", "silero", "energy"), help="voice-activity detector")
    p.add_argument("--threshold", type=float, default=rules.threshold, help="speech probability threshold")
    p.add_argument("--merge-gap", type=float, default=rules.merge_gap, help="merge speech closer than this (s)")
    p.add_argument("--min-duration", type=float, default=rules.min_duration, help="drop shorter segments (s)")
    p.add_argument("--max-duration", type=float, default=rules.max_duration, help="split longer segments (s)")
    p.add_argument("--block-seconds", type=float, default=BLOCK_SECONDS, help="audio read at a time (s)")
    p.add_argument("--warmup-seconds", type=float, default=WARMUP_SECONDS, help="detector warm-up per block (s)")
    p.add_argument("--bin-minutes", type=float, default=BIN_MINUTES, help="time bin of the timeline plot")
    p.add_argument(
        "--tables", default="csv", help=f"comma-separated table formats ({', '.join(TABLE_FORMATS)}; default csv)"
    )
    p.add_argument(
        "--annotations",
        default=",".join(ANNOTATION_FORMATS),
        help=f"comma-separated annotation formats ({', '.join(ANNOTATION_FORMATS)}; 'none' for none)",
    )
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto")
    p.add_argument("--devices", default="1", help="processes/GPUs (Lightning's devices: 2, 'auto', ...)")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes of a multi-node run (SLURM)")
    p.add_argument("--restart", action="store_true", help="discard earlier work in OUT for these recordings")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run_cli)
    return p


def _formats(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else tuple(t.strip().lower() for t in text.split(",") if t.strip())


def run_cli(args) -> int:
    import sermodels
    from sermodels.pipelines.daylong_runner import run_daylong

    settings = DaylongSettings(
        rules=SegmentRules(
            threshold=args.threshold,
            merge_gap=args.merge_gap,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
        ),
        vad=args.vad,
        block_seconds=args.block_seconds,
        warmup_seconds=args.warmup_seconds,
        heads=tuple(args.head) if args.head else None,
        batch_size=args.batch_size,
        bin_minutes=args.bin_minutes,
        tables=_formats(args.tables),
        annotations=_formats(args.annotations),
    )
    model = sermodels.load(args.model, revision=args.revision)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    strategy = "ddp" if (devices not in (1, "1") or args.num_nodes > 1) else "auto"
    results = run_daylong(
        model,
        args.paths,
        args.out,
        settings=settings,
        model_id=args.model,
        restart=args.restart,
        devices=devices,
        accelerator=args.accelerator,
        strategy=strategy,
        num_nodes=args.num_nodes,
        progress=not args.no_progress,
    )
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            s = r.summary
            print(
                f"{r.path}: {s['segments']} segments, {s['speech_s'] / 60:.1f} min of speech -> {r.folder}",
                file=sys.stderr,
            )
    for r in failed:
        print(f"failed: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def add_annotate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``sermodels annotate select|import``: medoid-ranked segments for a human to label, and the labels back."""
    p = sub.add_parser("annotate", help="active learning on daylong outputs: select segments to label, import labels")
    inner = p.add_subparsers(dest="annotate_command", required=True)
    s = inner.add_parser(
        "select",
        help="rank the segments of daylong outputs for labelling (medoids of k-medoids clusters, largest first)",
        description="Writes OUT/selection.csv (rank, recording, times, an empty label column), TextGrid/ELAN files "
        "per recording with a 'label' tier to fill, and OUT/assignments.csv (every segment's cluster).",
    )
    s.add_argument("folders", nargs="+", metavar="DAYLONG_OUT", help="output folders of sermodels daylong")
    s.add_argument("--out", required=True, help="selection folder")
    s.add_argument("--k", type=int, default=None, help="clusters (default: a third of the segments, NICU §2.1)")
    s.add_argument("--budget", type=int, default=None, help="list only the first N medoids")
    s.add_argument("--per-recording", action="store_true", help="cluster each recording on its own")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--formats", default="textgrid,eaf", help="annotation files to write (textgrid, eaf; or none)")
    s.add_argument("--clips", action="store_true", help="also write the selected segments as WAV clips")
    s.set_defaults(run=_select)
    i = inner.add_parser(
        "import",
        help="read labels back (selection.csv or labelled TextGrid/ELAN/Audacity/CSV files) into a corpus table",
        description="Writes OUT/labels.csv (path,label,speaker,...) and OUT/clips/*.wav: a corpus for "
        "'sermodels finetune --data OUT/labels.csv' or the WDA driver's semi-supervised selection.",
    )
    i.add_argument("selection", metavar="SELECTION_DIR", help="the folder of annotate select")
    i.add_argument("labelled", nargs="*", help="labelled annotation files (named after their recording)")
    i.add_argument("--out", required=True, help="corpus folder")
    i.add_argument("--propagate", action="store_true", help="give every segment of a cluster its medoid's label")
    i.set_defaults(run=_import)
    return p


def _select(args) -> int:
    from sermodels.pipelines.annotate import select

    rows = select(
        args.folders,
        args.out,
        k=args.k,
        budget=args.budget,
        per_recording=args.per_recording,
        seed=args.seed,
        formats=_formats(args.formats),
        clips=args.clips,
    )
    print(f"{len(rows)} segments to label, largest cluster first: {args.out}/selection.csv", file=sys.stderr)
    return 0


def _import(args) -> int:
    from sermodels.pipelines.annotate import import_labels

    rows = import_labels(args.selection, args.out, args.labelled, propagate=args.propagate)
    print(f"{len(rows)} labelled segments -> {args.out}/labels.csv", file=sys.stderr)
    return 0
