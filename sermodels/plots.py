"""Where does an EmoNet listen? Its 2D attention weights drawn over the log-mel spectrogram it classifies.

EmoNet (Gerczuk et al., IEEE Trans. Affective Computing, §5.2, Eq. (1)–(4)) pools the last feature map of its
Wide-ResNet with a softmax over the (frequency × time) positions: the weights ``α`` sum to one over the ``F' × T'``
cells and say how much each time-frequency region contributes to the utterance embedding. :func:`attention_map`
spreads each cell's weight evenly over the log-mel bins that the cell sits on, so the map on the spectrogram grid
still sums to one and summing it back over each cell gives ``α`` exactly. Every stride-2 block halves both axes
(rounding up), so with three of them cell ``(i, j)`` sits on mel bands ``[8i, 8i + 8)`` and frames ``[8j, 8j + 8)``:
the bins its identity shortcut averages (2 × 2 average pooling, three times). Its receptive field is wider; the
map says where the pooled features come from, not everything they depend on. A last cell cut by the end of the
clip spreads its weight over fewer frames, so it can look denser. :func:`plot_attention` draws the spectrogram, the
map overlaid on it, and the attention mass per second.

The map is computed over the whole input in one pass, as the model sees a clip; ``sermodels predict`` averages the
logits of 30 s windows by default (``--chunk-seconds``) instead, so for a file longer than the window the
prediction in the figure title (one pass over the file) can differ from the one in the predictions file. Inputs
longer than
:data:`MAX_ATTENTION_SECONDS` are refused: one pass over a long recording needs memory in proportion to its length
and its map is too dense to read; cut the region of interest first.

Figures are drawn on a bare ``Figure`` with the Agg canvas (no pyplot state, no display) and written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sermodels._io import atomic_write_bytes
from sermodels.audio import load_audio
from sermodels.layers.domains import domain_key
from sermodels.models.base import SERModel
from sermodels.pipelines.inputs import expand_inputs

#: Longest input (seconds) drawn in one pass; see the module docstring.
MAX_ATTENTION_SECONDS = 120.0
#: Figure size (inches) and resolution: the PNG is ``FIGSIZE * DPI`` pixels, 1200 × 800.
FIGSIZE = (12.0, 8.0)
DPI = 100
PNG_SUFFIX = ".png"
ATTENTION_CMAP = "viridis"


def has_attention(model: SERModel) -> bool:
    """Whether ``model`` exposes the 2D attention pooling that :func:`attention_map` reads (EmoNet's ``attend``)."""
    return callable(getattr(model, "attend", None)) and callable(getattr(model, "log_mel", None))


def check_has_attention(model: SERModel) -> None:
    if not has_attention(model):
        arch = getattr(model, "arch", "") or type(model).__name__
        raise ValueError(
            f"{arch} has no attention pooling to draw: attention maps need a model with 2D attention "
            "(attend() and log_mel(), e.g. an emonet_wrn model)"
        )


def attention_map(
    model: SERModel,
    waveform: torch.Tensor | np.ndarray,
    head: str | None = None,
    *,
    max_seconds: float | None = MAX_ATTENTION_SECONDS,
) -> dict[str, Any]:
    """The attention of ``model`` (an EmoNet) over one mono ``waveform (samples,)`` at ``model.sample_rate``.

    Returns a dict of NumPy arrays and plain values:

    - ``log_mel (n_mels, frames)``: the standardised log-mel spectrogram exactly as the network sees it;
    - ``attention (n_mels, frames)``: the weights spread over that grid (non-negative, summing to 1);
    - ``attention_cells (F', T')``: the model's own weights ``α`` (§5.2, Eq. (3)), summing to 1;
    - ``cell_size (frequency bins, frames)``: the spectrogram bins one cell spans;
    - ``times (frames,)``: the centre of each STFT frame in seconds; ``mel_hz (n_mels,)``: mel band centres in Hz;
    - ``head``, ``labels``, ``logits``, ``scores`` (probabilities), ``label`` (the top class), ``score_kind``,
      ``sample_rate``, ``duration`` (seconds).

    ``max_seconds`` refuses longer inputs (``None``: no limit).
    """
    check_has_attention(model)
    head = model.resolve_head(head)
    wave = torch.as_tensor(waveform, dtype=torch.float32).reshape(-1) if _is_1d(waveform) else None
    if wave is None:
        raise ValueError(f"attention_map takes one mono waveform (samples,), got shape {tuple(np.shape(waveform))}")
    duration = wave.shape[0] / model.sample_rate
    if duration < model.min_duration:
        raise ValueError(f"waveform too short: {duration:.3f} s, the model needs at least {model.min_duration} s")
    if max_seconds is not None and duration > max_seconds:
        raise ValueError(
            f"waveform is {duration:.1f} s long; attention maps are drawn for at most {max_seconds:g} s "
            "in one pass (cut the region of interest first)"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            batch = wave.to(device)[None, :]
            spec, valid = model.log_mel(batch)
            pooled, cells = model.attend(batch, head=head)
            # EmoNet's forward is its head applied to the attention output: reuse the pass when the heads are there.
            classifiers = getattr(model, "classifiers", None)
            key = domain_key(model.resolve_head(head))
            logits = classifiers[key](pooled) if classifiers is not None else model(batch, head=head)
            logits = logits[0].float().cpu()
    finally:
        model.train(was_training)
    frames = int(valid[0])
    log_mel = spec[0, 0, :, :frames].float().cpu().numpy()
    cells = cells[0].float().cpu().numpy().astype(np.float64)
    grid, cell_size = _spread(cells, log_mel.shape, _stride(model))
    labels = model.label_names(head)
    scores = model.scores(logits[None])[0]
    return {
        "log_mel": log_mel,
        "attention": grid,
        "attention_cells": cells,
        "cell_size": cell_size,
        "times": _frame_times(model, frames),
        "mel_hz": _mel_centres(model),
        "head": head,
        "labels": labels,
        "logits": logits.numpy(),
        "scores": scores.numpy(),
        "label": labels[int(logits.argmax())],
        "score_kind": model.score_kind,
        "sample_rate": model.sample_rate,
        "duration": duration,
    }


def _is_1d(waveform: Any) -> bool:
    shape = tuple(np.shape(waveform))
    return len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)


def _stride(model: SERModel) -> int:
    """Total down-sampling of the feature map: 2 per stride-2 residual block (EmoNet §5.2, Fig. 5)."""
    return math.prod(int(getattr(block, "stride", 1)) for block in getattr(model, "blocks", []))


def _spread(cells: np.ndarray, shape: tuple[int, int], stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Each cell's weight divided evenly over the spectrogram bins it covers (bins ``[i*stride, (i+1)*stride)`` on
    both axes, cut at the edge; the last cell also takes any bins beyond, should the grids not divide evenly)."""
    rows = np.minimum(np.arange(shape[0]) // stride, cells.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) // stride, cells.shape[1] - 1)
    row_count = np.bincount(rows, minlength=cells.shape[0])
    col_count = np.bincount(cols, minlength=cells.shape[1])
    if (row_count == 0).any() or (col_count == 0).any():
        raise RuntimeError(
            f"attention grid {cells.shape} does not match a {shape} spectrogram at stride {stride}: some cells "
            "cover no bins"
        )
    density = cells / np.outer(row_count, col_count)
    return density[np.ix_(rows, cols)], (stride, stride)


def _frame_times(model: SERModel, frames: int) -> np.ndarray:
    """Centre of each STFT frame in seconds (a centred STFT puts frame ``i`` at sample ``i * hop``)."""
    spectrogram = model.melspec.spectrogram
    offset = 0.0 if spectrogram.center else spectrogram.win_length / 2
    return (np.arange(frames) * spectrogram.hop_length + offset) / model.sample_rate


def _mel_centres(model: SERModel) -> np.ndarray:
    """Centre frequency (Hz) of every mel filter: the inner points of the equally spaced mel grid."""
    from sermodels.features.spectrogram import _hz_to_mel, _mel_to_hz

    mel = model.melspec
    points = torch.linspace(_hz_to_mel(mel.f_min, mel.mel_scale), _hz_to_mel(mel.f_max, mel.mel_scale), mel.n_mels + 2)
    return _mel_to_hz(points, mel.mel_scale)[1:-1].numpy()


def plot_attention(
    model: SERModel,
    path_or_waveform: str | os.PathLike | torch.Tensor | np.ndarray,
    out_png: str | os.PathLike,
    head: str | None = None,
    *,
    max_seconds: float | None = MAX_ATTENTION_SECONDS,
    title: str | None = None,
) -> dict[str, Any]:
    """Write a PNG of the log-mel spectrogram, the attention overlaid on it and the attention mass over time.

    ``path_or_waveform``: an audio file (decoded and resampled to the model's rate) or a mono waveform at
    ``model.sample_rate``. The title names the input, the head and the predicted class with its score. Returns the
    :func:`attention_map` that was drawn.
    """
    check_has_attention(model)
    if isinstance(path_or_waveform, (str, os.PathLike)):
        name = Path(path_or_waveform).name
        waveform = load_audio(path_or_waveform, model.sample_rate, min_duration=model.min_duration)
        try:
            found = attention_map(model, waveform, head, max_seconds=max_seconds)
        except ValueError as err:
            raise ValueError(f"{path_or_waveform}: {err}") from err
    else:
        name = "waveform"
        found = attention_map(model, path_or_waveform, head, max_seconds=max_seconds)
    atomic_write_bytes(out_png, attention_png(found, title or name))
    return found


def attention_png(found: dict[str, Any], name: str = "") -> bytes:
    """PNG bytes of an :func:`attention_map`: three panels sharing a time axis in seconds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    spec_axes, overlay_axes, mass_axes = figure.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.4]})
    times, log_mel, grid = found["times"], found["log_mel"], found["attention"]
    hop = times[1] - times[0] if len(times) > 1 else 1.0 / found["sample_rate"]
    extent = (times[0] - hop / 2, times[-1] + hop / 2, -0.5, log_mel.shape[0] - 0.5)
    image = spec_axes.imshow(log_mel, origin="lower", aspect="auto", extent=extent, cmap="magma")
    figure.colorbar(image, ax=spec_axes, label="standardised log-mel")
    spec_axes.set_title("log-mel spectrogram as the model sees it", fontsize=10)
    overlay_axes.imshow(log_mel, origin="lower", aspect="auto", extent=extent, cmap="gray")
    # Shown relative to uniform attention (1 = every bin weighted alike); transparent where the model does not
    # look, opaque where it looks most.
    relative = grid * grid.size
    peak = float(relative.max()) or 1.0
    overlay_axes.imshow(_attention_rgba(relative / peak), origin="lower", aspect="auto", extent=extent)
    scale = ScalarMappable(norm=Normalize(0.0, peak), cmap=ATTENTION_CMAP)
    figure.colorbar(scale, ax=overlay_axes, label="attention ÷ uniform")
    cells = found["attention_cells"].shape
    overlay_axes.set_title(f"2D attention ({cells[0]} × {cells[1]} cells) over the spectrogram", fontsize=10)
    for axes in (spec_axes, overlay_axes):
        _mel_ticks(axes, found["mel_hz"])
    mass = grid.sum(axis=0) / hop  # attention per second, so that the area under the curve is 1
    mass_axes.fill_between(times, mass, step="mid", alpha=0.6)
    mass_axes.set_ylabel("attention / s")
    mass_axes.set_xlabel("time (s)")
    mass_axes.set_xlim(extent[0], extent[1])
    score = float(found["scores"][found["labels"].index(found["label"])])
    shown = f"{score:.0%}" if found["score_kind"] == "probability" else f"decision {score:.2f}"
    subject = f"{name}: " if name else ""
    figure.suptitle(f"{subject}predicted {found['label']} ({shown}), head {found['head']}", fontsize=12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _attention_rgba(level: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    rgba = colormaps[ATTENTION_CMAP](level)
    rgba[..., 3] = np.clip(level, 0.0, 1.0) ** 0.5 * 0.85
    return rgba


def _mel_ticks(axes, mel_hz: np.ndarray) -> None:
    """Mel band index on the axis, labelled with the band's centre frequency."""
    bands = np.linspace(0, len(mel_hz) - 1, 6).round().astype(int)
    axes.set_yticks(bands, [f"{mel_hz[b]:.0f}" for b in bands])
    axes.set_ylabel("mel band centre (Hz)")


# ---------------------------------------------------------------------------------------- sermodels predict


def attention_targets(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict[str, Path]:
    """Where ``sermodels predict --attention OUT`` writes the map of each input (keyed like the prediction rows).

    ``OUT`` ending in ``.png`` is the figure of a single input file; several inputs, or a folder among them, are an
    error. Otherwise ``OUT`` is a folder (created) with one ``<file stem>.png`` per audio file; files found in a
    folder argument keep their sub-folders below it (``OUT/Angry/SM1_F10_A010.png``). Two inputs that would share a
    figure name are an error. Checked before any work is done.
    """
    out = Path(out)
    as_file = out.suffix.lower() == PNG_SUFFIX and not out.is_dir()
    if not as_file and (out.suffix or out.exists()) and not out.is_dir():
        raise ValueError(f"--attention {out}: give a .png file (one input) or a folder (one PNG per input)")
    if as_file:
        if len(inputs) != 1 or Path(inputs[0]).is_dir():
            raise ValueError(
                f"--attention {out} is one PNG but there are several inputs; give a folder to get one PNG per file"
            )
        return {str(Path(inputs[0])): out}
    targets: dict[str, Path] = {}
    owners: dict[Path, str] = {}
    for entry in inputs:
        entry = Path(entry)
        found = expand_inputs([entry]) if entry.is_dir() else [entry]
        for path in found:
            relative = path.relative_to(entry) if entry.is_dir() and path != entry else Path(path.name)
            png = out / relative.with_suffix(PNG_SUFFIX)
            if png in owners and owners[png] != str(path):
                raise ValueError(f"--attention: {owners[png]} and {path} would both be drawn to {png}; rename one")
            owners[png] = str(path)
            targets[str(path)] = png
    return targets


def write_attention_maps(
    model: SERModel, targets: dict[str, Path], paths: Sequence[str], head: str | None = None
) -> list[tuple[str, str]]:
    """Draw the map of each of ``paths`` to ``targets[path]``; return ``(path, reason)`` for those that failed."""
    failures: list[tuple[str, str]] = []
    for path in paths:
        try:
            plot_attention(model, path, targets[path], head)
        except (ValueError, OSError, RuntimeError) as err:
            failures.append((path, str(err)))
    return failures
