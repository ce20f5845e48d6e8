"""Binary arousal and valence from any head of a zoo model: what the daylong pipeline reports for every segment.

The NICU paper (Interspeech, §3.1 and §4.2) describes daylong speech by binary arousal (high / low) and binary valence
(positive / the rest: negative and neutral merged). A zoo model gives them in one of three ways, read here in this
order of preference:

1. a categories head over arousal levels (``low``, ``high``) or valence levels (``negative``, ``neutral``,
   ``positive`` or the binary ``non-positive``, ``positive``): the label as predicted (valence merged to binary), and
   the probability of ``high`` / ``positive`` when the head's scores are probabilities;
2. a dimensions head with ``arousal`` / ``valence`` in [-1, 1] (:func:`sermodels.labels.av_values` coding: arousal
   low -1 / high +1, valence negative -1 / neutral 0 / positive +1): high when arousal > :data:`AROUSAL_THRESHOLD`,
   positive when valence > :data:`VALENCE_THRESHOLD` (half-way between neutral and positive);
3. a categories head over emotion words (a corpus's classes): the top class placed on the circumplex map of
   :mod:`sermodels.labels` (EmoNet Table 2), with P(high) / P(positive) the summed probability of the classes placed
   there. Classes the map does not know make the head unusable for this (an error names them).

Scores that are not probabilities (an SVM's decision values) give labels but no probability columns (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sermodels import labels
from sermodels.models.base import SERModel
from sermodels.outputs import OutputSpec

AROUSAL_THRESHOLD = 0.0  # av_values: low -1, high +1
VALENCE_THRESHOLD = 0.5  # av_values: neutral 0, positive +1; "positive vs the rest" splits half-way
HIGH, LOW = "high", "low"
POSITIVE, NON_POSITIVE = "positive", "non-positive"
AROUSAL, VALENCE = "arousal", "valence"
#: The columns every daylong segment row has, whatever the model.
AV_COLUMNS = ("arousal", "p_high_arousal", "valence", "p_positive_valence")


@dataclass(frozen=True)
class Reading:
    """How one head gives arousal and/or valence: ``way`` is "levels", "dimensions" or "circumplex"."""

    head: str
    spec: OutputSpec
    way: str
    gives: tuple[str, ...]  # "arousal", "valence" or both
    probabilities: bool

    def read(self, outputs: torch.Tensor, scores: torch.Tensor | None) -> list[dict[str, float | str]]:
        """The arousal/valence columns this head provides for each row of ``outputs`` ``(n, size)``."""
        if self.way == "dimensions":
            return [self._from_values(row) for row in outputs.tolist()]
        names = self.spec.names
        top = outputs.argmax(dim=-1).tolist()
        probs = scores.tolist() if (self.probabilities and scores is not None) else [None] * len(top)
        return [self._from_classes(names, names[i], p) for i, p in zip(top, probs)]

    def _from_values(self, row: list[float]) -> dict[str, float | str]:
        values = dict(zip(self.spec.names, row))
        out: dict[str, float | str] = {}
        if AROUSAL in self.gives:
            out |= {"arousal": HIGH if values[AROUSAL] > AROUSAL_THRESHOLD else LOW, "p_high_arousal": math.nan}
        if VALENCE in self.gives:
            positive = values[VALENCE] > VALENCE_THRESHOLD
            out |= {"valence": POSITIVE if positive else NON_POSITIVE, "p_positive_valence": math.nan}
        return out

    def _from_classes(self, names: Sequence[str], top: str, probs: list[float] | None) -> dict[str, float | str]:
        out: dict[str, float | str] = {}
        if self.way == "levels":
            if AROUSAL in self.gives:
                out["arousal"] = top
                out["p_high_arousal"] = probs[names.index(HIGH)] if probs else math.nan
            if VALENCE in self.gives:
                out["valence"] = POSITIVE if top == POSITIVE else NON_POSITIVE
                out["p_positive_valence"] = probs[names.index(POSITIVE)] if probs else math.nan
            return out
        out["arousal"] = labels.arousal(top)
        out["valence"] = labels.binary_valence(top)
        out["p_high_arousal"] = sum(p for n, p in zip(names, probs) if labels.arousal(n) == HIGH) if probs else math.nan
        out["p_positive_valence"] = (
            sum(p for n, p in zip(names, probs) if labels.binary_valence(n) == POSITIVE) if probs else math.nan
        )
        return out


def reading_of(model: SERModel, head: str) -> Reading | None:
    """How ``head`` gives arousal/valence, or ``None`` if it gives neither (an embedding, a frame-level head)."""
    spec = model.output_spec(head)
    if spec.level != "utterance" or spec.kind == "embedding":
        return None
    probabilities = spec.kind == "categories" and getattr(model, "score_kind", "probability") == "probability"
    names = list(spec.names)
    if spec.kind == "dimensions":
        gives = tuple(d for d in (AROUSAL, VALENCE) if d in names)
        return Reading(head, spec, "dimensions", gives, False) if gives else None
    if set(names) == set(labels.AROUSAL_CLASSES):
        return Reading(head, spec, "levels", (AROUSAL,), probabilities)
    if set(names) in (set(labels.VALENCE_CLASSES), set(labels.BINARY_VALENCE_CLASSES)):
        return Reading(head, spec, "levels", (VALENCE,), probabilities)
    unknown = [n for n in names if not _placed(n)]
    if unknown:
        raise ValueError(
            f"head {head!r} has classes the circumplex map does not place ({', '.join(unknown)}): it gives no "
            "arousal/valence; choose another head"
        )
    return Reading(head, spec, "circumplex", (AROUSAL, VALENCE), probabilities)


def readings_for(model: SERModel, heads: Sequence[str] | None = None) -> list[Reading]:
    """The readings of ``heads`` (default: the model's arousal/valence heads if it has them, else its default head),
    in order of preference for each of arousal and valence. Refuses a selection that gives neither."""
    if heads is None:
        heads = [h for h in (AROUSAL, VALENCE) if h in model.heads] or [model.resolve_head(None)]
    found = []
    for head in heads:
        model.resolve_head(head)  # unknown heads: a clear error
        reading = reading_of(model, head)
        if reading is None:
            raise ValueError(f"head {head!r} ({model.output_spec(head).kind}) gives no arousal or valence")
        found.append(reading)
    return sorted(found, key=lambda r: ("levels", "dimensions", "circumplex").index(r.way))


def combine(readings: Sequence[Reading], per_head: Sequence[list[dict[str, float | str]]]) -> list[dict]:
    """One row per segment with :data:`AV_COLUMNS`: each dimension from the first (preferred) reading giving it."""
    rows: list[dict[str, float | str]] = []
    for i in range(len(per_head[0]) if per_head else 0):
        row: dict[str, float | str] = {
            "arousal": "",
            "p_high_arousal": math.nan,
            "valence": "",
            "p_positive_valence": math.nan,
        }
        taken: set[str] = set()
        for reading, values in zip(readings, per_head):
            for dimension in reading.gives:
                if dimension in taken:
                    continue
                taken.add(dimension)
                prob = "p_high_arousal" if dimension == AROUSAL else "p_positive_valence"
                row[dimension] = values[i][dimension]
                row[prob] = values[i][prob]
        rows.append(row)
    return rows


def _placed(name: str) -> bool:
    try:
        labels.placement(name)
    except labels.UnknownLabelError:
        return False
    return True
