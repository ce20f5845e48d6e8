"""The bottom floor: atomic file writes, sha256 of files, and the software versions written next to results.

Every module that writes a result (predictions, features, reports, checkpoints, indexes) writes it through
:func:`atomic_write_bytes` (a temporary file beside the target, then a rename), so a reader never sees half a file
and an interruption never leaves one. Nothing here imports the rest of the package except the leaf
:mod:`sermodels._version`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
from importlib import metadata
from pathlib import Path

from sermodels._version import __version__

# Random names tried for the temporary file of an atomic write before giving up (a clash is already improbable).
TEMP_NAME_ATTEMPTS = 100
HASH_CHUNK = 1 << 20  # bytes read at a time by sha256_of
# What a checkpoint's config.json records (python is always added).
CHECKPOINT_PACKAGES = ("sermodels", "torch")


# ------------------------------------------------------------------------------------------------ atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: readers never see half a file.

    The file keeps the mode of the file it replaces; a new file gets the mode any new file gets (``0o666`` less the
    process umask, applied by the OS when the temporary file is created; the umask itself is never changed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = create_beside(path)
    try:
        with os.fdopen(handle, "wb") as tmp:
            if path.exists():  # before any data goes in: a private file's contents never sit in a wider-open one
                os.chmod(tmp_name, path.stat().st_mode & 0o777)
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def create_beside(path: Path) -> tuple[int, str]:
    """Create a new, uniquely named hidden file next to ``path``; return its open descriptor and its name.

    Unlike ``tempfile.mkstemp`` (always mode 0600) the file is opened with mode 0666 and the OS applies the umask,
    exactly as for any new file, without reading or changing the process-wide umask (which would race with threads).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(TEMP_NAME_ATTEMPTS):
        tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp_name, flags, 0o666), tmp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: could not create a temporary file beside it after {TEMP_NAME_ATTEMPTS} attempts")


class AtomicFile:
    """A temporary file beside ``path`` (its name on entering), renamed over ``path`` when the block succeeds and
    removed when it fails: for outputs written piece by piece (the feature writers stream rows into it)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

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


# ------------------------------------------------------------------------------------------------ provenance


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def software_versions(*packages: str) -> dict[str, str | None]:
    """``python`` and the version of each of ``packages`` (default :data:`CHECKPOINT_PACKAGES`), in that order.

    ``sermodels`` is this package's own version, ``torch`` is ``torch.__version__`` (it names the build, e.g.
    ``2.4.1+cu121``, which the installed distribution's version does not), ``libsndfile`` is the C library
    soundfile wraps; any other name is an installed distribution, ``None`` when it is not installed.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages or CHECKPOINT_PACKAGES:
        versions[name] = _version_of(name)
    return versions


def _version_of(name: str) -> str | None:
    if name == "sermodels":
        return __version__
    if name == "torch":
        import torch

        return torch.__version__
    if name == "libsndfile":
        try:
            import soundfile
        except ImportError:
            return None
        return getattr(soundfile, "__libsndfile_version__", None)
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
