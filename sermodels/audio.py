"""Audio input: decode, validate, downmix and resample. The only module that touches audio files.

Every failure is an :class:`AudioError` whose message starts with the file's path and says what is wrong, so a batch
job can report it and move on.
"""

from __future__ import annotations

import math
import os
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
    info = audio_info(path)
    if info.channels < 1:
        raise AudioError(path, "no audio channels")
    if info.channels > max_channels:
        raise AudioError(
            path,
            f"unsupported channel layout: {info.channels} channels (at most {max_channels} are downmixed; "
            "select a channel first)",
        )
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
