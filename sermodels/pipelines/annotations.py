"""Annotation files for segments: what annotators label in Praat, ELAN or Audacity, written out and read back.

The daylong pipeline finds speech segments in long recordings and scores them; a selection of them is written as an
annotation file, labelled by hand, and read back as a corpus. An annotation is a set of named *tiers*, each a list
of :class:`Interval` s (start and end in seconds, and a text label). Four formats:

- ``textgrid`` (``.TextGrid``/``.textgrid``): Praat's TextGrid, written in its long text form (UTF-8) by praatio
  (MIT licence), one interval tier per entry, spanning ``0 .. duration``. Praat needs the gaps between intervals
  filled, so the file holds empty-text intervals between the labelled ones; they are dropped on reading (an interval
  written with an empty label is therefore indistinguishable from a gap, and praatio strips the whitespace around
  labels). Times are rounded to the microsecond. praatio writes a time under 0.1 ms in exponent notation (``5e-05``),
  which its own reader cannot parse, so such times (other than 0) are refused. Point tiers are skipped on reading.
- ``eaf`` (``.eaf``): ELAN's XML annotation format, written and parsed by pympi-ling (``pympi.Elan``, MIT licence),
  one alignable tier per entry, optionally linked to its media file. ELAN stores **integer milliseconds**, so times
  are rounded to the nearest millisecond on writing. On reading, annotations of reference tiers take their parent's
  times; annotations without aligned times (symbolic subdivisions) are left out.
- ``audacity`` (``.txt``): Audacity's label track export, one ``start<TAB>end<TAB>label`` line per interval, times
  with 6 decimals (1 µs), UTF-8. It holds one tier without a name; a label may not contain a tab or a line break.
  Audacity's spectral-selection lines (starting with a backslash) are skipped on reading.
- ``csv`` (``.csv``): columns ``start, end, label`` (times as Python writes floats, so they read back exactly) and
  any extra columns given per row (scores, file names), UTF-8. One tier without a name.

Single-tier formats read back as ``{"labels": [...]}`` (:data:`SINGLE_TIER`). Every file is written atomically
(:mod:`sermodels._io`: a temporary file beside the target, then ``os.replace``), after validation, so a failed or
interrupted write never leaves half a file. Intervals are written sorted by start; tiers may be empty. Every problem
(bad times, overlaps, intervals beyond the duration, unknown suffix, missing or malformed file, missing tier) is an
:class:`AnnotationError`, a ``ValueError`` whose message starts with the file's path.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sermodels._io import AtomicFile, atomic_write_bytes, atomic_write_text

FORMATS = ("textgrid", "eaf", "audacity", "csv")
SUFFIXES = {".textgrid": "textgrid", ".eaf": "eaf", ".txt": "audacity", ".csv": "csv"}  # compared in lower case
SINGLE_TIER = "labels"  # the tier name Audacity and CSV files read back under (they hold one unnamed tier)
CSV_COLUMNS = ("start", "end", "label")
MICROSECOND_DECIMALS = 6  # TextGrid and Audacity times; Audacity's own exports use 6 decimals too
MS_PER_SECOND = 1000  # ELAN's time unit
PRAATIO_PLAIN_MIN = 1e-4  # praatio writes smaller non-zero times as 1e-05 and cannot read them back
TEXTGRID_FORMAT = "long_textgrid"  # Praat's default "text file" form
EAF_AUTHOR = "sermodels"
EAF_MEDIA_TYPES = {".wav": "audio/x-wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".mp4": "video/mp4"}


class AnnotationError(ValueError):
    """An annotation file that cannot be written or read as asked; the message names the file."""


@dataclass(frozen=True)
class Interval:
    """A labelled stretch of a recording."""

    start: float  # seconds
    end: float  # seconds, > start
    text: str = ""


Tiers = Mapping[str, Sequence[Interval]]


# ---------------------------------------------------------------------------------------------------- validation


def checked_tier(
    path: Path, name: str, intervals: Sequence[Interval], duration: float | None = None, decimals: int | None = None
) -> list[Interval]:
    """``intervals`` sorted by start (times rounded to ``decimals`` places, if given), or an AnnotationError naming
    ``path`` and the first problem: a negative start, end <= start, an end beyond ``duration``, or two overlapping
    intervals (touching ones are fine)."""
    tier = [_rounded(interval, decimals) for interval in intervals]
    where = f"{path}: tier {name!r}"
    for interval in tier:
        if not (math.isfinite(interval.start) and math.isfinite(interval.end)):
            raise AnnotationError(f"{where}: interval {_show(interval)} has a time that is not a finite number")
        if interval.start < 0:
            raise AnnotationError(f"{where}: interval {_show(interval)} starts before 0")
        if interval.end <= interval.start:
            raise AnnotationError(f"{where}: interval {_show(interval)} does not end after it starts")
        if duration is not None and interval.end > duration:
            raise AnnotationError(f"{where}: interval {_show(interval)} ends after the duration {duration} s")
    tier.sort(key=lambda interval: (interval.start, interval.end))
    for before, after in zip(tier, tier[1:]):
        if after.start < before.end:
            raise AnnotationError(f"{where}: intervals {_show(before)} and {_show(after)} overlap")
    return tier


def _rounded(interval: Interval, decimals: int | None) -> Interval:
    start, end = float(interval.start), float(interval.end)
    if decimals is not None:
        start, end = round(start, decimals), round(end, decimals)
    return Interval(start, end, str(interval.text))


def _show(interval: Interval) -> str:
    return f"{interval.start!r}-{interval.end!r} s {interval.text!r}"


def format_of(path: str | os.PathLike, format: str | None = None) -> str:
    """The annotation format of ``path``: ``format`` if given (one of :data:`FORMATS`), else from its suffix."""
    if format is not None:
        if format not in FORMATS:
            raise AnnotationError(f"{path}: unknown annotation format {format!r}; one of {', '.join(FORMATS)}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join([".TextGrid", ".eaf", ".txt (Audacity labels)", ".csv"])
        raise AnnotationError(f"{path}: unknown annotation suffix {Path(path).suffix!r}; one of {known}")
    return SUFFIXES[suffix]


def _library(package: str, module: str) -> Any:
    """``module``, or an ImportError saying which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this annotation format needs the package {package} (pip install {package})") from err


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    return path


def _tier_of(path: Path, tiers: Mapping[str, Any], tier: str | None) -> str:
    """The name of the tier to use: ``tier``, or the first one; an AnnotationError listing the tiers if absent."""
    if tier is None:
        if not tiers:
            raise AnnotationError(f"{path}: there are no tiers to write")
        return next(iter(tiers))
    if tier not in tiers:
        raise AnnotationError(f"{path}: no tier {tier!r}; the tiers are {', '.join(map(repr, tiers)) or '(none)'}")
    return tier


# ---------------------------------------------------------------------------------------------------- TextGrid


def write_textgrid(path: str | os.PathLike, tiers: Tiers, duration: float) -> Path:
    """Write ``tiers`` as a Praat TextGrid spanning ``0 .. duration`` seconds, one interval tier each (to 1 µs)."""
    textgrid = _library("praatio", "praatio.textgrid")
    from praatio.data_classes.interval_tier import IntervalTier

    path = Path(path)
    if not (math.isfinite(duration) and duration > 0):
        raise AnnotationError(f"{path}: the duration must be a positive number of seconds, not {duration!r}")
    checked = {name: checked_tier(path, name, tier, duration, MICROSECOND_DECIMALS) for name, tier in tiers.items()}
    for name, tier in checked.items():
        for interval in tier:
            for time in (interval.start, interval.end):
                if 0 < time < PRAATIO_PLAIN_MIN:
                    raise AnnotationError(
                        f"{path}: tier {name!r}: interval {_show(interval)} has a time under {PRAATIO_PLAIN_MIN} s, "
                        f"which praatio writes in exponent notation and cannot read back; start it at 0 or later"
                    )
    grid = textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=float(duration))
    for name, tier in checked.items():
        entries = [(interval.start, interval.end, interval.text) for interval in tier]
        grid.addTier(IntervalTier(name, entries, 0.0, float(duration)))
    with AtomicFile(path) as tmp:
        grid.save(str(tmp), TEXTGRID_FORMAT, includeBlankSpaces=True, minimumIntervalLength=None)
    return path


def read_textgrid(path: str | os.PathLike) -> dict[str, list[Interval]]:
    """The interval tiers of a TextGrid (any form Praat writes, UTF-8 or UTF-16), without the empty-text gaps."""
    textgrid = _library("praatio", "praatio.textgrid")
    from praatio.utilities.constants import INTERVAL_TIER

    path = _existing(path)
    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as err:  # praatio's parsers raise anything from ParsingError to IndexError on a bad file
        raise AnnotationError(f"{path}: not a readable TextGrid ({type(err).__name__}: {err})") from err
    return {
        tier.name: [Interval(float(start), float(end), label) for start, end, label in tier.entries]
        for tier in grid.tiers
        if tier.tierType == INTERVAL_TIER
    }


# ---------------------------------------------------------------------------------------------------- ELAN


def write_eaf(path: str | os.PathLike, tiers: Tiers, media: str | None = None) -> Path:
    """Write ``tiers`` as an ELAN ``.eaf`` file, one tier each, times rounded to integer milliseconds; ``media``
    (a path, relative to the current folder, or a URL) becomes its linked media file."""
    from xml.etree import ElementTree

    Elan = _library("pympi-ling", "pympi.Elan")
    path = Path(path)
    checked = {name: checked_tier(path, name, tier, decimals=3) for name, tier in tiers.items()}
    eaf = Elan.Eaf(author=EAF_AUTHOR)
    eaf.remove_tier("default")
    for name, tier in checked.items():
        eaf.add_tier(name)
        for interval in tier:
            eaf.add_annotation(name, _ms(interval.start), _ms(interval.end), interval.text)
    if media is not None:
        url, relative, mime = _media_link(path, media)
        eaf.add_linked_file(url, relpath=relative, mimetype=mime)
    document = Elan.to_adocument(eaf, pretty=True)
    atomic_write_bytes(path, ElementTree.tostring(document, encoding="UTF-8", xml_declaration=True))
    return path


def _ms(seconds: float) -> int:
    return round(seconds * MS_PER_SECOND)


def _media_link(eaf_path: Path, media: str) -> tuple[str, str | None, str]:
    """``(MEDIA_URL, RELATIVE_MEDIA_URL, MIME_TYPE)`` of a media file, as ELAN writes them."""
    suffix = Path(media).suffix.lower()
    mime = EAF_MEDIA_TYPES.get(suffix, "application/octet-stream")
    if "://" in media:
        return media, None, mime
    absolute = Path(media).resolve()
    relative = Path(os.path.relpath(absolute, eaf_path.resolve().parent)).as_posix()
    return absolute.as_uri(), relative if relative.startswith("../") else f"./{relative}", mime


def read_eaf(path: str | os.PathLike) -> dict[str, list[Interval]]:
    """The tiers of an ELAN file, times in seconds (from ELAN's milliseconds), each sorted by start."""
    Elan = _library("pympi-ling", "pympi.Elan")
    path = _existing(path)
    try:
        eaf = Elan.Eaf(str(path), suppress_version_warning=True)
        tiers = {name: eaf.get_annotation_data_for_tier(name) for name in eaf.get_tier_names()}
    except Exception as err:  # pympi raises a bare Exception on bad XML, KeyError etc. on a bad structure
        raise AnnotationError(f"{path}: not a readable ELAN file ({type(err).__name__}: {err})") from err
    read: dict[str, list[Interval]] = {}
    for name, data in tiers.items():
        timed = [(start, end, value) for start, end, value, *_ in data if None not in (start, end)]
        read[name] = sorted(
            (Interval(start / MS_PER_SECOND, end / MS_PER_SECOND, value or "") for start, end, value in timed),
            key=lambda interval: (interval.start, interval.end),
        )
    return read


# ---------------------------------------------------------------------------------------------------- Audacity


def write_audacity_labels(path: str | os.PathLike, intervals: Sequence[Interval]) -> Path:
    """Write ``intervals`` as an Audacity label track: ``start<TAB>end<TAB>label`` lines, times with 6 decimals."""
    path = Path(path)
    tier = checked_tier(path, SINGLE_TIER, intervals, decimals=MICROSECOND_DECIMALS)
    for interval in tier:
        if any(character in interval.text for character in "\t\r\n"):
            raise AnnotationError(
                f"{path}: the label of {_show(interval)} holds a tab or a line break, which Audacity labels cannot"
            )
    digits = f".{MICROSECOND_DECIMALS}f"
    lines = [f"{interval.start:{digits}}\t{interval.end:{digits}}\t{interval.text}\n" for interval in tier]
    atomic_write_text(path, "".join(lines))
    return path


def read_audacity_labels(path: str | os.PathLike) -> list[Interval]:
    """The intervals of an Audacity label track, in file order (spectral-selection lines skipped)."""
    path = _existing(path)
    intervals = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise AnnotationError(f"{path}: line {number} has {len(fields)} tab-separated fields, not 3: {line!r}")
        start, end = (_seconds(path, f"line {number}", field) for field in fields[:2])
        intervals.append(_valid(path, f"line {number}", Interval(start, end, fields[2])))
    return intervals


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err})") from err


def _seconds(path: Path, where: str, field: str) -> float:
    try:
        value = float(field)
    except ValueError:
        raise AnnotationError(f"{path}: {where}: {field!r} is not a time in seconds") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{path}: {where}: {field!r} is not a finite time")
    return value


def _valid(path: Path, where: str, interval: Interval) -> Interval:
    if interval.start < 0 or interval.end <= interval.start:
        raise AnnotationError(f"{path}: {where}: {_show(interval)} is not an interval (need 0 <= start < end)")
    return interval


# ---------------------------------------------------------------------------------------------------- CSV


def write_annotation_csv(
    path: str | os.PathLike, intervals: Sequence[Interval], extra: Sequence[Mapping[str, Any]] | None = None
) -> Path:
    """Write ``intervals`` as CSV with columns ``start, end, label`` and, if given, ``extra[i]``'s columns on
    interval ``i``'s row (in the order the columns first appear; a row's missing ones are empty)."""
    path = Path(path)
    extra = list(extra) if extra is not None else [{} for _ in intervals]
    if len(extra) != len(intervals):
        raise AnnotationError(f"{path}: {len(extra)} rows of extra columns for {len(intervals)} intervals")
    columns = list(dict.fromkeys(key for row in extra for key in row))
    clashes = [column for column in columns if column in CSV_COLUMNS]
    if clashes:
        raise AnnotationError(f"{path}: extra columns {clashes} clash with the columns {list(CSV_COLUMNS)}")
    tier = checked_tier(path, SINGLE_TIER, intervals)
    order = sorted(range(len(intervals)), key=lambda i: (float(intervals[i].start), float(intervals[i].end)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, *columns], lineterminator="\n")
    writer.writeheader()
    for interval, i in zip(tier, order):
        writer.writerow({**extra[i], "start": repr(interval.start), "end": repr(interval.end), "label": interval.text})
    atomic_write_text(path, buffer.getvalue())
    return path


def read_annotation_csv(path: str | os.PathLike) -> list[Interval]:
    """The intervals of a CSV with (at least) the columns ``start, end, label``, in file order."""
    path = _existing(path)
    reader = csv.DictReader(io.StringIO(_text(path), newline=""))
    missing = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise AnnotationError(
            f"{path}: no column(s) {', '.join(missing)}; it needs {', '.join(CSV_COLUMNS)} "
            f"(it has {', '.join(reader.fieldnames or []) or 'none'})"
        )
    intervals = []
    for row in reader:
        where = f"line {reader.line_num}"
        start, end = _seconds(path, where, row["start"] or ""), _seconds(path, where, row["end"] or "")
        intervals.append(_valid(path, where, Interval(start, end, row["label"] or "")))
    return intervals


# ---------------------------------------------------------------------------------------------------- by suffix


def write_annotations(
    path: str | os.PathLike,
    tiers: Tiers,
    duration: float | None = None,
    format: str | None = None,
    media: str | None = None,
    tier: str | None = None,
) -> Path:
    """Write ``tiers`` in ``format`` (default: from the suffix, see :data:`SUFFIXES`). A TextGrid spans
    ``0 .. duration`` (default: the last end); Audacity and CSV files hold one tier, ``tier`` or the first one;
    ``media`` is linked from an EAF file. Intervals ending after a given ``duration`` are refused in every format."""
    path = Path(path)
    kind = format_of(path, format)
    if duration is not None:
        for name, intervals in tiers.items():
            checked_tier(path, name, intervals, duration)
    if kind == "textgrid":
        if duration is None:
            duration = max((float(i.end) for intervals in tiers.values() for i in intervals), default=0.0)
        return write_textgrid(path, tiers, duration)
    if kind == "eaf":
        return write_eaf(path, tiers, media)
    intervals = tiers[_tier_of(path, tiers, tier)]
    if kind == "audacity":
        return write_audacity_labels(path, intervals)
    return write_annotation_csv(path, intervals)


def read_annotations(path: str | os.PathLike, tier: str | None = None) -> dict[str, list[Interval]]:
    """The tiers of an annotation file, by its suffix (Audacity and CSV: one tier, :data:`SINGLE_TIER`); only
    ``tier`` if given."""
    kind = format_of(path)
    readers = {"textgrid": read_textgrid, "eaf": read_eaf}
    if kind in readers:
        tiers = readers[kind](path)
    else:
        tiers = {SINGLE_TIER: read_audacity_labels(path) if kind == "audacity" else read_annotation_csv(path)}
    if tier is None:
        return tiers
    return {tier: tiers[_tier_of(Path(path), tiers, tier)]}
