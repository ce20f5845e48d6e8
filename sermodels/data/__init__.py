"""Corpora, speaker-independent protocols and the Lightning data module.

>>> from sermodels.data import load_corpus
>>> corpus = load_corpus("emodb", "../shared/data/EMODB")       # doctest: +SKIP
>>> parts = corpus.split("fixed")                               # {"train", "dev", "test"} -> items

Built-in corpora: ``emodb``, ``ravdess``, ``emovo``, ``urdu``; ``folder`` is your own data (a folder per class or a
CSV/TSV table, with categories, numeric dimensions or frame-level traces). :func:`list_corpora` names them with a
one-line description.

Where things live: ``base`` (items, corpora, registry), one file per corpus, ``splits/`` (protocols), ``targets``
(numeric targets: traces and their alignment with frame-level heads), ``cache`` (decoded audio), ``datasets``
(samples and training crops), ``sampling`` (training order, round-robin, DDP shards), ``collate`` (batches),
``datamodule`` (``SERDataModule``), ``spaces`` and ``adaptation`` (data modules combining several).
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
from sermodels.data.collate import pad_collate, pad_traces
from sermodels.data.datasets import WaveformDataset
from sermodels.data.sampling import EpochSampler, TrainBatchSampler
from sermodels.data.splits import Protocol, load_protocol
from sermodels.data.targets import Trace, TraceError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioCache",
    "Corpus",
    "CorpusError",
    "CorpusMeta",
    "EpochSampler",
    "Item",
    "Protocol",
    "SERDataModule",
    "Trace",
    "TraceError",
    "TrainBatchSampler",
    "WaveformDataset",
    "corpus_meta",
    "describe_corpora",
    "list_corpora",
    "load_corpus",
    "load_protocol",
    "pad_collate",
    "pad_traces",
    "register_corpus",
]


def __getattr__(name: str):
    # SERDataModule pulls in Lightning (seconds to import); `sermodels corpora` and plain loading do not need it.
    if name == "SERDataModule":
        from sermodels.data.datamodule import SERDataModule

        return SERDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
