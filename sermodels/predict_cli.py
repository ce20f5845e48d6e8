"""``sermodels predict``: the arguments of :func:`~sermodels.pipelines.predict.predict_files` on the command line.

One process: ``sermodels predict --model ID PATH... [--out F]``, with the fast-path options (``--decode-workers``,
``--precision bf16``, ``--channels-last``, ``--compile``) and ``--backend onnx`` (the network on onnxruntime:
:mod:`sermodels.deploy.onnx_backend`). Many processes (Lightning's predict loop,
:mod:`sermodels.pipelines.predict_runner`): ``--devices N [--accelerator gpu] [--num-nodes M] --out F``; each rank
writes shards of whole groups of files, a rerun of the same command resumes, and one table is merged at the end.
Under SLURM: ``srun --ntasks-per-node=4 sermodels predict DIR --out preds.csv --accelerator gpu --devices 4
--num-nodes N`` (Lightning reads the SLURM environment).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

STDOUT = "-"  # `predict --out -`: the CSV table on stdout (for pipes), not the aligned terminal table
BACKENDS = ("torch", "onnx")


def add_parser(sub: argparse._SubParsersAction, model_args: Callable[[argparse.ArgumentParser], None]):
    p = sub.add_parser("predict", help="predict the emotion of audio files or folders")
    p.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    model_args(p)
    p.add_argument(
        "--out",
        help="also write every row to FILE.csv, FILE.json or FILE.parquet (needs pyarrow); '-': CSV on stdout "
        "instead of the table (default: the table only: file, label, its probability, one row per file)",
    )
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="run longer files in windows of this size (default: the model's default_chunk_seconds, 30 s for "
        "EmoNet, whole files for the SVMs; 0: whole files)",
    )
    p.add_argument(
        "--timeline-seconds",
        type=float,
        default=None,
        metavar="S",
        help="frame-level heads: one timeline row per S seconds (frames averaged) instead of one per frame",
    )
    p.add_argument(
        "--attention",
        metavar="OUT",
        help="also draw each file's attention map over its log-mel spectrogram (EmoNet models): OUT.png for a "
        "single input file, else a folder receiving <file stem>.png per input (sub-folders of folder inputs kept)",
    )
    fast = p.add_argument_group("speed (one process)")
    fast.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="onnx: run the network on onnxruntime (CPU), exported once per weights into the cache, or --onnx",
    )
    fast.add_argument("--onnx", metavar="PATH", help="--backend onnx: this export folder or .onnx file")
    fast.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    fast.add_argument("--channels-last", action="store_true", help="NHWC weights for the 2-D CNNs")
    fast.add_argument("--compile", action="store_true", help="torch.compile the network (first batches compile)")
    fast.add_argument("--decode-workers", type=int, default=0, help="threads decoding files ahead of the model")
    fast.add_argument("--decode-processes", action="store_true", help="decode in processes instead of threads")
    fast.add_argument(
        "--resample-on-device", action="store_true", help="resample files at other rates on --device, not with soxr"
    )
    many = p.add_argument_group("many processes (Lightning's predict loop; needs --out FILE)")
    many.add_argument("--devices", default="1", help="processes or GPUs (Lightning's devices: 2, 'auto', ...)")
    many.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto")
    many.add_argument("--num-nodes", type=int, default=1, help="nodes of a multi-node run (SLURM)")
    many.add_argument("--group-size", type=int, default=None, help="files per shard (the unit of resuming)")
    many.add_argument("--restart", action="store_true", help="discard the unfinished run's shards in OUT.partial/")
    p.set_defaults(run=run)
    return p


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _distributed(args) -> bool:
    return args.devices != "1" or args.num_nodes > 1


def _check(args) -> None:
    """Refuse option combinations that cannot work, before any model is loaded."""
    if args.onnx and args.backend != "onnx":
        raise ValueError("--onnx names the graph of --backend onnx")
    if args.backend == "onnx":
        chosen = {
            "--precision": args.precision != "fp32",
            "--channels-last": args.channels_last,
            "--compile": args.compile,
            "--attention": bool(args.attention),
        }
        torch_only = [flag for flag, on in chosen.items() if on]
        if torch_only:
            raise ValueError(f"{', '.join(torch_only)}: torch options, not for --backend onnx")
        if args.device != "cpu":
            raise ValueError("--backend onnx runs on the CPU (onnxruntime's CPU provider); drop --device")
    if _distributed(args):
        if not args.out or args.out == STDOUT:
            raise ValueError("--devices/--num-nodes write shards and merge them: give --out FILE")
        if args.backend != "torch" or args.attention or args.device != "cpu":
            raise ValueError("--devices runs the torch backend, placed by Lightning (--accelerator; not --device)")
        one_process = {
            "--precision": args.precision != "fp32",
            "--channels-last": args.channels_last,
            "--compile": args.compile,
            "--decode-workers": args.decode_workers > 0,
            "--decode-processes": args.decode_processes,
            "--resample-on-device": args.resample_on_device,
        }
        refused = [flag for flag, on in one_process.items() if on]
        if refused:
            raise ValueError(f"{', '.join(refused)}: options of a one-process run, not (yet) of --devices runs")
    else:
        many = {
            "--accelerator": args.accelerator != "cpu",
            "--group-size": args.group_size is not None,
            "--restart": args.restart,
        }
        refused = [flag for flag, on in many.items() if on]
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: options of a --devices run (one process: --device cuda picks the GPU)"
            )


def run(args) -> int:
    import sermodels
    from sermodels.pipelines.predict import check_output_path

    _check(args)
    to_stdout = args.out == STDOUT
    out = None if to_stdout else args.out
    if out:
        check_output_path(out)
    maps = None
    if args.attention:
        from sermodels import plots

        maps = plots.attention_targets(args.paths, args.attention)
    model = sermodels.load(args.model, revision=args.revision, device=args.device)
    if maps is not None:
        plots.check_has_attention(model)
    if _distributed(args):
        return _run_distributed(args, model)
    network = model
    if args.backend == "onnx":
        from sermodels.deploy.onnx_backend import OnnxBackend

        network = OnnxBackend(model, args.onnx, model_id=args.model)
    return _report(args, model, network, out, to_stdout, maps)


def _report(args, model, network, out, to_stdout: bool, maps) -> int:
    from sermodels.pipelines.predict import predict_files, write_predictions
    from sermodels.pipelines.terminal import prediction_table

    # With --out the engine writes atomic snapshots while it runs and on interruption, so finished work is kept.
    result = predict_files(
        network,
        args.paths,
        head=args.head,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        max_chunk_seconds=args.chunk_seconds,
        out=out,
        timeline_seconds=args.timeline_seconds,
        decode_workers=args.decode_workers,
        decode_processes=args.decode_processes,
        resample_on_device=args.resample_on_device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    table = [] if to_stdout else prediction_table(result)
    if to_stdout:
        write_predictions(result, sys.stdout)
    elif table:
        print("\n".join(table), flush=True)
    frame = result.spec.level == "frame"
    if out:
        rows = f" ({len(result.timeline)} timeline rows)" if frame else ""
        print(f"wrote {len(result.rows)} predictions{rows} to {out}", file=sys.stderr)
    elif frame and table:
        print("each file's frames averaged; --out FILE.csv (or '-') writes the timeline", file=sys.stderr)
    not_drawn = []
    if maps is not None:
        from sermodels import plots

        not_drawn = plots.write_attention_maps(model, maps, result.paths, head=args.head)
    return _failures(result, not_drawn, maps, args)


def _failures(result, not_drawn, maps, args) -> int:
    for path, reason in result.failures:
        print(f"skipped {reason}" if str(path) in reason else f"skipped {path}: {reason}", file=sys.stderr)
    for path, reason in not_drawn:
        print(f"no attention map for {path}: {reason}", file=sys.stderr)
    if maps is not None:
        print(f"wrote {len(result.rows) - len(not_drawn)} attention maps to {args.attention}", file=sys.stderr)
    if result.failures:
        print(f"{len(result.failures)} of {len(result.failures) + len(result.rows)} inputs failed", file=sys.stderr)
        return 1
    return 1 if not_drawn else 0


def _run_distributed(args, model) -> int:
    from sermodels.pipelines.predict_runner import GROUP_SIZE, predict_distributed

    done = predict_distributed(
        model,
        args.paths,
        args.out,
        model_id=args.model,
        head=args.head,
        batch_size=args.batch_size,
        max_chunk_seconds=args.chunk_seconds,
        timeline_seconds=args.timeline_seconds,
        devices=_devices(args.devices),
        accelerator=args.accelerator,
        num_nodes=args.num_nodes,
        group_size=args.group_size or GROUP_SIZE,
        restart=args.restart,
        progress=not args.no_progress,
    )
    if done.result is None:  # not rank 0: rank 0 merges and reports
        return 0
    print(f"wrote {len(done.result.rows)} predictions to {args.out} ({done.world_size} processes)", file=sys.stderr)
    return _failures(done.result, [], None, args)
