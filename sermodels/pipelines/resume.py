"""A resumable job's partial folder: its settings, a lock, and shards of finished files.

A job writing ``<out>`` works in ``<out>.partial/``:

- ``settings.json``: what the results depend on (the job decides: model, front-end, crop, precision, versions). A
  rerun with the same settings resumes; with other settings it is refused, naming what differs, unless it restarts
  (the folder's work is discarded).
- ``lock``: an exclusive ``fcntl.flock`` held from start to end (:func:`locked`), so a second run on the same output
  fails at once ("in use by another run") instead of mixing its shards in.
- ``shard-NNNNNN.npz`` (plain arrays, no pickle), written atomically (temporary file + rename) when a group of files
  is done: for every file its rows (a ``(rows, D)`` float32 matrix and a start time per row, in seconds) or its
  error, keyed by the file's key (:func:`sermodels.pipelines.inputs.file_key`: path, size and modification time, so
  a file replaced or touched since is computed again). An interruption loses at most the group in flight.

Files that failed are not done: a resumed run retries them, and a later success replaces the earlier error. When the
job has assembled its output from the shards it removes the folder.
"""

from __future__ import annotations

import fcntl
import functools
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sermodels._io import atomic_write_bytes, atomic_write_text

SETTINGS_FILE = "settings.json"
LOCK_FILE = "lock"
SHARD_GLOB = "shard-*.npz"
LOCK_ATTEMPTS = 5  # retries when the lock file is replaced under us by a run that finishes meanwhile

# A file's entry: its rows (shard, first row, row count) or its error message.
Entry = tuple[Path, int, int] | str
# What a shard records of one file: (key, start times, (rows, D) float32 values) or (key, error message).
ShardItem = tuple[str, Sequence[float], np.ndarray] | tuple[str, str]


class OutputInUse(RuntimeError):
    """Another run holds the output's lock."""


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``folder/lock`` (creating the folder) for the block."""
    lock = folder / LOCK_FILE
    for _ in range(LOCK_ATTEMPTS):
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


class PartialFolder:
    """The shards of a partial folder: ``entries[key]`` is a file's :data:`Entry`. Open it with :meth:`open`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, Entry] = {}
        self.count = 0

    @classmethod
    def open(cls, folder: Path, settings: dict[str, Any], restart: bool = False) -> PartialFolder:
        """Create the folder, or check an existing one's settings and read what it holds (call it under
        :func:`locked`). ``restart`` first removes everything in it but the lock."""
        settings = json.loads(json.dumps(settings))  # as stored: tuples -> lists
        if restart and folder.is_dir():
            for entry in folder.iterdir():  # all but the lock this run holds
                if entry.name != LOCK_FILE:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
        _shard_arrays.cache_clear()  # shards of an earlier run in this process may have had the same names
        partial = cls(folder)
        stored_file = folder / SETTINGS_FILE
        shards = sorted(folder.glob(SHARD_GLOB)) if folder.is_dir() else []
        if stored_file.is_file():
            try:
                stored = json.loads(stored_file.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{stored_file}: unreadable ({err}); rerun with --restart (restart=True)") from err
            if stored != settings:
                changes = "; ".join(differences(stored, settings)[:6])
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
            partial._add_shard(shard)
        return partial

    def done(self, key: str) -> bool:
        return isinstance(self.entries.get(key), tuple)

    def failed(self, key: str) -> bool:
        return isinstance(self.entries.get(key), str)

    def write_shard(self, items: Sequence[ShardItem]) -> Path:
        """Record a group of finished files in a new shard (atomically) and return its path."""
        ok = [item for item in items if not isinstance(item[1], str)]
        failed = [item for item in items if isinstance(item[1], str)]
        dim = next((values.shape[1] for _, _, values in ok), 0)
        arrays = {
            "keys": np.array([key for key, *_ in ok], dtype=str),
            "counts": np.array([len(starts) for _, starts, _ in ok], dtype=np.int64),
            "starts": np.array([t for _, starts, _ in ok for t in starts], dtype=np.float64),
            "features": np.concatenate([values for *_, values in ok]) if ok else np.empty((0, dim), np.float32),
            "failed_keys": np.array([key for key, _ in failed], dtype=str),
            "errors": np.array([error for _, error in failed], dtype=str),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.count += 1
        path = self.folder / f"shard-{self.count:06d}.npz"
        atomic_write_bytes(path, buffer.getvalue())
        self._add_shard(path)
        return path

    def rows(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """A done file's start times ``(rows,)`` and values ``(rows, D)``."""
        shard, first, count = self.entries[key]
        starts, values = _shard_arrays(shard)
        return starts[first : first + count], values[first : first + count]

    def remove(self) -> None:
        shutil.rmtree(self.folder)
        _shard_arrays.cache_clear()

    def _add_shard(self, shard: Path) -> None:
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


@functools.lru_cache(maxsize=4)
def _shard_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["starts"], data["features"]


def differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    """``"key.path: <before> then, <now> now"`` for every leaf that differs between two JSON values."""
    if isinstance(before, dict) and isinstance(now, dict):
        found: list[str] = []
        for key in sorted(set(before) | set(now), key=str):
            found += differences(before.get(key), now.get(key), f"{prefix}{key}.")
        return found
    return [] if before == now else [f"{prefix.rstrip('.')}: {before!r} then, {now!r} now"]
