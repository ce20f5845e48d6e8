"""Corpus items, the :class:`Corpus` container, its errors, and the registry of corpus loaders.

A loader reads a corpus in its native layout and file names, finding audio by stem so that the official ``.wav``
download and a converted copy (e.g. 16 kHz ``.flac``) both work; decoding and resampling happen later, in
:func:`sermodels.audio.load_audio`. Problems are collected over the whole corpus and raised once as a
:class:`CorpusError` that lists the offending files, so a broken download is fixed in one pass.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sermodels.audio import AUDIO_EXTENSIONS
from sermodels.data.splits import PARTITIONS, Partition, Protocol, load_protocol
from sermodels.data.targets import Trace

#: How many offenders an error message lists before it only counts the rest.
MAX_LISTED = 20


class CorpusError(ValueError):
    """A corpus that cannot be used as it is. ``offenders`` holds every ``"<file>: <problem>"`` found."""

    def __init__(self, message: str, offenders: Sequence[str] = ()):
        self.offenders = list(offenders)
        text = message
        if self.offenders:
            listed = "\n".join(f"  {entry}" for entry in self.offenders[:MAX_LISTED])
            more = len(self.offenders) - MAX_LISTED
            text += f" ({len(self.offenders)} problem{'s' if len(self.offenders) != 1 else ''}):\n{listed}"
            if more > 0:
                text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass(frozen=True)
class Item:
    """One utterance. ``id`` is unique within its corpus (the file stem for built-in corpora).

    Its targets (:mod:`sermodels.data.targets`): ``label``, the category (``None`` for an item of a generic corpus
    that has only numeric targets); ``values``, named dimensions of the whole utterance (e.g. rated arousal and
    valence; not to be modified); ``trace``, named dimensions over time. Built-in corpora give categories only.
    ``trace`` and ``extra`` take no part in comparing or hashing items.
    """

    id: str
    path: str
    label: str | None
    speaker: str | None
    sex: str | None  # "f", "m" or None when the corpus does not say
    text: str | None  # sentence/statement id where the corpus has scripted texts
    corpus: str
    split: str | None = None  # partition given by the data itself (generic CSV ``split`` column)
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    values: Mapping[str, float] | None = field(default=None, hash=False)
    trace: Trace | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class CorpusMeta:
    """What a model card needs to say about a corpus."""

    name: str
    title: str
    description: str  # one line, for `sermodels corpora`
    language: str
    licence: str
    citation: str
    url: str
    speakers: int | None = None
    files: int | None = None
    classes: tuple[str, ...] | None = None
    folder: str | None = None  # folder name of the shared 16 kHz copy
    texts: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "language": self.language,
            "licence": self.licence,
            "citation": self.citation,
            "url": self.url,
            "speakers": self.speakers,
            "files": self.files,
            "classes": list(self.classes) if self.classes else None,
        }


class Corpus:
    """The items of one corpus with its metadata and speaker-independent protocols.

    ``classes`` is the category order (logit order for a "categories" head). ``protocol`` gives the speaker lists of
    :meth:`split` and :meth:`folds`; built-in corpora read it from ``sermodels/data/splits/<name>.json`` on first
    use. A generic corpus whose CSV has a ``split`` column uses that column for ``split("fixed")``.
    """

    def __init__(
        self,
        meta: CorpusMeta,
        root: str | os.PathLike,
        items: Sequence[Item],
        classes: Sequence[str],
        *,
        protocol: Protocol | Callable[[], Protocol] | None = None,
        strict: bool = True,
        speaker_independent: bool = True,
    ):
        self.meta = meta
        self.name = meta.name
        self.root = str(root)
        self.items: list[Item] = list(items)
        self.classes: list[str] = list(classes)
        self.strict = strict
        self.speaker_independent = speaker_independent
        self._protocol = protocol
        ids = Counter(item.id for item in self.items)
        doubled = sorted(i for i, n in ids.items() if n > 1)
        if doubled:
            raise CorpusError(
                f"{self.name} at {self.root}: duplicate item ids", [f"{i}: id used twice" for i in doubled]
            )

    # ---- container ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, {len(self.items)} items, {len(self.speakers)} speakers, root={self.root!r})"

    @property
    def speakers(self) -> list[str]:
        return sorted({item.speaker for item in self.items if item.speaker is not None})

    @property
    def dimensions(self) -> list[str]:
        """Names of the items' utterance-level ``values`` (the generic corpus's numeric columns); empty if none."""
        return next((list(item.values) for item in self.items if item.values), [])

    @property
    def trace_dimensions(self) -> list[str]:
        """Names of the items' frame-level traces; empty if the items have none."""
        return next((list(item.trace.names) for item in self.items if item.trace is not None), [])

    def class_counts(self, items: Iterable[Item] | None = None) -> dict[str, int]:
        counts = Counter(item.label for item in (self.items if items is None else items))
        return {label: counts[label] for label in self.classes if counts[label]}

    def of_speakers(self, speakers: Iterable[str]) -> list[Item]:
        """Items of the given protocol groups (speakers; item ids for a generic corpus without speakers)."""
        wanted = set(speakers)
        return [item for item in self.items if group_of(item) in wanted]

    # ---- protocols -------------------------------------------------------------------------------------------
    @property
    def protocol(self) -> Protocol | None:
        if callable(self._protocol):
            self._protocol = self._protocol()
        return self._protocol

    def split_names(self) -> dict[str, int]:
        """Available splits: name -> number of folds (0 for a single split)."""
        names = dict(self.protocol.names()) if self.protocol else {}
        if self._given_split():
            names["fixed"] = 0
        return names

    def split(self, name: str = "fixed", fold: int | None = None) -> dict[str, list[Item]]:
        """``{"train", "dev", "test"}`` -> items; ``fold`` (0-based) selects a fold of a cross-validation ``name``.

        For a fold, ``test`` is the held-out speaker group and ``dev`` the development speakers stored for it.
        """
        if name == "fixed" and fold is None and self._given_split():
            return {part: [item for item in self.items if item.split == part] for part in PARTITIONS}
        partition = self._partition(name, fold)
        return {part: self.of_speakers(partition.speakers(part)) for part in PARTITIONS}

    def folds(self, name: str) -> list[tuple[list[Item], list[Item]]]:
        """Cross-validation folds as ``(train, test)`` item lists, ``train`` = every non-test speaker (dev included).

        E.g. ``corpus.folds("loso")`` on EMO-DB gives 10 pairs; every item is in exactly one ``test`` list.
        Use :meth:`split` with ``fold=k`` to get the three-way partition with the fold's development speakers.
        """
        protocol = self.protocol
        if protocol is None or name not in protocol.folds:
            raise ValueError(f"{self.name}: no cross-validation {name!r}; available: {sorted(self.split_names())}")
        folds = []
        for partition in protocol.folds[name]:
            test = set(partition.test)
            folds.append(
                (
                    [item for item in self.items if group_of(item) not in test],
                    [item for item in self.items if group_of(item) in test],
                )
            )
        return folds

    def _given_split(self) -> bool:
        return bool(self.items) and all(item.split is not None for item in self.items)

    def _partition(self, name: str, fold: int | None) -> Partition:
        protocol = self.protocol
        if protocol is None:
            raise ValueError(f"{self.name}: no split protocol (fewer than 3 speaker groups and no split column)")
        partition = protocol.partition(name, fold)
        unknown = sorted({group_of(item) for item in self.items} - set(protocol.speakers))
        if unknown:
            raise CorpusError(
                f"{self.name}: speakers missing from protocol {protocol.corpus} v{protocol.version}",
                [f"speaker {s}: not in any partition" for s in unknown],
            )
        return partition

    # ---- model cards -----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Facts for a model card: metadata, files, speakers, classes and counts, available splits and versions."""
        sexes = Counter(self._speaker_sex().values())
        protocol = self.protocol
        return {
            **self.meta.as_dict(),
            "root": self.root,
            "files": len(self.items),
            "speakers": len(self.speakers),
            "speakers_by_sex": {sex: sexes[sex] for sex in sorted(sexes, key=str)},
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            **({"dimensions": self.dimensions} if self.dimensions else {}),
            **({"trace_dimensions": self.trace_dimensions} if self.trace_dimensions else {}),
            "complete": self.strict,
            "speaker_independent": self.speaker_independent,
            "splits": self.split_names(),
            "protocol_version": protocol.version if protocol else None,
        }

    def _speaker_sex(self) -> dict[str, str | None]:
        return {item.speaker: item.sex for item in self.items if item.speaker is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Helpers shared by the loaders.


def group_of(item: Item) -> str:
    """The unit a speaker-independent protocol keeps together: the speaker, or the item itself if unknown."""
    return item.speaker if item.speaker is not None else item.id


class Problems:
    """Collects ``"<where>: <problem>"`` entries and raises them together."""

    def __init__(self, corpus: str, root: str | os.PathLike):
        self.corpus = corpus
        self.root = Path(root)
        self.entries: list[str] = []

    def add(self, where: str | os.PathLike, problem: str) -> None:
        self.entries.append(f"{self._relative(where)}: {problem}")

    def raise_if_any(self, summary: str) -> None:
        if self.entries:
            raise CorpusError(f"{self.corpus} at {self.root}: {summary}", self.entries)

    def _relative(self, where: str | os.PathLike) -> str:
        try:
            return Path(where).relative_to(self.root).as_posix()
        except ValueError:
            return str(where)


def corpus_folder(corpus: str, root: str | os.PathLike) -> Path:
    """``root`` as an existing directory, or a CorpusError saying what is wrong."""
    path = Path(root).expanduser()
    if not path.exists():
        raise CorpusError(f"{corpus}: corpus folder {path} does not exist")
    if not path.is_dir():
        raise CorpusError(f"{corpus}: {path} is not a folder")
    return path


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def audio_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Audio files (by libsndfile extension) in ``folder``, sorted; hidden files (``._x.wav``) are skipped."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in filenames if is_audio(Path(name)))
        if not recursive:
            break
    return sorted(found)


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_unique_stems(paths: Sequence[Path], problems: Problems) -> list[Path]:
    """Paths whose stem occurs once; each repeated stem is reported with all its files."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    for stem, group in sorted(by_stem.items()):
        if len(group) > 1:
            where = ", ".join(problems._relative(p) for p in group)
            problems.add(stem, f"duplicate id (the same stem in {len(group)} files: {where})")
    return [group[0] for group in by_stem.values() if len(group) == 1]


def scan_folders(
    base: Path,
    problems: Problems,
    *,
    stray: str,
    none_found: str | None = None,
    known: Collection[str] | None = None,
    kind: str = "",
    strict: bool = True,
    code: Callable[[Path], str | None] = lambda folder: folder.name,
    folder_name: Callable[[str], str] = str,
    unknown: Callable[[str], str] | None = None,
    recursive: bool = False,
) -> list[Path]:
    """Audio files in the sub-folders of ``base`` that hold a corpus's speakers or classes, in folder order.

    ``code(folder)`` is the speaker/class a sub-folder stands for, or ``None`` for a folder that is not part of the
    corpus (ignored). Reported, then raised together as "unusable layout": audio directly in ``base`` (``stray``);
    no such folder at all (``none_found``, where given); in strict mode, each code of ``known`` without a folder
    ("missing <kind> folder" at ``base / folder_name(code)``); a folder whose code is not in ``known`` ("unknown
    <kind> folder (known: ...)", or ``unknown(code)``); a folder without audio. ``known=None`` accepts every folder.
    """
    for path in audio_files(base):
        problems.add(path, stray)
    folders = [(folder, found) for folder in subfolders(base) if (found := code(folder)) is not None]
    if not folders and none_found is not None:
        problems.add(base, none_found)
    elif strict and known is not None:
        present = {found for _, found in folders}
        for missing in (name for name in known if name not in present):
            problems.add(base / folder_name(missing), f"missing {kind} folder")
    paths: list[Path] = []
    for folder, found in folders:
        if known is not None and found not in known:
            listed = ", ".join(folder_name(name) for name in known)
            problems.add(folder, unknown(found) if unknown else f"unknown {kind} folder (known: {listed})")
            continue
        files = audio_files(folder, recursive=recursive)
        if not files:
            problems.add(folder, "empty folder: no audio files")
        paths.extend(files)
    problems.raise_if_any("unusable layout")
    return paths


def unknown_code(kind: str, code: str, known: Collection[str], listed: str | None = None) -> list[str]:
    """``["unknown <kind> code '<code>' (known: ...)"]`` when ``code`` is not in ``known``, else ``[]``.

    ``listed`` replaces the comma-separated list of ``known`` in the message (e.g. a range ``01-08``).
    """
    if code in known:
        return []
    return [f"unknown {kind} code {code!r} (known: {', '.join(known) if listed is None else listed})"]


def items_from_names(
    paths: Sequence[Path],
    problems: Problems,
    pattern: re.Pattern[str],
    form: str,
    check: Callable[[Path, re.Match[str]], Iterable[str]],
    make: Callable[[Path, re.Match[str]], Item],
) -> list[Item]:
    """The items a built-in corpus's file names describe, in ``paths`` order.

    A file's stem is matched against ``pattern`` ("name does not follow <form>" if it does not); ``check`` lists
    what is wrong with a matching name (unknown codes, disagreement with its folder) and ``make`` builds the item
    of a name without problems. Repeated stems and all problems are reported, then raised together.
    """
    items = []
    for path in check_unique_stems(paths, problems):
        name = pattern.match(path.stem)
        if name is None:
            problems.add(path, f"name does not follow {form}")
            continue
        bad = list(check(path, name))
        for problem in bad:
            problems.add(path, problem)
        if not bad:
            items.append(make(path, name))
    problems.raise_if_any("unusable files")
    return items


def stem_item(
    path: Path, corpus: str, *, label: str, speaker: str, sex: str | None, text: str | None, **extra: str
) -> Item:
    """An item of a built-in corpus: its id is the file stem, ``extra`` what else its name says."""
    return Item(
        id=path.stem, path=str(path), label=label, speaker=speaker, sex=sex, text=text, corpus=corpus, extra=extra
    )


def build_corpus(
    meta: CorpusMeta,
    base: Path,
    items: Iterable[Item],
    *,
    strict: bool,
    speakers: Iterable[str],
    class_counts: Mapping[str, int],
    expected_ids: Iterable[str] | None = None,
    sort_key: Callable[[Item], Any] = lambda item: item.id,
) -> Corpus:
    """A built-in corpus: ``items`` sorted by ``sort_key``, checked by :func:`check_complete` when ``strict``.

    Its classes are ``meta.classes`` and its protocol the stored one of ``meta.name`` (:func:`builtin_protocol`).
    """
    items = sorted(items, key=sort_key)
    if strict:
        check_complete(meta.name, base, items, speakers=speakers, class_counts=class_counts, expected_ids=expected_ids)
    return Corpus(meta, base, items, meta.classes or (), protocol=builtin_protocol(meta.name), strict=strict)


def check_complete(
    corpus: str,
    root: Path,
    items: Sequence[Item],
    *,
    speakers: Iterable[str],
    class_counts: Mapping[str, int],
    expected_ids: Iterable[str] | None = None,
) -> None:
    """Strict mode: every expected speaker, class count and (where enumerable) file id must be present."""
    problems = Problems(corpus, root)
    have_speakers = {item.speaker for item in items}
    for speaker in sorted(set(speakers) - have_speakers):
        problems.add(f"speaker {speaker}", "no files (missing speaker)")
    if expected_ids is not None:
        have_ids = {item.id for item in items}
        for missing in sorted(set(expected_ids) - have_ids):
            problems.add(missing, "missing file")
    counts = Counter(item.label for item in items)
    for label, expected in class_counts.items():
        if counts[label] != expected:
            problems.add(f"class {label}", f"{counts[label]} files, the complete corpus has {expected}")
    problems.raise_if_any(
        "incomplete corpus (load it with strict=False to use a partial copy; its splits then hold what is present)"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Registry.

Loader = Callable[..., Corpus]


@dataclass(frozen=True)
class _Entry:
    meta: CorpusMeta
    loader: Loader


_REGISTRY: dict[str, _Entry] = {}


def register_corpus(meta: CorpusMeta) -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(root, *, strict=True, **kwargs) -> Corpus`` under ``meta.name``."""

    def decorate(loader: Loader) -> Loader:
        if meta.name in _REGISTRY:
            raise ValueError(f"corpus {meta.name!r} is registered twice")
        _REGISTRY[meta.name] = _Entry(meta, loader)
        return loader

    return decorate


def load_corpus(name: str, root: str | os.PathLike, /, *, strict: bool = True, **kwargs: Any) -> Corpus:
    """Load corpus ``name`` from ``root`` (its native layout).

    ``strict=True`` (default) requires the complete corpus: the expected speakers, class counts and, where names are
    enumerable (RAVDESS, EMOVO), every file. ``strict=False`` accepts a partial copy (file names are still
    checked). ``name="folder"`` is the generic corpus: ``root`` is a folder per class or a CSV/TSV file.
    """
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key].loader(root, strict=strict, **kwargs)


def list_corpora() -> dict[str, str]:
    """Registered corpus names -> one-line descriptions."""
    return {name: entry.meta.description for name, entry in sorted(_REGISTRY.items())}


def describe_corpora() -> list[dict[str, Any]]:
    """Metadata of every registered corpus (language, licence, citation, url, speakers, files, classes)."""
    return [entry.meta.as_dict() for _, entry in sorted(_REGISTRY.items())]


def corpus_meta(name: str) -> CorpusMeta:
    if name not in _REGISTRY:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].meta


def builtin_protocol(name: str) -> Callable[[], Protocol]:
    """Lazy loader of a built-in corpus's stored protocol."""
    return lambda: load_protocol(name)
