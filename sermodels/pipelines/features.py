"""``sermodels features deepspectrum|av_spnet``: features of audio files written to CSV, NPY or Parquet
(:func:`extract_to_file` for code; the command line: :mod:`sermodels.pipelines.features_cli`). It runs on the batch
engine (:mod:`sermodels.pipelines.engine`) with a resumable partial folder (:mod:`sermodels.pipelines.resume`) and
the feature writers (:mod:`sermodels.pipelines.writers`).

Extractors: anything that computes one vector of ``D`` features per waveform, described by a
:class:`FeatureExtractor` (sample rate, ``D``, the fewest samples one row needs, its settings, the module that runs
and the batch computation); everything below is the same for all of them.

- ``deepspectrum``: Deep Spectrum (spectrogram images through an ImageNet CNN, :class:`DeepSpectrum`, built by
  :func:`build_extractor`); a :class:`DeepSpectrum` passed to :func:`extract_to_file` is wrapped in
  :class:`DeepSpectrumFeatures`. One row needs one spectrogram image
  (:meth:`~sermodels.features.spectrogram_image.SpectrogramImage.min_samples`: ``n_fft`` samples for the toolkit's
  uncentred STFT).
- ``av_spnet``: the frozen front-end of a trained AV-SpNET model, the mean over the clip's 810 ms segments of the
  flattened conv maps or of the shared FC layer (:class:`~sermodels.pipelines.model_features.AVSpNetFeatures`,
  loaded by :func:`~sermodels.pipelines.model_features.load_av_spnet`). One row needs one whole segment
  (``ceil(model.min_duration * rate)`` samples, 0.81 s).

What is written
- One row per file, or per window with ``window``/``hop`` (:func:`sermodels.features.windows.plan_windows`),
  in input order (the arguments as given, each folder's audio files sorted by path), windows in time order.
- ``.csv``: the Deep Spectrum toolkit's columns ``name, timeStamp, neuron_0 .. neuron_{D-1}, class`` (numbered
  from 0, as the toolkit's feature writer enumerates the vector); ``timeStamp`` (the window's start, seconds from
  the file start) only when windowed, ``class`` only with labels. Values are written with 9 significant digits,
  which round-trip float32 exactly. Every extractor writes these column names (``neuron_i`` for AV-SpNET too): the
  writers (:mod:`sermodels.pipelines.writers`) name the columns as the toolkit does, and one layout lets the same
  reader take the output of either extractor; what the columns hold is in the settings of the run.
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
  removed when a run has none. A file, window or crop shorter than one row needs (above) fails as too short; a
  ``window`` shorter than that is refused before any work.

Labels
- A table (``labels``: CSV, or TSV when its header has tabs and no commas) with a header row; the first column holds
  names, the second labels. A file takes the label of its ``name`` (as above), else of its file name, else of
  either without the audio extension (so a table written for ``.wav`` originals labels ``.flac`` copies). An input
  file without a label is an error before any work is done.
- ``folder_labels``: the name of the file's parent folder is its label (a class-per-folder corpus); with a table
  too, the table's label wins and the folder name labels the files the table does not name.
- Labels do not change the features: they are attached when the output is assembled.

Resumable runs
- Work goes into ``<out>.partial/``: ``settings.json`` (the extractor's ``config()`` (Deep Spectrum: backbone,
  layer, image and pooling; AV-SpNET: the model's architecture and arguments, and the layer), its weights' identity
  (``hub:``/``random:``/``sha256:`` of a weights file; AV-SpNET: ``sha256:`` of the model's safetensors) and a
  sha256 of its state dict, window/crop, precision, the python/sermodels/torch/timm versions, and the device type when
  the precision is not fp32) and one ``shard-NNNNNN.npz`` (plain arrays, no pickle) per group of about
  ``batch_size x GROUP_BATCHES`` rows, written atomically (temporary file + rename) when the group's files are
  done. A file's rows (or its error) are in one shard, so an interruption loses at most the group in flight.
- A run holds an exclusive lock on ``<out>.partial/lock`` (``fcntl.flock``) from start to end; a second run on the
  same output fails at once ("in use by another run") instead of mixing its shards in.
- A run whose output has a partial folder skips the files done there, if its settings are the same; with other
  settings it refuses (naming what differs) unless ``restart`` discards the folder. A file is known by its absolute
  path, size and modification time (``st_mtime_ns``), so a file replaced or touched since is computed again; files
  that failed are retried, and a later success replaces the earlier error. Batch size and, in fp32, the device are
  not settings: a clip's features do not depend on its batch
  (:class:`~sermodels.features.spectrogram_image.SpectrogramImage`; AV-SpNET continues each clip of a padded batch
  by reflection before its STFT); under bf16/fp16 autocast the kernels differ by
  device type, so the device type is one.
- When every input is done, the output is assembled shard by shard into a temporary file renamed over ``out``, the
  sidecars are written, and the partial folder is removed.

Batching: decoded files are grouped, their pieces (the whole file or its windows, of several files together) sorted
by length, and passed ``batch_size`` at a time through the extractor under ``torch.inference_mode()``, in eval mode.
Spectrograms are computed in float32; ``precision`` (bf16, fp16 on CUDA) is an autocast of the network only (Deep
Spectrum's backbone, since a power spectrogram overflows float16; AV-SpNET's encoder and shared FC).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sermodels._io import AtomicFile, atomic_write_text, sha256_of, software_versions
from sermodels.features.deepspectrum import DS_BACKBONE, DeepSpectrum
from sermodels.features.spectrogram_image import SpectrogramImage
from sermodels.features.windows import plan_windows
from sermodels.pipelines.engine import BatchEngine, Cut, Finished, steps
from sermodels.pipelines.inputs import InputFile, assign_labels, list_inputs, read_label_table
from sermodels.pipelines.resume import OutputInUse, PartialFolder, locked
from sermodels.pipelines.writers import (
    CLASS_COLUMN,
    FEATURE_WRITERS,
    NAME_COLUMN,
    TIME_COLUMN,
    pyarrow,
    rows_csv,
)
from sermodels.runtime import autocast_dtype, weights_digest

__all__ = [
    "DeepSpectrumFeatures",
    "FeatureExtractor",
    "OutputInUse",
    "OutputPaths",
    "as_extractor",
    "build_extractor",
    "check_window",
    "extract_to_file",
]

FORMATS = tuple(FEATURE_WRITERS)  # .csv, .npy, .parquet
DEFAULT_BATCH_SIZE = 32
GROUP_BATCHES = 4  # a shard holds about this many batches of images: the most work an interruption can lose
GROUP_MAX_SECONDS = 1800.0  # decoded audio held at once (a single longer file is still taken whole)
ASSEMBLY_ROWS = 4096  # rows per write while assembling the output
PARTIAL_FORMAT = 2  # layout version of the partial folder (2: files keyed by path, size and mtime)
VERSIONED_PACKAGES = ("sermodels", "torch", "timm")  # recorded in the settings: features may change with them


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
            pyarrow()  # fail before hours of work, not at the end
        stem = out.with_suffix("")
        return cls(out, out.with_name(out.name + ".partial"), Path(f"{stem}.index.csv"), Path(f"{stem}.errors.csv"))


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


class FeatureExtractor:
    """What the engine needs of a feature extractor: one vector of ``dim`` float32 features per waveform.

    ``module`` is what runs (moved to the device, in eval mode; the sha256 of its state dict is a setting);
    ``sample_rate`` the rate files are decoded at; :meth:`min_samples` the fewest samples one row needs (shorter
    files, windows and crops are refused); :meth:`config` the JSON settings the features depend on besides the
    weights; :meth:`features` the batch computation. ``name`` labels the progress bar, ``unit`` names what
    :meth:`min_samples` is the need of in messages, ``nonfinite`` is the error of a file whose features are not
    finite.
    """

    name = "features"
    unit = "one row"
    nonfinite = "the extractor produced non-finite features (NaN/Inf)"
    module: nn.Module
    sample_rate: int
    dim: int

    def min_samples(self) -> int:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """Zero-padded waveforms ``(B, T)`` float32 and their lengths ``(B,)`` -> ``(B, dim)`` features; ``dtype``:
        the autocast dtype (None: fp32)."""
        raise NotImplementedError

    def check_window(self, window: float | None) -> None:
        """Refuse a window shorter than one row needs (every file would fail), before any work."""
        if window is None:
            return
        rate, need = self.sample_rate, self.min_samples()
        size = int(round(window * rate))
        if size < need:
            raise ValueError(
                f"window {window} s is {size} samples at {rate} Hz; {self.unit} needs at least {need} samples "
                f"({need / rate:.3f} s): use a longer --window"
            )


class DeepSpectrumFeatures(FeatureExtractor):
    """A :class:`DeepSpectrum` for the engine. The images are rendered in float32; only the backbone runs under
    autocast (a power spectrogram overflows float16)."""

    name = "deepspectrum"
    unit = "a spectrogram image"
    nonfinite = "the backbone produced non-finite features (NaN/Inf)"

    def __init__(self, extractor: DeepSpectrum):
        self.module = extractor
        self.sample_rate = extractor.images.sample_rate
        self.dim = extractor.dim

    def min_samples(self) -> int:
        return self.module.images.min_samples()

    def config(self) -> dict[str, Any]:
        return self.module.config()

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        images = self.module.images(waveforms, lengths)
        with torch.autocast(waveforms.device.type, dtype=dtype, enabled=dtype is not None):
            return self.module.features_of_images(images)

    def check_window(self, window: float | None) -> None:
        check_window(self.module.images, window)


def as_extractor(extractor: DeepSpectrum | FeatureExtractor) -> FeatureExtractor:
    """A :class:`DeepSpectrum` wrapped for the engine; a :class:`FeatureExtractor` as is."""
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if isinstance(extractor, DeepSpectrum):
        return DeepSpectrumFeatures(extractor)
    raise TypeError(f"extractor must be a DeepSpectrum or a FeatureExtractor, got {type(extractor).__name__}")


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available here; use --device cpu")
    return device


# ---------------------------------------------------------------------------------------------------- extraction


def extract_to_file(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    extractor: DeepSpectrum | FeatureExtractor,
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
    """Extract the features of the audio files and folders in ``paths`` into ``out`` (module docstring).

    ``extractor``: a :class:`FeatureExtractor`, or a :class:`DeepSpectrum` (wrapped in :class:`DeepSpectrumFeatures`).
    ``labels``: a label table file or a ``name -> label`` mapping. ``weights_id``: how the extractor's weights were
    obtained (:func:`build_extractor`, :func:`~sermodels.pipelines.model_features.load_av_spnet`), stored with the
    settings. ``verbose``: resume counts and failures on
    stderr. ``max_files``: process at most this many not-yet-done files in this call and return without assembling
    (``complete`` False, the partial folder kept); a later call goes on (test hook, and a way to bound a call).

    Returns ``out``, ``files`` (inputs), ``already_done`` (skipped: done by an earlier call; files that failed
    there are not done, they are retried), ``processed`` (by this call), ``failed`` (files in the errors file),
    ``rows``, ``dim``, ``complete``, ``errors`` (its path or None), ``seconds``. Raises :class:`OutputInUse` when
    another run holds the output's lock, ValueError for a ``window`` shorter than one row needs.
    """
    began = time.monotonic()
    where = OutputPaths.of(out)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = resolve_device(device)
    dtype = autocast_dtype(precision, device)
    hop = hop if hop is not None or window is None else window
    extractor = as_extractor(extractor)
    rate = extractor.sample_rate
    plan_windows(int(round(start * rate)) + 1, rate, window, hop, start, end)  # argument errors, before any work
    extractor.check_window(window)
    files = list_inputs(paths)
    table = read_label_table(labels) if isinstance(labels, (str, os.PathLike)) else labels
    file_labels = assign_labels(files, table, folder_labels)
    settings = {
        "partial_format": PARTIAL_FORMAT,
        "extractor": extractor.config(),
        "weights": weights_id,
        "weights_state_sha256": weights_digest(extractor.module),
        "window": window,
        "hop": hop,
        "start": float(start),
        "end": end,
        "precision": precision,
        "versions": software_versions(*VERSIONED_PACKAGES),
    }
    if precision != "fp32":  # autocast kernels differ by device type; fp32 features do not depend on the device
        settings["device_type"] = device.type
    min_samples = extractor.min_samples()
    engine = BatchEngine(
        module=extractor.module,
        sample_rate=rate,
        forward=partial(_features, extractor, dtype),
        combine=_stack,
        cut=partial(_cut, rate=rate, min_samples=min_samples, unit=extractor.unit,
                    crop={"window": window, "hop": hop, "start": start, "end": end}),
        min_duration=min_samples / rate,
        batch_size=batch_size,
        window_batches=GROUP_BATCHES,
        window_seconds=GROUP_MAX_SECONDS,
        device=device,
        nonfinite=extractor.nonfinite,
    )  # fmt: skip
    with locked(where.partial):
        partial_folder = PartialFolder.open(where.partial, settings, restart)
        summary = _extract(
            where,
            files,
            partial_folder,
            engine,
            desc=extractor.name,
            progress=progress,
            verbose=verbose,
            max_files=max_files,
        )
        summary["dim"] = extractor.dim
        if summary["complete"]:
            _assemble(where, files, file_labels, partial_folder, extractor.dim, windowed=window is not None)
            summary["errors"] = str(where.errors) if summary["failed"] else None
            partial_folder.remove()
    summary["seconds"] = round(time.monotonic() - began, 3)
    return summary


def _cut(samples: int, *, rate: int, min_samples: int, unit: str, crop: dict[str, Any]) -> Cut:
    """The file's row spans and their start times; a ValueError says why the crop leaves nothing usable."""
    windows = plan_windows(samples, rate, **crop)  # ValueError: the crop starts after the end of the file
    short = min(stop - begin for begin, stop in windows.spans)
    if short < min_samples:
        raise ValueError(
            f"the window/crop leaves {short} samples ({short / rate:.3f} s); {unit} needs at least {min_samples} "
            f"({min_samples / rate:.3f} s)"
        )
    return Cut(windows.spans, windows.starts)


def _features(
    extractor: FeatureExtractor, dtype: torch.dtype | None, waveforms: torch.Tensor, lengths: torch.Tensor
) -> list[torch.Tensor]:
    """Padded waveforms and their lengths -> one feature vector ``(D,)`` float32 per row, on the CPU."""
    features = extractor.features(waveforms, lengths, dtype)
    if features.shape != (waveforms.shape[0], extractor.dim):
        expected = (waveforms.shape[0], extractor.dim)
        raise RuntimeError(f"the extractor returned features of shape {tuple(features.shape)}, expected {expected}")
    return list(features.float().cpu())


def _stack(outputs: list[torch.Tensor], cut: Cut) -> torch.Tensor:
    return torch.stack(outputs)  # (windows, D), in time order


def _extract(
    where: OutputPaths,
    files: list[InputFile],
    partial_folder: PartialFolder,
    engine: BatchEngine,
    *,
    desc: str,
    progress: bool,
    verbose: bool,
    max_files: int | None,
) -> dict[str, Any]:
    """Run the engine over the files not done yet, one shard per window of the engine; count what is done."""
    todo = [item for item in files if not partial_folder.done(item.key)]  # new, changed or failed
    already = len(files) - len(todo)
    retried = sum(partial_folder.failed(item.key) for item in files)
    if (already or retried) and verbose:
        again = f"; retrying {retried} that failed" if retried else ""
        print(f"resuming {where.partial}: {already} of {len(files)} files already done{again}", file=sys.stderr)
    if max_files is not None:
        todo = todo[: max(0, max_files)]
    pending: list[Finished] = []
    with steps(engine, [item.path for item in todo], desc=desc, progress=progress) as run:
        for step in run:
            pending += step.finished
            if verbose:
                for done in step.finished:
                    if not done.ok:
                        tqdm.write(f"skipped {todo[done.index].path}: {done.problem}", file=sys.stderr)
            if step.window_end and pending:
                partial_folder.write_shard(_shard_items(todo, pending))
                pending = []
        if pending:
            partial_folder.write_shard(_shard_items(todo, pending))
    attempted = {item.key for item in todo}
    return {
        "out": str(where.out),
        "files": len(files),
        "already_done": already,
        "processed": len(todo),
        "failed": sum(partial_folder.failed(item.key) for item in files),
        "rows": sum(partial_folder.entries[item.key][2] for item in files if partial_folder.done(item.key)),
        "complete": all(partial_folder.done(item.key) or item.key in attempted for item in files),
        "errors": None,
    }


def _shard_items(todo: Sequence[InputFile], finished: list[Finished]) -> list[tuple]:
    items: list[tuple] = []
    for done in finished:
        key = todo[done.index].key
        items.append((key, done.problem) if not done.ok else (key, done.cut.info, done.result.numpy()))
    return items


# ---------------------------------------------------------------------------------------------------- output


def _assemble(
    where: OutputPaths,
    files: Sequence[InputFile],
    labels: list[str] | None,
    partial_folder: PartialFolder,
    dim: int,
    *,
    windowed: bool,
) -> None:
    """Write the output (temporary file, then rename) from the shards in input order, then the sidecars."""
    suffix = where.out.suffix.lower()
    rows = sum(partial_folder.entries[item.key][2] for item in files if partial_folder.done(item.key))
    writer = FEATURE_WRITERS[suffix]
    index_lines: list[list[str]] = []
    text = not writer.binary
    with (
        AtomicFile(where.out) as tmp,
        open(tmp, "w" if text else "wb", encoding="utf-8" if text else None, newline="" if text else None) as file,
    ):
        sink = writer(file, dim, rows, windowed, labels is not None)
        for chunk in _chunks(files, labels, partial_folder):
            sink.write(*chunk)
            if suffix == ".npy":
                index_lines += _index_rows(*chunk[:3], windowed)
        sink.close()
    if suffix == ".npy":
        header = [NAME_COLUMN, *([TIME_COLUMN] if windowed else []), *([CLASS_COLUMN] if labels is not None else [])]
        atomic_write_text(where.index, rows_csv([header, *index_lines]))
    failures = [[str(item.path), partial_folder.entries[item.key]] for item in files if partial_folder.failed(item.key)]
    if failures:
        atomic_write_text(where.errors, rows_csv([["path", "error"], *failures]))
    else:
        where.errors.unlink(missing_ok=True)  # from an earlier run of this output


def _chunks(
    files: Sequence[InputFile], labels: list[str] | None, partial_folder: PartialFolder
) -> Iterator[tuple[list[str], list[float], list[str] | None, np.ndarray]]:
    """``(names, starts, classes, features)`` of about ``ASSEMBLY_ROWS`` rows at a time, in input order."""
    names: list[str] = []
    starts: list[float] = []
    classes: list[str] = []
    blocks: list[np.ndarray] = []
    for position, item in enumerate(files):
        if not partial_folder.done(item.key):
            continue
        file_starts, values = partial_folder.rows(item.key)
        names += [item.name] * len(values)
        starts += file_starts.tolist()
        classes += [labels[position]] * len(values) if labels is not None else []
        blocks.append(values)
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
