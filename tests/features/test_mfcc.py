"""MFCC and create_dct against scipy's DCT-II of torchaudio's reference dB mel spectrograms.

``../shared/reference/torchaudio_frontend.npz`` holds torchaudio 2.11's ``AmplitudeToDB("power", top_db=80)`` of the
mel spectrogram of the real EMO-DB clip 03a01Fa (``<config>/emodb_03a01Fa/db``, ``(n_mels, frames)``), which is
exactly the input of torchaudio's ``MFCC(log_mels=False)`` DCT. So:

* the DCT matrix alone, applied to the reference dB, must equal ``scipy.fft.dct(db, type=2, axis=0)[:n_mfcc]``:
  float32 rounding of a sum of ``n_mels`` terms, ``rtol=1e-5`` plus ``1e-5`` of the largest coefficient;
* the whole module on the decoded clip inherits the dB tolerance of ``test_spectrogram.py`` (5e-3 dB per cell,
  cells near the -80 dB floor inherit the spectrum's absolute error). The orthonormal DCT-II has unit-norm rows, so
  by Cauchy-Schwarz a coefficient's error is at most the L2 norm of its frame's dB error, ``sqrt(n_mels) * 5e-3``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.fft
import torch

from sermodels.audio import load_audio
from sermodels.features import MFCC, MelSpectrogram, create_dct

DCT_RTOL = 1e-5
DCT_ATOL_OF_PEAK = 1e-5
DB_ATOL = 5e-3  # test_spectrogram.py: our dB against torchaudio's, everywhere
CLIP = "emodb_03a01Fa"
MEL_CONFIGS = ("nicu_mel40", "emonet_mel64", "nicu_mel40_slaney")
MEL_KEYS = ("n_fft", "win_length", "hop_length", "window", "power", "center", "pad_mode")


@pytest.fixture
def reference(reference_dir) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((reference_dir / "torchaudio_frontend.json").read_text())
    with np.load(reference_dir / "torchaudio_frontend.npz") as npz:
        arrays = {key: npz[key] for key in npz.files if key.endswith(f"{CLIP}/db")}
    return meta, arrays


@pytest.fixture
def clip(emodb_root, reference) -> torch.Tensor:
    waveform = load_audio(emodb_root / "wav" / "03a01Fa.flac")
    assert len(waveform) == reference[0]["signals"][CLIP]
    return waveform


def melkwargs(config: dict) -> dict:
    """MelSpectrogram keyword arguments of a reference configuration (without the sample rate)."""
    return {k: config[k] for k in (*MEL_KEYS, "n_mels", "f_min", "f_max", "norm", "mel_scale")}


def scipy_mfcc(db: np.ndarray, n_mfcc: int, norm: str | None = "ortho") -> np.ndarray:
    """``(n_mfcc, frames)``: scipy's DCT-II over the mel axis, in float64."""
    return scipy.fft.dct(db.astype(np.float64), type=2, norm=norm, axis=0)[:n_mfcc]


def apply_dct(db: np.ndarray, dct: torch.Tensor) -> np.ndarray:
    return (torch.from_numpy(db).T @ dct).T.numpy()


def assert_dct_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    atol = DCT_ATOL_OF_PEAK * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=DCT_RTOL, atol=atol, err_msg=what)


@pytest.mark.parametrize("config_name", MEL_CONFIGS)
@pytest.mark.parametrize("n_mfcc", [13, 40])
def test_dct_matrix_on_reference_db_equals_scipy_ortho(reference, config_name, n_mfcc):
    db = reference[1][f"{config_name}/{CLIP}/db"]
    dct = create_dct(n_mfcc, db.shape[0], "ortho")
    assert dct.shape == (db.shape[0], n_mfcc) and dct.dtype == torch.float32
    assert_dct_close(apply_dct(db, dct), scipy_mfcc(db, n_mfcc), f"{config_name} n_mfcc={n_mfcc}")


@pytest.mark.parametrize("config_name", ["nicu_mel40", "emonet_mel64"])
def test_dct_without_norm_is_scipys_unnormalised_dct_ii(reference, config_name):
    # DCT-II: y_k = 2 sum_n x_n cos(pi k (2n + 1) / (2N)); torchaudio's norm=None is 2 cos(pi / N (n + 0.5) k), the
    # same kernel with the same factor 2, so scipy's norm=None needs no rescaling.
    db = reference[1][f"{config_name}/{CLIP}/db"]
    dct = create_dct(13, db.shape[0], None)
    assert_dct_close(apply_dct(db, dct), scipy_mfcc(db, 13, norm=None), config_name)
    n_mels = db.shape[0]
    scale = torch.full((13,), math.sqrt(1 / (2 * n_mels)))
    scale[0] = math.sqrt(1 / (4 * n_mels))
    torch.testing.assert_close(create_dct(13, n_mels, "ortho"), dct * scale, rtol=1e-6, atol=1e-7)


def test_ortho_dct_of_all_bands_is_orthonormal():
    dct = create_dct(26, 26, "ortho").double()  # float32 entries: ~1e-6 rounding in a sum of 26 products
    torch.testing.assert_close(dct.T @ dct, torch.eye(26, dtype=torch.float64), atol=5e-6, rtol=0)


@pytest.mark.parametrize("config_name", ["nicu_mel40", "emonet_mel64"])
def test_module_on_the_real_clip_equals_scipy_dct_of_torchaudio_db(reference, clip, config_name):
    meta, arrays = reference
    config = meta["configs"][config_name]
    mfcc = MFCC(16000, n_mfcc=13, melkwargs=melkwargs(config))
    expected = scipy_mfcc(arrays[f"{config_name}/{CLIP}/db"], 13)
    actual = mfcc(clip).numpy()
    assert actual.shape == expected.shape == (13, int(mfcc.num_frames(torch.tensor([len(clip)]))[0]))
    bound = math.sqrt(config["n_mels"]) * DB_ATOL + DCT_ATOL_OF_PEAK * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=bound, err_msg=config_name)


def test_log_mels_is_the_dct_of_log_mel_plus_offset(clip):
    kwargs = {"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 26}
    mfcc = MFCC(16000, n_mfcc=13, log_mels=True, melkwargs=kwargs)
    mel = MelSpectrogram(16000, **kwargs)(clip)
    expected = (torch.log(mel + 1e-6).T @ create_dct(13, 26, "ortho")).T
    torch.testing.assert_close(mfcc(clip), expected, rtol=1e-5, atol=1e-5)


def test_shapes_leading_dimensions_and_per_item_batches():
    generator = torch.Generator().manual_seed(0)
    loud = 0.5 * torch.randn(2, 8000, generator=generator)
    quiet = 1e-3 * torch.randn(2, 8000, generator=generator)
    batch = torch.stack([loud, quiet])  # (2, 2, 8000)
    mfcc = MFCC(16000, n_mfcc=13, melkwargs={"n_fft": 512, "hop_length": 160, "n_mels": 40})
    out = mfcc(batch)
    assert out.shape == (2, 2, 13, 1 + 8000 // 160)
    # top_db floors each spectrogram at its own peak (torchaudio: the peak of the whole (batch, n_mels, time) input)
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(out[i, j], mfcc(batch[i, j]), rtol=1e-5, atol=1e-4)
    assert mfcc(batch.double()).dtype == torch.float64
    lengths = torch.tensor([400, 8000, 16000])
    assert torch.equal(mfcc.num_frames(lengths), torch.tensor([mfcc(torch.randn(int(n))).shape[-1] for n in lengths]))


def test_config_is_json_and_rebuilds_the_same_module():
    mfcc = MFCC(
        16000,
        n_mfcc=20,
        norm=None,
        log_mels=True,
        melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 26, "window": "hamming"},
    )
    config = json.loads(json.dumps(mfcc.config()))
    assert config["melkwargs"]["window"] == "hamming" and "sample_rate" not in config["melkwargs"]
    rebuilt = MFCC(**config)
    assert rebuilt.config() == mfcc.config()
    waveform = 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rebuilt(waveform), mfcc(waveform))
    assert mfcc.frame_rate == 100.0 and len(mfcc.state_dict()) == 0  # the DCT is a derived, non-persistent buffer


def test_errors_are_clear():
    with pytest.raises(ValueError, match="dct_type=2"):
        MFCC(dct_type=3, melkwargs={"n_mels": 40})
    with pytest.raises(ValueError, match="n_mfcc=41 > n_mels=40"):
        MFCC(n_mfcc=41, melkwargs={"n_mels": 40})
    with pytest.raises(ValueError, match="sample_rate"):
        MFCC(melkwargs={"sample_rate": 8000, "n_mels": 40})
    with pytest.raises(ValueError, match='"ortho" or None'):
        create_dct(13, 40, "forward")
    with pytest.raises(ValueError, match="n_mfcc >= 1"):
        create_dct(0, 40, None)
