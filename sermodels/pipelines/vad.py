"""Voice activity detection for the daylong pipeline: where in a long recording is someone speaking?

Every detector streams: it is fed a recording block by block (:func:`sermodels.audio.stream_audio`), keeps its state
across blocks, and returns one speech probability per ``hop`` samples, frame ``i`` standing for samples
``[i * hop, (i + 1) * hop)``. The output does not depend on how the recording was cut into blocks (tested exactly).
:mod:`sermodels.pipelines.segments` turns the frame probabilities into utterance segments.

Resuming at a block that starts on sample ``S`` (a multiple of ``hop``: 60 s blocks at 16 kHz are, for both
detectors): :meth:`VAD.reset` and feed from ``S``; the new frames are frames ``S // hop`` on. What differs from an
uninterrupted run is the state a detector rebuilds: Silero's recurrent state (well under a second), the energy
noise floor (its first 0.5 s uses the quietest frame so far, then up to 30 s of history). A detector emits frame
``i`` once it holds the samples it needs: Silero after sample ``(i + 1) * hop``, :class:`EnergyVAD` one hop later
(its 30 ms window is centred on the frame), so after samples ``[0, S)`` Silero has emitted ``S // hop`` frames and
EnergyVAD ``S // hop - 1``; a resumed segmenter should continue from frame ``S // hop`` (the one frame in between
counts as non-speech, which the merge rule absorbs). A pipeline that resets the detector at every block and first
feeds it the previous block's last ``k * hop`` samples (``k >= 1``, output discarded) gets frames on the same grid
as one uninterrupted run, for both detectors; without that warm-up an EnergyVAD reset at every block would drop one
frame per block and drift.

- :class:`SileroVAD`: the silero-vad neural detector (MIT), the default;
- :class:`EnergyVAD`: log energy above an adaptive noise floor, no dependencies, for clean recordings or when
  silero-vad is not installed.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

# The segment rules live in their own module; re-exported because the daylong pipeline takes both from here.
from sermodels.pipelines.segments import Segmenter, SegmentRules, segment_probabilities

__all__ = ["VAD", "EnergyVAD", "SegmentRules", "Segmenter", "SileroVAD", "make_vad", "segment_probabilities"]

SILERO_INSTALL_HINT = "pip install silero-vad"


@runtime_checkable
class VAD(Protocol):
    """A streaming voice activity detector; its state carries across the blocks of one recording."""

    hop: int  # samples per output frame at ``sample_rate``
    sample_rate: int

    def reset(self) -> None:
        """Forget the previous recording (state and buffered samples)."""

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        """``(n,)`` samples -> ``(frames,)`` speech probability in ``[0, 1]``; samples that do not fill a frame are
        kept for the next call."""

    def config(self) -> dict[str, Any]:
        """JSON settings, recorded in the outputs."""


class _FrameBuffer:
    """Samples left over between calls; hands out as many whole ``hop`` steps as the buffer allows."""

    def __init__(self, lead: int = 0):
        self.lead = lead
        self.reset()

    def reset(self) -> None:
        self.samples = np.zeros(self.lead, np.float32)

    def push(self, block: torch.Tensor) -> np.ndarray:
        data = block.detach().to("cpu", torch.float32).reshape(-1).numpy()
        self.samples = np.concatenate([self.samples, data]) if len(self.samples) else data.copy()
        return self.samples

    def drop(self, count: int) -> None:
        self.samples = self.samples[count:].copy()


# --- Energy ---------------------------------------------------------------------------------------------------------
# All constants ours: the usual short-time analysis of speech (30 ms windows every 10 ms), a noise floor tracked as a
# low percentile of the last 30 s (so a minute of speech does not raise it: speech rarely fills 90 % of 30 s), and an
# absolute floor of -60 dBFS below which nothing counts as speech however quiet the room.
ENERGY_FRAME_SECONDS = 0.030
ENERGY_HOP_SECONDS = 0.010
ENERGY_THRESHOLD_DB = 6.0  # above the noise floor; 9 dB misses half the speech frames at 10 dB SNR
ENERGY_ABSOLUTE_FLOOR_DB = -60.0  # dBFS (full-scale sine = -3 dBFS)
ENERGY_FLOOR_PERCENTILE = 10.0
ENERGY_FLOOR_HISTORY_SECONDS = 30.0
ENERGY_FLOOR_UPDATE_SECONDS = 0.5  # the floor is re-estimated on this fixed grid, so it is independent of blocks
ENERGY_SOFT_SCALE_DB = 2.0  # soft output: sigmoid(margin / scale)
_POWER_EPS = 1e-12  # -120 dBFS: the log energy of digital silence


class EnergyVAD:
    """Log energy above an adaptive noise floor: 30 ms frames every 10 ms.

    A frame is speech when its energy (dBFS) is more than ``threshold_db`` above the noise floor and above
    ``absolute_floor_db``. The noise floor is the ``percentile``-th percentile of the last ``history_seconds`` of
    frame energies, re-estimated every 0.5 s on a grid fixed from the start of the recording (so the output does not
    depend on the block sizes); until the first estimate it is the quietest frame so far. Frames are centred on
    their hop (the first window starts ``(frame - hop) / 2`` samples before the recording, zero-padded), so frame
    ``i`` stands for samples ``[i * hop, (i + 1) * hop)``. Output is 0/1, or with ``soft=True`` a sigmoid of the
    margin over the stricter of the two floors (2 dB scale), which is > 0.5 exactly when the hard output is 1.
    """

    def __init__(
        self,
        sample_rate: int = 16_000,
        *,
        threshold_db: float = ENERGY_THRESHOLD_DB,
        absolute_floor_db: float = ENERGY_ABSOLUTE_FLOOR_DB,
        percentile: float = ENERGY_FLOOR_PERCENTILE,
        history_seconds: float = ENERGY_FLOOR_HISTORY_SECONDS,
        soft: bool = False,
    ):
        self.sample_rate = int(sample_rate)
        self.frame = round(ENERGY_FRAME_SECONDS * sample_rate)
        self.hop = round(ENERGY_HOP_SECONDS * sample_rate)
        self.threshold_db = float(threshold_db)
        self.absolute_floor_db = float(absolute_floor_db)
        self.percentile = float(percentile)
        self.history = max(1, round(history_seconds / ENERGY_HOP_SECONDS))
        self.update = max(1, round(ENERGY_FLOOR_UPDATE_SECONDS / ENERGY_HOP_SECONDS))
        self.soft = soft
        self._buffer = _FrameBuffer(lead=(self.frame - self.hop) // 2)
        self.reset()

    def reset(self) -> None:
        self._buffer.reset()
        self._energies = np.zeros(0, np.float64)  # the last ``history`` frame energies
        self._frames = 0  # frames output so far
        self._floor = math.inf  # the current noise floor estimate

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        samples = self._buffer.push(block)
        count = (len(samples) - self.frame) // self.hop + 1 if len(samples) >= self.frame else 0
        if count == 0:
            return torch.zeros(0)
        windows = np.lib.stride_tricks.sliding_window_view(samples, self.frame)[:: self.hop][:count]
        power = np.einsum("ij,ij->i", windows, windows, dtype=np.float64) / self.frame
        energy = 10.0 * np.log10(power + _POWER_EPS)
        self._buffer.drop(count * self.hop)
        floors = self._floors(energy)
        margin = energy - np.maximum(floors + self.threshold_db, self.absolute_floor_db)
        out = 1.0 / (1.0 + np.exp(-margin / ENERGY_SOFT_SCALE_DB)) if self.soft else (margin > 0).astype(np.float64)
        return torch.from_numpy(out.astype(np.float32))

    def _floors(self, energy: np.ndarray) -> np.ndarray:
        """The noise floor in force at each new frame; updates the history and the estimate."""
        floors = np.empty_like(energy)
        done = 0
        while done < len(energy):
            frame = self._frames + done
            next_update = (frame // self.update + 1) * self.update
            take = min(len(energy) - done, next_update - frame)
            piece = energy[done : done + take]
            if frame < self.update:  # no estimate yet: the quietest frame so far
                floors[done : done + take] = np.minimum.accumulate(np.minimum(piece, self._floor))
                self._floor = float(floors[done + take - 1])
            else:
                floors[done : done + take] = self._floor
            self._energies = np.concatenate([self._energies, piece])[-self.history :]
            done += take
            if frame + take == next_update:
                self._floor = float(np.percentile(self._energies, self.percentile))
        self._frames += len(energy)
        return floors

    def config(self) -> dict[str, Any]:
        return {
            "name": "energy",
            "sample_rate": self.sample_rate,
            "frame": self.frame,
            "hop": self.hop,
            "threshold_db": self.threshold_db,
            "absolute_floor_db": self.absolute_floor_db,
            "percentile": self.percentile,
            "history_frames": self.history,
            "update_frames": self.update,
            "soft": self.soft,
        }


# --- Silero -----------------------------------------------------------------------------------------------------------
SILERO_CHUNK = {16_000: 512, 8_000: 256}  # samples per model call: the only sizes the model accepts


def _import_silero() -> Any:
    """The ``silero_vad`` package; it sets torch to one thread when imported, which is undone here."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError as err:
        raise ImportError(f"SileroVAD needs the silero-vad package: {SILERO_INSTALL_HINT}") from err
    finally:
        torch.set_num_threads(threads)
    return silero_vad


class SileroVAD:
    """The silero-vad detector (Silero Team, https://github.com/snakers4/silero-vad, MIT licence).

    What is loaded: ``silero_vad.load_silero_vad()`` runs ``torch.jit.load`` on the TorchScript file shipped inside
    the wheel (``silero_vad/data/silero_vad.jit``): weights and graph, no pickled Python objects, no download. The
    model takes 512-sample chunks at 16 kHz (256 at 8 kHz) and keeps its own recurrent state and context between
    calls, so frame ``i`` is the probability for samples ``[i * hop, (i + 1) * hop)`` given everything before it.

    The chunks of one recording cannot be batched: the batch dimension of the model holds independent streams,
    and each chunk's state is the previous chunk's output. Speed: ~70x real time on one core (EnergyVAD ~1900x).
    """

    def __init__(self, sample_rate: int = 16_000):
        if sample_rate not in SILERO_CHUNK:
            raise ValueError(f"silero-vad runs at {sorted(SILERO_CHUNK)} Hz, got {sample_rate}; resample first")
        silero_vad = _import_silero()
        self.sample_rate = int(sample_rate)
        self.hop = SILERO_CHUNK[self.sample_rate]
        self.version = getattr(silero_vad, "__version__", "unknown")
        with warnings.catch_warnings():
            # torch 2.x deprecates torch.jit.load itself; silero_vad 6 uses importlib.resources.path.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = silero_vad.load_silero_vad()
        self._buffer = _FrameBuffer()
        self.reset()

    def reset(self) -> None:
        self._buffer.reset()
        self.model.reset_states()

    @torch.inference_mode()
    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        samples = self._buffer.push(block)
        count = len(samples) // self.hop
        chunks = torch.from_numpy(samples[: count * self.hop].reshape(count, self.hop))
        out = torch.empty(count)
        for i in range(count):
            out[i] = self.model(chunks[i : i + 1], self.sample_rate)[0, 0]
        self._buffer.drop(count * self.hop)
        return out

    def config(self) -> dict[str, Any]:
        return {"name": "silero", "version": self.version, "sample_rate": self.sample_rate, "hop": self.hop}


def make_vad(name: str = "silero", **options: Any) -> VAD:
    """A detector by name: ``"silero"``, ``"energy"``, or ``"auto"`` (silero if importable, else energy with a
    warning). ``options`` go to the detector's constructor."""
    if name == "silero":
        return SileroVAD(**options)
    if name == "energy":
        return EnergyVAD(**options)
    if name == "auto":
        try:
            _import_silero()
        except ImportError:
            warnings.warn(f"silero-vad is not installed ({SILERO_INSTALL_HINT}); using EnergyVAD", stacklevel=2)
            return EnergyVAD(**options)
        return SileroVAD(**options)
    raise ValueError(f"unknown VAD {name!r}: choose 'silero', 'energy' or 'auto'")
