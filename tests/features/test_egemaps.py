"""openSMILE eGeMAPS/GeMAPS functionals on real EMO-DB files, and the message when openSMILE is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sermodels.audio import load_audio
from sermodels.features.egemaps import OpenSmileFunctionals, extract_files

EMODB_FILES = ("03a01Fa", "08b02Nb", "16b10Wb")


@pytest.fixture
def emodb_paths(emodb_root) -> list:
    return [emodb_root / "wav" / f"{stem}.flac" for stem in EMODB_FILES]


@pytest.mark.parametrize(("feature_set", "dim"), [("eGeMAPSv02", 88), ("GeMAPSv01b", 62)])
def test_real_files_give_finite_deterministic_functionals(emodb_paths, feature_set, dim):
    pytest.importorskip("opensmile")
    extractor = OpenSmileFunctionals(feature_set)
    first = extractor.extract_files(emodb_paths)
    assert first.shape == (3, dim) and first.dtype == np.float32
    assert np.isfinite(first).all()
    assert len(extractor.feature_names) == dim == extractor.dim
    np.testing.assert_array_equal(extract_files(emodb_paths, 16000, feature_set), first)
    assert not np.allclose(first[0], first[1])  # different utterances, different features


def test_tensor_and_array_inputs_agree(emodb_paths):
    pytest.importorskip("opensmile")
    extractor = OpenSmileFunctionals()
    waveform = load_audio(emodb_paths[0])
    from_tensor = extractor(waveform)
    assert from_tensor.shape == (88,)
    np.testing.assert_array_equal(from_tensor, extractor(waveform.numpy()))
    assert extractor.feature_names[0].startswith("F0semitoneFrom27.5Hz")
    assert extractor.config() == {"feature_set": "eGeMAPSv02", "sample_rate": 16000}


def test_bad_inputs_are_clear_errors():
    pytest.importorskip("opensmile")
    with pytest.raises(ValueError, match="unknown feature set"):
        OpenSmileFunctionals("ComParE_2016")
    extractor = OpenSmileFunctionals()
    with pytest.raises(ValueError, match=r"clip\.wav: .*too short"):
        extractor(np.zeros(400, dtype=np.float32), name="clip.wav")
    with pytest.raises(ValueError, match="shape"):
        extractor(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        extractor(np.full(16000, np.nan, dtype=np.float32))


def test_missing_opensmile_gives_install_and_licence_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` raise ImportError
    with pytest.raises(ImportError, match=r"sermodels\[smile\]") as info:
        OpenSmileFunctionals()
    assert "non-commercial" in str(info.value)
