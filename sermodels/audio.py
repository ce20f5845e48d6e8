"""Audio input: decode, validate, downmix and resample. The only module that touches audio files.

Every failure is an :class:`AudioError` whose message starts with the file's path and says what is wrong, so a batch
job can report it and move on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

DEFAULT_SAMPLE_RATE = 16_000
# Mono and stereo are averaged to mono. Wider layouts (5.1, ambisonics, microphone arrays) carry channels that are
# not copies of one voice, so averaging them silently would be wrong: the caller must choose a channel first.
MAX_DOWNMIX_CHANNELS = 2
SOXR_QUALITY = "VHQ"
UNKNOWN_CHUNK_SIZES = (0, 0xFFFFFFFF)  # the quality the shared 16 kHz corpus copies were made with
# File extensions of the containers libsndfile reads, by its format name (soundfile.available_formats()). Folders
# are searched for these, case-insensitively; a file given by name is decoded whatever its extension. ``.mat``
# (MATLAB 4/5) is left out: in a corpus folder it is far more often a data file than audio.
_EXTENSION_FORMATS = {
    "wav": "WAV", "wave": "WAV", "flac": "FLAC", "ogg": "OGG", "oga": "OGG", "opus": "OGG", "mp3": "MP3",
    "aif": "AIFF", "aiff": "AIFF", "aifc": "AIFF", "au": "AU", "snd": "AU", "caf": "CAF", "w64": "W64",
    "rf64": "RF64", "sph": "NIST", "nist": "NIST", "voc": "VOC", "htk": "HTK", "paf": "PAF", "svx": "SVX",
    "8svx": "SVX", "pvf": "PVF", "xi": "XI", "sds": "SDS", "avr": "AVR", "wve": "WVE", "ircam": "IRCAM",
    "sf": "IRCAM", "mpc": "MPC2K", "sd2": "SD2",
}  # fmt: skip
# Only what the installed libsndfile decodes (MP3 needs libsndfile 1.1 or later).
AUDIO_EXTENSIONS = frozenset(f".{ext}" for ext, fmt in _EXTENSION_FORMATS.items() if fmt in sf.available_formats())


class AudioError(ValueError):
    """A file that cannot be used as speech input. ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information without decoding the samples."""
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"not an audio file libsndfile can read ({_short(err)})") from err
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = DEFAULT_SAMPLE_RATE,
    *,
    min_duration: float = 0.0,
    resample: bool = True,
    max_channels: int = MAX_DOWNMIX_CHANNELS,
) -> torch.Tensor:
    """Decode ``path`` to a mono float32 waveform of shape ``(samples,)`` at ``sample_rate`` Hz.

    ``sample_rate=None`` keeps the file's own rate. With ``resample=False`` a file at another rate is an error
    instead of being converted. ``min_duration`` (seconds, measured after resampling) rejects clips too short for
    the model's front-end.
    """
    info = _usable_info(path, max_channels)
    if info.frames == 0:
        raise AudioError(path, "contains no samples")
    _check_riff_size(path)
    samples = _decode(path, info)
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(path, f"contains {bad} NaN/Inf samples")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    target = info.sample_rate if sample_rate is None else int(sample_rate)
    if target != info.sample_rate:
        if not resample:
            raise AudioError(path, f"sample rate is {info.sample_rate} Hz, expected {target} Hz")
        mono = soxr.resample(mono, info.sample_rate, target, quality=SOXR_QUALITY)
    duration = len(mono) / target
    if duration < min_duration:
        raise AudioError(path, f"too short: {duration:.3f} s, the minimum is {min_duration:.3f} s")
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def _usable_info(path: str | os.PathLike, max_channels: int) -> AudioInfo:
    """:func:`audio_info`, refusing files without channels or with more than ``max_channels`` of them."""
    info = audio_info(path)
    if info.channels < 1:
        raise AudioError(path, "no audio channels")
    if info.channels > max_channels:
        raise AudioError(
            path,
            f"unsupported channel layout: {info.channels} channels (at most {max_channels} are downmixed; "
            "select a channel first)",
        )
    return info


def _check_file(path: str | os.PathLike) -> None:
    p = Path(path)
    if not p.exists():
        raise AudioError(path, "no such file")
    if not p.is_file():
        raise AudioError(path, "not a regular file")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _decode(path: str | os.PathLike, info: AudioInfo) -> np.ndarray:
    """All frames as ``(frames, channels)`` float32; a file that ends before its header says is truncated."""
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"corrupt or truncated audio data ({_short(err)})") from err
    # libsndfile returns what it could decode from a damaged stream; a shortfall against the header is damage.
    # One block of slack: some encoders round the header's frame count to the block size.
    if info.frames > 0 and len(data) < info.frames - _block_slack(info):
        raise AudioError(path, f"truncated: the header announces {info.frames} frames, only {len(data)} decode")
    if len(data) == 0:
        raise AudioError(path, "contains no samples")
    return data


def _check_riff_size(path: str | os.PathLike) -> None:
    """A WAV whose ``data`` chunk announces more bytes than the file holds was cut short.

    libsndfile silently shrinks the frame count of such a file to what is there, so the header check in
    :func:`_decode` cannot see it; the RIFF chunk sizes can.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE" or head[:4] == b"RF64":
            return
        size = os.fstat(f.fileno()).st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if chunk_id == b"data":
                present = size - f.tell()
                # 0 and 0xFFFFFFFF are the placeholders of WAVs written to a pipe: "until the end of the file".
                if chunk_size not in UNKNOWN_CHUNK_SIZES and chunk_size > present:
                    raise AudioError(
                        path, f"truncated: the WAV data chunk announces {chunk_size} bytes, {present} remain"
                    )
                return
            f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


def _block_slack(info: AudioInfo) -> int:
    return 4608 if info.format in {"FLAC", "MPEG", "OGG"} else 0


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text[:200]


def frames_for(duration: float, sample_rate: int) -> int:
    """Number of samples covering ``duration`` seconds at ``sample_rate`` (rounded up)."""
    # Rounded first, so that float error (4.03 * 16000 = 64480.000000000004) does not add a sample.
    return int(math.ceil(round(duration * sample_rate, 6)))


# --- Streaming ---------------------------------------------------------------------------------------------------
# Frames decoded per libsndfile call while streaming (ours): small enough that a read error mid-block loses at most
# this much of what decoded before it, large enough that the per-call overhead is negligible (~2 s at 16 kHz).
STREAM_READ_FRAMES = 32_768
# Input samples decoded before a resampled ``start_block`` and discarded (ours): the VHQ soxr filter reaches a few
# hundred input samples either side, so after this many its start-up transient is below float32 rounding.
RESAMPLE_WARMUP_FRAMES = 8_192


@dataclass(frozen=True)
class AudioBlock:
    """One block of a streamed recording (see :func:`stream_audio`).

    ``samples`` is ``(n,)`` float32 mono at the output rate, ``start`` its first sample's index at that rate, and
    ``problem`` says what went wrong inside it (non-finite samples zeroed, a read error that ended the file).
    """

    index: int
    start: int
    samples: torch.Tensor
    problem: str | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def stream_audio(
    path: str | os.PathLike,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    *,
    block_seconds: float = 60.0,
    start_block: int = 0,
    max_channels: int = MAX_DOWNMIX_CHANNELS,
) -> Iterator[AudioBlock]:
    """Decode ``path`` block by block: mono float32 at ``sample_rate`` Hz, memory bounded by a few blocks.

    For recordings too long to hold at once (a 16-hour daylong file is 3.7 GB at 16 kHz float32). Every block is
    ``round(block_seconds * sample_rate)`` samples except the last; their concatenation equals
    :func:`load_audio` of the whole file exactly at the file's own rate, and to float32 rounding when resampled
    (one streaming soxr resampler runs through the file, so blocks join without edge effects).

    ``start_block`` resumes a run: at the file's own rate the reader seeks straight to the block; when resampling
    it seeks :data:`RESAMPLE_WARMUP_FRAMES` input samples earlier (on a sample where the input and output grids
    meet), runs the resampler over that margin and discards it, so a resumed block matches an uninterrupted one to
    float rounding without decoding the file from its start.

    Problems do not raise once the file is open: NaN/Inf samples are set to 0 and reported in the block's
    ``problem``; a read error mid-file (truncated FLAC, bad frames, a cut-short WAV) ends the stream with the
    samples that decoded before it, and the last block's ``problem`` says where. A file that cannot be opened at
    all, or has more than ``max_channels`` channels, raises :class:`AudioError` here, before iteration starts.
    """
    info = _usable_info(path, max_channels)
    block = round(block_seconds * sample_rate)
    if block < 1:
        raise ValueError(f"block_seconds={block_seconds} gives empty blocks at {sample_rate} Hz")
    if start_block < 0:
        raise ValueError(f"start_block must be >= 0, got {start_block}")
    try:
        _check_riff_size(path)
        cut_short = None
    except AudioError as err:
        cut_short = err.problem
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"not an audio file libsndfile can read ({_short(err)})") from err
    return _stream_blocks(handle, info, int(sample_rate), block, start_block, cut_short)


def _stream_blocks(
    handle: sf.SoundFile, info: AudioInfo, rate: int, block: int, start_block: int, cut_short: str | None
) -> Iterator[AudioBlock]:
    """Cut the output of :func:`_stream_output` into blocks; a problem goes on the block holding its sample."""
    first = start_block * block
    index, start = start_block, first
    pending: list[np.ndarray] = []
    held = 0
    problems: list[tuple[int, str]] = []
    with handle:
        for chunk, problem in _stream_output(handle, info, rate, first):
            if problem is not None:
                problems.append(problem)
            pending.append(chunk)
            held += len(chunk)
            while held >= block:
                joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                here = [text for at, text in problems if at < start + block]
                problems = [p for p in problems if p[0] >= start + block]
                yield AudioBlock(index, start, _tensor(joined[:block]), "; ".join(here) or None)
                pending, held = [joined[block:]], held - block
                index, start = index + 1, start + block
    if cut_short is not None:
        problems.append((start, f"{cut_short}; the stream ends at {start + held} samples"))
    rest = [text for _, text in problems]
    if held or rest:
        joined = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        yield AudioBlock(index, start, _tensor(joined), "; ".join(rest) or None)


def _stream_output(
    handle: sf.SoundFile, info: AudioInfo, rate: int, first: int
) -> Iterator[tuple[np.ndarray, tuple[int, str] | None]]:
    """Mono output-rate samples from output sample ``first`` on, in pieces, each with an optional problem given as
    ``(output sample, text)``."""
    if rate == info.sample_rate:
        if first >= info.frames:
            return
        handle.seek(first)
        yield from _decode_pieces(handle, info, first, 1, 1)
        return
    # Seek to a sample where the input and output grids meet (every in/g input samples = out/g output samples),
    # a warm-up margin before the first wanted output sample, and discard the output before it.
    g = math.gcd(info.sample_rate, rate)
    step_in, step_out = info.sample_rate // g, rate // g
    wanted_in = first * step_in // step_out
    steps = max(0, wanted_in - RESAMPLE_WARMUP_FRAMES) // step_in
    if steps * step_in >= info.frames:
        return
    handle.seek(steps * step_in)
    position = steps * step_out  # output index of the next resampled sample
    resampler = soxr.ResampleStream(info.sample_rate, rate, 1, dtype="float32", quality=SOXR_QUALITY)
    for piece, problem in _decode_pieces(handle, info, steps * step_in, step_out, step_in):
        out = resampler.resample_chunk(piece, last=piece is _END)
        skip = min(len(out), max(0, first - position))
        position += len(out)
        if len(out) - skip or problem is not None:
            yield out[skip:], None if problem is None else (max(problem[0], first), problem[1])


_END = np.zeros(0, np.float32)  # the last piece :func:`_decode_pieces` yields: flush a resampler


def _decode_pieces(
    handle: sf.SoundFile, info: AudioInfo, at: int, num: int, den: int
) -> Iterator[tuple[np.ndarray, tuple[int, str] | None]]:
    """Downmixed float32 pieces from input frame ``at`` to the end, then :data:`_END`; problem positions are input
    frames scaled by ``num / den`` to the output rate. A read error or an early end is reported and ends it."""
    while True:
        problem = None
        try:
            raw = handle.read(STREAM_READ_FRAMES, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            yield _END, (at * num // den, f"unreadable from {at / info.sample_rate:.3f} s: {_short(err)}")
            return
        if len(raw) == 0:
            if at < info.frames - _block_slack(info):
                text = f"truncated: the header announces {info.frames} frames, only {at} decode"
                yield _END, (at * num // den, text)
            else:
                yield _END, None
            return
        bad = ~np.isfinite(raw)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            lo, hi = (at + int(rows[0])) * num // den, (at + int(rows[-1])) * num // den
            problem = (lo, f"samples {lo}..{hi}: {int(bad.sum())} NaN/Inf samples set to 0")
            raw[bad] = 0.0
        mono = raw.mean(axis=1) if raw.shape[1] > 1 else raw[:, 0]
        yield np.ascontiguousarray(mono, dtype=np.float32), problem
        at += len(raw)


def _tensor(samples: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


# --- Regions -------------------------------------------------------------------------------------------------------
# Input samples read on each side of a resampled region (ours): the VHQ soxr filter's reach, as for streaming.
REGION_MARGIN_FRAMES = RESAMPLE_WARMUP_FRAMES


def load_region(
    path: str | os.PathLike,
    start: int,
    end: int,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    *,
    rate: int | None = None,
    max_channels: int = MAX_DOWNMIX_CHANNELS,
    nonfinite: str = "raise",
) -> torch.Tensor:
    """Samples ``start:end`` of ``path`` (positions at ``sample_rate`` Hz) as mono float32 at ``rate`` Hz
    (default ``sample_rate``), decoding only that stretch: how a segment of a daylong recording is read back.

    At the file's own rate the region is exactly those samples of :func:`load_audio`; otherwise the reader takes
    :data:`REGION_MARGIN_FRAMES` input samples either side, resamples them and cuts the region out, which matches
    the whole file resampled to float rounding away from the file's ends. NaN/Inf samples are an error naming the
    file, as in :func:`load_audio`, or with ``nonfinite="zero"`` set to 0 (as :func:`stream_audio` does, so a
    segment of a streamed recording reads back the samples the stream gave); a region past the end of the file is
    an error.
    """
    if nonfinite not in ("raise", "zero"):
        raise ValueError(f"nonfinite must be 'raise' or 'zero', got {nonfinite!r}")
    info = _usable_info(path, max_channels)
    if not 0 <= start < end:
        raise ValueError(f"{path}: region {start}..{end} is empty or negative")
    length = end - start
    if sample_rate == info.sample_rate:
        first, last, keep_from = start, end, 0
    else:
        # Start on an input sample where the input and output grids meet, so output sample n of the region's
        # resampling is output sample n + first_out of the whole file's.
        g = math.gcd(info.sample_rate, sample_rate)
        step_in, step_out = info.sample_rate // g, sample_rate // g
        steps = max(0, start * step_in // step_out - REGION_MARGIN_FRAMES) // step_in
        first = steps * step_in
        last = min(info.frames, math.ceil(end * info.sample_rate / sample_rate) + REGION_MARGIN_FRAMES)
        keep_from = start - steps * step_out
    if first >= info.frames or (sample_rate == info.sample_rate and end > info.frames + _block_slack(info)):
        raise AudioError(
            path, f"region {start}..{end} lies past the end ({info.frames} frames at {info.sample_rate} Hz)"
        )
    try:
        with sf.SoundFile(str(path)) as handle:
            handle.seek(first)
            raw = handle.read(last - first, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"unreadable region {start}..{end} ({_short(err)})") from err
    if not np.isfinite(raw).all():
        if nonfinite == "raise":
            raise AudioError(path, f"region {start}..{end} contains {int((~np.isfinite(raw)).sum())} NaN/Inf samples")
        raw[~np.isfinite(raw)] = 0.0
    mono = raw.mean(axis=1) if raw.shape[1] > 1 else raw[:, 0]
    if sample_rate != info.sample_rate:
        mono = soxr.resample(mono, info.sample_rate, sample_rate, quality=SOXR_QUALITY)
    region = mono[keep_from : keep_from + length]
    target = rate or sample_rate
    if target != sample_rate:
        region = soxr.resample(region, sample_rate, target, quality=SOXR_QUALITY)
    return _tensor(region)
