"""Hand-crafted baselines of time-continuous emotion recognition: windowed LLD functionals -> linear SVR or BLSTM.

Paper: MixedEmotions deliverable D4.2 (H2020 MixedEmotions, "Emotion recognition from audio").

* §5.3 (and §4.5.2): acoustic features "at a rate of 40ms using overlapping windows of 3s length" (the AV+EC 2015
  procedure), the functionals "max, min, range, mean, and standard-deviation" of frame-level LLDs
  (:data:`AVEC_STATS`, :data:`OUT_RATE`, :data:`WINDOW_SECONDS`); "Support Vector Regression models with a linear
  kernel ... The complexity parameter is optimised with a logarithmic grid in the range [10^-6, 10^0]"
  (:data:`SVR_C_GRID`), on the development CCC "computed on the gold-standard and prediction values concatenated
  over all recordings"; and "a BLSTM-DRNN ... three hidden layers with 64 units for each layer. Input noise with
  σ = 0.1 is added and early stopping is also used ... batch size of 5 sequences" (:data:`BLSTM_HIDDEN`, ...).
* §3.4.2: the back-end of the feature-enhancement experiments, "mean and variance over each of the enhanced MFCCs
  with a window size of 8s at a step of 0.04s, which leads to 26 attributes" (:func:`mfcc_window_stats`).

Departures and choices the paper leaves open:

* **LLDs** (:func:`lld_frames`): the paper used the ComParE LLDs (65) or eGeMAPS. Ours by default are 40 log-mel
  bands (HTK scale, 25 ms Hamming window, 10 ms hop, natural log of the power plus :data:`LOG_EPS`) and the frame
  log-energy: 41 LLDs, native torch, no licence strings attached. ``lld_set="egemaps"`` gives the 25 eGeMAPSv02
  LLDs through openSMILE (the optional, non-commercial ``smile`` extra), to which the same five functionals are
  applied (the paper took openSMILE's own eGeMAPS functionals per window instead).
* **Frame grid**: frame ``k`` of the LLDs is centred at ``k`` hops, and a waveform of ``n`` samples gives
  ``ceil(n / hop)`` frames, so :func:`window_functionals` gives ``ceil(seconds * out_rate)`` rows, the length of a
  25 Hz trace (:meth:`sermodels.data.targets.Trace.frames`).
* **Windows**: row ``k`` summarises the LLD frames ``[c - h, c + h)`` with ``c`` the frame at ``k / out_rate`` s
  and ``h`` half the window in frames; at the edges the window is clipped to the frames that exist (it is never
  padded), so the first rows summarise 1.5 s instead of 3 s.
* **SVR** (:func:`fit_svr`): scikit-learn's ``LinearSVR`` with the L2 loss (``squared_epsilon_insensitive``),
  ``epsilon=0``, solved in the primal (``dual=False``: many more frames than features), one model per dimension,
  on features standardised with the train mean and standard deviation. liblinear regularises the intercept too,
  which at ``C = 1e-6`` would pull every prediction to 0; the targets are therefore centred on their train mean
  and the mean is added back. Ties in dev CCC go to the larger C (as :mod:`sermodels.classical.svm`). More than
  :data:`SVR_MAX_TRAIN_ROWS` training frames are subsampled with a uniform stride (neighbouring 40 ms frames of
  3 s windows are nearly identical).
* **BLSTM** (:func:`fit_lld_blstm`): over the window functionals (25 Hz), standardised inside the model. Adam with
  a fixed learning rate instead of SGD with momentum and a tuned rate (the paper tuned the rate per dimension on
  dev); all dimensions are learnt by one network, early-stopped on the mean over dimensions of the concatenated
  dev CCC. Training sees random crops of at most :data:`BLSTM_CROP_FRAMES` (30 s) of each sequence, 5 sequences a
  batch; prediction runs over whole sequences. The loss is ``1 - CCC`` of the batch (the "total CCC" objective,
  :func:`sermodels.losses.ccc_loss`) or the MSE.
* The post-processing chain of §5.3 (median filter, centring, scaling, time shift) is not part of these fits.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from sklearn.svm import LinearSVR
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sermodels.features.egemaps import _import_opensmile
from sermodels.features.spectrogram import MelSpectrogram
from sermodels.losses import ccc_loss, mse_loss
from sermodels.metrics import ccc

LLD_SETS = ("logmel", "egemaps")
LLD_RATE = 100.0  # frames per second: 10 ms hop (ours; ComParE and eGeMAPS LLDs use the same)
LLD_WIN_SECONDS = 0.025  # 25 ms analysis window (ours, the usual)
LOGMEL_BANDS = 40  # ours
LOGMEL_WINDOW = "hamming"
LOG_EPS = 1e-6  # floor under the log of mel power and frame energy, as sermodels.features.functionals
EGEMAPS_LLDS = 25  # openSMILE eGeMAPSv02 low-level descriptors

OUT_RATE = 25.0  # §5.3: "a rate of 40ms", the rate of the RECOLA gold standard
WINDOW_SECONDS = 3.0  # §5.3: "overlapping windows of 3s length"
AVEC_STATS = ("mean", "std", "max", "min", "range")  # §5.3: "max, min, range, mean, and standard-deviation"
STATS = ("mean", "std", "var", "max", "min", "range")
MFCC_WINDOW_SECONDS = 8.0  # §3.4.2: "a window size of 8s at a step of 0.04s"
MFCC_STATS = ("mean", "var")  # §3.4.2: "mean and variance over each of the enhanced MFCCs"

SVR_C_GRID = tuple(float(c) for c in np.logspace(-6, 0, 7))  # §5.3: "logarithmic grid in the range [10^-6, 10^0]"
SVR_MAX_TRAIN_ROWS = 200_000  # ours: more training frames are subsampled with a uniform stride
SVR_MAX_ITER = 10_000  # ours: liblinear's primal solver converges in far fewer

BLSTM_HIDDEN = 64  # §5.3: "three hidden layers with 64 units for each layer"
BLSTM_LAYERS = 3  # §5.3
BLSTM_INPUT_NOISE = 0.1  # §5.3: "Input noise with σ = 0.1"
BLSTM_BATCH = 5  # §5.3: "a batch size of 5 sequences"
BLSTM_CROP_FRAMES = 750  # ours: 30 s at 25 Hz
BLSTM_LR = 1e-3  # ours (Adam)
BLSTM_EPOCHS = 100  # ours
BLSTM_PATIENCE = 10  # ours: epochs without a better dev CCC before stopping
BLSTM_LOSSES = ("ccc", "mse")


# ---------------------------------------------------------------------------------------------------------------------
# Frame-level LLDs and window functionals.


def lld_frames(waveform: np.ndarray | Tensor, sample_rate: int = 16000, *, lld_set: str = "logmel") -> np.ndarray:
    """Frame-level LLDs ``(ceil(samples / hop), n)`` float32 of a mono waveform; frame ``k`` is centred at
    ``k * 10 ms``. ``"logmel"``: 40 log-mel bands and the log-energy (``n = 41``); ``"egemaps"``: the 25
    eGeMAPSv02 LLDs (needs openSMILE, the ``smile`` extra)."""
    if lld_set not in LLD_SETS:
        raise ValueError(f"unknown LLD set {lld_set!r}; choose from {', '.join(LLD_SETS)}")
    if isinstance(waveform, Tensor):
        waveform = waveform.detach().cpu().numpy()
    samples = np.asarray(waveform, dtype=np.float64)
    hop, win = round(sample_rate / LLD_RATE), round(LLD_WIN_SECONDS * sample_rate)
    if samples.ndim != 1 or len(samples) < win:
        raise ValueError(f"lld_frames needs a mono waveform of at least {win} samples, got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("lld_frames: the waveform contains NaN/Inf samples")
    frames = math.ceil(len(samples) / hop)
    if lld_set == "egemaps":
        return _egemaps_llds(samples, sample_rate, frames)
    return _logmel_llds(samples, sample_rate, hop, win)[:frames]


def _logmel_llds(samples: np.ndarray, sample_rate: int, hop: int, win: int) -> np.ndarray:
    n_fft = 1 << (win - 1).bit_length()
    mel = MelSpectrogram(
        sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=LOGMEL_BANDS, window=LOGMEL_WINDOW
    )
    with torch.no_grad():
        power = mel(torch.from_numpy(samples.astype(np.float32))).double().numpy().T  # (1 + n // hop, bands)
    padded = np.pad(samples, win // 2, mode="reflect")  # frame k covers [k * hop - win / 2, k * hop + win / 2)
    sums = np.concatenate([[0.0], np.cumsum(np.square(padded))])
    starts = np.arange(len(power)) * hop
    energy = (sums[starts + win] - sums[starts]) / win
    return np.column_stack([np.log(power + LOG_EPS), np.log(energy + LOG_EPS)]).astype(np.float32)


def _egemaps_llds(samples: np.ndarray, sample_rate: int, frames: int) -> np.ndarray:
    """openSMILE's eGeMAPSv02 LLDs on the 10 ms grid. openSMILE's frame ``j`` starts at ``j`` hops (its 20 ms window
    is centred 10 ms later), so one copy of the first frame is put in front, and the last frame is repeated (or
    frames are cut) to give exactly ``frames`` rows."""
    opensmile = _import_opensmile()
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    values = smile.process_signal(samples.astype(np.float32), sample_rate).to_numpy(dtype=np.float32)
    values = np.concatenate([values[:1], values])[:frames]
    if len(values) < frames:
        values = np.concatenate([values, np.repeat(values[-1:], frames - len(values), axis=0)])
    return values


def _check_lld(lld: np.ndarray, name: str = "lld") -> np.ndarray:
    values = np.asarray(lld, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"{name} must be (frames, features) with at least one frame, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN/Inf values")
    return values


def window_functionals(
    lld: np.ndarray,
    lld_rate: float = LLD_RATE,
    out_rate: float = OUT_RATE,
    window_seconds: float = WINDOW_SECONDS,
    stats: Sequence[str] = AVEC_STATS,
) -> np.ndarray:
    """Functionals ``(M, n * len(stats))`` float32 of ``lld (T, n)`` over sliding windows, ``M = ceil(T * out_rate /
    lld_rate)``: row ``k`` summarises the frames within ``window_seconds / 2`` of ``k / out_rate`` s (clipped at the
    edges; module docstring). Columns are stat-major: all ``n`` means, then all ``n`` standard deviations, ....

    Linear in ``T``: means and variances from cumulative sums, max/min by running filters (an hour of 41 LLDs: ~2 s).
    """
    values = _check_lld(lld)
    unknown = [s for s in stats if s not in STATS]
    if unknown or not stats:
        raise ValueError(f"unknown or no statistics {unknown}; choose from {', '.join(STATS)}")
    if not all(math.isfinite(v) and v > 0 for v in (lld_rate, out_rate, window_seconds)):
        raise ValueError("lld_rate, out_rate and window_seconds must be positive")
    count = values.shape[0]
    rows = math.ceil(count * out_rate / lld_rate - 1e-9)
    centres = np.minimum(np.floor(np.arange(rows) * lld_rate / out_rate + 0.5).astype(np.int64), count - 1)
    half = max(1, round(window_seconds * lld_rate / 2))
    low, high = np.clip(centres - half, 0, count), np.clip(centres + half, 0, count)
    computed: dict[str, np.ndarray] = {}
    if {"mean", "std", "var"} & set(stats):
        computed["mean"], computed["var"] = _window_moments(values, low, high)
        computed["std"] = np.sqrt(computed["var"])
    if {"max", "range"} & set(stats):
        computed["max"] = maximum_filter1d(values, 2 * half, axis=0, mode="nearest")[centres]
    if {"min", "range"} & set(stats):
        computed["min"] = minimum_filter1d(values, 2 * half, axis=0, mode="nearest")[centres]
    if "range" in stats:
        computed["range"] = computed["max"] - computed["min"]
    return np.hstack([computed[s] for s in stats]).astype(np.float32)


def _window_moments(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance of ``values[low[k]:high[k]]`` for every ``k``, by cumulative sums of the values
    less their overall mean (which keeps the sums small, so the variance does not cancel catastrophically)."""
    shift = values.mean(axis=0)
    centred = values - shift
    zeros = np.zeros((1, values.shape[1]))
    sums = np.concatenate([zeros, np.cumsum(centred, axis=0)])
    squares = np.concatenate([zeros, np.cumsum(np.square(centred), axis=0)])
    size = (high - low)[:, None].astype(np.float64)
    mean = (sums[high] - sums[low]) / size
    var = np.maximum((squares[high] - squares[low]) / size - np.square(mean), 0.0)
    return mean + shift, var


def mfcc_window_stats(
    mfcc: np.ndarray,
    rate: float = LLD_RATE,
    out_rate: float = OUT_RATE,
    window_seconds: float = MFCC_WINDOW_SECONDS,
    stats: Sequence[str] = MFCC_STATS,
) -> np.ndarray:
    """The §3.4.2 back-end features: mean and variance of each MFCC ``(T, 13)`` over 8 s windows every 40 ms,
    ``(M, 26)`` (pass ``stats=("mean", "std")`` for standard deviations)."""
    return window_functionals(mfcc, rate, out_rate, window_seconds, stats)


# ---------------------------------------------------------------------------------------------------------------------
# Sequences and the concatenated dev CCC.


def _check_sequences(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], names: Sequence[str], which: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sequences as float64 ``(M_i, n)`` and ``(M_i, D)`` arrays, checked for matching lengths and widths."""
    if not xs or len(xs) != len(ys):
        raise ValueError(f"{which}: give one target sequence per feature sequence ({len(xs)} and {len(ys)})")
    features = [_check_lld(x, f"{which} features {i}") for i, x in enumerate(xs)]
    targets = []
    for i, (x, y) in enumerate(zip(features, ys)):
        y = np.asarray(y, dtype=np.float64)
        y = y[:, None] if y.ndim == 1 else y
        if y.shape != (len(x), len(names)):
            raise ValueError(f"{which} sequence {i}: targets {y.shape}, expected {(len(x), len(names))}")
        if not np.isfinite(y).all():
            raise ValueError(f"{which} sequence {i}: targets contain NaN/Inf")
        targets.append(y)
    if len({x.shape[1] for x in features}) != 1:
        raise ValueError(f"{which}: feature sequences have different widths")
    return features, targets


def concatenated_ccc(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> np.ndarray:
    """CCC per dimension ``(D,)`` of all frames of all sequences taken as one series (the AV+EC measure, §5.3)."""
    pred, gold = np.concatenate(predictions), np.concatenate(targets)
    return np.array([ccc(pred[:, d], gold[:, d]) for d in range(gold.shape[1])])


# ---------------------------------------------------------------------------------------------------------------------
# Linear SVR.


@dataclass
class ContinuousSVR:
    """One linear SVR per target dimension, as plain arrays: ``predict`` is ``standardise(X) @ coef.T + intercept``.

    ``C`` and ``dev_ccc`` hold the chosen complexity and its concatenated dev CCC per dimension; ``selection`` every
    grid point's score (rows ``{"name", "C", "dev_ccc"}``).
    """

    names: list[str]
    mean: np.ndarray  # (n,) train feature means
    scale: np.ndarray  # (n,) train feature standard deviations (1 where constant)
    coef: np.ndarray  # (D, n) on standardised features
    intercept: np.ndarray  # (D,)
    C: list[float]
    dev_ccc: list[float]
    selection: list[dict] = field(default_factory=list)

    def predict(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Feature sequences ``(M_i, n)`` -> predictions ``(M_i, D)`` float32."""
        out = []
        for x in xs:
            z = (_check_lld(x) - self.mean) / self.scale
            out.append((z @ self.coef.T + self.intercept).astype(np.float32))
        return out


def _train_rows(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.concatenate(xs), np.concatenate(ys)
    stride = math.ceil(len(x) / SVR_MAX_TRAIN_ROWS)
    return x[::stride], y[::stride]


def _linear_svr(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    svr = LinearSVR(
        C=c, epsilon=0.0, loss="squared_epsilon_insensitive", dual=False, max_iter=SVR_MAX_ITER, random_state=0
    )
    svr.fit(x, y)
    return svr.coef_.astype(np.float64), float(svr.intercept_[0])


def fit_svr(
    train_X: Sequence[np.ndarray],
    train_y: Sequence[np.ndarray],
    dev_X: Sequence[np.ndarray],
    dev_y: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    C_grid: Sequence[float] = SVR_C_GRID,
) -> ContinuousSVR:
    """Per dimension, the linear SVR (module docstring) whose C in ``C_grid`` maximises the concatenated dev CCC.

    ``train_X``/``dev_X``: sequences ``(M_i, n)``; ``train_y``/``dev_y``: ``(M_i, D)`` with ``D = len(names)``.
    """
    names = list(names)
    train_x, train_t = _check_sequences(train_X, train_y, names, "train")
    dev_x, dev_t = _check_sequences(dev_X, dev_y, names, "dev")
    if dev_x[0].shape[1] != train_x[0].shape[1]:
        raise ValueError(f"dev features have {dev_x[0].shape[1]} columns, train {train_x[0].shape[1]}")
    if not C_grid:
        raise ValueError("C_grid is empty")
    x, y = _train_rows(train_x, train_t)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    z_dev = (np.concatenate(dev_x) - mean) / scale
    y_dev = np.concatenate(dev_t)
    offset = y.mean(axis=0)
    coefs, intercepts, chosen, scores, selection = [], [], [], [], []
    for d, name in enumerate(names):
        best = None
        for c in C_grid:
            coef, intercept = _linear_svr(z, y[:, d] - offset[d], float(c))
            score = ccc(z_dev @ coef + intercept + offset[d], y_dev[:, d])
            selection.append({"name": name, "C": float(c), "dev_ccc": score})
            if best is None or score >= best[0]:
                best = (score, float(c), coef, intercept + offset[d])
        scores.append(best[0])
        chosen.append(best[1])
        coefs.append(best[2])
        intercepts.append(best[3])
    return ContinuousSVR(names, mean, scale, np.stack(coefs), np.array(intercepts), chosen, scores, selection)


# ---------------------------------------------------------------------------------------------------------------------
# BLSTM.


class ContinuousBLSTM(nn.Module):
    """Features ``(B, T, n)`` -> per-frame predictions ``(B, T, D)``: standardisation (train statistics, buffers),
    Gaussian input noise while training, a stacked bidirectional LSTM and a linear output layer."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = BLSTM_HIDDEN,
        layers: int = BLSTM_LAYERS,
        input_noise: float = BLSTM_INPUT_NOISE,
    ):
        super().__init__()
        self.input_noise = float(input_noise)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.lstm = nn.LSTM(in_features, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, out_features)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, n)``; ``lengths (B,)`` valid frames per row (None: all); padded frames give undefined values."""
        z = (x - self.mean) / self.scale
        if self.training and self.input_noise > 0:
            z = z + self.input_noise * torch.randn_like(z)
        if lengths is None:
            return self.out(self.lstm(z)[0])
        packed = pack_padded_sequence(z, lengths.cpu(), batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        return self.out(hidden)

    @torch.no_grad()
    def predict(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Whole feature sequences ``(M_i, n)`` -> predictions ``(M_i, D)`` float32, one sequence at a time."""
        was_training = self.training
        self.eval()
        device = self.mean.device
        out = [self(torch.as_tensor(_check_lld(x), dtype=torch.float32, device=device)[None])[0] for x in xs]
        self.train(was_training)
        return [p.cpu().numpy() for p in out]


def _crop_batch(
    xs: list[np.ndarray], ys: list[np.ndarray], rng: np.random.Generator, crop: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Random crops of at most ``crop`` frames, zero-padded: ``x (B, T, n)``, ``y (B, T, D)``, ``lengths (B,)``."""
    pieces = []
    for x, y in zip(xs, ys):
        start = int(rng.integers(len(x) - crop + 1)) if len(x) > crop else 0
        pieces.append((x[start : start + crop], y[start : start + crop]))
    lengths = torch.tensor([len(x) for x, _ in pieces])
    width = int(lengths.max())
    bx = torch.zeros(len(pieces), width, xs[0].shape[1])
    by = torch.zeros(len(pieces), width, ys[0].shape[1])
    for i, (x, y) in enumerate(pieces):
        bx[i, : len(x)] = torch.from_numpy(x)
        by[i, : len(y)] = torch.from_numpy(y)
    return bx, by, lengths


def _epoch(
    model: ContinuousBLSTM,
    optimiser: torch.optim.Optimizer,
    xs: list[np.ndarray],
    ys: list[np.ndarray],
    rng: np.random.Generator,
    loss: str,
) -> float:
    """One pass over the training sequences in random order, batches of :data:`BLSTM_BATCH`; the mean loss."""
    model.train()
    order = rng.permutation(len(xs))
    losses = []
    for start in range(0, len(order), BLSTM_BATCH):
        batch = order[start : start + BLSTM_BATCH]
        x, y, lengths = _crop_batch([xs[i] for i in batch], [ys[i] for i in batch], rng, BLSTM_CROP_FRAMES)
        mask = torch.arange(x.shape[1])[None] < lengths[:, None]
        pred = model(x, lengths)
        value = ccc_loss(pred, y, mask) if loss == "ccc" else mse_loss(pred, y, mask)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    return float(np.mean(losses))


def fit_lld_blstm(
    train_X: Sequence[np.ndarray],
    train_y: Sequence[np.ndarray],
    dev_X: Sequence[np.ndarray],
    dev_y: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    hidden: int = BLSTM_HIDDEN,
    layers: int = BLSTM_LAYERS,
    input_noise: float = BLSTM_INPUT_NOISE,
    loss: str = "ccc",
    epochs: int = BLSTM_EPOCHS,
    patience: int = BLSTM_PATIENCE,
    lr: float = BLSTM_LR,
    seed: int = 0,
) -> tuple[ContinuousBLSTM, list[dict]]:
    """Train a :class:`ContinuousBLSTM` on feature sequences ``(M_i, n)`` and targets ``(M_i, D)`` (module docstring)
    and return it with the weights of its best epoch, and the history (one row per epoch: ``epoch``,
    ``train_loss``, ``dev_ccc`` (mean over dimensions) and the dev CCC of each name). Deterministic for a seed on
    the CPU; the global torch random state is left as it was."""
    if loss not in BLSTM_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(BLSTM_LOSSES)}")
    if epochs < 1 or patience < 1:
        raise ValueError(f"epochs and patience must be >= 1, got {epochs} and {patience}")
    names = list(names)
    train_x, train_t = _check_sequences(train_X, train_y, names, "train")
    dev_x, dev_t = _check_sequences(dev_X, dev_y, names, "dev")
    xs = [x.astype(np.float32) for x in train_x]
    ys = [y.astype(np.float32) for y in train_t]
    rng = np.random.default_rng(seed)
    history: list[dict] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ContinuousBLSTM(xs[0].shape[1], len(names), hidden, layers, input_noise)
        frames = np.concatenate(train_x)
        model.mean.copy_(torch.as_tensor(frames.mean(axis=0)))
        model.scale.copy_(torch.as_tensor(np.where(frames.std(axis=0) > 0, frames.std(axis=0), 1.0)))
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        best_score, best_state, waited = -math.inf, copy.deepcopy(model.state_dict()), 0
        for epoch in range(1, epochs + 1):
            train_loss = _epoch(model, optimiser, xs, ys, rng, loss)
            dev = concatenated_ccc(model.predict(dev_x), dev_t)
            score = float(dev.mean())
            history.append({"epoch": epoch, "train_loss": train_loss, "dev_ccc": score, **dict(zip(names, dev))})
            if score > best_score:
                best_score, best_state, waited = score, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= patience:
                    break
        model.load_state_dict(best_state)
    model.eval()
    return model, history
