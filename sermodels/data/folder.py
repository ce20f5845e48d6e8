"""The generic corpus: your own labelled audio, as a folder per class or as a CSV/TSV table.

* **Folder per class**: ``<root>/<label>/**/<file>.<ext>`` — every non-hidden sub-folder of ``root`` is a class
  (its name, as written, is the label); audio is found recursively inside it. No speakers are known, so splits are
  drawn per file (not speaker-independent; ``info()["speaker_independent"]`` says so).
* **Table**: ``root`` is a ``.csv`` (comma) or ``.tsv`` (tab) file with a header naming the columns ``path``,
  ``label`` and optionally ``speaker``, ``sex`` (``f``/``m``), ``text`` and ``split`` (``train``/``dev``/``test``);
  other columns are ignored. Relative paths are resolved against the table's folder.

Item ids are the path relative to the root folder (the table's folder) without extension, e.g. ``anger/001``.
Splits: a ``split`` column is used as given for ``split("fixed")``; otherwise, with speakers, ``"fixed"`` is the
deterministic ≈70/10/20 % speaker-disjoint :func:`~sermodels.data.splits.grouped_partition` and ``"cv5"`` five
speaker-grouped folds (:func:`~sermodels.data.splits.grouped_folds`), as for URDU. A built-in corpus that is only
partly present can also be loaded here, but ``load_corpus(name, root, strict=False)`` keeps its own protocol.
"""

from __future__ import annotations

import csv
import os
import warnings
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

NAME = "folder"
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("speaker", "sex", "text", "split")
CV_FOLDS = 5
# The grouped split search costs trials x groups; large corpora need fewer random orders to get close to target.
SEARCH_BUDGET = 200_000
#: Work bound of each grouped search at load time (candidate moves/swaps evaluated, see ``grouped_partition``):
#: a protocol runs up to 2 + CV_FOLDS searches, so a corpus of a few hundred speakers splits in about a second.
LOAD_SEARCH_WORK = 20_000

META = CorpusMeta(
    name=NAME,
    title="Generic corpus",
    description="your own data: a folder per class, or a CSV/TSV with path,label[,speaker][,split]",
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
) -> Corpus:
    """A corpus from a class-folder tree or a CSV/TSV table (``root``); ``name`` defaults to the folder/file stem.

    ``strict`` is accepted for a uniform signature; a generic corpus is whatever the folder or table holds.
    """
    source = Path(root).expanduser()
    corpus_name = name or (source.stem if source.is_file() else source.name)
    if source.is_file():
        items = _table_items(source, corpus_name)
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
    classes = sorted({item.label for item in items})
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


def _table_items(table: Path, corpus: str) -> list[Item]:
    delimiter = TABLE_DELIMITERS.get(table.suffix.lower())
    if delimiter is None:
        raise CorpusError(f"{corpus}: {table} is neither a folder nor a .csv/.tsv table")
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise CorpusError(f"{corpus}: {table} lacks the column(s) {missing}; its header is {columns}")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise CorpusError(f"{corpus}: {table} has a header but no rows")
    problems = Problems(corpus, table.parent)
    present = [c for c in OPTIONAL_COLUMNS if c in columns]
    items = []
    for line, row in enumerate(rows, start=2):
        where = f"{table.name} line {line}"
        empty = [c for c in (*REQUIRED_COLUMNS, *present) if c != "text" and not row.get(c)]
        if empty:
            problems.add(where, f"empty {', '.join(empty)}")
            continue
        path = Path(row["path"]).expanduser()
        path = path if path.is_absolute() else table.parent / path
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
        items.append(
            Item(
                id=_item_id(path, table.parent),
                path=str(path),
                label=row["label"],
                speaker=row.get("speaker") or None,
                sex=sex,
                text=row.get("text") or None,
                corpus=corpus,
                split=split,
            )
        )
    problems.raise_if_any(f"unusable rows in {table.name}")
    _check_ids(items, table.parent, corpus)
    return items


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
        per[item.label] = per.get(item.label, 0) + 1
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
