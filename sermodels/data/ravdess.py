"""RAVDESS speech audio (Livingstone & Russo, PLoS ONE 2018): 24 actors, 1440 utterances, 8 categories.

Native layout of ``Audio_Speech_Actors_01-24.zip``: ``<root>/Actor_12/03-01-06-01-02-01-12.wav``, seven two-digit
fields: modality (``03`` audio-only), vocal channel (``01`` speech), emotion, intensity (``01`` normal, ``02``
strong; neutral has only normal), statement, repetition, actor (odd male, even female). The design is full
factorial, so strict mode names every missing file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from sermodels.data.base import (
    Corpus,
    CorpusMeta,
    Item,
    Problems,
    build_corpus,
    corpus_folder,
    items_from_names,
    register_corpus,
    scan_folders,
    stem_item,
    unknown_code,
)
from sermodels.labels import CORPUS_LABELS

NAME = "ravdess"
EMOTIONS = {f"{i:02d}": label for i, label in enumerate(CORPUS_LABELS[NAME], start=1)}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = ("01", "02")
ACTORS = tuple(f"{i:02d}" for i in range(1, 25))
CLASS_COUNTS = {label: 96 if code == "01" else 192 for code, label in EMOTIONS.items()}
FILE_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
NAME_FORM = "the seven-field pattern 03-01-06-01-02-01-12"
ACTOR_FOLDER = re.compile(r"^Actor_(\d+)$")

META = CorpusMeta(
    name=NAME,
    title="Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS), speech audio",
    description="North American English acted speech, 24 actors, 1440 utterances, 8 categories",
    language="English (North American)",
    licence="CC BY-NC-SA 4.0",
    citation=(
        "S. R. Livingstone, F. A. Russo: The Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS): "
        "A dynamic, multimodal set of facial and vocal expressions in North American English. PLoS ONE 13(5): "
        "e0196391, 2018. doi:10.1371/journal.pone.0196391"
    ),
    url="https://zenodo.org/record/1188976",
    speakers=len(ACTORS),
    files=1440,
    classes=CORPUS_LABELS[NAME],
    folder="RAVDESS",
    texts=STATEMENTS,
)


def expected_ids() -> list[str]:
    """Every file stem of the complete speech corpus (60 per actor)."""
    ids = []
    for actor in ACTORS:
        for emotion in EMOTIONS:
            for intensity in ("01",) if emotion == "01" else INTENSITIES:
                for statement in STATEMENTS:
                    for repetition in REPETITIONS:
                        ids.append(f"03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor}")
    return ids


@register_corpus(META)
def load_ravdess(root: str | os.PathLike, *, strict: bool = True) -> Corpus:
    """RAVDESS items from ``root`` containing the ``Actor_01`` .. ``Actor_24`` folders."""
    base = corpus_folder(NAME, root)
    problems = Problems(NAME, base)
    paths = scan_folders(
        base,
        problems,
        stray="audio outside an Actor_XX folder",
        none_found="no Actor_XX folders (expected Actor_01/03-01-01-01-01-01-01.wav ...)",
        known=ACTORS,
        kind="actor",
        strict=strict,
        code=_actor,
        folder_name=lambda actor: f"Actor_{actor}",
        unknown=lambda actor: f"unknown actor {actor} (RAVDESS has actors 01-24)",
    )
    items = items_from_names(paths, problems, FILE_NAME, NAME_FORM, _problems, _item)
    return build_corpus(
        META, base, items, strict=strict, speakers=ACTORS, class_counts=CLASS_COUNTS, expected_ids=expected_ids()
    )


def _actor(folder: Path) -> str | None:
    """The two-digit actor of an ``Actor_<n>`` folder (``Actor_7`` is actor ``07``), ``None`` for other folders."""
    match = ACTOR_FOLDER.match(folder.name)
    return None if match is None else f"{int(match[1]):02d}"


def _problems(path: Path, name: re.Match[str]) -> Iterator[str]:
    modality, channel, emotion, intensity, statement, repetition, actor = name.groups()
    if modality != "03":
        yield f"modality {modality} is not audio-only (03)"
    if channel != "01":
        yield f"vocal channel {channel} is not speech (01); the song corpus is not supported"
    yield from unknown_code("emotion", emotion, EMOTIONS, listed="01-08")
    if intensity not in INTENSITIES or (emotion == "01" and intensity != "01"):
        yield f"invalid intensity code {intensity!r} (01 normal, 02 strong; neutral is 01 only)"
    yield from unknown_code("statement", statement, STATEMENTS)
    yield from unknown_code("repetition", repetition, REPETITIONS)
    if actor not in ACTORS:
        yield f"unknown actor {actor!r} (known: 01-24)"
    elif _actor(path.parent) != actor:  # compares numbers, so Actor_7 holds actor 07
        yield f"actor {actor} in the name but the file is in {path.parent.name}"


def _item(path: Path, name: re.Match[str]) -> Item:
    _, _, emotion, intensity, statement, repetition, actor = name.groups()
    sex = "m" if int(actor) % 2 else "f"
    extra = {"intensity": INTENSITIES[intensity], "repetition": repetition}
    return stem_item(path, NAME, label=EMOTIONS[emotion], speaker=actor, sex=sex, text=statement, **extra)
