"""URDU emotional speech from Urdu talk shows (Latif et al., 2018, arXiv:1812.10411): 400 clips, 4 categories.

Native layout of the authors' repository: ``<root>/Angry/SM1_F10_A010.wav``; the folder is the emotion, the name
``S<G><id>_F<nn>_<E><nnn>`` carries the speaker (``S<G><id>``, ``G`` = ``M``/``F`` is the sex), the speaker's file
number and the emotion initial with a running number, which must agree with the folder. Spontaneous speech: no
scripted texts. The 29 speaker ids are a closed list here, so a typo in a name is an error, not a new speaker.
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
    audio_files,
    build_corpus,
    corpus_folder,
    items_from_names,
    register_corpus,
    scan_folders,
    stem_item,
)
from sermodels.labels import CORPUS_LABELS

NAME = "urdu"
FOLDERS = {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad"}
SPEAKERS = tuple([f"SF{i}" for i in range(1, 12)] + [f"SM{i}" for i in range(1, 8)] + [f"SM{i}" for i in range(17, 28)])
CLASS_COUNTS = dict.fromkeys(FOLDERS.values(), 100)
FILE_NAME = re.compile(r"^(?P<speaker>S(?P<sex>[MF])\d+)_F(?P<file>\d+)_(?P<emotion>[A-Z])(?P<run>\d+)$")
NAME_FORM = "S<sex><id>_F<nn>_<emotion><nnn>, e.g. SM1_F10_A010"

META = CorpusMeta(
    name=NAME,
    title="URDU: emotional speech from Urdu talk shows",
    description="Urdu spontaneous talk-show speech, 29 speaker ids, 400 clips, 4 categories",
    language="Urdu",
    licence="research use only (corpus README)",
    citation=(
        "S. Latif, A. Qayyum, M. Usman, J. Qadir: Cross Lingual Speech Emotion Recognition: Urdu vs. Western "
        "Languages. Proc. FIT 2018; arXiv:1812.10411."
    ),
    url="https://github.com/siddiquelatif/URDU-Dataset",
    speakers=len(SPEAKERS),
    files=400,
    classes=CORPUS_LABELS[NAME],
    folder="URDU",
)


@register_corpus(META)
def load_urdu(root: str | os.PathLike, *, strict: bool = True) -> Corpus:
    """URDU items from ``root`` containing the folders ``Angry``, ``Happy``, ``Neutral``, ``Sad``."""
    base = corpus_folder(NAME, root)
    problems = Problems(NAME, base)
    paths = scan_folders(
        base,
        problems,
        stray="audio outside an emotion folder (Angry, Happy, Neutral, Sad)",
        known=FOLDERS,
        kind="emotion",
        strict=strict,
        code=_emotion_folder,
    )
    items = items_from_names(paths, problems, FILE_NAME, NAME_FORM, _problems, _item)
    return build_corpus(
        META,
        base,
        items,
        strict=strict,
        speakers=SPEAKERS,
        class_counts=CLASS_COUNTS,
        sort_key=lambda item: (item.label, item.id),
    )


def _emotion_folder(folder: Path) -> str | None:
    """An emotion folder's name; other folders count (as unknown) only when they hold audio."""
    return folder.name if folder.name in FOLDERS or audio_files(folder, recursive=True) else None


def _problems(path: Path, name: re.Match[str]) -> Iterator[str]:
    if name["speaker"] not in SPEAKERS:
        yield f"unknown speaker id {name['speaker']!r}"
    if name["emotion"] != path.parent.name[0]:
        yield f"emotion initial {name['emotion']!r} does not match folder {path.parent.name}"


def _item(path: Path, name: re.Match[str]) -> Item:
    sex, extra = name["sex"].lower(), {"file": name["file"], "run": name["run"]}
    return stem_item(path, NAME, label=FOLDERS[path.parent.name], speaker=name["speaker"], sex=sex, text=None, **extra)
