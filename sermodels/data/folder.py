"""The generic corpus: your own labelled audio, as a folder per class or as a CSV/TSV table.

* **Folder per class**: ``<root>/<label>/**/<file>.<ext>`` — every non-hidden sub-folder of ``root`` is a class
  (its name, as written, is the label); audio is found recursively inside it. No speakers are known, so splits are
  drawn per file (not speaker-independent; ``info()["speaker_independent"]`` says so).
* **Table**: ``root`` is a ``.csv`` (comma) or ``.tsv`` (tab) file with a header naming the columns ``path``,
  its targets, and optionally ``speaker``, ``sex`` (``f``/``m``), ``text`` and ``split`` (``train``/``dev``/``test``);
  other columns are ignored. Relative paths (audio and traces) are resolved against the table's folder. Targets
  (:mod:`sermodels.data.targets`), at least one kind per table and filled in every row:

  - ``label``: the category;
  - numeric dimension columns, the utterance's ``Item.values``: by default whichever of :data:`DIMENSION_COLUMNS`
    (``arousal``, ``valence``, ``dominance``) the header has, or exactly the columns named by ``dimensions=``;
    e.g. ``path,arousal,valence,speaker,split``. A value must be a finite number;
  - ``trace``: the path of the file's CSV timeline ``time,<dimension>,...`` (``Item.trace``), checked when the
    corpus is loaded (every trace must exist, parse, have increasing times and the same columns as the others)
    and read again when needed.

Item ids are the path relative to the root folder (the table's folder) without extension, e.g. ``anger/001``.
Splits: a ``split`` column is used as given for ``split("fixed")``; otherwise, with speakers, ``"fixed"`` is the
deterministic ≈70/10/20 % speaker-disjoint :func:`~sermodels.data.splits.grouped_partition` and ``"cv5"`` five
speaker-grouped folds (:func:`~sermodels.data.splits.grouped_folds`), as for URDU. A built-in corpus that is only
partly present can also be loaded here, but ``load_corpus(name, root, strict=False)`` keeps its own protocol.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from sermodels.data.base import (
    Corpus,
    CorpusError,
    CorpusMeta,
    Item,
    Problems,
    corpus_folder,
    group_of,
    register_corpus,
    scan_folders,
)
from sermodels.data.splits import (
    FIXED_FRACTIONS,
    PARTITIONS,
    SEARCH_SEED,
    SEARCH_TRIALS,
    Protocol,
    grouped_folds,
    grouped_partition,
    protocol_from_json,
)
from sermodels.data.targets import Trace, TraceError, read_timeline

NAME = "folder"
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
REQUIRED_COLUMNS = ("path", "label")  # "label" unless the table has numeric dimension columns or a trace column
OPTIONAL_COLUMNS = ("speaker", "sex", "text", "split")
#: Numeric columns read as dimensions when ``dimensions`` is not given (the usual emotion dimensions).
DIMENSION_COLUMNS = ("arousal", "valence", "dominance")
TRACE_COLUMN = "trace"
CV_FOLDS = 5
# The grouped split search costs trials x groups; large corpora need fewer random orders to get close to target.
SEARCH_BUDGET = 200_000
#: Work bound of each grouped search at load time (candidate moves/swaps evaluated, see ``grouped_partition``):
#: a protocol runs up to 2 + CV_FOLDS searches, so a corpus of a few hundred speakers splits in about a second.
LOAD_SEARCH_WORK = 20_000

META = CorpusMeta(
    name=NAME,
    title="Generic corpus",
    description="your own data: a folder per class, or a CSV/TSV with path and label, dimensions or a trace",
    language="unknown",
    licence="unknown (yours)",
    citation="",
    url="",
)


@register_corpus(META)
def load_folder(
    root: str | os.PathLike,
    *,
    strict: bool = True,
    name: str | None = None,
    language: str = "unknown",
    licence: str = "unknown",
    dimensions: Sequence[str] | None = None,
) -> Corpus:
    """A corpus from a class-folder tree or a CSV/TSV table (``root``); ``name`` defaults to the folder/file stem.

    ``dimensions`` names a table's numeric columns (default: those of :data:`DIMENSION_COLUMNS` it has). ``strict``
    is accepted for a uniform signature; a generic corpus is whatever the folder or table holds.
    """
    source = Path(root).expanduser()
    corpus_name = name or (source.stem if source.is_file() else source.name)
    if source.is_file():
        items = _table_items(source, corpus_name, dimensions)
        base = source.parent
    else:
        base = corpus_folder(corpus_name, source)
        items = _folder_items(base, corpus_name)
    meta = CorpusMeta(
        name=corpus_name,
        title=f"user corpus {corpus_name}",
        description=f"user corpus from {source}",
        language=language,
        licence=licence,
        citation="",
        url="",
    )
    classes = sorted({item.label for item in items if item.label is not None})
    has_speakers = all(item.speaker is not None for item in items)
    given = all(item.split is not None for item in items)
    independent = _speaker_disjoint(items) if given else has_speakers
    if given and not independent:
        warnings.warn(f"{corpus_name}: the split column puts some speakers in two partitions", stacklevel=2)
    return Corpus(
        meta,
        base,
        items,
        classes,
        protocol=lambda: _computed_protocol(corpus_name, items),
        strict=strict,
        speaker_independent=independent,
    )


def _folder_items(base: Path, corpus: str) -> list[Item]:
    paths = scan_folders(
        base,
        Problems(corpus, base),
        stray="audio outside a class folder",
        none_found="no class folders (expected <root>/<label>/<file>.wav)",
        recursive=True,
    )
    labels = [path.relative_to(base).parts[0] for path in paths]  # the class folder each file was found in
    items = [
        Item(id=_item_id(path, base), path=str(path), label=label, speaker=None, sex=None, text=None, corpus=corpus)
        for label, path in zip(labels, paths)
    ]
    _check_ids(items, base, corpus)
    return items


def _table_items(table: Path, corpus: str, dimensions: Sequence[str] | None = None) -> list[Item]:
    delimiter = TABLE_DELIMITERS.get(table.suffix.lower())
    if delimiter is None:
        raise CorpusError(f"{corpus}: {table} is neither a folder nor a .csv/.tsv table")
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        value_columns = _value_columns(columns, dimensions, table, corpus)
        targets = [c for c in ("label", *value_columns, TRACE_COLUMN) if c in columns]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns and (c == "path" or not targets)]
        if missing:
            raise CorpusError(
                f"{corpus}: {table} lacks the column(s) {missing}; its header is {columns} (targets: a label column, "
                f"numeric dimension columns such as {', '.join(DIMENSION_COLUMNS)}, or a {TRACE_COLUMN} column)"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise CorpusError(f"{corpus}: {table} has a header but no rows")
    problems = Problems(corpus, table.parent)
    present = [c for c in OPTIONAL_COLUMNS if c in columns]
    traces = _TraceNames()
    items = []
    for line, row in enumerate(rows, start=2):
        where = f"{table.name} line {line}"
        empty = [c for c in ("path", *targets, *present) if c != "text" and not row.get(c)]
        if empty:
            problems.add(where, f"empty {', '.join(empty)}")
            continue
        path = _resolve(row["path"], table)
        if not path.is_file():
            problems.add(where, f"missing file {row['path']}")
            continue
        split = row.get("split") or None
        if split is not None and split not in PARTITIONS:
            problems.add(where, f"split {split!r} is not one of {', '.join(PARTITIONS)}")
            continue
        sex = row.get("sex") or None
        if sex is not None and sex not in ("f", "m"):
            problems.add(where, f"sex {sex!r} is not f or m")
            continue
        values, bad = _row_values(row, value_columns)
        trace, bad_trace = traces.read(row[TRACE_COLUMN], table) if TRACE_COLUMN in columns else (None, None)
        if bad or bad_trace:
            problems.add(where, bad or bad_trace)
            continue
        items.append(
            Item(
                id=_item_id(path, table.parent),
                path=str(path),
                label=row.get("label") or None,
                speaker=row.get("speaker") or None,
                sex=sex,
                text=row.get("text") or None,
                corpus=corpus,
                split=split,
                values=values,
                trace=trace,
            )
        )
    problems.raise_if_any(f"unusable rows in {table.name}")
    _check_ids(items, table.parent, corpus)
    return items


def _value_columns(columns: list[str], dimensions: Sequence[str] | None, table: Path, corpus: str) -> list[str]:
    """The table's numeric dimension columns: ``dimensions`` (all required) or the default names it has."""
    if dimensions is None:
        return [c for c in DIMENSION_COLUMNS if c in columns]
    wanted = list(dimensions)
    clash = [c for c in wanted if c in ("path", "label", TRACE_COLUMN, *OPTIONAL_COLUMNS)]
    absent = [c for c in wanted if c not in columns]
    if clash or absent or len(set(wanted)) != len(wanted):
        raise CorpusError(
            f"{corpus}: {table}: dimensions {wanted} must be distinct numeric columns of its header {columns}"
            + (f"; {clash} are not dimension columns" if clash else "")
        )
    return wanted


def _row_values(row: dict[str, str], columns: list[str]) -> tuple[dict[str, float] | None, str | None]:
    """The row's dimension values, or the problem with the first bad cell."""
    if not columns:
        return None, None
    values = {}
    for column in columns:
        try:
            value = float(row[column])
        except ValueError:
            return None, f"{column} {row[column]!r} is not a number"
        if not math.isfinite(value):
            return None, f"{column} is {row[column]} (dimension values must be finite numbers)"
        values[column] = value
    return values, None


class _TraceNames:
    """Reads and checks each row's trace; every trace of a table must have the columns of the first one."""

    def __init__(self):
        self.names: list[str] | None = None
        self.first: str | None = None

    def read(self, cell: str, table: Path) -> tuple[Trace | None, str | None]:
        path = _resolve(cell, table)
        if not path.is_file():
            return None, f"missing trace file {cell}"
        try:
            names = read_timeline(path)[0]
        except TraceError as err:
            return None, str(err).replace(f"trace {path}", f"trace {cell}", 1)
        if self.names is None:
            self.names, self.first = names, cell
        elif names != self.names:
            return None, f"trace {cell} has the columns {names}, the first trace ({self.first}) {self.names}"
        return Trace.from_csv(path, names), None


def _resolve(cell: str, table: Path) -> Path:
    path = Path(cell).expanduser()
    return path if path.is_absolute() else table.parent / path


def _item_id(path: Path, base: Path) -> str:
    try:
        relative = path.resolve().relative_to(base.resolve())
    except ValueError:
        relative = path.resolve()
    return relative.with_suffix("").as_posix()


def _check_ids(items: list[Item], base: Path, corpus: str) -> None:
    by_id: dict[str, list[str]] = {}
    for item in items:
        by_id.setdefault(item.id, []).append(item.path)
    problems = Problems(corpus, base)
    for item_id, paths in sorted(by_id.items()):
        if len(paths) > 1:
            problems.add(item_id, f"duplicate id ({len(paths)} entries: {', '.join(paths)})")
    problems.raise_if_any("duplicate ids")


def _speaker_disjoint(items: list[Item]) -> bool:
    if any(item.speaker is None for item in items):
        return False
    parts: dict[str, set[str]] = {}
    for item in items:
        parts.setdefault(item.speaker, set()).add(item.split)
    return all(len(p) == 1 for p in parts.values())


def _computed_protocol(corpus: str, items: list[Item]) -> Protocol | None:
    """Speaker-grouped splits (files as groups when there are no speakers); ``None`` with fewer than 3 groups.

    Without speakers every group is one file, and ``grouped_partition`` stratifies the files by class directly;
    with speakers the search is bounded by :data:`LOAD_SEARCH_WORK`. ``Corpus.protocol`` calls this once per corpus
    object and keeps the result.
    """
    groups: dict[str, dict[str, int]] = {}
    for item in items:
        per = groups.setdefault(group_of(item), {})
        label = item.label or ""  # a table with numeric targets only: one stratum
        per[label] = per.get(label, 0) + 1
    if len(groups) < len(PARTITIONS):
        return None
    trials = max(20, min(SEARCH_TRIALS, SEARCH_BUDGET // len(groups)))
    search = {"seed": SEARCH_SEED, "trials": trials, "max_work": LOAD_SEARCH_WORK}
    fixed = grouped_partition(groups, FIXED_FRACTIONS, **search)
    folds = grouped_folds(groups, CV_FOLDS, **search) if len(groups) >= CV_FOLDS + 2 else []
    return protocol_from_json(
        {
            "corpus": corpus,
            "version": 0,
            "description": "computed at load time by grouped_partition/grouped_folds",
            "speakers": sorted(groups),
            "splits": {"fixed": fixed},
            "folds": {"cv5": folds} if folds else {},
        }
    )
