"""Decoded-audio cache, so that decoding and resampling happen once per file, not once per epoch.

Two levels, both keyed by the file's absolute path, modification time (ns), size and the target sample rate, so an
edited or replaced file is decoded again:

* in memory: a least-recently-used dict bounded by ``memory_mb`` (per process: each DataLoader worker has its own;
  keep workers persistent to keep it across epochs);
* on disk (``cache_dir``): one float32 ``.npy`` per file, ``<cache_dir>/<key[:2]>/<key>.npy``, shared by workers,
  ranks and runs. Writes go to a temporary file in the same folder and are renamed into place (``os.replace`` is
  atomic), so a reader never sees half a file. Entries get the ordinary mode of a new file (``0o666`` less the
  process umask, as ``open()`` would give), so a group-shared cache folder works across users. An entry that does not
  load as a 1-D float32 array (truncated, corrupt, wrong dtype) is deleted and the audio decoded again; one that
  cannot be read for lack of permission is left alone and the audio decoded (not cached) instead.

Every :meth:`AudioCache.get` returns a new tensor: the cached arrays are read-only and never handed out, so an
in-place operation by a caller (normalisation, augmentation) cannot alter what later calls get.

All decoding goes through :func:`sermodels.audio.load_audio`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from sermodels import audio

CACHE_FORMAT = 1  # part of the key: bump when the stored representation changes
DEFAULT_MEMORY_MB = 1024


class AudioCache:
    """``cache.get(path) -> Tensor (samples,) float32`` at ``sample_rate``; counts decodes and hits in ``stats``."""

    def __init__(
        self,
        sample_rate: int = audio.DEFAULT_SAMPLE_RATE,
        cache_dir: str | os.PathLike | None = None,
        memory_mb: float = DEFAULT_MEMORY_MB,
    ):
        self.sample_rate = int(sample_rate)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.memory_bytes = int(memory_mb * 2**20)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._held = 0
        self.stats = {"decoded": 0, "memory_hits": 0, "disk_hits": 0, "disk_repaired": 0, "disk_unreadable": 0}

    def key(self, path: str | os.PathLike) -> str:
        """Hex digest of (absolute path, mtime_ns, size, sample rate, format version)."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        text = f"{resolved}\0{stat.st_mtime_ns}\0{stat.st_size}\0{self.sample_rate}\0{CACHE_FORMAT}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, path: str | os.PathLike) -> torch.Tensor:
        """The decoded mono waveform of ``path`` (shape ``(samples,)``, float32), a copy the caller may modify."""
        try:
            key = self.key(path)
        except FileNotFoundError as err:
            raise audio.AudioError(path, "no such file") from err
        except OSError as err:
            raise audio.AudioError(path, f"cannot read the file's status ({err.strerror or err})") from err
        samples = self._memory.get(key)
        if samples is not None:
            self._memory.move_to_end(key)
            self.stats["memory_hits"] += 1
            return torch.from_numpy(samples.copy())
        samples, writable = self._read_disk(key)
        if samples is None:
            samples = audio.load_audio(path, self.sample_rate).numpy()
            self.stats["decoded"] += 1
            if writable:
                self._write_disk(key, samples)
        samples.flags.writeable = False  # the cache's own copy; callers get copies
        self._remember(key, samples)
        return torch.from_numpy(samples.copy())

    def clear_memory(self) -> None:
        self._memory.clear()
        self._held = 0

    # ---- levels ------------------------------------------------------------------------------------------------
    def _remember(self, key: str, samples: np.ndarray) -> None:
        if samples.nbytes > self.memory_bytes:
            return
        self._memory[key] = samples
        self._held += samples.nbytes
        while self._held > self.memory_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._held -= dropped.nbytes

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.npy"

    def _read_disk(self, key: str) -> tuple[np.ndarray | None, bool]:
        """The stored array (or ``None``) and whether the entry may be (re)written after decoding."""
        target = self._disk_path(key)
        if target is None:
            return None, False
        if not target.is_file():
            return None, True
        try:
            samples = np.load(target, allow_pickle=False)
            if samples.dtype != np.float32 or samples.ndim != 1 or samples.size == 0:
                raise ValueError(f"unexpected array {samples.dtype} {samples.shape}")
        except PermissionError:
            self.stats["disk_unreadable"] += 1  # someone else's entry: keep it, decode without caching on disk
            return None, False
        except (OSError, ValueError, EOFError):
            target.unlink(missing_ok=True)  # corrupt entry: decode again and rewrite
            self.stats["disk_repaired"] += 1
            return None, True
        self.stats["disk_hits"] += 1
        return samples, False

    def _write_disk(self, key: str, samples: np.ndarray) -> None:
        target = self._disk_path(key)
        if target is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = _new_file(target.parent, f".{key[:8]}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.save(stream, np.ascontiguousarray(samples, dtype=np.float32), allow_pickle=False)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _new_file(folder: Path, prefix: str) -> tuple[int, Path]:
    """Create and open a new, uniquely named ``<prefix><random>.tmp`` in ``folder`` for writing.

    Unlike ``tempfile.mkstemp`` (always ``0o600``), the file is created with mode ``0o666`` and the operating system
    applies the process umask, as for any ordinary new file, so the umask is never read or changed here.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = folder / f"{prefix}{secrets.token_hex(8)}.tmp"
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
