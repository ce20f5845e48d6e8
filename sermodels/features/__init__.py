"""Input representations: native-torch spectrogram, mel, dB and deltas (torchaudio-compatible), the NICU log-mel
functionals, z-score standardisation, Deep Spectrum images (``spectrogram_image``) and CNN features
(``deepspectrum``), windows of long clips (``windows``), and eGeMAPS/GeMAPS through openSMILE (needs the
non-commercial ``smile`` extra only when an ``OpenSmileFunctionals`` is created)."""

from .deepspectrum import DeepSpectrum
from .egemaps import OpenSmileFunctionals
from .functionals import LogMelFunctionals
from .mfcc import MFCC, create_dct
from .normalize import Standardizer, apply_per_corpus, fit_per_corpus
from .spectrogram import (
    WINDOWS,
    AmplitudeToDB,
    MelSpectrogram,
    Spectrogram,
    amplitude_to_db,
    compute_deltas,
    melscale_fbanks,
    num_frames,
)
from .spectrogram_image import SpectrogramImage

__all__ = [
    "WINDOWS",
    "AmplitudeToDB",
    "DeepSpectrum",
    "LogMelFunctionals",
    "MFCC",
    "MelSpectrogram",
    "OpenSmileFunctionals",
    "Spectrogram",
    "SpectrogramImage",
    "Standardizer",
    "amplitude_to_db",
    "apply_per_corpus",
    "compute_deltas",
    "create_dct",
    "fit_per_corpus",
    "melscale_fbanks",
    "num_frames",
]
