"""Corpora, speaker-independent protocols and the Lightning data module.

>>> from sermodels.data import load_corpus
>>> corpus = load_corpus("emodb", "../shared/data/EMODB")       # doctest: +SKIP
>>> parts = corpus.split("fixed")                               # {"train", "dev", "test"} -> items

Built-in corpora: ``emodb``, ``ravdess``, ``emovo``, ``urdu``; ``folder`` is your own data (a folder per class or a
CSV/TSV table). :func:`list_corpora` names them with a one-line description.
"""

from sermodels.data import emodb, emovo, folder, ravdess, urdu  # noqa: F401  (register the corpora)
from sermodels.data.base import (
    AUDIO_EXTENSIONS,
    Corpus,
    CorpusError,
    CorpusMeta,
    Item,
    corpus_meta,
    describe_corpora,
    list_corpora,
    load_corpus,
    register_corpus,
)
from sermodels.data.cache import AudioCache
from sermodels.data.splits import Protocol, load_protocol

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioCache",
    "Corpus",
    "CorpusError",
    "CorpusMeta",
    "Item",
    "Protocol",
    "SERDataModule",
    "corpus_meta",
    "describe_corpora",
    "list_corpora",
    "load_corpus",
    "load_protocol",
    "register_corpus",
]


def __getattr__(name: str):
    # SERDataModule pulls in Lightning (seconds to import); `sermodels corpora` and plain loading do not need it.
    if name == "SERDataModule":
        from sermodels.data.datamodule import SERDataModule

        return SERDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
