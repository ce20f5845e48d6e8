"""The standardised log-mel input of the spectrogram CNNs (EmoNet and the adapted ImageNet CNNs).

Provenance: EmoNet (Gerczuk et al., IEEE Trans. Affective Computing), §5.1: log-mel spectrograms of at most 5 s.
Departures shared by the models that use it (documented in their model files as well):

- Each clip of a zero-padded batch is continued past its end by reflection before a centred, reflect-padded STFT, as
  the STFT pads a clip that is alone, so that a clip gets the same spectrogram alone and inside a padded batch.
- The log-mel input is standardised per utterance: mean and standard deviation over its valid time-frequency bins;
  bins beyond a clip's valid frames are zero (the standardised mean).
"""

from __future__ import annotations

from torch import Tensor

from sermodels._tracing import checking
from sermodels.features import AmplitudeToDB, MelSpectrogram
from sermodels.features.spectrogram import reflect_tails
from sermodels.layers.masks import time_mask


def check_batch(waveforms: Tensor, lengths: Tensor) -> None:
    if waveforms.dim() != 2:
        raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
    if lengths.shape != waveforms.shape[:1] or (checking() and (lengths > waveforms.shape[-1]).any()):
        raise ValueError(
            f"lengths must give one length per row, each at most the batch width {waveforms.shape[-1]}, "
            f"got {lengths.tolist()}"
        )


def tails_reflected(melspec: MelSpectrogram, waveforms: Tensor, lengths: Tensor, model: str, min_duration: float):
    """``(B, T + n_fft // 2)``: each row continued past its own end by reflection (module docstring), for the
    reflect-padded, centred STFT without extra constant padding; other front-ends get the waveforms as they are."""
    stft = melspec.spectrogram
    if not (stft.center and stft.pad_mode == "reflect" and stft.pad == 0):
        return waveforms
    half = stft.n_fft // 2
    short = (lengths <= half).nonzero().flatten().tolist() if checking() else []
    if short:
        raise ValueError(
            f"rows {short} of the batch have {lengths[short].tolist()} samples; {model} needs more than {half} "
            f"per clip (audio files shorter than {min_duration} s are rejected when they are loaded)"
        )
    return reflect_tails(waveforms, lengths, half)


def standardised_log_mel(
    melspec: MelSpectrogram,
    to_db: AmplitudeToDB,
    waveforms: Tensor,
    lengths: Tensor,
    model: str = "the model",
    min_duration: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Waveforms ``(B, T)`` with ``lengths`` valid samples -> standardised log-mel ``(B, 1, n_mels, frames)``,
    zero beyond each clip's valid frames, and the valid frame counts ``(B,)``."""
    check_batch(waveforms, lengths)
    frames = melspec.frame_count(waveforms.shape[-1])
    padded = tails_reflected(melspec, waveforms.float(), lengths, model, min_duration)
    spec = to_db(melspec(padded))[..., :frames]  # (B, M, T)
    valid = melspec.num_frames(lengths).clamp(min=1, max=spec.shape[-1])
    mask = time_mask(valid, spec.shape[-1])[:, 0]  # (B, 1, T)
    count = valid.to(spec.dtype) * spec.shape[1]
    mean = (spec * mask).sum(dim=(1, 2)) / count
    centred = (spec - mean[:, None, None]) * mask
    std = (centred.square().sum(dim=(1, 2)) / count).sqrt().clamp(min=1e-5)
    return (centred / std[:, None, None]).unsqueeze(1), valid
