"""Shared fixtures: the real corpora live in ../shared/data beside the repository and are never copied into it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SERMODELS_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"
CORPUS_DIRS = {"emodb": "EMODB", "ravdess": "RAVDESS", "emovo": "EMOVO", "urdu": "URDU"}


def corpus_root(name: str) -> Path:
    root = DATA / CORPUS_DIRS[name]
    if not root.is_dir():
        pytest.skip(f"corpus {name} not found at {root} (the shared data folder is absent on this machine)")
    return root


@pytest.fixture
def emodb_root() -> Path:
    return corpus_root("emodb")


@pytest.fixture
def ravdess_root() -> Path:
    return corpus_root("ravdess")


@pytest.fixture
def emovo_root() -> Path:
    return corpus_root("emovo")


@pytest.fixture
def urdu_root() -> Path:
    return corpus_root("urdu")


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"torchaudio reference outputs not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small fits: on a small shared machine a second thread mostly waits
    (several times slower). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spread_files(corpus: str, count: int) -> list[Path]:
    """``count`` files spread evenly over the corpus's sorted file list (different speakers and emotions)."""
    files = sorted(corpus_root(corpus).rglob("*.flac"))
    return files[:: len(files) // count][:count]


@pytest.fixture(scope="session")
def imagenet_weights(tmp_path_factory) -> Path:
    """torchvision's int8 ImageNet MobileNetV2 of the shared folder, converted once per run to float timm weights."""
    from sermodels.convert import convert_mobilenet_v2_int8

    torchscript = SHARED / "weights" / "mobilenet_v2_imagenet_int8_torchscript.pt"
    if not torchscript.is_file():
        pytest.skip(f"the offline ImageNet MobileNetV2 is not at {torchscript}")
    path = tmp_path_factory.mktemp("weights") / "mobilenetv2_100_imagenet.safetensors"
    convert_mobilenet_v2_int8(torchscript, path)
    return path
