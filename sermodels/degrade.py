"""Deterministic audio degradations for the feature-enhancement experiments: additive noise and convolution.

Paper: MixedEmotions deliverable D4.2 (H2020 MixedEmotions, "Emotion recognition from audio", extension of D4.1),
§3.4.1 "RECOLA and noise database". The clean RECOLA speech was degraded

* additively with CHiME-3 background recordings (booth, bus, cafe, pedestrian area, street junction) at SNRs of
  0-12 dB in 3 dB steps (:data:`SNRS_DB`);
* convolutively with the microphone impulse response of a Google Nexus One smartphone (Audio Degradation Toolbox),
  and with that response followed by the room impulse response of a classroom or a grand hall.

Every noise recording was normalised, concatenated by type and cut into three equal parts for the train,
development and test partitions, so that no noise excerpt is shared between partitions.

None of those recordings is available offline, so this module synthesises stand-ins, all of them documented and
reproducible:

* **Additive noise**: white, pink (1/f power) and brown (1/f^2 power) Gaussian noise (:func:`colored_noise`), and
  babble (:func:`babble`), the sum of 4-6 talkers from a pool of utterances. The babble pool is the caller's job
  and must hold speakers **outside** the degraded partition (e.g. train speakers' utterances to degrade the test
  partition), so no speaker is both target and background.
* **"phone"**: a 300-3400 Hz Butterworth band-pass (:func:`phone_band`), the telephone band, standing in for the
  smartphone microphone response; optionally with white noise at an SNR (the microphone's self-noise).
* **"reverb"**: an exponentially decaying Gaussian noise tail with a direct path first (:func:`synthetic_rir`),
  T60 uniform in :data:`T60_RANGE` (classroom to hall); optionally with pink noise at an SNR. Unlike the paper's
  phone-then-room chain, the room response is applied alone.

Conventions:

* **SNR** is the ratio of the speech's *active* power (the 20 ms frames within 40 dB of the loudest,
  :func:`sermodels.data.longform.active_speech`, so pauses do not dilute the speech level) to the noise's mean
  power, measured after any convolution (:func:`add_at_snr`).
* **Determinism and partition independence**: :meth:`Degradation.apply` draws everything (noise, babble talkers,
  T60 and RIR) from a generator seeded by ``(seed, partition, kind, snr_db, key)``, with ``key`` (e.g. the item
  id) hashed by ``zlib.crc32``: the same file gets the same noise on every call and in every process, and the three
  partitions never share a noise realisation or an RIR (the paper's three-way split of the noise recordings).
* **Peak protection**: if any output sample exceeds :data:`PEAK_LIMIT` in magnitude, the whole output (speech and
  noise together) is scaled down so that it does not; this changes the level only, never the SNR.
* Output is float32, as long as the input.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

from sermodels.data.longform import active_speech

#: Degradation kinds; the first four are additive noises, "phone" and "reverb" are convolutions.
DEGRADATIONS = ("white", "pink", "brown", "babble", "phone", "reverb")
NOISE_KINDS = ("white", "pink", "brown", "babble")
#: D4.2 §3.4.1: "various levels of SNR (i.e., 0-12dB at a step of 3dB)".
SNRS_DB = (0, 3, 6, 9, 12)
#: D4.2 §3.4.1: the noise recordings were cut into three parts, one per partition.
PARTITIONS = ("train", "dev", "test")
#: Power spectrum exponent of each colored noise: power ~ 1 / f**exponent.
COLOR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
#: Colored noise has no energy below this frequency (Hz): no DC, and brown noise does not put half its power into
#: inaudible drift.
COLOR_LOW_HZ = 20.0
#: Number of simultaneous babble talkers, drawn per call (inclusive), as the longform backgrounds.
BABBLE_TALKERS = (4, 6)
#: Telephone band (Hz) of the "phone" stand-in for the smartphone microphone response, and the Butterworth order
#: (of each edge; applied forwards and backwards, so the magnitude response is squared and the phase is zero).
PHONE_BAND_HZ = (300.0, 3400.0)
PHONE_ORDER = 4
#: Reverberation time range (s) of the synthetic room responses: a classroom to a grand hall.
T60_RANGE = (0.3, 1.0)
#: A synthetic RIR lasts this many T60s (the tail ends 90 dB down).
RIR_LENGTH_T60 = 1.5
#: Direct-to-reverberant energy ratio of a synthetic RIR (dB): a talker a few metres from the microphone.
RIR_DRR_DB = 0.0
#: No output sample exceeds this magnitude (see the module docstring).
PEAK_LIMIT = 0.99
#: Additive noise added after a convolution when an SNR is given.
CONVOLUTION_NOISE = {"phone": "white", "reverb": "pink"}


def _check_waveform(x: np.ndarray, name: str = "waveform") -> np.ndarray:
    samples = np.asarray(x, dtype=np.float64)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"{name} must be a non-empty mono waveform of shape (samples,), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(samples)).sum())} NaN/Inf samples")
    return samples


def _unit_power(x: np.ndarray) -> np.ndarray:
    power = float(np.mean(np.square(x)))
    return x / math.sqrt(power) if power > 0 else x


def colored_noise(kind: str, samples: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """Gaussian noise ``(samples,)`` with power ~ 1/f**e (white e=0, pink 1, brown 2), nothing below
    :data:`COLOR_LOW_HZ` (no DC), scaled to unit mean power. Shaped in the frequency domain in one FFT."""
    if kind not in COLOR_EXPONENTS:
        raise ValueError(f"unknown noise color {kind!r}; choose from {', '.join(COLOR_EXPONENTS)}")
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    white = rng.standard_normal(samples)
    frequencies = np.fft.rfftfreq(samples, 1.0 / sample_rate)
    amplitude = np.where(frequencies >= COLOR_LOW_HZ, 1.0, 0.0)
    amplitude[1:] *= frequencies[1:] ** (-COLOR_EXPONENTS[kind] / 2)
    if not amplitude.any():  # too short to hold any frequency above the low corner: keep it white, without DC
        return _unit_power(white - white.mean())
    return _unit_power(np.fft.irfft(np.fft.rfft(white) * amplitude, samples))


def _talker(pool: list[np.ndarray], samples: int, rng: np.random.Generator) -> np.ndarray:
    """One talker: pool utterances (each at unit power) end to end in random order, from a random offset."""
    pieces = [pool[i] for i in rng.permutation(len(pool))]
    total = sum(len(piece) for piece in pieces)
    offset = int(rng.integers(total))
    while total < offset + samples:  # loop the pool in a new order until the excerpt fits
        more = [pool[i] for i in rng.permutation(len(pool))]
        pieces.extend(more)
        total += sum(len(piece) for piece in more)
    return np.concatenate(pieces)[offset : offset + samples]


def babble(
    pool_waveforms: Sequence[np.ndarray],
    samples: int,
    rng: np.random.Generator,
    talkers: tuple[int, int] = BABBLE_TALKERS,
) -> np.ndarray:
    """Babble ``(samples,)`` at unit mean power: the sum of ``talkers`` (drawn, inclusive) talkers, each looping
    the pool's utterances (each scaled to unit power) in its own random order from a random offset.

    The pool must hold utterances of speakers outside the partition being degraded, at the same sample rate.
    """
    pool = [_unit_power(_check_waveform(w, "babble pool waveform")) for w in pool_waveforms if np.any(w)]
    if not pool:
        raise ValueError("babble needs a pool with at least one non-silent utterance")
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    low, high = talkers
    if not 1 <= low <= high:
        raise ValueError(f"talkers must be (low, high) with 1 <= low <= high, got {talkers}")
    count = int(rng.integers(low, high + 1))
    mixed = sum(_talker(pool, samples, rng) for _ in range(count))
    return _unit_power(mixed)


def phone_band(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Telephone band-pass (:data:`PHONE_BAND_HZ`, Butterworth, zero phase) of ``x (samples,)``, float64.

    Unity gain in the pass band (the level of in-band content is kept), so speech loses only what lies outside it.
    """
    samples = _check_waveform(x)
    low, high = PHONE_BAND_HZ
    if high >= sample_rate / 2:
        raise ValueError(f"the phone band reaches {high} Hz, above the Nyquist frequency of {sample_rate} Hz audio")
    sos = signal.butter(PHONE_ORDER, (low, high), btype="bandpass", fs=sample_rate, output="sos")
    padlen = min(len(samples) - 1, 3 * (2 * len(sos) + 1))
    return signal.sosfiltfilt(sos, samples, padlen=padlen)


def synthetic_rir(t60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A room impulse response ``(ceil(RIR_LENGTH_T60 * t60 * sample_rate),)``: a unit direct-path impulse at
    sample 0 (no delay, so the output stays aligned with time-continuous labels), then Gaussian noise whose energy
    decays by 60 dB per ``t60`` seconds, scaled to the direct-to-reverberant ratio :data:`RIR_DRR_DB`."""
    if not (math.isfinite(t60) and t60 > 0):
        raise ValueError(f"t60 must be a positive number of seconds, got {t60}")
    length = max(2, math.ceil(RIR_LENGTH_T60 * t60 * sample_rate))
    times = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * 10 ** (-3.0 * times / t60)  # amplitude: 60 dB of energy per t60
    tail *= math.sqrt(10 ** (-RIR_DRR_DB / 10) / float(np.sum(np.square(tail))))
    return np.concatenate([[1.0], tail])


def _active_power(x: np.ndarray, sample_rate: int) -> float:
    energy, count = active_speech(x, sample_rate)
    return energy / count if count else 0.0


def reverberate(x: np.ndarray, rir: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``x (samples,)`` convolved with ``rir`` (FFT), cut to the input's length, at the input's active speech power
    (so the level is unchanged by the room)."""
    samples = _check_waveform(x)
    wet = signal.fftconvolve(samples, _check_waveform(rir, "rir"))[: len(samples)]
    before, after = _active_power(samples, sample_rate), _active_power(wet, sample_rate)
    return wet * math.sqrt(before / after) if after > 0 else wet


def add_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int = 16000) -> np.ndarray:
    """``speech + g * noise`` (float64, both ``(samples,)``) with ``g`` such that the speech's active power over the
    scaled noise's mean power is ``snr_db`` (module docstring)."""
    speech = _check_waveform(speech, "speech")
    noise = _check_waveform(noise, "noise")
    if noise.shape != speech.shape:
        raise ValueError(f"noise {noise.shape} and speech {speech.shape} must have the same length")
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    speech_power = _active_power(speech, sample_rate)
    noise_power = float(np.mean(np.square(noise)))
    if speech_power <= 0 or noise_power <= 0:
        raise ValueError("add_at_snr needs speech and noise with non-zero energy")
    return speech + noise * math.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))


def _protect_peaks(x: np.ndarray) -> np.ndarray:
    peak = float(np.abs(x).max())
    return x * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x


@dataclass(frozen=True)
class Degradation:
    """One condition: ``kind`` (:data:`DEGRADATIONS`), ``snr_db`` (required for the additive kinds; for "phone"
    and "reverb" optional added noise), ``seed`` and the ``partition`` whose noise realisations it draws."""

    kind: str
    snr_db: float | None
    seed: int = 0
    partition: str = "test"

    def __post_init__(self) -> None:
        if self.kind not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.kind!r}; choose from {', '.join(DEGRADATIONS)}")
        if self.partition not in PARTITIONS:
            raise ValueError(f"unknown partition {self.partition!r}; choose from {', '.join(PARTITIONS)}")
        if self.snr_db is None and self.kind in NOISE_KINDS:
            raise ValueError(f"degradation {self.kind!r} adds noise and needs an snr_db")
        if self.snr_db is not None and not math.isfinite(self.snr_db):
            raise ValueError(f"snr_db must be finite or None, got {self.snr_db}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def name(self) -> str:
        """A file-name friendly label, e.g. ``pink_6dB`` or ``reverb``."""
        return self.kind if self.snr_db is None else f"{self.kind}_{self.snr_db:g}dB"

    def rng(self, key: str = "") -> np.random.Generator:
        """The generator of one call: seeded by (seed, partition, kind, snr_db, key), stable across processes."""
        condition = zlib.crc32(f"{self.kind}|{self.snr_db!r}".encode())
        entropy = [self.seed, PARTITIONS.index(self.partition), condition, zlib.crc32(key.encode())]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def apply(
        self, x: np.ndarray, sample_rate: int, *, key: str = "", babble_pool: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        """The degraded ``x (samples,)``, float32, same length; ``key`` (e.g. the item id) picks the realisation.

        ``babble_pool``: utterances of speakers outside this partition, at ``sample_rate`` (needed for "babble").
        """
        speech = _check_waveform(x)
        rng = self.rng(key)
        if self.kind == "phone":
            speech = phone_band(speech, sample_rate)
        elif self.kind == "reverb":
            t60 = float(rng.uniform(*T60_RANGE))
            speech = reverberate(speech, synthetic_rir(t60, sample_rate, rng), sample_rate)
        out = speech
        if self.snr_db is not None:
            noise = self._noise(len(speech), sample_rate, rng, babble_pool)
            out = add_at_snr(speech, noise, self.snr_db, sample_rate)
        return _protect_peaks(out).astype(np.float32)

    def _noise(
        self, samples: int, sample_rate: int, rng: np.random.Generator, pool: Sequence[np.ndarray] | None
    ) -> np.ndarray:
        kind = CONVOLUTION_NOISE.get(self.kind, self.kind)
        if kind != "babble":
            return colored_noise(kind, samples, rng, sample_rate)
        if not pool:
            raise ValueError("the babble degradation needs a babble_pool of utterances from other speakers")
        return babble(pool, samples, rng)


def conditions(kinds: Sequence[str] = DEGRADATIONS, snrs: Sequence[float] = SNRS_DB) -> list[tuple[str, float | None]]:
    """The grid of ``(kind, snr_db)`` conditions: each additive noise at each SNR; "phone" and "reverb" first
    without added noise (the paper's convolution-only conditions), then with their noise at each SNR."""
    grid: list[tuple[str, float | None]] = []
    for kind in kinds:
        if kind not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {kind!r}; choose from {', '.join(DEGRADATIONS)}")
        if kind not in NOISE_KINDS:
            grid.append((kind, None))
        grid.extend((kind, float(snr)) for snr in snrs)
    return grid
