"""EMO-DB, the Berlin Database of Emotional Speech (Burkhardt et al., Interspeech 2005).

Native layout: ``<root>/wav/03a01Fa.wav`` (``root`` may also be the ``wav`` folder itself). A name is speaker
(``03``), text (``a01``), emotion letter (German initial, ``F`` = Freude) and version (``a``). Ten actors, 535
utterances, seven categories.
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
    stem_item,
    unknown_code,
)
from sermodels.labels import CORPUS_LABELS

NAME = "emodb"
EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
SPEAKERS = {
    "03": "m",
    "08": "f",
    "09": "f",
    "10": "m",
    "11": "m",
    "12": "m",
    "13": "f",
    "14": "f",
    "15": "m",
    "16": "f",
}
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
CLASS_COUNTS = {
    "anger": 127,
    "boredom": 81,
    "disgust": 46,
    "fear": 69,
    "happiness": 71,
    "sadness": 62,
    "neutral": 79,
}
FILE_NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z])$")
NAME_FORM = "<speaker><text><emotion><version>, e.g. 03a01Fa"

META = CorpusMeta(
    name=NAME,
    title="Berlin Database of Emotional Speech (EMO-DB)",
    description="German acted emotional speech, 10 actors, 535 utterances, 7 categories",
    language="German",
    licence="free for research use (republished by audEERING as CC0-1.0)",
    citation=(
        "F. Burkhardt, A. Paeschke, M. Rolfes, W. F. Sendlmeier, B. Weiss: A database of German emotional speech. "
        "Proc. Interspeech 2005, pp. 1517-1520."
    ),
    url="http://emodb.bilderbar.info/",
    speakers=len(SPEAKERS),
    files=sum(CLASS_COUNTS.values()),
    classes=CORPUS_LABELS[NAME],
    folder="EMODB",
)


@register_corpus(META)
def load_emodb(root: str | os.PathLike, *, strict: bool = True) -> Corpus:
    """EMO-DB items from ``root`` (containing ``wav/``, or the ``wav`` folder itself)."""
    base = corpus_folder(NAME, root)
    folder = base / "wav" if (base / "wav").is_dir() else base
    problems = Problems(NAME, base)
    paths = audio_files(folder)
    if not paths:
        problems.add(folder, "empty folder: no audio files (expected wav/03a01Fa.wav ...)")
        problems.raise_if_any("no audio found")
    items = items_from_names(paths, problems, FILE_NAME, NAME_FORM, _problems, _item)
    return build_corpus(META, base, items, strict=strict, speakers=SPEAKERS, class_counts=CLASS_COUNTS)


def _problems(path: Path, name: re.Match[str]) -> Iterator[str]:
    yield from unknown_code("speaker", name["speaker"], SPEAKERS)
    yield from unknown_code("emotion", name["emotion"], EMOTIONS, listed="".join(EMOTIONS))
    yield from unknown_code("text", name["text"], TEXTS)


def _item(path: Path, name: re.Match[str]) -> Item:
    speaker, text, emotion = name["speaker"], name["text"], name["emotion"]
    return stem_item(
        path, NAME, label=EMOTIONS[emotion], speaker=speaker, sex=SPEAKERS[speaker], text=text, version=name["version"]
    )
