"""``sermodels features deepspectrum`` and ``sermodels features av_spnet``: the arguments of
:func:`~sermodels.pipelines.features.extract_to_file` and of the extractor builders
(:func:`~sermodels.pipelines.features.build_extractor`: Deep Spectrum, an ImageNet CNN on spectrogram images;
:func:`~sermodels.pipelines.model_features.load_av_spnet`: the frozen front-end of a trained AV-SpNET model) on the
command line. Both subcommands share the input, output, window, label and run options and write the same formats
(what is written: the module docstring of :mod:`sermodels.pipelines.features`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sermodels.features.deepspectrum import DS_BACKBONE, DeepSpectrum
from sermodels.features.spectrogram_image import (
    DS_COLORMAP_DEFAULT,
    DS_HOP,
    DS_IMAGE_SIZE,
    DS_MEL_NORM,
    DS_MEL_SCALE,
    DS_N_FFT,
    DS_N_MELS,
    KINDS,
    RESIZES,
    SCALES,
    SpectrogramImage,
)
from sermodels.layers.backbone import POOLS
from sermodels.pipelines.features import (
    DEFAULT_BATCH_SIZE,
    FeatureExtractor,
    OutputPaths,
    build_extractor,
    check_window,
    extract_to_file,
    resolve_device,
)
from sermodels.pipelines.model_features import LAYERS, load_av_spnet
from sermodels.runtime import PRECISIONS, autocast_dtype

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", "none")  # CLI spelling; "none" is norm=None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``sermodels features deepspectrum`` and ``sermodels features av_spnet``; returns the first's parser."""
    parser = _add_deepspectrum(sub)
    _add_av_spnet(sub)
    return parser


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="IN", help="audio files or folders (searched recursively)")
    p.add_argument("-o", "--out", required=True, help="output file: .csv, .npy (+ <stem>.index.csv) or .parquet")


def _add_deepspectrum(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``sermodels features deepspectrum``: arguments of :func:`extract_to_file` and :func:`build_extractor`."""
    p = sub.add_parser(
        "deepspectrum",
        help="Deep Spectrum features (spectrogram images through an ImageNet CNN) of audio files to CSV/NPY/Parquet",
        description="Deep Spectrum features of audio files and folders (searched recursively), one row per file or "
        "per window. Interrupted runs resume from OUT.partial/ when rerun with the same settings.",
    )
    _add_inputs(p)
    p.add_argument("--backbone", default=DS_BACKBONE, help=f"timm model name (default: {DS_BACKBONE})")
    p.add_argument(
        "--layer",
        default=None,
        help="layer whose activations are the features (default: fc7 for VGG "
        "nets, pre_logits otherwise; any module name of the timm model)",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", metavar="FILE", help="local .safetensors state dict of the backbone")
    weights.add_argument(
        "--pretrained",
        action="store_true",
        help="timm's ImageNet weights from the Hugging Face Hub (the default; needs the network or the Hub cache)",
    )
    weights.add_argument("--random-init", action="store_true", help="random weights, seeded by --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init (default: 0)")
    p.add_argument("--kind", choices=KINDS, default="mel", help="mel or linear-frequency spectrogram (default: mel)")
    p.add_argument("--n-mels", type=int, default=DS_N_MELS, help=f"mel filters (default: {DS_N_MELS})")
    p.add_argument("--scale", choices=SCALES, default=None, help="frequency axis of a linear spectrogram")
    p.add_argument(
        "--colormap", default=DS_COLORMAP_DEFAULT, help=f"matplotlib colour map (default: {DS_COLORMAP_DEFAULT})"
    )
    p.add_argument("--n-fft", type=int, default=DS_N_FFT, help=f"FFT size (default: {DS_N_FFT})")
    p.add_argument("--hop-length", type=int, default=DS_HOP, help=f"STFT hop in samples (default: {DS_HOP})")
    p.add_argument("--f-min", type=float, default=0.0, metavar="HZ", help="lowest frequency shown (default: 0)")
    p.add_argument(
        "--f-max", type=float, default=None, metavar="HZ", help="highest frequency shown (default: the Nyquist)"
    )
    p.add_argument(
        "--top-db",
        type=float,
        default=None,
        metavar="DB",
        help="floor the image this many dB below its peak (default: none, the full range, as the toolkit)",
    )
    p.add_argument(
        "--center",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="centred STFT (reflect-padded ends); default --no-center, the toolkit's uncentred STFT",
    )
    p.add_argument(
        "--mel-scale",
        choices=MEL_SCALES,
        default=DS_MEL_SCALE,
        help=f"mel scale of the filterbank (default: {DS_MEL_SCALE}, librosa's, as the toolkit)",
    )
    p.add_argument(
        "--mel-norm",
        choices=MEL_NORMS,
        default=DS_MEL_NORM or "none",
        help=f"mel filter normalisation: slaney (equal area) or none (default: {DS_MEL_NORM or 'none'})",
    )
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        metavar="N",
        default=list(DS_IMAGE_SIZE),
        help="image height and width, or one number for a square (default: 224 224)",
    )
    p.add_argument("--resize", choices=RESIZES, default="nearest", help="image resampling (default: nearest)")
    p.add_argument("--pool", choices=POOLS, default="avg", help="4-D activations: average over space or flatten")
    _add_run_options(p, rows="images", autocast="backbone")
    p.set_defaults(run=run_cli)
    return p


def _add_av_spnet(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``sermodels features av_spnet``: arguments of :func:`extract_to_file` and :func:`load_av_spnet`."""
    p = sub.add_parser(
        "av_spnet",
        help="AV-SpNET front-end features (a trained model's frozen encoder) of audio files to CSV/NPY/Parquet",
        description="Features of audio files and folders (searched recursively) from the frozen front-end of a "
        "trained AV-SpNET model: the mean over each file's (or window's) 810 ms segments of the flattened conv maps "
        "or of the shared FC layer, one row per file or per window. Interrupted runs resume from OUT.partial/ when "
        "rerun with the same settings.",
    )
    _add_inputs(p)
    p.add_argument(
        "--model",
        required=True,
        metavar="ID_OR_FOLDER",
        help="a pretrained av_spnet id (av_spnet.<tag>) or a checkpoint folder (config.json + model.safetensors)",
    )
    p.add_argument(
        "--layer",
        choices=LAYERS,
        default="conv",
        help="conv: the flattened conv maps (the frozen front-end, model.flat_dim values); shared_fc: the shared FC "
        "layer (1024 values) (default: conv)",
    )
    _add_run_options(p, rows="waveforms", autocast="encoder")
    p.set_defaults(run=run_av_spnet_cli)
    return p


def _add_run_options(p: argparse.ArgumentParser, rows: str, autocast: str) -> None:
    """Windows, crop, labels and how the job runs: the same for every extractor (``rows``: what a batch holds,
    ``autocast``: what ``--precision`` applies to, in the help)."""
    p.add_argument("--window", type=float, default=None, metavar="S", help="one row per window of S seconds")
    p.add_argument("--hop", type=float, default=None, metavar="S", help="window hop in seconds (default: --window)")
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="use the audio from S seconds on")
    p.add_argument("--end", type=float, default=None, metavar="S", help="use the audio up to S seconds")
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="CSV/TSV with a header and name,label rows; a name is the file's "
        "path relative to the input folder or its file name (with or without the audio extension)",
    )
    p.add_argument("--folder-labels", action="store_true", help="the parent folder's name is the label")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"{rows} per forward pass (default: {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help=f"{autocast} autocast: fp32, bf16, or fp16 (CUDA only)",
    )
    p.add_argument("--restart", action="store_true", help="discard OUT.partial/ of an earlier run instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when some input files failed (errors the job cannot run past propagate: exit 2)."""
    where = OutputPaths.of(args.out)
    autocast_dtype(args.precision, resolve_device(args.device))  # before loading a model
    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes one or two numbers (height width), got {args.size}")
    if args.top_db is not None and not args.top_db > 0:
        raise ValueError(f"--top-db must be a positive number of dB, got {args.top_db}")
    image = {
        "kind": args.kind,
        "n_mels": args.n_mels,
        "n_fft": args.n_fft,
        "hop_length": args.hop_length,
        "f_min": args.f_min,
        "f_max": args.f_max,
        "top_db": args.top_db,
        "center": args.center,
        "mel_scale": args.mel_scale,
        "mel_norm": None if args.mel_norm == "none" else args.mel_norm,
        "colormap": args.colormap,
        "size": tuple(args.size * 2 if len(args.size) == 1 else args.size),
        "resize": args.resize,
    }
    if args.scale is not None:
        image["scale"] = args.scale
    check_window(SpectrogramImage(**image), args.window)  # and the image settings, before loading a model
    weights = Path(args.weights) if args.weights else "random" if args.random_init else "hub"
    extractor, weights_id = build_extractor(
        args.backbone, weights=weights, layer=args.layer, image=image, pool=args.pool, seed=args.seed
    )
    return _extract(args, where, extractor, weights_id)


def run_av_spnet_cli(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when some input files failed (errors the job cannot run past propagate: exit 2)."""
    where = OutputPaths.of(args.out)
    autocast_dtype(args.precision, resolve_device(args.device))  # before loading a model
    extractor, weights_id = load_av_spnet(args.model, args.layer)
    return _extract(args, where, extractor, weights_id)


def _extract(
    args: argparse.Namespace, where: OutputPaths, extractor: DeepSpectrum | FeatureExtractor, weights_id: str
) -> int:
    """Run :func:`extract_to_file` with the shared options and report on stderr."""
    summary = extract_to_file(
        args.paths,
        where.out,
        extractor,
        window=args.window,
        hop=args.hop,
        start=args.start,
        end=args.end,
        labels=args.labels,
        folder_labels=args.folder_labels,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        weights_id=weights_id,
        restart=args.restart,
        progress=not args.no_progress,
    )
    good = summary["files"] - summary["failed"]
    print(f"wrote {summary['rows']} rows x {summary['dim']} features of {good} files to {where.out}", file=sys.stderr)
    if summary["failed"]:
        print(f"{summary['failed']} of {summary['files']} files failed; listed in {summary['errors']}", file=sys.stderr)
        return 1
    return 0
