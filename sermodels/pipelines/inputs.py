"""What a pipeline runs over: files and folders given on the command line, and labels for them.

:func:`expand_inputs` is how ``predict`` reads its arguments; :func:`list_inputs` adds what a resumable job needs
(a display name relative to the folder given, a key that changes when the file does, each file once).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sermodels.audio import AUDIO_EXTENSIONS


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Replace every folder by the audio files below it (recursively, sorted by path); keep other paths as given.

    Audio files are recognised by extension (:data:`sermodels.audio.AUDIO_EXTENSIONS`); hidden files and folders
    (names starting with ``.``, such as macOS ``._x.wav`` resource forks) are skipped. A path that does not exist is
    kept, so that the job reports it as a failure instead of silently dropping it; so is a folder with no audio
    files in it. Symbolic links to folders are not followed (no cycles).
    """
    expanded: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.is_dir():
            expanded.append(path)
            continue
        found = sorted(_audio_files_below(path), key=lambda p: p.as_posix())
        expanded.extend(found if found else [path])
    return expanded


def unique_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """:func:`expand_inputs` with every file kept once, at its first place (a folder and a file in it, or the same
    file under two spellings, by absolute path)."""
    files: list[Path] = []
    seen: set[str] = set()
    for path in expand_inputs(paths):
        absolute = os.path.abspath(path)
        if absolute not in seen:
            seen.add(absolute)
            files.append(path)
    return files


def _audio_files_below(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(root) / name


def no_audio_in_folder() -> str:
    """The failure reported for a folder input with no audio files in it."""
    return f"a folder with no audio files in it (extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})"


# ---------------------------------------------------------------------------------------------------- resumable jobs


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # relative to the input folder, or the file name
    key: str  # "abspath|st_size|st_mtime_ns": identifies this version of the file in a partial folder


def file_key(path: str | os.PathLike) -> str:
    """``abspath|st_size|st_mtime_ns`` of a file (through symbolic links): a file replaced or touched since an
    earlier run gets another key, so a resumed run computes it again. A path that cannot be stat'ed (missing) is
    keyed ``abspath|-|-``; it fails, and failures are retried on resume anyway."""
    absolute = os.path.abspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return f"{absolute}|-|-"
    return f"{absolute}|{stat.st_size}|{stat.st_mtime_ns}"


def list_inputs(paths: Sequence[str | os.PathLike]) -> list[InputFile]:
    """Files and folders (audio files below, recursively, sorted: :func:`expand_inputs`) -> input files in order;
    a file reached twice is kept once, at its first place."""
    files: list[InputFile] = []
    seen: set[str] = set()
    for entry in paths:
        root = Path(entry)
        for path in expand_inputs([root]):
            absolute = os.path.abspath(path)
            if absolute in seen:
                continue
            seen.add(absolute)
            name = path.relative_to(root).as_posix() if root.is_dir() and path != root else path.name
            files.append(InputFile(path, name, file_key(path)))
    if not files:
        raise ValueError("no input files given")
    return files


# ---------------------------------------------------------------------------------------------------- labels


def read_label_table(path: str | os.PathLike) -> dict[str, str]:
    """``name -> label`` from a CSV/TSV with a header row (first column names, second labels)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"{path}: empty label table; expected a header row and name,label rows")
    delimiter = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    if len(rows[0]) < 2:
        raise ValueError(f"{path}: the header {lines[0]!r} has fewer than two columns; expected name,label")
    table: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {number}: expected a name and a label, got {row}")
        name, label = row[0].strip(), row[1].strip()
        if table.get(name, label) != label:
            raise ValueError(f"{path}, line {number}: {name!r} has two labels, {table[name]!r} and {label!r}")
        table[name] = label
    if not table:
        raise ValueError(f"{path}: no name,label rows below the header")
    return table


def assign_labels(
    files: Sequence[InputFile], table: Mapping[str, str] | None = None, folder_labels: bool = False
) -> list[str] | None:
    """Each file's label, or None with neither a table nor folder labels.

    A file takes the label of its ``name``, else of its file name, else of either without the audio extension (a
    table written for ``.wav`` originals labels ``.flac`` copies); with ``folder_labels`` the parent folder's name
    labels the files the table does not name. A file left without a label is an error naming it.
    """
    if table is None and not folder_labels:
        return None
    by_stem: dict[str, str | None] = {}
    for name, label in (table or {}).items():
        stem = _without_audio_suffix(name)
        by_stem[stem] = label if by_stem.get(stem, label) == label else None  # None: ambiguous
    labels: list[str] = []
    missing: list[str] = []
    for item in files:
        label = None
        if table is not None:
            candidates = (item.name, item.path.name)
            label = next((table[c] for c in candidates if c in table), None)
            if label is None:
                label = next((by_stem[s] for s in map(_without_audio_suffix, candidates) if by_stem.get(s)), None)
        if label is None and folder_labels:
            label = item.path.parent.name or None
        if label is None:
            missing.append(item.name)
        labels.append(label or "")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"no label for {len(missing)} of {len(files)} input files: {shown}")
    return labels


def _without_audio_suffix(name: str) -> str:
    path = Path(name)
    return path.with_suffix("").as_posix() if path.suffix.lower() in AUDIO_EXTENSIONS else name
