"""The batch engine every pipeline runs on: audio files in, one result per file out, memory bounded, bad files skipped.

A pipeline (``predict``, ``features deepspectrum``, ...) describes its job with a :class:`BatchEngine`: the module,
how a decoded file is cut into the pieces the module sees (:attr:`BatchEngine.cut`: chunks of a long file, windows
of a crop), what the module computes on a padded batch (:attr:`BatchEngine.forward`: one output per piece) and how
a file's piece outputs make its result (:attr:`BatchEngine.combine`: a length-weighted mean, pieces concatenated in
time, rows stacked). :meth:`BatchEngine.run` does the rest, the same way for all of them:

- Files are decoded in input order with :func:`sermodels.audio.load_audio` at the module's sample rate. A file that
  cannot be used (missing, empty, not audio, truncated, too short, NaN samples, a cut that leaves nothing usable, an
  output that is not finite) becomes a failure with its reason; the run goes on.
- Decoded files are gathered into windows of at most ``batch_size * window_batches`` pieces and about
  ``window_seconds`` of audio; inside a window the pieces are sorted longest first (stable, so equal lengths keep
  input order and batches are deterministic) and cut into batches of at most ``batch_size`` pieces and
  ``max_batch_seconds`` of padded audio. Memory does not grow with the number of files; the waveform of one long
  file is still held whole (4 bytes a sample: one hour at 16 kHz is 230 MB), only the module sees it in pieces.
- Each batch is zero-padded on the right and passed with its true lengths under ``torch.inference_mode()``, the
  module on ``device`` in eval mode (its train/eval mode is restored afterwards).
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
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sermodels.audio import AudioError, load_audio
from sermodels.pipelines.inputs import no_audio_in_folder

# A window holds at most this many batches of pieces: enough to make batches of similar lengths, few enough to
# bound memory.
WINDOW_BATCHES = 16
# A window also closes once it holds this much decoded audio (seconds), whatever the number of pieces.
WINDOW_SECONDS = 1800.0

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
class _Decoded:
    index: int
    waveform: torch.Tensor
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

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_batch_seconds is not None and self.max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {self.max_batch_seconds}")

    def run(self, paths: Sequence[Path], *, desc: str = "files", progress: bool = True) -> Iterator[Step]:
        """Process ``paths`` (module docstring); close the generator (``contextlib.closing``) to stop early."""
        was_training = self.module.training
        self.module.to(self.device).eval()
        try:
            with tqdm(total=len(paths), unit="file", desc=desc, file=sys.stderr, disable=not progress) as bar:
                for window in self._windows(paths, bar):
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
        for index, path in enumerate(paths):
            decoded = self._decode(index, Path(path))
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

    def _decode(self, index: int, path: Path) -> _Decoded | Finished:
        if path.is_dir():
            return Finished(index, problem=no_audio_in_folder())
        try:
            waveform = load_audio(path, self.sample_rate, min_duration=self.min_duration)
        except AudioError as err:
            return Finished(index, problem=err.problem)
        except OSError as err:  # e.g. permission denied between the checks and the read
            return Finished(index, problem=f"cannot read the file ({err})")
        try:
            cut = self.cut(int(waveform.shape[0]))
        except ValueError as err:
            return Finished(index, problem=str(err), samples=int(waveform.shape[0]))
        return _Decoded(index, waveform, cut)

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
        for number, batch in enumerate(batches):
            rows = self._forward(batch)
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

    def _forward(self, batch: list[_Piece]) -> Sequence[torch.Tensor]:
        lengths = torch.tensor([piece.samples for piece in batch], dtype=torch.long)
        waveforms = torch.zeros(len(batch), int(lengths.max()), dtype=torch.float32)
        for row, piece in enumerate(batch):
            waveforms[row, : piece.samples] = piece.waveform
        with torch.inference_mode():
            rows = self.forward(waveforms.to(self.device), lengths.to(self.device))
        if len(rows) != len(batch):
            raise RuntimeError(f"the forward returned {len(rows)} outputs for a batch of {len(batch)}")
        return rows

    def _finish(self, decoded: _Decoded, outputs: list[torch.Tensor]) -> Finished:
        samples = int(decoded.waveform.shape[0])
        result = self.combine(outputs, decoded.cut)
        if isinstance(result, torch.Tensor) and not torch.isfinite(result).all():
            return Finished(decoded.index, problem=self.nonfinite, cut=decoded.cut, samples=samples)
        return Finished(decoded.index, result, cut=decoded.cut, samples=samples)


def steps(engine: BatchEngine, paths: Sequence[Path], **options: Any) -> contextlib.closing[Iterator[Step]]:
    """``with steps(engine, paths) as run: for step in run: ...``: the module's mode is restored even when the loop
    is left early (an exception in the caller's handling of a step)."""
    return contextlib.closing(engine.run(paths, **options))
