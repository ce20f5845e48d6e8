"""From frame speech probabilities to utterance segments: threshold, merge, drop, pad, split.

The rules (:class:`SegmentRules`), applied in this order to a recording's frame probabilities (frame ``i`` stands
for samples ``[i * hop, (i + 1) * hop)``, as every :class:`~sermodels.pipelines.vad.VAD` outputs):

1. a frame is speech when its probability is ``>= threshold``; a run of speech frames is a region from its first
   frame's start to its last frame's end (frame-exact timestamps);
2. regions separated by a gap shorter than ``merge_gap`` are merged;
3. a merged region shorter than ``min_duration`` is dropped (NICU-A discards utterances under 600 ms, the NICU paper
   §3.1);
4. ``pad`` is added at both ends, clipped to the recording (padding may make neighbouring segments overlap;
   they are not merged again);
5. a padded region longer than ``max_duration`` becomes ``ceil(d / max_duration)`` equal parts (to the sample), all
   no longer than ``max_duration``; they are ``>= max_duration / 2``, so ``>= min_duration`` whenever
   ``max_duration >= 2 * min_duration``. With a smaller ``max_duration`` a part may be shorter than
   ``min_duration``: it is kept, since it is speech cut out of a long region, not a short blip.

Durations are rounded to whole samples. :class:`Segmenter` applies the rules while streaming, with a JSON state so
a resumed run continues where a block ended; :func:`segment_probabilities` is the whole-array version and gives the
same segments for any block split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# the NICU paper §3.1: "utterances shorter than 600 ms were discarded".
NICU_MIN_DURATION = 0.6
# Ours: the merge gap (a pause shorter than this is inside an utterance), and a cap that keeps segments at
# the length of the acted-corpus utterances the models were trained on (EMO-DB/RAVDESS: 1-9 s).
DEFAULT_MERGE_GAP = 0.3
DEFAULT_MAX_DURATION = 10.0


@dataclass(frozen=True)
class SegmentRules:
    """How speech frames become segments; durations in seconds (see the module docstring for the order)."""

    threshold: float = 0.5
    merge_gap: float = DEFAULT_MERGE_GAP
    min_duration: float = NICU_MIN_DURATION
    max_duration: float = DEFAULT_MAX_DURATION
    pad: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if min(self.merge_gap, self.min_duration, self.pad) < 0:
            raise ValueError(f"merge_gap, min_duration and pad must be >= 0: {self}")
        if not self.max_duration > 0:
            raise ValueError(f"max_duration must be > 0, got {self.max_duration}")


class Segmenter:
    """Streaming :class:`SegmentRules`: feed frame probabilities block by block, get closed segments back.

    A region is closed once a gap of at least ``merge_gap`` follows it (or at :meth:`finish`); it is emitted once
    the frames seen cover its padded end, so what is emitted never depends on where the blocks were cut. An open
    region carries across blocks. Segments are ``(start_sample, end_sample)``, end exclusive, in order.
    """

    def __init__(self, rules: SegmentRules, hop: int, sample_rate: int):
        self.rules = rules
        self.hop = int(hop)
        self.sample_rate = int(sample_rate)
        self._min = round(rules.min_duration * sample_rate)
        self._max = max(1, round(rules.max_duration * sample_rate))
        self._pad = round(rules.pad * sample_rate)
        # Frames of non-speech that close a region: gap * hop >= merge_gap. At least 1: touching runs are one region.
        self._gap = max(1, -(-round(rules.merge_gap * sample_rate) // self.hop))
        self.frames = 0  # frames fed so far
        self.open: tuple[int, int] | None = None  # (first frame, end frame) of the region still growing
        self.closed: list[tuple[int, int]] = []  # closed regions whose padded end is beyond the frames seen

    def feed(self, probs: torch.Tensor | np.ndarray) -> list[tuple[int, int]]:
        """``(frames,)`` probabilities continuing the recording -> the segments closed by them."""
        speech = np.asarray(probs, dtype=np.float64).reshape(-1) >= self.rules.threshold
        edges = np.flatnonzero(np.diff(np.concatenate([[False], speech, [False]]).astype(np.int8)))
        for first, end in zip(edges[::2] + self.frames, edges[1::2] + self.frames, strict=True):
            first, end = int(first), int(end)
            if self.open is not None and first - self.open[1] < self._gap:
                self.open = (self.open[0], end)
            else:
                self._close()
                self.open = (first, end)
        self.frames += len(speech)
        if self.open is not None and self.frames - self.open[1] >= self._gap:
            self._close()
        return self._emit(limit=self.frames * self.hop, total=None)

    def finish(self, total_samples: int) -> list[tuple[int, int]]:
        """The segments still held, the open one closed; padded ends are clipped to ``total_samples``."""
        self._close()
        return self._emit(limit=None, total=int(total_samples))

    def state(self) -> dict[str, Any]:
        """JSON state after the last :meth:`feed`; :meth:`from_state` continues from it."""
        return {"frames": self.frames, "open": list(self.open) if self.open else None, "closed": self.closed}

    @classmethod
    def from_state(cls, rules: SegmentRules, hop: int, sample_rate: int, state: dict[str, Any]) -> Segmenter:
        segmenter = cls(rules, hop, sample_rate)
        segmenter.frames = int(state["frames"])
        segmenter.open = tuple(state["open"]) if state["open"] else None
        segmenter.closed = [(int(a), int(b)) for a, b in state["closed"]]
        return segmenter

    def _close(self) -> None:
        if self.open is not None and (self.open[1] - self.open[0]) * self.hop >= self._min:
            self.closed.append(self.open)
        self.open = None

    def _emit(self, limit: int | None, total: int | None) -> list[tuple[int, int]]:
        out = []
        while self.closed:
            first, end = self.closed[0]
            start, stop = max(0, first * self.hop - self._pad), end * self.hop + self._pad
            if limit is not None and stop > limit:
                break
            if total is not None:
                stop = max(start, min(stop, total))
            out.extend(self._split(start, stop))
            self.closed.pop(0)
        return out

    def _split(self, start: int, stop: int) -> list[tuple[int, int]]:
        length = stop - start
        parts = -(-length // self._max)
        if parts <= 1:
            return [(start, stop)]
        bounds = [start + i * length // parts for i in range(parts + 1)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))


def segment_probabilities(
    probs: torch.Tensor | np.ndarray, rules: SegmentRules, hop: int, sample_rate: int, total_samples: int | None = None
) -> list[tuple[int, int]]:
    """Whole-array :class:`Segmenter`: ``(frames,)`` probabilities -> segments ``(start_sample, end_sample)``.

    ``total_samples`` (default ``frames * hop``) is the recording's length, to which padding is clipped.
    """
    segmenter = Segmenter(rules, hop, sample_rate)
    segments = segmenter.feed(probs)
    return segments + segmenter.finish(segmenter.frames * hop if total_samples is None else total_samples)
