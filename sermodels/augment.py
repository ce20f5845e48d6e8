"""Training-time data augmentation in pure torch: waveform perturbations, SpecAugment masks and mixup.

Every augmentation is seeded and off at evaluation: :class:`WaveformAugment` and :class:`SpecAugment` are
``nn.Module`` instances that return their inputs unchanged when ``self.training`` is False. Each owns a CPU
``torch.Generator``; the per-clip parameters (probabilities, gains, SNRs, shifts, factors, mask positions) are drawn
from it on the CPU and moved to the batch's device, and the large noise tensors are drawn on the batch's device from
a generator seeded by a draw of the owned one. So the whole random state is one CPU generator state
(``get_state`` / ``set_state``), a run is repeatable on a given device, and CPU and CUDA runs draw the same
parameters (the Gaussian noise itself differs between devices, whose generators are different algorithms).

Batch convention: ``waveforms (B, T)`` float, zero-padded; ``lengths (B,)`` long, the valid samples of each row;
``speakers`` a list of B speaker ids (or None); ``labels (B,)`` long.

Waveform augmentations (:class:`WaveformAugment`), applied in this order, each to a clip with its own probability
``p``:

- Speed perturbation (Ko, Peddinti, Povey, Khudanpur, "Audio augmentation for speech recognition", Interspeech
  2015): the clip is resampled by a factor ``f`` drawn from ``factors``, as if played ``f`` times faster, which
  changes both tempo and pitch; its new length is ``round(len / f)``. Ko et al. use the factors 0.9, 1.0 and 1.1 (the
  default here) and resample with sox; we resample band-limited in the frequency domain (the clip's spectrum cut or
  zero-extended to the new length, ``_resample``), so that what lies above the new Nyquist frequency is removed
  rather than aliased. The output batch width is the longest new length.
- Time shift: the valid part of a clip is rotated circularly by a whole number of samples drawn uniformly in
  ``[-max_seconds, max_seconds]``; the padding stays zero.
- Gain: the clip is scaled by a gain drawn uniformly in ``db`` (decibels).
- Additive noise at a signal-to-noise ratio drawn uniformly in ``snr_db``, measured over the clip's valid samples
  (the noise is zero beyond them), of a colour drawn uniformly from ``colors``: white (Gaussian), pink (power
  ``∝ 1/f``) or brown (power ``∝ 1/f²``), shaped from Gaussian noise in the frequency domain with a zero DC bin, or
  babble: the sum of ``babble_talkers`` other clips of the same batch whose speaker differs from the clip's own,
  each taken from its valid part, looped to the clip's length from a random start and scaled to unit RMS before the
  sum. A speaker of None differs from every other clip; babble never uses the clip itself and is made from the
  batch as it stands before any noise is added; a clip with no other-speaker clip (of non-zero energy) in the batch
  gets pink noise instead. A silent clip (zero energy over its valid samples) has no level to set an SNR against
  and is left as it is.

SpecAugment (:class:`SpecAugment`; Park, Chan, Zhang, Chiu, Zoph, Cubuk, Le, "SpecAugment: a simple data
augmentation method for automatic speech recognition", Interspeech 2019): on a spectrogram, ``freq_masks`` bands of
up to ``freq_width`` bins and ``time_masks`` spans of up to ``time_width`` frames are set to ``fill``, each width
drawn uniformly from zero up to its bound and placed uniformly at random. Departures: no time warping (Park et al.
found it the least useful of the three); time masks lie inside each row's valid frames, never in its padding; and a
``time_width`` below 1 is a fraction of the row's valid frames, like the adaptive masks of Park et al.'s later
"SpecAugment on large scale datasets" (ICASSP 2020), which suits utterances of very different lengths. Park et al.'s
LibriSpeech LD policy masks two bands of up to 27 of 80 mel channels and two spans of up to 100 frames; the defaults
here are milder, for the short emotional utterances of the SER corpora.

mixup (:func:`mixup`; Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: beyond empirical risk minimization", ICLR 2018):
a batch is mixed with a permutation of itself, ``x̃ = λ x + (1 − λ) x[perm]`` with ``λ ~ Beta(α, α)``; the loss is
``λ · loss(y_a) + (1 − λ) · loss(y_b)`` with ``y_a = labels`` and ``y_b = labels[perm]``. Zhang et al. report
``α`` in [0.1, 0.4] improving on ImageNet and larger values underfitting. For variable-length clips the mixed
length is the longer of the two (the shorter contributes silence past its end). ``λ`` is drawn from two Gamma
samples (Marsaglia and Tsang's method) with the given generator, so it is repeatable.

:class:`Augmentation` reads a recipe's ``augment`` block (``seed``, ``sample_rate``, ``gain``, ``noise``, ``shift``,
``speed``, ``spec``, ``mixup``; an absent or None key is off), validates it and builds the three parts. The
SpecAugment and mixup generators are seeded with ``seed`` plus fixed offsets so that their streams differ from the
waveform stream.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

SAMPLE_RATE = 16_000
NOISE_COLORS = ("white", "pink", "brown", "babble")
#: Power spectrum exponent of each shaped colour: power ∝ 1 / f**exponent.
COLOR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}

GAIN_DEFAULTS = {"p": 0.5, "db": [-6.0, 6.0]}
NOISE_DEFAULTS = {"p": 0.5, "snr_db": [5.0, 30.0], "colors": list(NOISE_COLORS), "babble_talkers": 3}
SHIFT_DEFAULTS = {"p": 0.5, "max_seconds": 0.5}
SPEED_DEFAULTS = {"p": 0.5, "factors": [0.9, 1.0, 1.1]}  # Ko et al. 2015: three copies at 0.9, 1.0 and 1.1
SPEC_DEFAULTS = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 0.05, "fill": 0.0}
MIXUP_DEFAULTS = {"p": 0.5, "alpha": 0.4}  # Zhang et al. 2018, §3.1: α in [0.1, 0.4] helps on ImageNet

#: Added to ``seed`` for the SpecAugment and mixup generators of an :class:`Augmentation`.
SPEC_SEED_OFFSET = 1_000_003
MIXUP_SEED_OFFSET = 2_000_003


# ---------------------------------------------------------------------------------------------------------------
# Validation: one normaliser per option, shared by the modules and by Augmentation.from_config.


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _probability(name: str, value: Any) -> float:
    p = _number(name, value)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {p}")
    return p


def _non_negative(name: str, value: Any) -> float:
    x = _number(name, value)
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def _count(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _range(name: str, value: Any) -> list[float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a [low, high] pair, got {value!r}")
    low, high = _number(f"{name}[0]", value[0]), _number(f"{name}[1]", value[1])
    if low > high:
        raise ValueError(f"{name} is an empty range: low {low} > high {high}")
    return [low, high]


def _options(name: str, given: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise ValueError(f"{name} must be a dict or None, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {name} option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **given}


def _list(name: str, value: Any, of: str) -> list:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of {of}, got {value!r}")
    return list(value)


def _gain_options(given: Any) -> dict[str, Any]:
    o = _options("gain", given, GAIN_DEFAULTS)
    return {"p": _probability("gain.p", o["p"]), "db": _range("gain.db", o["db"])}


def _noise_options(given: Any) -> dict[str, Any]:
    o = _options("noise", given, NOISE_DEFAULTS)
    colors = _list("noise.colors", o["colors"], f"{list(NOISE_COLORS)}")
    for color in colors:
        if color not in NOISE_COLORS:
            raise ValueError(f"unknown noise colour {color!r}; known: {list(NOISE_COLORS)}")
    return {
        "p": _probability("noise.p", o["p"]),
        "snr_db": _range("noise.snr_db", o["snr_db"]),
        "colors": list(colors),
        "babble_talkers": _count("noise.babble_talkers", o["babble_talkers"], minimum=1),
    }


def _shift_options(given: Any) -> dict[str, Any]:
    o = _options("shift", given, SHIFT_DEFAULTS)
    return {"p": _probability("shift.p", o["p"]), "max_seconds": _non_negative("shift.max_seconds", o["max_seconds"])}


def _speed_options(given: Any) -> dict[str, Any]:
    o = _options("speed", given, SPEED_DEFAULTS)
    factors = [_number("speed.factors", f) for f in _list("speed.factors", o["factors"], "positive numbers")]
    if min(factors) <= 0:
        raise ValueError(f"speed.factors must all be > 0, got {factors}")
    return {"p": _probability("speed.p", o["p"]), "factors": factors}


def _spec_options(given: Any) -> dict[str, Any]:
    o = _options("spec", given, SPEC_DEFAULTS)
    return {
        "freq_masks": _count("spec.freq_masks", o["freq_masks"]),
        "freq_width": _count("spec.freq_width", o["freq_width"]),
        "time_masks": _count("spec.time_masks", o["time_masks"]),
        "time_width": _non_negative("spec.time_width", o["time_width"]),
        "fill": _number("spec.fill", o["fill"]),
    }


def _mixup_options(given: Any) -> dict[str, Any]:
    o = _options("mixup", given, MIXUP_DEFAULTS)
    alpha = _number("mixup.alpha", o["alpha"])
    if alpha <= 0:
        raise ValueError(f"mixup.alpha must be > 0, got {alpha}")
    return {"p": _probability("mixup.p", o["p"]), "alpha": alpha}


def _optional(normalise, given: Any) -> dict[str, Any] | None:
    return None if given is None else normalise(given)


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers.


class _Seeded(nn.Module):
    """An ``nn.Module`` owning a CPU generator: ``reseed``, ``get_state`` and ``set_state``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = _count("seed", seed)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(self.seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed`` (also the seed that :meth:`config` reports)."""
        self.seed = _count("seed", seed)
        self._generator.manual_seed(self.seed)

    def get_state(self) -> Tensor:
        """The generator state (a uint8 tensor), to save with a checkpoint and continue a run after resuming."""
        return self._generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self._generator.set_state(state.cpu())

    def _uniform(self, *shape: int) -> Tensor:
        """Uniform [0, 1) float64 draws on the CPU."""
        return torch.rand(*shape, generator=self._generator, dtype=torch.float64)

    def _device_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded by a draw of the owned one, for large tensors drawn where they live."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self._generator).item())
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        return generator


def _valid_mask(lengths: Tensor, width: int) -> Tensor:
    """``(B, width)`` bool, True on each row's first ``lengths[b]`` positions."""
    return torch.arange(width, device=lengths.device) < lengths[:, None]


def _mean_power(x: Tensor, mask: Tensor) -> Tensor:
    """``(B,)`` mean square over the valid samples (zero for an empty row)."""
    count = mask.sum(dim=1).clamp(min=1)
    return (x.square() * mask).sum(dim=1) / count


# ---------------------------------------------------------------------------------------------------------------
# Waveform augmentations.


class WaveformAugment(_Seeded):
    """Speed, shift, gain and noise on a zero-padded waveform batch, in training mode only (see the module docstring).

    Each option is None (off) or a dict; missing keys take the defaults (``GAIN_DEFAULTS``, ...).
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        gain: dict | None = None,
        noise: dict | None = None,
        shift: dict | None = None,
        speed: dict | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.sample_rate = _count("sample_rate", sample_rate, minimum=1)
        self.gain = _optional(_gain_options, gain)
        self.noise = _optional(_noise_options, noise)
        self.shift = _optional(_shift_options, shift)
        self.speed = _optional(_speed_options, speed)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able and normalised."""
        options = {"gain": self.gain, "noise": self.noise, "shift": self.shift, "speed": self.speed}
        return {"sample_rate": self.sample_rate, **copy.deepcopy(options), "seed": self.seed}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WaveformAugment:
        return cls(**config)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if v is not None)

    def forward(
        self, waveforms: Tensor, lengths: Tensor, speakers: Sequence[str | None] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``waveforms (B, T)``, ``lengths (B,)`` -> ``(waveforms (B, T'), lengths (B,))``: the augmented float32 batch
        (``T'`` changes only with speed perturbation). In eval mode, the inputs themselves."""
        if not self.training:
            return waveforms, lengths
        if waveforms.dim() != 2 or lengths.shape != waveforms.shape[:1]:
            raise ValueError(f"expected waveforms (B, T) and lengths (B,), got {waveforms.shape} and {lengths.shape}")
        if speakers is not None and len(speakers) != len(waveforms):
            raise ValueError(f"speakers has {len(speakers)} entries for a batch of {len(waveforms)}")
        lengths = lengths.long()
        x = waveforms.float() * _valid_mask(lengths, waveforms.shape[1])
        if self.speed is not None:
            x, lengths = self._speed(x, lengths)
        if self.shift is not None:
            x = self._shift(x, lengths)
        if self.gain is not None:
            x = self._gain(x)
        if self.noise is not None:
            x = self._noise(x, lengths, speakers)
        return x, lengths

    def _selected(self, p: float, batch: int, device: torch.device) -> Tensor:
        return (self._uniform(batch) < p).to(device)

    def _speed(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        batch = len(x)
        selected = self._uniform(batch) < self.speed["p"]
        choice = torch.randint(len(self.speed["factors"]), (batch,), generator=self._generator)
        factors = torch.tensor(self.speed["factors"], dtype=torch.float64)[choice]
        factors = torch.where(selected, factors, torch.ones_like(factors))
        new_lengths = torch.round(lengths.cpu().double() / factors).long()
        width = int(new_lengths.max()) if batch else 0
        out = x.new_zeros(batch, width)
        keep = min(width, x.shape[1])
        out[:, :keep] = x[:, :keep]
        for factor in sorted(set(factors.tolist()) - {1.0}):
            rows = torch.nonzero(factors == factor).squeeze(1)
            row_width = int(new_lengths[rows].max())
            index = rows.to(x.device)
            out[index, :row_width] = _resample(x[index], lengths.cpu()[rows], factor, row_width)
        new_lengths = new_lengths.to(lengths.device)
        return out * _valid_mask(new_lengths, width), new_lengths

    def _shift(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, width = x.shape
        most = round(self.shift["max_seconds"] * self.sample_rate)
        selected = self._selected(self.shift["p"], batch, x.device)
        amount = torch.randint(-most, most + 1, (batch,), generator=self._generator).to(x.device)
        amount = torch.where(selected, amount, torch.zeros_like(amount))
        period = lengths.clamp(min=1)[:, None]
        source = (torch.arange(width, device=x.device)[None] - amount[:, None]) % period
        return x.gather(1, source) * _valid_mask(lengths, width)

    def _gain(self, x: Tensor) -> Tensor:
        batch = len(x)
        selected = self._selected(self.gain["p"], batch, x.device)
        low, high = self.gain["db"]
        db = (low + (high - low) * self._uniform(batch)).to(x.device)
        scale = torch.where(selected, 10.0 ** (db / 20.0), torch.ones_like(db))
        return x * scale.float()[:, None]

    def _noise(self, x: Tensor, lengths: Tensor, speakers: Sequence[str | None] | None) -> Tensor:
        batch, width = x.shape
        options = self.noise
        selected = self._selected(options["p"], batch, x.device)
        choice = torch.randint(len(options["colors"]), (batch,), generator=self._generator)
        colors = [options["colors"][i] for i in choice.tolist()]
        low, high = options["snr_db"]
        snr_db = (low + (high - low) * self._uniform(batch)).to(x.device)
        mask = _valid_mask(lengths, width)
        white = torch.randn(batch, width, generator=self._device_generator(x.device), device=x.device)
        exponents = [COLOR_EXPONENTS.get(color, COLOR_EXPONENTS["pink"]) for color in colors]
        noise = _shape_noise(white, torch.tensor(exponents, device=x.device))
        if "babble" in options["colors"]:
            babble, has_talkers = self._babble(x, lengths, speakers, options["babble_talkers"])
            use_babble = torch.tensor([c == "babble" for c in colors], device=x.device) & has_talkers
            noise = torch.where(use_babble[:, None], babble, noise)
        noise = noise * mask
        signal_power, noise_power = _mean_power(x, mask), _mean_power(noise, mask)
        audible = selected & (signal_power > 0) & (noise_power > 0)
        target = signal_power / 10.0 ** (snr_db.float() / 10.0)
        scale = torch.where(audible, torch.sqrt(target / noise_power.clamp(min=1e-30)), torch.zeros_like(target))
        return x + scale[:, None] * noise

    def _babble(
        self, x: Tensor, lengths: Tensor, speakers: Sequence[str | None] | None, talkers: int
    ) -> tuple[Tensor, Tensor]:
        """``(B, T)`` babble for every row and ``(B,)`` whether the row has any other-speaker talker. Each row takes
        up to ``talkers`` other-speaker clips of non-zero energy at random, each looped from a random start."""
        batch, width = x.shape
        scores, starts = self._uniform(batch, batch), self._uniform(batch, batch)
        count = min(talkers, batch - 1)
        if count < 1:
            return torch.zeros_like(x), torch.zeros(batch, dtype=torch.bool, device=x.device)
        power = _mean_power(x, _valid_mask(lengths, width))
        candidate = _other_speakers(speakers, batch) & (power > 0).cpu()[None]
        top, chosen = torch.where(candidate, scores, torch.full_like(scores, -1.0)).topk(count, dim=1)
        valid, chosen = (top >= 0).to(x.device), chosen.to(x.device)
        starts = starts.to(x.device)
        period = lengths.clamp(min=1)
        inverse_rms = torch.where(power > 0, power.clamp(min=1e-30).rsqrt(), torch.zeros_like(power))
        positions = torch.arange(width, device=x.device)[None]
        babble = torch.zeros_like(x)
        for k in range(count):
            talker = chosen[:, k]
            talker_period = period[talker][:, None]
            start = (starts.gather(1, talker[:, None]) * talker_period).long()
            source = (start + positions) % talker_period
            weight = inverse_rms[talker] * valid[:, k]
            babble = babble + x[talker].gather(1, source) * weight[:, None]
        return babble, valid.any(dim=1)


def _other_speakers(speakers: Sequence[str | None] | None, batch: int) -> Tensor:
    """``(B, B)`` bool: True where clip j is by another speaker than clip i (never on the diagonal)."""
    if speakers is None:
        speakers = [None] * batch
    other = torch.tensor([[a is None or b is None or a != b for b in speakers] for a in speakers], dtype=torch.bool)
    return other.reshape(batch, batch) & ~torch.eye(batch, dtype=torch.bool)


def _shape_noise(white: Tensor, exponents: Tensor) -> Tensor:
    """Gaussian ``white (B, T)`` shaped to power ∝ 1/f**exponent per row (a zero exponent keeps the row as it is)."""
    width = white.shape[1]
    if width < 2 or not bool((exponents > 0).any()):
        return white
    bins = torch.arange(width // 2 + 1, device=white.device, dtype=white.dtype)
    amplitude = bins.clamp(min=1.0)[None] ** (-exponents[:, None].to(white.dtype) / 2)
    amplitude[:, 0] = 0.0
    shaped = torch.fft.irfft(torch.fft.rfft(white, dim=1) * amplitude, n=width, dim=1)
    return torch.where(exponents[:, None] > 0, shaped, white)


def _resample(x: Tensor, lengths: Tensor, factor: float, width: int) -> Tensor:
    """Rows ``x (N, T)`` with ``lengths`` valid samples, played ``factor`` times faster: ``(N, width)``, row ``i``
    holding ``round(lengths[i] / factor)`` samples. Band-limited resampling in the frequency domain: the row's
    spectrum (``rfft`` of its valid part) is cut (``factor > 1``: everything above the new Nyquist frequency goes,
    so nothing aliases) or zero-extended to the new length and transformed back; rows of equal length are done
    together. Exact for a periodic signal; the seam between the end and the start of a clip is smoothed over a few
    samples, which a training augmentation can afford, and the cost is an FFT instead of a long interpolation
    filter per output sample."""
    out = x.new_zeros(len(x), width)
    for length in sorted(set(lengths.tolist())):
        rows = torch.nonzero(lengths == length).squeeze(1).to(x.device)
        new = max(1, round(length / factor))
        spectrum = torch.fft.rfft(x[rows, :length].double(), dim=1)
        bins = new // 2 + 1
        kept = spectrum[:, : min(bins, spectrum.shape[1])]
        y = torch.fft.irfft(kept, n=new, dim=1) * (new / length)
        out[rows, : min(new, width)] = y[:, :width].to(x.dtype)
    return out


# ---------------------------------------------------------------------------------------------------------------
# SpecAugment.


class SpecAugment(_Seeded):
    """Frequency and time masks on ``(B, F, T)`` or ``(B, C, F, T)`` spectrograms, in training mode only (Park et al.,
    Interspeech 2019; see the module docstring). The same masks apply to every channel of a row."""

    def __init__(
        self,
        freq_masks: int = SPEC_DEFAULTS["freq_masks"],
        freq_width: int = SPEC_DEFAULTS["freq_width"],
        time_masks: int = SPEC_DEFAULTS["time_masks"],
        time_width: float = SPEC_DEFAULTS["time_width"],
        fill: float = SPEC_DEFAULTS["fill"],
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        options = _spec_options(
            {
                "freq_masks": freq_masks,
                "freq_width": freq_width,
                "time_masks": time_masks,
                "time_width": time_width,
                "fill": fill,
            }
        )
        self.freq_masks = options["freq_masks"]
        self.freq_width = options["freq_width"]
        self.time_masks = options["time_masks"]
        self.time_width = options["time_width"]
        self.fill = options["fill"]

    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able and normalised."""
        return {
            "freq_masks": self.freq_masks,
            "freq_width": self.freq_width,
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "fill": self.fill,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpecAugment:
        return cls(**config)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    def forward(self, spec: Tensor, valid: Tensor) -> Tensor:
        """``spec (B, F, T)`` or ``(B, C, F, T)``, ``valid (B,)`` valid frames per row -> a masked copy (training) or
        ``spec`` itself (eval)."""
        if not self.training:
            return spec
        if spec.dim() not in (3, 4) or valid.shape != spec.shape[:1]:
            raise ValueError(f"expected spec (B, F, T) or (B, C, F, T) and valid (B,), got {spec.shape}, {valid.shape}")
        batch, bins, frames = spec.shape[0], spec.shape[-2], spec.shape[-1]
        valid = valid.long().clamp(0, frames)
        freq = self._bands(batch, self.freq_masks, self.freq_width, torch.full_like(valid, bins), bins)
        if self.time_width < 1:
            time_bound = torch.floor(self.time_width * valid.double()).long()
        else:
            time_bound = torch.full_like(valid, int(self.time_width))
        time = self._bands(batch, self.time_masks, time_bound, valid, frames)
        inside = torch.arange(frames, device=valid.device)[None] < valid[:, None]
        mask = (freq[:, :, None] | time[:, None, :]) & inside[:, None, :]
        if spec.dim() == 4:
            mask = mask[:, None]
        return spec.masked_fill(mask.to(spec.device), self.fill)

    def _bands(self, batch: int, count: int, bound: int | Tensor, extent: Tensor, size: int) -> Tensor:
        """``(B, size)`` bool: the union of ``count`` bands per row, each of a width uniform in ``[0, bound]``
        (clamped to ``extent``) at a start uniform in ``[0, extent - width]``."""
        device = extent.device
        covered = torch.zeros(batch, size, dtype=torch.bool, device=device)
        positions = torch.arange(size, device=device)[None]
        bound = torch.as_tensor(bound, device=device).expand(batch)
        for _ in range(count):
            u_width, u_start = self._uniform(batch).to(device), self._uniform(batch).to(device)
            width = torch.minimum(torch.floor(u_width * (bound + 1)).long(), extent)
            start = torch.floor(u_start * (extent - width + 1)).long()
            covered |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
        return covered


# ---------------------------------------------------------------------------------------------------------------
# mixup.


def _log_gamma_samples(shape: float, count: int, generator: torch.Generator) -> Tensor:
    """``log`` of ``count`` Gamma(shape, 1) draws, float64 on the CPU: Marsaglia and Tsang's squeeze-free method
    for Gamma(shape + 1), times ``U ** (1 / shape)`` (taken in logs, so tiny shapes do not underflow to zero)."""
    d = shape + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    samples = torch.empty(count, dtype=torch.float64)
    pending = torch.arange(count)
    while len(pending):
        n = len(pending)
        z = torch.randn(n, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        v = (1.0 + c * z) ** 3
        accept = (v > 0) & (torch.log(u) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp(min=1e-300)))
        samples[pending[accept]] = torch.log(d * v[accept])
        pending = pending[~accept]
    boost = torch.rand(count, generator=generator, device=generator.device, dtype=torch.float64).cpu()
    return samples + torch.log(boost.clamp(min=1e-300)) / shape


def mixup(
    waveforms: Tensor, lengths: Tensor, labels: Tensor, alpha: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """Mix a batch with a permutation of itself (Zhang et al., ICLR 2018).

    ``waveforms (B, T)``, ``lengths (B,)``, ``labels (B,)`` -> ``(mixed (B, T), lengths (B,), labels_a (B,),
    labels_b (B,), lam)`` with ``mixed = lam * x + (1 - lam) * x[perm]``, ``lam ~ Beta(alpha, alpha)``, the longer of
    the two lengths, ``labels_a = labels`` and ``labels_b = labels[perm]``. Train on
    ``lam * loss(labels_a) + (1 - lam) * loss(labels_b)``. Every draw comes from ``generator`` (any device).
    """
    alpha = _number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    log_a, log_b = _log_gamma_samples(alpha, 2, generator).tolist()
    lam = 1.0 / (1.0 + math.exp(min(log_b - log_a, 700.0)))  # a / (a + b), computed from the logs
    perm = torch.randperm(len(waveforms), generator=generator, device=generator.device)
    x = waveforms.float()
    mixed = lam * x + (1.0 - lam) * x[perm.to(x.device)]
    new_lengths = torch.maximum(lengths, lengths[perm.to(lengths.device)])
    return mixed, new_lengths, labels, labels[perm.to(labels.device)], lam


# ---------------------------------------------------------------------------------------------------------------
# A recipe's augmentation block.

_NORMALISERS = {
    "gain": _gain_options,
    "noise": _noise_options,
    "shift": _shift_options,
    "speed": _speed_options,
    "spec": _spec_options,
    "mixup": _mixup_options,
}
KNOWN_KEYS = ("seed", "sample_rate", *_NORMALISERS)


class Augmentation:
    """The augmentations of a recipe: ``.waveform`` (:class:`WaveformAugment` or None), ``.spec``
    (:class:`SpecAugment` or None) and ``.mixup`` (``{"p", "alpha"}`` or None) with its own ``.generator``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        """Use :meth:`from_config`; ``config`` is already normalised here."""
        self._config = dict(config)
        seed, options = config["seed"], config
        waveform_keys = ("gain", "noise", "shift", "speed")
        self.waveform: WaveformAugment | None = None
        if any(options[key] is not None for key in waveform_keys):
            self.waveform = WaveformAugment(
                sample_rate=config["sample_rate"], seed=seed, **{key: options[key] for key in waveform_keys}
            )
        self.spec: SpecAugment | None = None
        if options["spec"] is not None:
            self.spec = SpecAugment(**options["spec"], seed=seed + SPEC_SEED_OFFSET)
        self.mixup: dict[str, float] | None = options["mixup"]
        self.generator = torch.Generator(device="cpu")
        self.seed = seed
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart every random stream from ``seed`` (a DDP rank offsets the recipe's seed by its rank)."""
        self.seed = seed
        if self.waveform is not None:
            self.waveform.reseed(seed)
        if self.spec is not None:
            self.spec.reseed(seed + SPEC_SEED_OFFSET)
        self.generator.manual_seed(seed + MIXUP_SEED_OFFSET)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Augmentation:
        """Validate a recipe's augmentation block (None: everything off); raises ValueError on unknown keys or bad
        values."""
        cfg = {} if cfg is None else cfg
        if not isinstance(cfg, Mapping):
            raise ValueError(f"the augmentation config must be a dict or None, got {cfg!r}")
        unknown = sorted(set(cfg) - set(KNOWN_KEYS))
        if unknown:
            raise ValueError(f"unknown augmentation key(s) {unknown}; known: {list(KNOWN_KEYS)}")
        config = {
            "seed": _count("seed", cfg.get("seed", 0)),
            "sample_rate": _count("sample_rate", cfg.get("sample_rate", SAMPLE_RATE), minimum=1),
        }
        for key, normalise in _NORMALISERS.items():
            config[key] = _optional(normalise, cfg.get(key))
        return cls(config)

    def config(self) -> dict[str, Any]:
        """The normalised block: every key, None where off, every option filled in."""
        return copy.deepcopy(self._config)

    def mix(self, waveforms: Tensor, lengths: Tensor, labels: Tensor) -> tuple | None:
        """With probability ``mixup["p"]``, the :func:`mixup` tuple of the batch; otherwise (or with mixup off) None."""
        if self.mixup is None:
            return None
        if torch.rand(1, generator=self.generator).item() >= self.mixup["p"]:
            return None
        return mixup(waveforms, lengths, labels, self.mixup["alpha"], self.generator)

    def describe(self) -> str:
        """A one-line summary for a model card."""
        c = self._config
        parts = []
        if c["speed"]:
            factors = "/".join(f"{f:g}" for f in c["speed"]["factors"])
            parts.append(f"speed ×{factors} (p={c['speed']['p']:g})")
        if c["shift"]:
            parts.append(f"shift ±{c['shift']['max_seconds']:g} s (p={c['shift']['p']:g})")
        if c["gain"]:
            low, high = c["gain"]["db"]
            parts.append(f"gain {low:g}..{high:g} dB (p={c['gain']['p']:g})")
        if c["noise"]:
            low, high = c["noise"]["snr_db"]
            colors = "/".join(c["noise"]["colors"])
            parts.append(f"{colors} noise at {low:g}..{high:g} dB SNR (p={c['noise']['p']:g})")
        if c["spec"]:
            s = c["spec"]
            time = f"{s['time_width']:.0%}" if s["time_width"] < 1 else f"{int(s['time_width'])} frames"
            parts.append(f"SpecAugment {s['freq_masks']}×≤{s['freq_width']} bins, {s['time_masks']}×≤{time}")
        if c["mixup"]:
            parts.append(f"mixup α={c['mixup']['alpha']:g} (p={c['mixup']['p']:g})")
        if not parts:
            return "no augmentation"
        return "; ".join(parts) + f"; seed {c['seed']}"
