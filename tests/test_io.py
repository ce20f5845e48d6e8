"""The bottom floor: one atomic-write / sha256 / versions module and one list of audio extensions."""

from __future__ import annotations

import hashlib
import os
import platform
import stat

import pytest
import soundfile as sf
import torch

from sermodels import _io, audio, data
from sermodels._io import AtomicFile, atomic_write_bytes, atomic_write_text, sha256_of, software_versions
from sermodels._version import __version__


def test_software_versions_by_package():
    default = software_versions()
    assert default == {"python": platform.python_version(), "sermodels": __version__, "torch": torch.__version__}
    reported = software_versions("numpy", "libsndfile", "no-such-package-xyz")
    assert list(reported) == ["python", "numpy", "libsndfile", "no-such-package-xyz"]
    assert reported["libsndfile"] == sf.__libsndfile_version__ and reported["no-such-package-xyz"] is None
    import numpy

    assert reported["numpy"] == numpy.__version__


def test_sha256_of_reads_in_chunks(tmp_path, monkeypatch):
    path = tmp_path / "blob.bin"
    data_bytes = os.urandom(5000)
    path.write_bytes(data_bytes)
    monkeypatch.setattr(_io, "HASH_CHUNK", 1024)  # several chunks
    assert sha256_of(path) == hashlib.sha256(data_bytes).hexdigest()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_writes_keep_the_mode_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first\n")
    assert target.read_text() == "first\n"
    target.chmod(0o600)
    atomic_write_bytes(target, b"second\n")
    assert target.read_bytes() == b"second\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(RuntimeError, match="half way"), AtomicFile(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("half way")
    assert target.read_bytes() == b"second\n"  # untouched by the failed write
    with AtomicFile(target) as tmp:
        tmp.write_text("third\n")
        assert not target.read_text().startswith("third")  # not visible until the block ends
    assert target.read_text() == "third\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_one_list_of_audio_extensions():
    assert data.AUDIO_EXTENSIONS is audio.AUDIO_EXTENSIONS
    assert {".wav", ".flac", ".ogg", ".aiff"} <= audio.AUDIO_EXTENSIONS
    assert ".mat" not in audio.AUDIO_EXTENSIONS  # MATLAB data files, not speech, in most corpus folders
    assert all(ext == ext.lower() and ext.startswith(".") for ext in audio.AUDIO_EXTENSIONS)
