"""Real clips of the four corpora shared by the feature tests."""

from __future__ import annotations

import pytest
import torch
from conftest import spread_files

from sermodels.audio import load_audio

CORPORA = ("emodb", "ravdess", "emovo", "urdu")
FILES_PER_CORPUS = 3


@pytest.fixture(scope="module")
def corpus_waves() -> dict[str, list[torch.Tensor]]:
    """Three clips of every corpus, spread over its speakers and emotions."""
    return {corpus: [load_audio(path) for path in spread_files(corpus, FILES_PER_CORPUS)] for corpus in CORPORA}


@pytest.fixture(scope="module")
def short_waves(corpus_waves) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two real clips (EMO-DB, URDU), cut to 1.0 s and 0.6 s to keep CNN forwards cheap."""
    waves = [corpus_waves["emodb"][0][:16000], corpus_waves["urdu"][1][:9600]]
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])
