"""EMO-DB, the Berlin Database of Emotional Speech (Burkhardt et al., Interspeech 2005).

Native layout: ``<root>/wav/03a01Fa.wav`` (``root`` may also be the ``wav`` folder itself). A name is speaker
(``03``), text (``a01``), emotion letter (German initial, ``F`` = Freude) and version (``a``). Ten actors, 535
utterances, seven categories.
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
    items = [item for path in check_unique_stems(paths, problems) if (item := _item(path, problems)) is not None]
    problems.raise_if_any("unusable files")
    items.sort(key=lambda item: item.id)
    if strict:
        check_complete(NAME, base, items, speakers=SPEAKERS, class_counts=CLASS_COUNTS)
    return Corpus(META, base, items, CORPUS_LABELS[NAME], protocol=builtin_protocol(NAME), strict=strict)


def _item(path: Path, problems: Problems) -> Item | None:
    match = FILE_NAME.match(path.stem)
    if match is None:
        problems.add(path, "name does not follow <speaker><text><emotion><version>, e.g. 03a01Fa")
        return None
    speaker, text, emotion = match["speaker"], match["text"], match["emotion"]
    bad = []
    if speaker not in SPEAKERS:
        bad.append(f"unknown speaker code {speaker!r} (known: {', '.join(SPEAKERS)})")
    if emotion not in EMOTIONS:
        bad.append(f"unknown emotion code {emotion!r} (known: {''.join(EMOTIONS)})")
    if text not in TEXTS:
        bad.append(f"unknown text code {text!r} (known: {', '.join(TEXTS)})")
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
        extra={"version": match["version"]},
    )
