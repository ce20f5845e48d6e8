"""What a head outputs: the output spec every head of every model declares.

A head outputs one of three kinds, at one of two levels:

- ``categories``: one score per class name (logits in training; probabilities or SVM decision values in ``predict``);
- ``dimensions``: one value per named dimension (e.g. arousal and valence in [-1, 1]);
- ``embedding``: a vector of ``dim`` numbers with no names (a representation, not a prediction);

at ``utterance`` level (``(batch, size)`` per forward) or ``frame`` level (``(batch, frames, size)``, ``frame_rate``
frames per second of audio, time-continuous prediction as in the end-to-end conv-BLSTM of Trigeorgis et al.).

The spec is stored in ``config.json`` under ``"outputs"`` and shown in the model card; ``predict`` picks its columns
and ``evaluate`` its metrics by kind (UAR/WAR/F1 for categories; CCC, Pearson r and RMSE for dimensions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

KINDS = ("categories", "dimensions", "embedding")
LEVELS = ("utterance", "frame")
SCORE_KINDS = ("probability", "decision")


@dataclass(frozen=True)
class OutputSpec:
    """The declared output of one head.

    ``names``: class names in logit order (categories), dimension names (dimensions), empty for an embedding.
    ``dim``: the output size (``len(names)`` for categories and dimensions). ``range``: the value range of
    dimensions (``None`` = unbounded). ``score``: what a categories head's ``predict`` scores are (probability:
    softmax of the logits; decision: an SVM's raw margins). ``frame_rate``: output frames per second of audio, for
    frame-level heads.
    """

    kind: str
    names: tuple[str, ...] = ()
    dim: int = 0
    level: str = "utterance"
    frame_rate: float | None = None
    range: tuple[float, float] | None = None
    score: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"output kind must be one of {KINDS}, got {self.kind!r}")
        if self.level not in LEVELS:
            raise ValueError(f"output level must be one of {LEVELS}, got {self.level!r}")
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if self.kind == "embedding":
            if self.names:
                raise ValueError("an embedding output has no names, only a dim")
        else:
            if self.dim not in (0, len(self.names)):
                raise ValueError(f"{self.kind} output: dim {self.dim} differs from its {len(self.names)} names")
            object.__setattr__(self, "dim", len(self.names))
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"{self.kind} output: names repeat in {list(self.names)}")
        minimum = 2 if self.kind == "categories" else 1
        if self.dim < minimum:
            raise ValueError(f"a {self.kind} output needs at least {minimum} outputs, got {self.dim}")
        if (self.level == "frame") != (self.frame_rate is not None):
            raise ValueError("frame_rate is needed by (and only by) frame-level outputs")
        if self.frame_rate is not None and not (math.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {self.frame_rate}")
        if self.kind == "categories":
            object.__setattr__(self, "score", self.score or "probability")
            if self.score not in SCORE_KINDS:
                raise ValueError(f"score must be one of {SCORE_KINDS}, got {self.score!r}")
        elif self.score is not None:
            raise ValueError(f"only categories outputs have a score kind, not {self.kind}")
        if self.range is not None:
            if self.kind != "dimensions":
                raise ValueError("only dimensions outputs have a value range")
            low, high = (float(v) for v in self.range)
            if not low < high:
                raise ValueError(f"range must be (low, high) with low < high, got {self.range}")
            object.__setattr__(self, "range", (low, high))

    # ---- JSON ------------------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "level": self.level}
        out.update({"names": list(self.names)} if self.kind != "embedding" else {"dim": self.dim})
        if self.frame_rate is not None:
            out["frame_rate"] = self.frame_rate
        if self.range is not None:
            out["range"] = list(self.range)
        if self.score is not None:
            out["score"] = self.score
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any], where: str = "output spec") -> OutputSpec:
        known = {"kind", "names", "dim", "level", "frame_rate", "range", "score"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}")
        try:
            args = dict(value)
            if "names" in args:
                args["names"] = tuple(args["names"])
            if args.get("range") is not None:
                args["range"] = tuple(args["range"])
            return cls(**args)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None

    # ---- shapes ----------------------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The names of the output's columns: class or dimension names, ``emb_0 ...`` for an embedding."""
        return list(self.names) if self.kind != "embedding" else [f"emb_{i}" for i in range(self.dim)]

    def check(self, output: torch.Tensor, batch: int, head: str = "") -> None:
        """Raise if a forward's ``output`` does not have this spec's shape for a batch of ``batch`` clips."""
        ok = output.dim() == (2 if self.level == "utterance" else 3)
        ok = ok and output.shape[0] == batch and output.shape[-1] == self.dim
        if not ok:
            want = f"({batch}, {self.dim})" if self.level == "utterance" else f"({batch}, frames, {self.dim})"
            raise RuntimeError(
                f"head {head!r} returned an output of shape {tuple(output.shape)}; its {self.level}-level {self.kind} "
                f"spec expects {want}"
            )

    def frames_for(self, samples: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Output frames covering ``samples`` of audio: ``ceil(samples / sample_rate * frame_rate)``, at least 1."""
        if self.frame_rate is None:
            raise ValueError("frames_for is for frame-level outputs")
        seconds = samples.to(torch.float64) / sample_rate
        return torch.ceil(seconds * self.frame_rate - 1e-9).clamp(min=1).to(torch.long)


def categories(names: Sequence[str], score: str = "probability", **level: Any) -> OutputSpec:
    """A class-score head (``level``: ``level="frame", frame_rate=...`` for a frame-level one)."""
    return OutputSpec("categories", tuple(names), score=score, **level)


def dimensions(names: Sequence[str], range: tuple[float, float] | None = (-1.0, 1.0), **level: Any) -> OutputSpec:
    """A head of named continuous values (arousal/valence in [-1, 1] by default)."""
    return OutputSpec("dimensions", tuple(names), range=range, **level)


def embedding(dim: int, **level: Any) -> OutputSpec:
    """A representation of ``dim`` numbers."""
    return OutputSpec("embedding", dim=int(dim), **level)


def specs_to_json(specs: Mapping[str, OutputSpec]) -> dict[str, dict[str, Any]]:
    return {head: spec.to_json() for head, spec in specs.items()}


def specs_from_json(value: Mapping[str, Any], where: str = "outputs") -> dict[str, OutputSpec]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must map head names to output specs")
    return {head: OutputSpec.from_json(spec, f"{where}[{head!r}]") for head, spec in value.items()}
