"""The batch engine every pipeline runs on: audio files in, one result per file out, memory bounded, bad files skipped.

A pipeline (``predict``, ``features deepspectrum``, ...) describes its job with a :class:`BatchEngine`: the module,
how a decoded file is cut into the pieces the module sees (:attr:`BatchEngine.cut`: chunks of a long file, windows
of a crop), what the module computes on a padded batch (:attr:`BatchEngine.forward`: one output per piece) and how
a file's piece outputs make its result (:attr:`BatchEngine.combine`: a length-weighted mean, pieces concatenated in
time, rows stacked). :meth:`BatchEngine.run` does the rest, the same way for all of them:

- Files are decoded with :func:`sermodels.audio.load_audio` at the module's sample rate and consumed in input order.
  A file that cannot be used (missing, empty, not audio, truncated, too short, NaN samples, a cut that leaves nothing
  usable, an output that is not finite) becomes a failure with its reason; the run goes on. With
  ``decode_workers > 1`` a pool of threads decodes ahead of the model (libsndfile, numpy and soxr release the GIL,
  so threads scale without the cost of shipping waveforms between processes); at most ``read_ahead`` files are
  decoded or being decoded beyond the one the engine consumes, and they are consumed in input order, so the steps,
  results and failure messages are exactly those of serial decoding. Threads stop scaling when files are short:
  about half the time of a 3-second clip is Python in soundfile and :func:`~sermodels.audio.load_audio`, which holds
  the GIL; ``decode_processes`` then decodes in spawned processes instead (groups of
  :data:`PROCESS_GROUP_FILES` files a task, samples sent back as pickled arrays; a few seconds to start).
- Decoded files are gathered into windows of at most ``batch_size * window_batches`` pieces and about
  ``window_seconds`` of audio; inside a window the pieces are sorted longest first (stable, so equal lengths keep
  input order and batches are deterministic) and cut into batches of at most ``batch_size`` pieces and
  ``max_batch_seconds`` of padded audio. Memory does not grow with the number of files; the waveform of one long
  file is still held whole (4 bytes a sample: one hour at 16 kHz is 230 MB), only the module sees it in pieces.
- Each batch is zero-padded on the right (one C++ call, no Python loop per row) and passed with its true lengths
  under ``torch.inference_mode()``, the module on ``device`` in eval mode (its train/eval mode is restored
  afterwards). For a CUDA device the batch is copied through pinned (page-locked) host memory without blocking, so
  the copy overlaps the host's work on the next batch; on the CPU the batch is used as built.
- With ``resample_on_device`` the workers decode at each file's own rate and the waveform is resampled on ``device``
  (:func:`sermodels.features.resample.resample`, windowed sinc) instead of by soxr on the host: the host then only
  decodes, which matters when the CPUs and not the accelerator limit throughput.
- :meth:`~BatchEngine.run` yields a :class:`Step` after every batch with the files that batch finished (a file is
  finished when the last of its pieces has been through the module, not at the end of its window) and after every
  decoding failure, so a caller can save finished work between two batches; ``window_end`` marks the last batch of
  a window, a natural point to write a shard.

What stays with each pipeline: its inputs and settings, what it does with finished files (``predict`` keeps them in
memory and writes timed snapshots of its whole table; ``features`` writes a shard per window into a resumable
partial folder, :mod:`sermodels.pipelines.resume`) and its output format (:mod:`sermodels.pipelines.writers`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sermodels.audio import AudioError, audio_info, load_audio
from sermodels.features.resample import resample
from sermodels.pipelines.inputs import no_audio_in_folder

# A window holds at most this many batches of pieces: enough to make batches of similar lengths, few enough to
# bound memory.
WINDOW_BATCHES = 16
# A window also closes once it holds this much decoded audio (seconds), whatever the number of pieces.
WINDOW_SECONDS = 1800.0
# Files decoded ahead per decode worker: enough that a worker finding a short file never waits for the engine to
# take a long one, few enough that read-ahead holds little audio next to a window's.
READ_AHEAD_PER_WORKER = 4
# Files per task sent to a decode process: a task costs two pickled messages, so short clips go in groups.
PROCESS_GROUP_FILES = 4

Span = tuple[int, int]  # [start, stop) in samples of the decoded waveform


@dataclass
class Cut:
    """How one decoded file goes through the module: one piece per ``span``; ``info`` is handed back with the
    result (e.g. the start times of feature windows)."""

    spans: list[Span]
    info: Any = None


@dataclass
class Finished:
    """A file done: ``index`` in the paths given to :meth:`BatchEngine.run`, ``result`` (what ``combine`` made of
    its piece outputs) or ``problem`` (why it failed); ``samples`` decoded (0 when decoding failed)."""

    index: int
    result: Any = None
    problem: str | None = None
    cut: Cut | None = None
    samples: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class Step:
    """What one batch (or one decoding failure) finished; ``window_end``: the last batch of a window."""

    finished: list[Finished] = field(default_factory=list)
    window_end: bool = False


def whole_file(samples: int) -> Cut:
    """The default cut: the whole file as one piece."""
    return Cut([(0, samples)])


def weighted_mean(outputs: list[torch.Tensor], cut: Cut) -> torch.Tensor:
    """The length-weighted mean of per-piece outputs (every second counts equally); one piece is returned as is."""
    if len(outputs) == 1:
        return outputs[0]
    total = torch.zeros_like(outputs[0], dtype=torch.float64)
    weight = 0
    for output, (start, stop) in zip(outputs, cut.spans):
        total += output.double() * (stop - start)
        weight += stop - start
    return (total / weight).to(outputs[0].dtype)


def chunks(samples: int, chunk: int | None, minimum: int) -> list[Span]:
    """Consecutive spans of ``chunk`` samples covering ``samples``; a last span under ``minimum`` joins the one
    before. ``None`` (or a file no longer than a chunk): one span."""
    if chunk is None or samples <= chunk:
        return [(0, samples)]
    starts = list(range(0, samples, chunk))
    if samples - starts[-1] < minimum:
        starts.pop()
    return list(zip(starts, starts[1:] + [samples]))


@dataclass
class _Loaded:
    """A file as a worker decoded it: ``(samples,)`` float32 at ``rate`` Hz, as an array (what a process sends back
    cheaply: pickled bytes, where a tensor would travel through one shared-memory file each)."""

    index: int
    waveform: np.ndarray
    rate: int


def _load_files(jobs: list[tuple[int, Path]], *, rate: int | None, min_duration: float) -> list[_Loaded | Finished]:
    """Decode ``(index, path)`` jobs (in a decode worker, thread or process) at ``rate`` Hz (``None``: the file's
    own rate), each into its waveform or its failure."""
    return [_load_file(index, path, rate, min_duration) for index, path in jobs]


def _load_file(index: int, path: Path, rate: int | None, min_duration: float) -> _Loaded | Finished:
    if path.is_dir():
        return Finished(index, problem=no_audio_in_folder())
    try:
        waveform = load_audio(path, rate, min_duration=min_duration).numpy()
        return _Loaded(index, waveform, rate if rate is not None else audio_info(path).sample_rate)
    except AudioError as err:
        return Finished(index, problem=err.problem)
    except OSError as err:  # e.g. permission denied between the checks and the read
        return Finished(index, problem=f"cannot read the file ({err})")


def _ignore_interrupts() -> None:
    """Decode processes leave Ctrl-C to the main process, which stops them when it stops the run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class _Decoded:
    index: int
    waveform: torch.Tensor  # (samples,) at the module's rate; on ``device`` when resampled there
    cut: Cut


@dataclass
class _Piece:
    file: int  # position of its file in the window
    position: int  # its span's position in the file's cut
    waveform: torch.Tensor

    @property
    def samples(self) -> int:
        return int(self.waveform.shape[0])


@dataclass
class BatchEngine:
    """A job over audio files (module docstring).

    ``forward(waveforms, lengths)`` gets a zero-padded ``(batch, samples)`` float32 batch and its lengths, both on
    ``device``, and returns one output per row, on the CPU. ``cut(samples)`` plans a decoded file's pieces (a
    ``ValueError`` is that file's failure); ``combine(outputs, cut)`` turns its piece outputs, in span order, into
    its result. A result that is a tensor with a NaN/Inf is a failure reported as ``nonfinite``.

    ``decode_workers``: threads decoding ahead (0 or 1: the calling thread decodes, one file at a time), processes
    with ``decode_processes``; ``read_ahead``: at most this many files decoded or being decoded ahead of the engine
    (default :data:`READ_AHEAD_PER_WORKER` per worker, groups of files for processes), which bounds the decoded
    audio held outside the window.
    ``resample_on_device``: decode at each file's own rate and resample on ``device`` (module docstring).
    ``prefetch_batches``: build the next batch and start its copy to ``device`` in a helper thread while the module
    runs on this one (``None``: on for CUDA, where the host would otherwise idle while the GPU computes).
    """

    module: nn.Module
    sample_rate: int
    forward: Callable[[torch.Tensor, torch.Tensor], Sequence[torch.Tensor]]
    combine: Callable[[list[torch.Tensor], Cut], Any] = weighted_mean
    cut: Callable[[int], Cut] = whole_file
    min_duration: float = 0.0
    batch_size: int = 8
    max_batch_seconds: float | None = None
    window_batches: int = WINDOW_BATCHES
    window_seconds: float = WINDOW_SECONDS
    device: str | torch.device = "cpu"
    nonfinite: str = "the model produced non-finite outputs (NaN/Inf)"
    decode_workers: int = 0
    decode_processes: bool = False
    read_ahead: int | None = None
    resample_on_device: bool = False
    prefetch_batches: bool | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be 0 or more, got {self.decode_workers}")
        if self.read_ahead is None:  # processes take files in groups: as many groups ahead as threads take files
            group = PROCESS_GROUP_FILES if self.decode_processes else 1
            self.read_ahead = READ_AHEAD_PER_WORKER * max(1, self.decode_workers) * group
        if self.read_ahead < 1:
            raise ValueError(f"read_ahead must be at least 1, got {self.read_ahead}")
        if self.max_batch_seconds is not None and self.max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {self.max_batch_seconds}")

    def run(self, paths: Sequence[Path], *, desc: str = "files", progress: bool = True) -> Iterator[Step]:
        """Process ``paths`` (module docstring); close the generator (``contextlib.closing``) to stop early."""
        was_training = self.module.training
        self.module.to(self.device).eval()
        try:
            with (
                tqdm(total=len(paths), unit="file", desc=desc, file=sys.stderr, disable=not progress) as bar,
                contextlib.closing(self._windows(paths, bar)) as windows,  # closed now, not when garbage: the pool
            ):
                for window in windows:
                    if isinstance(window, Finished):
                        yield Step([window])
                    else:
                        yield from self._run_window(window, bar)
        finally:
            self.module.train(was_training)

    # ---- decoding -------------------------------------------------------------------------------------------------
    def _windows(self, paths: Sequence[Path], bar: tqdm) -> Iterator[Finished | list[_Decoded]]:
        """Decode files in order; yield each failure at once and the decoded files a window at a time."""
        max_pieces = self.batch_size * self.window_batches
        max_samples = self.window_seconds * self.sample_rate
        window: list[_Decoded] = []
        pieces = samples = 0
        for loaded in self._loaded(paths):
            decoded = loaded if isinstance(loaded, Finished) else self._plan(loaded)
            if isinstance(decoded, Finished):
                bar.update(1)
                yield decoded
                continue
            window.append(decoded)
            pieces += len(decoded.cut.spans)
            samples += decoded.waveform.shape[0]
            if pieces >= max_pieces or samples >= max_samples:
                yield window
                window, pieces, samples = [], 0, 0
        if window:
            yield window

    def _loaded(self, paths: Sequence[Path]) -> Iterator[_Loaded | Finished]:
        """Every path decoded (or its failure), in input order: in this thread, or by ``decode_workers`` threads or
        processes with at most ``read_ahead`` files submitted and not yet yielded (whole groups for processes)."""
        rate = None if self.resample_on_device else self.sample_rate
        minimum = 0.0 if self.resample_on_device else self.min_duration  # checked after resampling, in _plan
        load = partial(_load_files, rate=rate, min_duration=minimum)
        jobs = ((index, Path(path)) for index, path in enumerate(paths))
        if self.decode_workers <= 1:
            for job in jobs:
                yield from load([job])
            return
        group = PROCESS_GROUP_FILES if self.decode_processes else 1
        in_flight = max(1, self.read_ahead // group)
        pool = self._decode_pool()
        pending: deque[Future] = deque()
        try:
            while True:
                while len(pending) < in_flight:
                    task = [job for _, job in zip(range(group), jobs)]
                    if not task:
                        break
                    pending.append(pool.submit(load, task))
                if not pending:
                    return
                yield from pending.popleft().result()
        finally:
            # Stopped early (closed, or an exception in the consumer): drop what has not started, wait for the few
            # decodes under way (each bounded by a group of files) so no worker outlives the run.
            pool.shutdown(wait=True, cancel_futures=True)

    def _decode_pool(self) -> Executor:
        if not self.decode_processes:
            return ThreadPoolExecutor(self.decode_workers, thread_name_prefix="sermodels-decode")
        # spawn: a fresh interpreter, not a fork of one that holds threads and maybe a CUDA context.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.decode_workers, mp_context=context, initializer=_ignore_interrupts)

    def _plan(self, loaded: _Loaded) -> _Decoded | Finished:
        """Bring a decoded file to the module's rate (on the device when asked) and cut it into pieces."""
        waveform = torch.from_numpy(loaded.waveform)
        if self.resample_on_device:
            waveform = resample(to_device(waveform, self.device), loaded.rate, self.sample_rate)
            duration = waveform.shape[0] / self.sample_rate
            if duration < self.min_duration:  # the message of load_audio, measured at the module's rate as there
                return Finished(
                    loaded.index, problem=f"too short: {duration:.3f} s, the minimum is {self.min_duration:.3f} s"
                )
        try:
            cut = self.cut(int(waveform.shape[0]))
        except ValueError as err:
            return Finished(loaded.index, problem=str(err), samples=int(waveform.shape[0]))
        return _Decoded(loaded.index, waveform, cut)

    # ---- batches --------------------------------------------------------------------------------------------------
    def _run_window(self, window: list[_Decoded], bar: tqdm) -> Iterator[Step]:
        pieces = [
            _Piece(file, position, decoded.waveform[start:stop])
            for file, decoded in enumerate(window)
            for position, (start, stop) in enumerate(decoded.cut.spans)
        ]
        pieces.sort(key=lambda piece: -piece.samples)  # longest first, stable: batches pad little
        outputs: list[list[torch.Tensor | None]] = [[None] * len(decoded.cut.spans) for decoded in window]
        left = [len(decoded.cut.spans) for decoded in window]
        batches = list(self._batches(pieces))
        with contextlib.closing(self._inputs(batches)) as inputs:
            for number, (batch, (waveforms, lengths)) in enumerate(zip(batches, inputs)):
                rows = self._forward(batch, waveforms, lengths)
                finished = []
                for piece, row in zip(batch, rows):
                    outputs[piece.file][piece.position] = row
                    left[piece.file] -= 1
                    if left[piece.file] == 0:
                        finished.append(self._finish(window[piece.file], outputs[piece.file]))
                        outputs[piece.file] = []  # free the piece outputs
                bar.update(len(finished))
                yield Step(finished, window_end=number == len(batches) - 1)

    def _batches(self, pieces: list[_Piece]) -> Iterator[list[_Piece]]:
        """Greedy batches of length-sorted pieces: at most ``batch_size``, ``count x longest <= max_batch_seconds``."""
        budget = None if self.max_batch_seconds is None else self.max_batch_seconds * self.sample_rate
        batch: list[_Piece] = []
        for piece in pieces:
            width = batch[0].samples if batch else piece.samples
            over_budget = budget is not None and (len(batch) + 1) * width > budget
            if batch and (len(batch) >= self.batch_size or over_budget):
                yield batch
                batch = []
            batch.append(piece)
        if batch:
            yield batch

    def _inputs(self, batches: list[list[_Piece]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's padded waveforms and lengths on the device, in order; with prefetching the next batch is
        built in a helper thread (tensor copies release the GIL) while the caller runs the module on this one, so
        at most one batch waits ready beside the one running."""
        prefetch = self.prefetch_batches if self.prefetch_batches is not None else pins_memory(self.device)
        if not prefetch or len(batches) < 2:
            yield from map(self._batch_inputs, batches)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="sermodels-batch") as pool:
            upcoming = pool.submit(self._batch_inputs, batches[0])
            for following in [*batches[1:], None]:
                inputs = upcoming.result()
                if following is not None:
                    upcoming = pool.submit(self._batch_inputs, following)
                yield inputs

    def _batch_inputs(self, batch: list[_Piece]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, longest)`` zero-padded waveforms and ``(batch,)`` lengths, on the device (copies under way)."""
        lengths = torch.tensor([piece.samples for piece in batch], dtype=torch.long)
        waveforms = pad_batch([piece.waveform for piece in batch], pin=pins_memory(self.device))
        return to_device(waveforms, self.device), to_device(lengths, self.device)

    def _forward(self, batch: list[_Piece], waveforms: torch.Tensor, lengths: torch.Tensor) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            rows = self.forward(waveforms, lengths)
        if len(rows) != len(batch):
            raise RuntimeError(f"the forward returned {len(rows)} outputs for a batch of {len(batch)}")
        return rows

    def _finish(self, decoded: _Decoded, outputs: list[torch.Tensor]) -> Finished:
        samples = int(decoded.waveform.shape[0])
        result = self.combine(outputs, decoded.cut)
        if isinstance(result, torch.Tensor) and not torch.isfinite(result).all():
            return Finished(decoded.index, problem=self.nonfinite, cut=decoded.cut, samples=samples)
        return Finished(decoded.index, result, cut=decoded.cut, samples=samples)


def pad_batch(waveforms: Sequence[torch.Tensor], *, pin: bool = False) -> torch.Tensor:
    """``(batch, longest)`` float32: each ``(samples,)`` waveform in a row, zero-padded on the right, on the device
    the waveforms are on. Built by one C++ call (no Python loop over rows); with ``pin`` (CPU waveforms bound for
    CUDA) written straight into page-locked memory instead, one copy rather than padding and then pinning."""
    if pin and all(waveform.device.type == "cpu" for waveform in waveforms):
        longest = max(int(waveform.shape[0]) for waveform in waveforms)
        return fill_padded(torch.empty(len(waveforms), longest, dtype=torch.float32, pin_memory=True), waveforms)
    return torch.nn.utils.rnn.pad_sequence(list(waveforms), batch_first=True, padding_value=0.0).float()


def fill_padded(buffer: torch.Tensor, waveforms: Sequence[torch.Tensor]) -> torch.Tensor:
    """Write ``waveforms`` into the rows of ``buffer`` ``(batch, >= longest)``, zeros after each one; returns it. A
    copy per row, but no copy of the whole batch: for a pinned buffer, that is the one copy the batch needs."""
    for row, waveform in zip(buffer, waveforms):
        samples = int(waveform.shape[0])
        row[:samples].copy_(waveform)
        row[samples:].zero_()
    return buffer


def pins_memory(device: str | torch.device) -> bool:
    """Whether a host tensor bound for ``device`` goes through pinned memory: only for an available CUDA device
    (page-locked memory is what lets a host-to-device copy run asynchronously; on the CPU it would only cost)."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``tensor`` on ``device``. A CPU tensor bound for CUDA is pinned and copied without blocking the host (the
    copy is ordered on the current stream before the kernels that read it); otherwise a plain ``.to``, a no-op
    when it is there already."""
    if tensor.device.type == "cpu" and pins_memory(device):
        if not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)
    return tensor.to(device)


def steps(engine: BatchEngine, paths: Sequence[Path], **options: Any) -> contextlib.closing[Iterator[Step]]:
    """``with steps(engine, paths) as run: for step in run: ...``: the module's mode is restored even when the loop
    is left early (an exception in the caller's handling of a step)."""
    return contextlib.closing(engine.run(paths, **options))
