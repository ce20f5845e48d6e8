"""EMOVO, Italian emotional speech (Costantini et al., LREC 2014): 6 actors, 588 utterances, 7 categories.

Native layout: ``<root>/f1/dis-f1-b1.wav``: emotion code (Italian), speaker, sentence. Speaker folders ``f1 f2 f3``
(female) and ``m1 m2 m3`` (male); 14 sentences, every speaker reads every sentence in every emotion, so strict mode
names every missing file. Other folders (e.g. ``documents``) are ignored.
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

NAME = "emovo"
EMOTIONS = dict(zip(("dis", "gio", "neu", "pau", "rab", "sor", "tri"), CORPUS_LABELS[NAME]))
SPEAKERS = {"f1": "f", "f2": "f", "f3": "f", "m1": "m", "m2": "m", "m3": "m"}
TEXTS = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")
FILE_NAME = re.compile(r"^(?P<emotion>[a-z]+)-(?P<speaker>[a-z]\d+)-(?P<text>[a-z]\d+)$")
SPEAKER_FOLDER = re.compile(r"^[fm]\d+$")

META = CorpusMeta(
    name=NAME,
    title="EMOVO Corpus: an Italian Emotional Speech Database",
    description="Italian acted speech, 6 actors, 588 utterances, 7 categories",
    language="Italian",
    licence="free for research use (Fondazione Ugo Bordoni)",
    citation=(
        "G. Costantini, I. Iaderola, A. Paoloni, M. Todisco: EMOVO Corpus: an Italian Emotional Speech Database. "
        "Proc. LREC 2014, pp. 3501-3504."
    ),
    url="http://voice.fub.it/activities/corpora/emovo/index.html",
    speakers=len(SPEAKERS),
    files=588,
    classes=CORPUS_LABELS[NAME],
    folder="EMOVO",
)


def expected_ids() -> list[str]:
    """Every file stem of the complete corpus (7 emotions x 6 speakers x 14 sentences)."""
    return [f"{e}-{s}-{t}" for e in EMOTIONS for s in SPEAKERS for t in TEXTS]


@register_corpus(META)
def load_emovo(root: str | os.PathLike, *, strict: bool = True) -> Corpus:
    """EMOVO items from ``root`` containing the speaker folders ``f1`` .. ``m3``."""
    base = corpus_folder(NAME, root)
    problems = Problems(NAME, base)
    for stray in audio_files(base):
        problems.add(stray, "audio outside a speaker folder (f1 .. m3)")
    paths: list[Path] = []
    speaker_folders = [folder for folder in subfolders(base) if SPEAKER_FOLDER.match(folder.name)]
    if not speaker_folders:
        problems.add(base, "no speaker folders f1 .. m3 (expected f1/dis-f1-b1.wav ...)")
    if strict and speaker_folders:
        for speaker in sorted(set(SPEAKERS) - {folder.name for folder in speaker_folders}):
            problems.add(base / speaker, "missing speaker folder")
    for folder in speaker_folders:
        if folder.name not in SPEAKERS:
            problems.add(folder, f"unknown speaker folder (known: {', '.join(SPEAKERS)})")
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
            speakers=SPEAKERS,
            class_counts=dict.fromkeys(EMOTIONS.values(), 84),
            expected_ids=expected_ids(),
        )
    return Corpus(META, base, items, CORPUS_LABELS[NAME], protocol=builtin_protocol(NAME), strict=strict)


def _item(path: Path, problems: Problems) -> Item | None:
    match = FILE_NAME.match(path.stem)
    if match is None:
        problems.add(path, "name does not follow <emotion>-<speaker>-<sentence>, e.g. dis-f1-b1")
        return None
    emotion, speaker, text = match["emotion"], match["speaker"], match["text"]
    bad = []
    if emotion not in EMOTIONS:
        bad.append(f"unknown emotion code {emotion!r} (known: {', '.join(EMOTIONS)})")
    if speaker != path.parent.name:
        bad.append(f"speaker {speaker} in the name but the file is in folder {path.parent.name}")
    if text not in TEXTS:
        bad.append(f"unknown sentence code {text!r} (known: {', '.join(TEXTS)})")
    for problem in bad:
        problems.add(path, problem)
    if bad:
        return None
    return Item(
        id=path.stem,
        path=str(path),
        label=EMOTIONS[emotion],
        speaker=speaker,
        sex=SPEAKERS[speaker],
        text=text,
        corpus=NAME,
    )
