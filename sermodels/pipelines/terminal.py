"""What ``sermodels predict`` prints on the terminal: a table with one aligned row per predicted file, in input order.

The columns follow the head's output spec (:mod:`sermodels.outputs`):

- ``categories``: ``file, label, probability``: the top class and its probability (its ``decision value`` for an
  SVM);
- ``dimensions``: ``file`` and one column per dimension (``arousal``, ``valence``), signed;
- ``embedding``: ``file, values, L2 norm``;
- a frame-level head: ``seconds`` and ``frames`` after ``file``, then the kind's columns for the whole file, its
  frames averaged (the per-file row of :class:`~sermodels.pipelines.predict.PredictionResult`; the timeline itself
  goes to a file).

Text is left-aligned and numbers right-aligned, three decimals. Every predicted file gets a row, however many there
are (the written table is the record; this one is for reading); failed files are reported elsewhere, with reasons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sermodels.outputs import OutputSpec
from sermodels.pipelines.predict import SCORE_PREFIX, PredictionResult

SCORE_HEADERS = {"probability": "probability", "decision": "decision value"}
DECIMALS = 3


def prediction_table(result: PredictionResult) -> list[str]:
    """The lines of ``result``'s table (header, rule, one row per predicted file); none when no file was
    predicted."""
    if not result.rows:
        return []
    spec = result.spec
    header, numeric = _columns(spec)
    rows = []
    for index, row in enumerate(result.rows):
        cells = [row["path"]]
        if spec.level == "frame":
            frames = result.outputs[index].shape[0] if index < len(result.outputs) else None
            cells += [f"{row['end']:.2f}", "–" if frames is None else str(frames)]
        rows.append(cells + _values(spec, row))
    return format_table(header, rows, numeric)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> list[str]:
    """``header``, a rule of dashes and ``rows``, each column as wide as its widest cell; ``numeric`` columns are
    right-aligned. Lines carry no trailing spaces."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric)]
        return "  ".join(padded).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _columns(spec: OutputSpec) -> tuple[list[str], list[bool]]:
    header, numeric = ["file"], [False]
    if spec.level == "frame":
        header += ["seconds", "frames"]
        numeric += [True, True]
    if spec.kind == "categories":
        header += ["label", SCORE_HEADERS.get(spec.score, "score")]
        numeric += [False, True]
    elif spec.kind == "dimensions":
        header += list(spec.names)
        numeric += [True] * len(spec.names)
    else:
        header += ["values", "L2 norm"]
        numeric += [True, True]
    return header, numeric


def _values(spec: OutputSpec, row: dict[str, Any]) -> list[str]:
    """The kind's cells of one row of the prediction table (see :func:`~sermodels.pipelines.predict.output_columns`)."""
    if spec.kind == "categories":
        score = row[f"{SCORE_PREFIX}{row['label']}"]
        signed = "+" if spec.score == "decision" else ""
        return [row["label"], f"{score:{signed}.{DECIMALS}f}"]
    if spec.kind == "dimensions":
        return [f"{row[name]:+.{DECIMALS}f}" for name in spec.columns]
    norm = math.sqrt(sum(row[name] ** 2 for name in spec.columns))
    return [str(spec.dim), f"{norm:.{DECIMALS}f}"]
