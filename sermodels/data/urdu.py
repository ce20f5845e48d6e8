"""URDU emotional speech from Urdu talk shows (Latif et al., 2018, arXiv:1812.10411): 400 clips, 4 categories.

Native layout of the authors' repository: ``<root>/Angry/SM1_F10_A010.wav``; the folder is the emotion, the name
``S<G><id>_F<nn>_<E><nnn>`` carries the speaker (``S<G><id>``, ``G`` = ``M``/``F`` is the sex), the speaker's file
number and the emotion initial with a running number, which must agree with the folder. Spontaneous speech: no
scripted texts. The 29 speaker ids are a closed list here, so a typo in a name is an error, not a new speaker.
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

NAME = "urdu"
FOLDERS = {"Angry": "angry", "Happy": "happy", "Neutral": "neutral", "Sad": "sad"}
SPEAKERS = tuple([f"SF{i}" for i in range(1, 12)] + [f"SM{i}" for i in range(1, 8)] + [f"SM{i}" for i in range(17, 28)])
FILE_NAME = re.compile(r"^(?P<speaker>S(?P<sex>[MF])\d+)_F(?P<file>\d+)_(?P<emotion>[A-Z])(?P<run>\d+)$")

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
    for stray in audio_files(base):
        problems.add(stray, "audio outside an emotion folder (Angry, Happy, Neutral, Sad)")
    paths: list[Path] = []
    present = {folder.name: folder for folder in subfolders(base)}
    for name in FOLDERS:
        if name not in present:
            if strict:
                problems.add(base / name, "missing emotion folder")
            continue
        found = audio_files(present[name])
        if not found:
            problems.add(present[name], "empty folder: no audio files")
        paths.extend(found)
    for name, folder in present.items():
        if name not in FOLDERS and audio_files(folder, recursive=True):
            problems.add(folder, f"unknown emotion folder (known: {', '.join(FOLDERS)})")
    problems.raise_if_any("unusable layout")
    items = [item for path in check_unique_stems(paths, problems) if (item := _item(path, problems)) is not None]
    problems.raise_if_any("unusable files")
    items.sort(key=lambda item: (item.label, item.id))
    if strict:
        check_complete(NAME, base, items, speakers=SPEAKERS, class_counts=dict.fromkeys(FOLDERS.values(), 100))
    return Corpus(META, base, items, CORPUS_LABELS[NAME], protocol=builtin_protocol(NAME), strict=strict)


def _item(path: Path, problems: Problems) -> Item | None:
    match = FILE_NAME.match(path.stem)
    if match is None:
        problems.add(path, "name does not follow S<sex><id>_F<nn>_<emotion><nnn>, e.g. SM1_F10_A010")
        return None
    bad = []
    if match["speaker"] not in SPEAKERS:
        bad.append(f"unknown speaker id {match['speaker']!r}")
    if match["emotion"] != path.parent.name[0]:
        bad.append(f"emotion initial {match['emotion']!r} does not match folder {path.parent.name}")
    for problem in bad:
        problems.add(path, problem)
    if bad:
        return None
    return Item(
        id=path.stem,
        path=str(path),
        label=FOLDERS[path.parent.name],
        speaker=match["speaker"],
        sex=match["sex"].lower(),
        text=None,
        corpus=NAME,
        extra={"file": match["file"], "run": match["run"]},
    )
