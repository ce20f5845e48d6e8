"""Where a long clip's feature rows come from: a start/end crop cut into full windows.

The Deep Spectrum toolkit (Amiriparian et al., Interspeech 2017) can render one image per window of a long
recording (its window and hop options); the EmoNet paper's baseline (§4.2) uses whole files, the default here.

Departure: the toolkit trims leading and trailing zero samples before cropping and windowing, and also writes the
partial windows at the end of a file (down to ``n_fft`` samples); we keep the file's own time axis and plan full
windows only, so row counts and timestamps can differ from the toolkit's for the same file. A clip shorter than one
window gives one span, the whole (cropped) clip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Windows:
    """Where a clip's images come from: start times (seconds from the file start) and sample ranges."""

    starts: list[float]
    spans: list[tuple[int, int]]


def plan_windows(
    num_samples: int,
    sample_rate: int,
    window: float | None = None,
    hop: float | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> Windows:
    """Image spans of a clip of ``num_samples``: the [start, end) crop, cut into full windows of ``window`` seconds
    every ``hop`` seconds (default: ``window``), or the whole crop when ``window`` is None or longer than the crop."""
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"crop start={start} s, end={end} s: need 0 <= start < end")
    if window is not None and window <= 0 or hop is not None and hop <= 0:
        raise ValueError(f"window={window} s and hop={hop} s must be positive")
    if hop is not None and window is None:
        raise ValueError("hop needs a window length")
    first = int(round(start * sample_rate))
    last = num_samples if end is None else min(num_samples, int(round(end * sample_rate)))
    if last <= first:
        raise ValueError(f"the crop from {start} s is empty: the clip has {num_samples / sample_rate:.3f} s")
    if window is None:
        return Windows([first / sample_rate], [(first, last)])
    size = int(round(window * sample_rate))
    step = int(round((hop or window) * sample_rate))
    if size < 1 or step < 1:
        raise ValueError(f"window={window} s and hop={hop} s must each be at least one sample (1/{sample_rate} s)")
    if size > last - first:
        return Windows([first / sample_rate], [(first, last)])
    offsets = range(first, last - size + 1, step)
    return Windows([o / sample_rate for o in offsets], [(o, o + size) for o in offsets])
