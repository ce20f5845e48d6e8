"""``sermodels export onnx ID -o DIR``: the command line of :func:`sermodels.deploy.onnx.export_onnx`.

After writing the files it runs the graph once in onnxruntime beside the model in torch, at two input lengths, and
prints the largest difference of the scores per head; beyond :func:`~sermodels.deploy.onnx.parity_tolerance` the
command exits with status 1 (``--no-check`` skips it). The parity of every released model on real audio
is a test (``tests/deploy/test_onnx_export.py``).
"""

from __future__ import annotations

import argparse
import sys

CHECK_SECONDS = (2.0, 5.5)  # the two input lengths of the check (seconds; the model's minimum if longer)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a model for deployment (ONNX)")
    formats = p.add_subparsers(dest="export_format", required=True)
    onnx = formats.add_parser(
        "onnx",
        help="ONNX graph with the front-end inside (onnxruntime, audonnx)",
        description="Writes DIR/model.onnx (input 'signal' (batch, samples), whole clips at the model's sample "
        "rate; one output per head), DIR/model.clip.onnx + DIR/model.yaml for audonnx, and DIR/export.json.",
    )
    onnx.add_argument("model", help="pretrained id, checkpoint folder, or 'default'")
    onnx.add_argument("-o", "--out", required=True, help="the folder to write")
    onnx.add_argument("--revision", default=None, help="Hub revision (commit or branch) to pin")
    onnx.add_argument("--head", action="append", default=None, help="head to export (repeatable; default: all)")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check")
    onnx.set_defaults(run=run)
    return p


def run(args) -> int:
    import torch

    import sermodels
    from sermodels.deploy.onnx import export_onnx, parity, parity_tolerance

    model = sermodels.load(args.model, revision=args.revision)
    path = export_onnx(model, args.out, heads=args.head, model_id=args.model, opset=args.opset)
    print(f"wrote {path} (+ model.clip.onnx, model.yaml, export.json in {path.parent})", file=sys.stderr)
    if args.no_check:
        return 0
    generator = torch.Generator().manual_seed(0)
    tolerance, failed = parity_tolerance(model), False
    for seconds in CHECK_SECONDS:
        samples = int(max(seconds, model.min_duration) * model.sample_rate)
        waveforms = 0.1 * torch.randn(2, samples, generator=generator)
        worst = parity(model, path, waveforms)
        failed = failed or max(worst.values()) > tolerance
        shown = ", ".join(f"{head} {value:.2e}" for head, value in worst.items())
        print(f"onnxruntime vs torch at {samples / model.sample_rate:g} s: max |difference| {shown}", file=sys.stderr)
    if failed:
        print(f"the graph's scores differ from torch's by more than {tolerance:g}: do not deploy it", file=sys.stderr)
        return 1
    return 0
