"""RAVDESS speech audio (Livingstone & Russo, PLoS ONE 2018): 24 actors, 1440 utterances, 8 categories.

Native layout of ``Audio_Speech_Actors_01-24.zip``: ``<root>/Actor_12/03-01-06-01-02-01-12.wav``, seven two-digit
fields: modality (``03`` audio-only), vocal channel (``01`` speech), emotion, intensity (``01`` normal, ``02``
strong; neutral has only normal), statement, repetition, actor (odd male, even female). The design is full
factorial, so strict mode names every missing file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sermodels.data.base import (
    Corpus,
    CorpusMeta,
    Item,
    Problems,
    audio_files,
    builtin_protocol,
    check_complete,
    check_unique_stems,
    corpus_folder,
    register_corpus,
    subfolders,
)
from sermodels.labels import CORPUS_LABELS

NAME = "ravdess"
EMOTIONS = {f"{i:02d}": label for i, label in enumerate(CORPUS_LABELS[NAME], start=1)}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = ("01", "02")
ACTORS = tuple(f"{i:02d}" for i in range(1, 25))
FILE_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
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
    for stray in audio_files(base):
        problems.add(stray, "audio outside an Actor_XX folder")
    paths: list[Path] = []
    actor_folders = [folder for folder in subfolders(base) if ACTOR_FOLDER.match(folder.name)]
    if not actor_folders:
        problems.add(base, "no Actor_XX folders (expected Actor_01/03-01-01-01-01-01-01.wav ...)")
    if strict and actor_folders:
        have = {f"{int(ACTOR_FOLDER.match(folder.name)[1]):02d}" for folder in actor_folders}
        for actor in ACTORS:
            if actor not in have:
                problems.add(base / f"Actor_{actor}", "missing actor folder")
    for folder in actor_folders:
        number = f"{int(ACTOR_FOLDER.match(folder.name)[1]):02d}"
        if number not in ACTORS:
            problems.add(folder, f"unknown actor {number} (RAVDESS has actors 01-24)")
            continue
        found = audio_files(folder)
        if not found:
            problems.add(folder, "empty folder: no audio files")
        paths.extend(found)
    problems.raise_if_any("unusable layout")
    items = [item for path in check_unique_stems(paths, problems) if (item := _item(path, problems)) is not None]
    problems.raise_if_any("unusable files")
    items.sort(key=lambda item: item.id)
    if strict:
        check_complete(
            NAME,
            base,
            items,
            speakers=ACTORS,
            class_counts={label: 96 if code == "01" else 192 for code, label in EMOTIONS.items()},
            expected_ids=expected_ids(),
        )
    return Corpus(META, base, items, CORPUS_LABELS[NAME], protocol=builtin_protocol(NAME), strict=strict)


def _item(path: Path, problems: Problems) -> Item | None:
    match = FILE_NAME.match(path.stem)
    if match is None:
        problems.add(path, "name does not follow the seven-field pattern 03-01-06-01-02-01-12")
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = match.groups()
    bad = []
    if modality != "03":
        bad.append(f"modality {modality} is not audio-only (03)")
    if channel != "01":
        bad.append(f"vocal channel {channel} is not speech (01); the song corpus is not supported")
    if emotion not in EMOTIONS:
        bad.append(f"unknown emotion code {emotion!r} (known: 01-08)")
    if intensity not in INTENSITIES or (emotion == "01" and intensity != "01"):
        bad.append(f"invalid intensity code {intensity!r} (01 normal, 02 strong; neutral is 01 only)")
    if statement not in STATEMENTS:
        bad.append(f"unknown statement code {statement!r} (known: 01, 02)")
    if repetition not in REPETITIONS:
        bad.append(f"unknown repetition code {repetition!r} (known: 01, 02)")
    if actor not in ACTORS:
        bad.append(f"unknown actor {actor!r} (known: 01-24)")
    elif path.parent.name != f"Actor_{actor}":
        bad.append(f"actor {actor} in the name but the file is in {path.parent.name}")
    for problem in bad:
        problems.add(path, problem)
    if bad:
        return None
    return Item(
        id=path.stem,
        path=str(path),
        label=EMOTIONS[emotion],
        speaker=actor,
        sex="m" if int(actor) % 2 else "f",
        text=statement,
        corpus=NAME,
        extra={"intensity": INTENSITIES[intensity], "repetition": repetition},
    )
