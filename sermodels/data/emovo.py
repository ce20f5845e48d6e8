"""EMOVO, Italian emotional speech (Costantini et al., LREC 2014): 6 actors, 588 utterances, 7 categories.

Native layout: ``<root>/f1/dis-f1-b1.wav``: emotion code (Italian), speaker, sentence. Speaker folders ``f1 f2 f3``
(female) and ``m1 m2 m3`` (male); 14 sentences, every speaker reads every sentence in every emotion, so strict mode
names every missing file. Other folders (e.g. ``documents``) are ignored.
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

NAME = "emovo"
EMOTIONS = dict(zip(("dis", "gio", "neu", "pau", "rab", "sor", "tri"), CORPUS_LABELS[NAME]))
SPEAKERS = {"f1": "f", "f2": "f", "f3": "f", "m1": "m", "m2": "m", "m3": "m"}
TEXTS = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")
CLASS_COUNTS = dict.fromkeys(EMOTIONS.values(), 84)
FILE_NAME = re.compile(r"^(?P<emotion>[a-z]+)-(?P<speaker>[a-z]\d+)-(?P<text>[a-z]\d+)$")
NAME_FORM = "<emotion>-<speaker>-<sentence>, e.g. dis-f1-b1"
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
    paths = scan_folders(
        base,
        problems,
        stray="audio outside a speaker folder (f1 .. m3)",
        none_found="no speaker folders f1 .. m3 (expected f1/dis-f1-b1.wav ...)",
        known=SPEAKERS,
        kind="speaker",
        strict=strict,
        code=lambda folder: folder.name if SPEAKER_FOLDER.match(folder.name) else None,
    )
    items = items_from_names(paths, problems, FILE_NAME, NAME_FORM, _problems, _item)
    return build_corpus(
        META, base, items, strict=strict, speakers=SPEAKERS, class_counts=CLASS_COUNTS, expected_ids=expected_ids()
    )


def _problems(path: Path, name: re.Match[str]) -> Iterator[str]:
    yield from unknown_code("emotion", name["emotion"], EMOTIONS)
    if name["speaker"] != path.parent.name:
        yield f"speaker {name['speaker']} in the name but the file is in folder {path.parent.name}"
    yield from unknown_code("sentence", name["text"], TEXTS)


def _item(path: Path, name: re.Match[str]) -> Item:
    speaker = name["speaker"]
    return stem_item(
        path, NAME, label=EMOTIONS[name["emotion"]], speaker=speaker, sex=SPEAKERS[speaker], text=name["text"]
    )
