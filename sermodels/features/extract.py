"""Deep Spectrum features of audio files written to CSV, NPY or Parquet: the engine of ``sermodels features
deepspectrum`` (and :func:`extract_to_file` for code).

What is written
- One row per file, or per window with ``window``/``hop`` (:func:`sermodels.features.deepspectrum.plan_windows`),
  in input order (the arguments as given, each folder's audio files sorted by path), windows in time order.
- ``.csv``: the Deep Spectrum toolkit's columns ``name, timeStamp, neuron_0 .. neuron_{D-1}, class`` (numbered
  from 0, as the toolkit's feature writer enumerates the vector); ``timeStamp`` (the window's start, seconds from
  the file start) only when windowed, ``class`` only with labels. Values are written with 9 significant digits,
  which round-trip float32 exactly.
- ``.npy``: the features alone, ``(rows, D)`` float32, and a sidecar ``<stem>.index.csv`` (``name, timeStamp?,
  class?``) whose line ``i`` describes row ``i``.
- ``.parquet`` (needs pyarrow): columns ``name`` (string), ``timeStamp`` (float64, when windowed), ``class``
  (string, with labels) and ``features``, one ``fixed_size_list<float32>[D]`` per row: D columns of a few KB each
  would make the schema larger than the data (``np.stack(table["features"].to_numpy(zero_copy_only=False))`` or
  ``table["features"].combine_chunks().flatten().to_numpy().reshape(-1, D)`` give the matrix back).
- ``name``: the file's path relative to the folder given as input (posix separators; just the file name for a
  flat folder, as the toolkit writes it), or the file name of a file given directly.
- Files that cannot be used (missing, empty, corrupt, too short, an empty crop, non-finite features) are skipped,
  reported and listed in ``<stem>.errors.csv`` (``path, error``); an earlier errors file of the same output is
  removed when a run has none. A ``window`` shorter than one spectrogram image needs
  (:meth:`~sermodels.features.deepspectrum.SpectrogramImage.min_samples`: ``n_fft`` samples for the toolkit's
  uncentred STFT) is refused before any work.

Labels
- A table (``labels``: CSV, or TSV when its header has tabs and no commas) with a header row; the first column holds
  names, the second labels. A file takes the label of its ``name`` (as above), else of its file name, else of
  either without the audio extension (so a table written for ``.wav`` originals labels ``.flac`` copies). An input
  file without a label is an error before any work is done.
- ``folder_labels``: the name of the file's parent folder is its label (a class-per-folder corpus); with a table
  too, the table's label wins and the folder name labels the files the table does not name.
- Labels do not change the features: they are attached when the output is assembled.

Resumable runs
- Work goes into ``<out>.partial/``: ``settings.json`` (the extractor's ``config()``, its weights' identity and a
  sha256 of its state dict, window/crop, precision, the sermodels/torch/timm versions, and the device type when
  the precision is not fp32) and one ``shard-NNNNNN.npz`` (plain arrays, no pickle) per group of about
  ``batch_size x GROUP_BATCHES`` images, written atomically (temporary file + rename) when the group's files are
  done. A file's rows (or its error) are in one shard, so an interruption loses at most the group in flight.
- A run holds an exclusive lock on ``<out>.partial/lock`` (``fcntl.flock``) from start to end; a second run on the
  same output fails at once ("in use by another run") instead of mixing its shards in.
- A run whose output has a partial folder skips the files done there, if its settings are the same; with other
  settings it refuses (naming what differs) unless ``restart`` discards the folder. A file is known by its absolute
  path, size and modification time (``st_mtime_ns``), so a file replaced or touched since is computed again; files
  that failed are retried, and a later success replaces the earlier error. Batch size and, in fp32, the device are
  not settings: a clip's features do not depend on its batch
  (:class:`~sermodels.features.deepspectrum.SpectrogramImage`); under bf16/fp16 autocast the kernels differ by
  device type, so the device type is one.
- When every input is done, the output is assembled shard by shard into a temporary file renamed over ``out``, the
  sidecars are written, and the partial folder is removed.

Batching: decoded files are grouped, their images (windows of several files together) sorted by length, and passed
``batch_size`` at a time through the extractor under ``torch.inference_mode()``, in eval mode. The images are
rendered in float32; ``precision`` (bf16, fp16 on CUDA) is an autocast of the backbone only, since a power
spectrogram overflows float16.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import functools
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm import tqdm

import sermodels
from sermodels.audio import AudioError, load_audio
from sermodels.features.deepspectrum import (
    DS_BACKBONE,
    DS_COLORMAP_DEFAULT,
    DS_HOP,
    DS_IMAGE_SIZE,
    DS_MEL_NORM,
    DS_MEL_SCALE,
    DS_N_FFT,
    DS_N_MELS,
    KINDS,
    POOLS,
    PRECISIONS,
    RESIZES,
    SCALES,
    DeepSpectrum,
    SpectrogramImage,
    autocast_dtype,
    plan_windows,
    weights_digest,
)
from sermodels.hub import sha256_of
from sermodels.inference import AUDIO_EXTENSIONS, atomic_write_bytes, atomic_write_text, create_beside, expand_inputs

FORMATS = (".csv", ".npy", ".parquet")
NAME_COLUMN, TIME_COLUMN, CLASS_COLUMN, FEATURE_PREFIX = "name", "timeStamp", "class", "neuron_"  # toolkit's names
DEFAULT_BATCH_SIZE = 32
GROUP_BATCHES = 4  # a shard holds about this many batches of images: the most work an interruption can lose
GROUP_MAX_SECONDS = 1800.0  # decoded audio held at once (a single longer file is still taken whole)
ASSEMBLY_ROWS = 4096  # rows per write while assembling the output
SETTINGS_FILE = "settings.json"
LOCK_FILE = "lock"
MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", "none")  # CLI spelling; "none" is norm=None
SHARD_GLOB = "shard-*.npz"
PARTIAL_FORMAT = 2  # layout version of the partial folder (2: files keyed by path, size and mtime)
FEATURE_FORMAT = "{:.9g}"  # 9 significant digits round-trip float32


@dataclass(frozen=True)
class OutputPaths:
    out: Path
    partial: Path  # <out>.partial/
    index: Path  # <stem>.index.csv (.npy outputs)
    errors: Path  # <stem>.errors.csv

    @classmethod
    def of(cls, out: str | os.PathLike) -> OutputPaths:
        out = Path(out)
        suffix = out.suffix.lower()
        if suffix not in FORMATS:
            raise ValueError(f"{out}: unsupported output format; use a {', '.join(FORMATS)} file")
        if suffix == ".parquet":
            _pyarrow()  # fail before hours of work, not at the end
        stem = out.with_suffix("")
        return cls(out, out.with_name(out.name + ".partial"), Path(f"{stem}.index.csv"), Path(f"{stem}.errors.csv"))


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # relative to the input folder, or the file name
    key: str  # "abspath|st_size|st_mtime_ns": identifies this version of the file in the partial folder


def file_key(path: str | os.PathLike) -> str:
    """``abspath|st_size|st_mtime_ns`` of a file (through symbolic links): a file replaced or touched since an
    earlier run gets another key, so a resumed run computes it again. A path that cannot be stat'ed (missing) is
    keyed ``abspath|-|-``; it fails, and failures are retried on resume anyway."""
    absolute = os.path.abspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return f"{absolute}|-|-"
    return f"{absolute}|{stat.st_size}|{stat.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------- inputs


def list_inputs(paths: Sequence[str | os.PathLike]) -> list[InputFile]:
    """Files and folders (audio files below, recursively, sorted: :func:`sermodels.inference.expand_inputs`) ->
    input files in order; a file reached twice is kept once, at its first place."""
    files: list[InputFile] = []
    seen: set[str] = set()
    for entry in paths:
        root = Path(entry)
        for path in expand_inputs([root]):
            absolute = os.path.abspath(path)
            if absolute in seen:
                continue
            seen.add(absolute)
            name = path.relative_to(root).as_posix() if root.is_dir() and path != root else path.name
            files.append(InputFile(path, name, file_key(path)))
    if not files:
        raise ValueError("no input files given")
    return files


def read_label_table(path: str | os.PathLike) -> dict[str, str]:
    """``name -> label`` from a CSV/TSV with a header row (first column names, second labels)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty label table; expected a header row and name,label rows")
    delimiter = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    if len(rows[0]) < 2:
        raise ValueError(f"{path}: the header {lines[0]!r} has fewer than two columns; expected name,label")
    table: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {number}: expected a name and a label, got {row}")
        name, label = row[0].strip(), row[1].strip()
        if table.get(name, label) != label:
            raise ValueError(f"{path}, line {number}: {name!r} has two labels, {table[name]!r} and {label!r}")
        table[name] = label
    if not table:
        raise ValueError(f"{path}: no name,label rows below the header")
    return table


def assign_labels(
    files: Sequence[InputFile], table: Mapping[str, str] | None = None, folder_labels: bool = False
) -> list[str] | None:
    """Each file's label (see the module docstring), or None with neither a table nor folder labels."""
    if table is None and not folder_labels:
        return None
    by_stem: dict[str, str | None] = {}
    for name, label in (table or {}).items():
        stem = _without_audio_suffix(name)
        by_stem[stem] = label if by_stem.get(stem, label) == label else None  # None: ambiguous
    labels: list[str] = []
    missing: list[str] = []
    for item in files:
        label = None
        if table is not None:
            candidates = (item.name, item.path.name)
            label = next((table[c] for c in candidates if c in table), None)
            if label is None:
                label = next((by_stem[s] for s in map(_without_audio_suffix, candidates) if by_stem.get(s)), None)
        if label is None and folder_labels:
            label = item.path.parent.name or None
        if label is None:
            missing.append(item.name)
        labels.append(label or "")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"no label for {len(missing)} of {len(files)} input files: {shown}")
    return labels


def _without_audio_suffix(name: str) -> str:
    path = Path(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in AUDIO_EXTENSIONS else name


# ---------------------------------------------------------------------------------------------------- extractor


def build_extractor(
    backbone: str = DS_BACKBONE,
    *,
    weights: str | os.PathLike = "hub",
    layer: str | None = None,
    image: dict[str, Any] | None = None,
    pool: str = "avg",
    seed: int = 0,
) -> tuple[DeepSpectrum, str]:
    """A :class:`DeepSpectrum` and its weights' identity for the settings: ``weights`` is ``"hub"`` (timm's
    pretrained weights, ``"hub:<repo>"``), ``"random"`` (initialised from ``torch.manual_seed(seed)``, the global
    generator left untouched: ``"random:seed=<seed>"``) or a local ``.safetensors`` file (``"sha256:<digest>"``)."""
    if isinstance(weights, str) and weights == "hub":
        extractor = DeepSpectrum(backbone, layer, pretrained=True, image=image, pool=pool)
        cfg = getattr(extractor.backbone, "pretrained_cfg", {}) or {}
        return extractor, f"hub:{cfg.get('hf_hub_id') or backbone}"
    if isinstance(weights, str) and weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extractor = DeepSpectrum(backbone, layer, pretrained=False, image=image, pool=pool)
        return extractor, f"random:seed={seed}"
    extractor = DeepSpectrum(backbone, layer, pretrained=Path(weights), image=image, pool=pool)
    return extractor, f"sha256:{sha256_of(weights)}"


def check_window(images: SpectrogramImage, window: float | None) -> None:
    """Refuse a window shorter than one spectrogram image needs (every file would fail)."""
    if window is None:
        return
    rate, need = images.sample_rate, images.min_samples()
    size = int(round(window * rate))
    if size < need:
        stft = "centred" if images.center else "uncentred, the toolkit's"
        raise ValueError(
            f"window {window} s is {size} samples at {rate} Hz; a spectrogram image needs at least {need} samples "
            f"({need / rate:.3f} s) with n_fft={images.stft.n_fft} ({stft} STFT): use a longer --window or a "
            f"smaller --n-fft"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available here; use --device cpu")
    return device


# ---------------------------------------------------------------------------------------------------- extraction


def extract_to_file(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    extractor: DeepSpectrum,
    *,
    window: float | None = None,
    hop: float | None = None,
    start: float = 0.0,
    end: float | None = None,
    labels: str | os.PathLike | Mapping[str, str] | None = None,
    folder_labels: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    weights_id: str = "unspecified",
    restart: bool = False,
    progress: bool = True,
    verbose: bool = True,
    max_files: int | None = None,
) -> dict[str, Any]:
    """Extract Deep Spectrum features of the audio files and folders in ``paths`` into ``out`` (module docstring).

    ``labels``: a label table file or a ``name -> label`` mapping. ``weights_id``: how the extractor's weights were
    obtained (:func:`build_extractor`), stored with the settings. ``verbose``: resume counts and failures on
    stderr. ``max_files``: process at most this many not-yet-done files in this call and return without assembling
    (``complete`` False, the partial folder kept); a later call goes on (test hook, and a way to bound a call).

    Returns ``out``, ``files`` (inputs), ``already_done`` (skipped: done by an earlier call; files that failed
    there are not done, they are retried), ``processed`` (by this call), ``failed`` (files in the errors file),
    ``rows``, ``dim``, ``complete``, ``errors`` (its path or None), ``seconds``. Raises :class:`OutputInUse` when
    another run holds the output's lock, ValueError for a ``window`` shorter than one image needs.
    """
    began = time.monotonic()
    where = OutputPaths.of(out)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = resolve_device(device)
    dtype = autocast_dtype(precision, device)
    hop = hop if hop is not None or window is None else window
    rate = extractor.images.sample_rate
    plan_windows(int(round(start * rate)) + 1, rate, window, hop, start, end)  # argument errors, before any work
    check_window(extractor.images, window)
    files = list_inputs(paths)
    table = read_label_table(labels) if isinstance(labels, (str, os.PathLike)) else labels
    file_labels = assign_labels(files, table, folder_labels)
    settings = {
        "partial_format": PARTIAL_FORMAT,
        "extractor": extractor.config(),
        "weights": weights_id,
        "weights_state_sha256": weights_digest(extractor),
        "window": window,
        "hop": hop,
        "start": float(start),
        "end": end,
        "precision": precision,
        "versions": _versions(),
    }
    if precision != "fp32":  # autocast kernels differ by device type; fp32 features do not depend on the device
        settings["device_type"] = device.type
    with _locked(where.partial):
        return _extract_locked(
            where, files, file_labels, extractor, settings, began=began, window=window, hop=hop, start=start,
            end=end, batch_size=batch_size, device=device, dtype=dtype, restart=restart, progress=progress,
            verbose=verbose, max_files=max_files,
        )  # fmt: skip


def _versions() -> dict[str, str]:
    import timm

    return {"sermodels": sermodels.__version__, "torch": torch.__version__, "timm": timm.__version__}


class OutputInUse(RuntimeError):
    """Another run holds the output's lock."""


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``folder/lock`` (creating the folder) for the block."""
    lock = folder / LOCK_FILE
    for _ in range(5):
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise OutputInUse(
                f"{folder.parent / folder.name.removesuffix('.partial')} is in use by another run (it holds the lock "
                f"{lock}); wait for it to finish, or write to another output"
            ) from None
        except BaseException:
            os.close(handle)
            raise
        try:
            same = os.path.samestat(os.fstat(handle), os.stat(lock))
        except FileNotFoundError:  # the run that held it finished and removed the folder meanwhile
            same = False
        if same:
            break
        os.close(handle)
    else:
        raise OutputInUse(f"{folder}: could not take the lock {lock}; is another run starting and finishing there?")
    try:
        yield
    finally:
        os.close(handle)  # releases the lock (the folder may be gone: a finished run removes it)


def _extract_locked(
    where: OutputPaths,
    files: list[InputFile],
    file_labels: list[str] | None,
    extractor: DeepSpectrum,
    settings: dict[str, Any],
    *,
    began: float,
    window: float | None,
    hop: float | None,
    start: float,
    end: float | None,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    restart: bool,
    progress: bool,
    verbose: bool,
    max_files: int | None,
) -> dict[str, Any]:
    done = _open_partial(where, settings, restart)
    todo = [item for item in files if not isinstance(done.entries.get(item.key), tuple)]  # new, changed or failed
    already = len(files) - len(todo)
    retried = sum(isinstance(done.entries.get(item.key), str) for item in files)
    if (already or retried) and verbose:
        again = f"; retrying {retried} that failed" if retried else ""
        print(f"resuming {where.partial}: {already} of {len(files)} files already done{again}", file=sys.stderr)
    if max_files is not None:
        todo = todo[: max(0, max_files)]
    crop = {"window": window, "hop": hop, "start": start, "end": end}
    was_training = extractor.training
    extractor.to(device).eval()
    try:
        with tqdm(total=len(todo), unit="file", desc="deepspectrum", file=sys.stderr, disable=not progress) as bar:
            for results in _extract_groups(todo, extractor, crop, batch_size, device, dtype, bar):
                done.add_shard(_write_shard(where.partial, done.next_shard(), results))
                if verbose:
                    for item, result in results:
                        if isinstance(result, str):
                            tqdm.write(f"skipped {item.path}: {result}", file=sys.stderr)
    finally:
        extractor.train(was_training)
    attempted = {item.key for item in todo}
    complete = all(isinstance(done.entries.get(item.key), tuple) or item.key in attempted for item in files)
    summary = {
        "out": str(where.out),
        "files": len(files),
        "already_done": already,
        "processed": len(todo),
        "failed": sum(isinstance(done.entries.get(item.key), str) for item in files),
        "rows": sum(done.entries[item.key][2] for item in files if isinstance(done.entries.get(item.key), tuple)),
        "dim": extractor.dim,
        "complete": complete,
        "errors": None,
    }
    if complete:
        _assemble(where, files, file_labels, done, extractor.dim, windowed=window is not None)
        summary["errors"] = str(where.errors) if summary["failed"] else None
        shutil.rmtree(where.partial)
    summary["seconds"] = round(time.monotonic() - began, 3)
    return summary


_Result = tuple[list[float], np.ndarray] | str  # (window starts, features (rows, D)) or the problem


@dataclass
class _Decoded:
    index: int  # position in the group
    starts: list[float]
    pieces: list[torch.Tensor]


def _extract_groups(
    todo: Sequence[InputFile],
    extractor: DeepSpectrum,
    crop: dict[str, Any],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    bar: tqdm,
) -> Iterator[list[tuple[InputFile, _Result]]]:
    """Decode files in order and yield, per group of about ``batch_size * GROUP_BATCHES`` images, every file's
    result in input order."""
    rate = extractor.images.sample_rate
    max_images, max_samples = batch_size * GROUP_BATCHES, int(GROUP_MAX_SECONDS * rate)
    group: list[tuple[InputFile, _Result | _Decoded]] = []
    images = samples = 0
    for item in todo:
        decoded = _decode(item, rate, extractor.images.min_samples(), crop)
        if isinstance(decoded, str):
            bar.update(1)
            group.append((item, decoded))
        else:
            group.append((item, _Decoded(len(group), *decoded)))
            images += len(decoded[1])
            samples += sum(piece.shape[0] for piece in decoded[1])
        if images >= max_images or samples >= max_samples:
            yield _run_group(group, extractor, batch_size, device, dtype, bar)
            group, images, samples = [], 0, 0
    if group:
        yield _run_group(group, extractor, batch_size, device, dtype, bar)


def _decode(
    item: InputFile, rate: int, min_samples: int, crop: dict[str, Any]
) -> tuple[list[float], list[torch.Tensor]] | str:
    """The file's window start times and waveform pieces, or what is wrong with it."""
    if item.path.is_dir():
        return f"a folder with no audio files in it (extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"
    try:
        waveform = load_audio(item.path, rate, min_duration=min_samples / rate)
    except AudioError as err:
        return err.problem
    except OSError as err:  # e.g. permission denied between the checks and the read
        return f"cannot read the file ({err})"
    try:
        windows = plan_windows(waveform.shape[0], rate, **crop)
    except ValueError as err:  # the crop starts after the end of the file
        return str(err)
    short = min(stop - begin for begin, stop in windows.spans)
    if short < min_samples:
        return (
            f"the window/crop leaves {short} samples ({short / rate:.3f} s); a spectrogram image needs at least "
            f"{min_samples} ({min_samples / rate:.3f} s)"
        )
    return windows.starts, [waveform[begin:stop] for begin, stop in windows.spans]


def _run_group(
    group: list[tuple[InputFile, _Result | _Decoded]],
    extractor: DeepSpectrum,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    bar: tqdm,
) -> list[tuple[InputFile, _Result]]:
    """Features of every image of the group, ``batch_size`` images per forward, longest first (little padding)."""
    decoded = [entry for _, entry in group if isinstance(entry, _Decoded)]
    features = {d.index: np.empty((len(d.pieces), extractor.dim), dtype=np.float32) for d in decoded}
    left = {d.index: len(d.pieces) for d in decoded}
    pieces = [(d.index, row, piece) for d in decoded for row, piece in enumerate(d.pieces)]
    pieces.sort(key=lambda entry: -entry[2].shape[0])  # stable: equal lengths keep their order
    for begin in range(0, len(pieces), batch_size):
        batch = pieces[begin : begin + batch_size]
        values = _forward(extractor, [piece for _, _, piece in batch], device, dtype)
        for (index, row, _), value in zip(batch, values):
            features[index][row] = value
            left[index] -= 1
            bar.update(int(left[index] == 0))
    results: list[tuple[InputFile, _Result]] = []
    for item, entry in group:
        if isinstance(entry, _Decoded):
            values = features[entry.index]
            ok = np.isfinite(values).all()
            entry = (entry.starts, values) if ok else "the backbone produced non-finite features (NaN/Inf)"
        results.append((item, entry))
    return results


def _forward(
    extractor: DeepSpectrum, pieces: list[torch.Tensor], device: torch.device, dtype: torch.dtype | None
) -> np.ndarray:
    """Zero-padded waveforms with their lengths -> features ``(len(pieces), D)`` float32. The images are rendered
    in float32; only the backbone runs under autocast."""
    lengths = torch.tensor([piece.shape[0] for piece in pieces], dtype=torch.long)
    waveforms = torch.zeros(len(pieces), int(lengths.max()), dtype=torch.float32)
    for row, piece in enumerate(pieces):
        waveforms[row, : piece.shape[0]] = piece
    with torch.inference_mode():
        images = extractor.images(waveforms.to(device), lengths.to(device))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            features = extractor.features_of_images(images)
    if features.shape != (len(pieces), extractor.dim):
        expected = (len(pieces), extractor.dim)
        raise RuntimeError(f"the extractor returned features of shape {tuple(features.shape)}, expected {expected}")
    return features.float().cpu().numpy()


# ---------------------------------------------------------------------------------------------------- partial folder


class _Done:
    """What the partial folder holds: ``entries[key]`` is ``(shard, first row, rows)`` or an error message."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, tuple[Path, int, int] | str] = {}
        self.count = 0

    def next_shard(self) -> int:
        self.count += 1
        return self.count

    def add_shard(self, shard: Path) -> None:
        try:
            with np.load(shard, allow_pickle=False) as data:
                keys, counts = data["keys"].tolist(), data["counts"].tolist()
                failed, errors = data["failed_keys"].tolist(), data["errors"].tolist()
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(
                f"{shard}: unreadable shard of an earlier run ({err}); rerun with --restart (restart=True)"
            ) from err
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
        for key, first, count in zip(keys, offsets, counts):
            self.entries[key] = (shard, first, count)
        self.entries.update(zip(failed, errors))
        self.count = max(self.count, int(shard.stem.split("-")[-1]))


def _open_partial(where: OutputPaths, settings: dict[str, Any], restart: bool) -> _Done:
    """Create the partial folder, or check an existing one's settings and read what it holds."""
    settings = json.loads(json.dumps(settings))  # as stored: tuples -> lists
    folder = where.partial
    if restart and folder.is_dir():
        for entry in folder.iterdir():  # all but the lock this run holds
            if entry.name != LOCK_FILE:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    done = _Done(folder)
    stored_file = folder / SETTINGS_FILE
    shards = sorted(folder.glob(SHARD_GLOB)) if folder.is_dir() else []
    if stored_file.is_file():
        try:
            stored = json.loads(stored_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{stored_file}: unreadable ({err}); rerun with --restart (restart=True)") from err
        if stored != settings:
            changes = "; ".join(_differences(stored, settings)[:6])
            raise ValueError(
                f"{folder} holds work done with other settings ({changes}); rerun with the same settings to "
                f"resume it, or add --restart (restart=True) to discard it"
            )
    elif shards:
        raise ValueError(f"{folder} has shards but no {SETTINGS_FILE}; rerun with --restart (restart=True)")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stored_file, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    for shard in shards:
        done.add_shard(shard)
    return done


def _differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(now), key=str):
            found += _differences(before.get(key), now.get(key), f"{prefix}{key}.")
        return found
    return [] if before == now else [f"{prefix.rstrip('.')}: {before!r} then, {now!r} now"]


def _write_shard(folder: Path, number: int, results: list[tuple[InputFile, _Result]]) -> Path:
    ok = [(item.key, result) for item, result in results if not isinstance(result, str)]
    failed = [(item.key, result) for item, result in results if isinstance(result, str)]
    dim = next((values.shape[1] for _, (_, values) in ok), 0)
    arrays = {
        "keys": np.array([key for key, _ in ok], dtype=str),
        "counts": np.array([len(starts) for _, (starts, _) in ok], dtype=np.int64),
        "starts": np.array([t for _, (starts, _) in ok for t in starts], dtype=np.float64),
        "features": np.concatenate([values for _, (_, values) in ok]) if ok else np.empty((0, dim), np.float32),
        "failed_keys": np.array([key for key, _ in failed], dtype=str),
        "errors": np.array([error for _, error in failed], dtype=str),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = folder / f"shard-{number:06d}.npz"
    atomic_write_bytes(path, buffer.getvalue())
    return path


@functools.lru_cache(maxsize=4)
def _shard_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["starts"], data["features"]


# ---------------------------------------------------------------------------------------------------- output


def _assemble(
    where: OutputPaths,
    files: Sequence[InputFile],
    labels: list[str] | None,
    done: _Done,
    dim: int,
    *,
    windowed: bool,
) -> None:
    """Write the output (temporary file, then rename) from the shards in input order, then the sidecars."""
    suffix = where.out.suffix.lower()
    entries = [done.entries[item.key] for item in files]
    rows = sum(entry[2] for entry in entries if isinstance(entry, tuple))
    writer = {".csv": _CsvWriter, ".npy": _NpyWriter, ".parquet": _ParquetWriter}[suffix]
    index_lines: list[list[str]] = []
    _shard_arrays.cache_clear()
    try:
        text = suffix == ".csv"
        with (
            _AtomicOutput(where.out) as tmp,
            open(tmp, "w" if text else "wb", encoding="utf-8" if text else None, newline="" if text else None) as file,
        ):
            sink = writer(file, dim, rows, windowed, labels is not None)
            for chunk in _chunks(files, labels, done):
                sink.write(*chunk)
                if suffix == ".npy":
                    index_lines += _index_rows(*chunk[:3], windowed)
            sink.close()
    finally:
        _shard_arrays.cache_clear()
    if suffix == ".npy":
        header = [NAME_COLUMN, *([TIME_COLUMN] if windowed else []), *([CLASS_COLUMN] if labels is not None else [])]
        atomic_write_text(where.index, _csv_text([header, *index_lines]))
    failures = [[str(item.path), done.entries[item.key]] for item in files if isinstance(done.entries[item.key], str)]
    if failures:
        atomic_write_text(where.errors, _csv_text([["path", "error"], *failures]))
    else:
        where.errors.unlink(missing_ok=True)  # from an earlier run of this output


def _chunks(
    files: Sequence[InputFile], labels: list[str] | None, done: _Done
) -> Iterator[tuple[list[str], list[float], list[str] | None, np.ndarray]]:
    """``(names, starts, classes, features)`` of about ``ASSEMBLY_ROWS`` rows at a time, in input order."""
    names: list[str] = []
    starts: list[float] = []
    classes: list[str] = []
    blocks: list[np.ndarray] = []
    for position, item in enumerate(files):
        entry = done.entries[item.key]
        if isinstance(entry, str):
            continue
        shard, first, count = entry
        shard_starts, shard_features = _shard_arrays(shard)
        names += [item.name] * count
        starts += shard_starts[first : first + count].tolist()
        classes += [labels[position]] * count if labels is not None else []
        blocks.append(shard_features[first : first + count])
        if len(names) >= ASSEMBLY_ROWS:
            yield names, starts, classes if labels is not None else None, np.concatenate(blocks)
            names, starts, classes, blocks = [], [], [], []
    if names:
        yield names, starts, classes if labels is not None else None, np.concatenate(blocks)


def _index_rows(names: list[str], starts: list[float], classes: list[str] | None, windowed: bool) -> list[list[str]]:
    rows = []
    for i, name in enumerate(names):
        rows.append([name, *([repr(starts[i])] if windowed else []), *([classes[i]] if classes is not None else [])])
    return rows


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


class _AtomicOutput:
    """A temporary file beside ``path`` (its name on entering), renamed over ``path`` when the block succeeds."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = create_beside(self.path)
        os.close(handle)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.tmp.unlink(missing_ok=True)
            return
        if self.path.exists():
            os.chmod(self.tmp, self.path.stat().st_mode & 0o777)
        os.replace(self.tmp, self.path)


class _CsvWriter:
    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        self.file = file
        self.writer = csv.writer(self.file, lineterminator="\n")
        self.windowed = windowed
        features = [f"{FEATURE_PREFIX}{i}" for i in range(dim)]  # neuron_0 .. neuron_{D-1}, as the toolkit
        header = [NAME_COLUMN, *([TIME_COLUMN] if windowed else []), *features, *([CLASS_COLUMN] if labelled else [])]
        self.writer.writerow(header)

    def write(self, names, starts, classes, features: np.ndarray) -> None:
        for i, values in enumerate(features.tolist()):
            row = [names[i], *([repr(starts[i])] if self.windowed else []), *map(FEATURE_FORMAT.format, values)]
            self.writer.writerow(row + ([classes[i]] if classes is not None else []))

    def close(self) -> None:
        _synced(self.file)


class _NpyWriter:
    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        self.file = file
        self.expected, self.written = rows, 0
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (rows, dim)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, names, starts, classes, features: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(features, dtype="<f4").tobytes())
        self.written += features.shape[0]

    def close(self) -> None:
        _synced(self.file)
        if self.written != self.expected:
            raise RuntimeError(f"wrote {self.written} rows, the header announces {self.expected}")


class _ParquetWriter:
    def __init__(self, file: IO, dim: int, rows: int, windowed: bool, labelled: bool):
        pa, pq = _pyarrow()
        self.pa, self.windowed, self.dim = pa, windowed, dim
        fields = [pa.field(NAME_COLUMN, pa.string())]
        fields += [pa.field(TIME_COLUMN, pa.float64())] if windowed else []
        fields += [pa.field(CLASS_COLUMN, pa.string())] if labelled else []
        fields += [pa.field("features", pa.list_(pa.float32(), dim))]
        self.schema = pa.schema(fields)
        self.file = file
        self.writer = pq.ParquetWriter(file, self.schema)

    def write(self, names, starts, classes, features: np.ndarray) -> None:
        pa = self.pa
        flat = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1), type=pa.float32())
        columns = [pa.array(names, pa.string())]
        columns += [pa.array(starts, pa.float64())] if self.windowed else []
        columns += [pa.array(classes, pa.string())] if classes is not None else []
        columns += [pa.FixedSizeListArray.from_arrays(flat, self.dim)]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()
        _synced(self.file)


def _synced(file: IO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise ImportError(
            "writing .parquet needs pyarrow (pip install pyarrow, or the dev extra: pip install -e '.[dev]'); "
            "or write .csv / .npy"
        ) from err
    return pyarrow, pyarrow.parquet


# ---------------------------------------------------------------------------------------------------- command line


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``sermodels features deepspectrum``: arguments of :func:`extract_to_file` and :func:`build_extractor`."""
    p = sub.add_parser(
        "deepspectrum",
        help="Deep Spectrum features (spectrogram images through an ImageNet CNN) of audio files to CSV/NPY/Parquet",
        description="Deep Spectrum features of audio files and folders (searched recursively), one row per file or "
        "per window. Interrupted runs resume from OUT.partial/ when rerun with the same settings.",
    )
    p.add_argument("paths", nargs="+", metavar="IN", help="audio files or folders (searched recursively)")
    p.add_argument("-o", "--out", required=True, help="output file: .csv, .npy (+ <stem>.index.csv) or .parquet")
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
        help=f"images per forward pass (default: {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="backbone autocast: fp32, bf16, or fp16 (CUDA only)",
    )
    p.add_argument("--restart", action="store_true", help="discard OUT.partial/ of an earlier run instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run_cli)
    return p


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
