"""The pretrained index: released ids (``arch.tag``, e.g. ``logmel_svm.emodb``: the architecture, then what it was
trained on) -> Hub repository, pinned revision and the sha256 of each file.

``_pretrained.json`` beside this module maps each released id to ``{"repo_id", "revision", "sha256": {file: hex}}``
(a ``null`` revision: recorded but not published yet, only a checkout's ``checkpoints/<id>/`` provides it);
``"_default"`` names the model that the alias ``"default"`` stands for. The repository's ``checkpoints/<id>/``
folders are the embedded copies that work with no network (:mod:`sermodels.hub` resolves an id to one of them or
to the Hub, and checks the hashes).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Any

from sermodels._registry import UnknownModelError
from sermodels.checkpoint import CONFIG_NAME, REQUIRED_FILES

DEFAULT_ALIAS = "default"
DEFAULT_KEY = "_default"
INDEX_ENV = "SERMODELS_PRETRAINED_INDEX"
CHECKPOINTS_ENV = "SERMODELS_CHECKPOINTS"

_PRETRAINED_ID = re.compile(r"[a-z][a-z0-9_]*\.[A-Za-z0-9][A-Za-z0-9_\-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_index_path_override: Path | None = None


def set_index_path(path: str | Path | None) -> None:
    """Use another pretrained index (tests, private zoos); ``None`` restores the default. The env variable
    ``SERMODELS_PRETRAINED_INDEX`` does the same for a whole process; this call takes precedence."""
    global _index_path_override
    _index_path_override = None if path is None else Path(path)


def index_path() -> Path:
    if _index_path_override is not None:
        return _index_path_override
    env = os.environ.get(INDEX_ENV)
    return Path(env) if env else Path(__file__).with_name("_pretrained.json")


def checkpoints_dir() -> Path:
    """The repository's ``checkpoints/`` folder (or ``$SERMODELS_CHECKPOINTS``): embedded released models."""
    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "checkpoints"


def load_index() -> dict[str, Any]:
    """The validated pretrained index: id -> {"repo_id", "revision", "sha256": {file: hex}}, and "_default"."""
    path = index_path()
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"pretrained index {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"pretrained index {path} is not valid JSON: {err}") from None
    if not isinstance(index, dict):
        raise ValueError(f"pretrained index {path} must be a JSON object, got {type(index).__name__}")
    for key, entry in index.items():
        if key == DEFAULT_KEY:
            if not isinstance(entry, str):
                raise ValueError(f"pretrained index {path}: {DEFAULT_KEY!r} must be a pretrained id string")
            continue
        _validate_entry(path, key, entry)
    return index


def _validate_entry(path: Path, key: str, entry: Any) -> None:
    where = f"pretrained index {path}, entry {key!r}"
    if not _PRETRAINED_ID.fullmatch(key):
        raise ValueError(f"{where}: ids are 'arch.tag' (e.g. 'logmel_svm.emodb')")
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object with repo_id, revision and sha256")
    repo_id, revision, hashes = entry.get("repo_id"), entry.get("revision"), entry.get("sha256")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"{where}: repo_id must be 'ORG/NAME', got {repo_id!r}")
    # null: recorded but not published on the Hub yet (only a checkout's checkpoints/<id>/ can provide it).
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise ValueError(f"{where}: revision must be a commit sha, a branch name or null, got {revision!r}")
    if not isinstance(hashes, dict) or any(not isinstance(h, str) or not _SHA256.fullmatch(h) for h in hashes.values()):
        raise ValueError(f"{where}: sha256 must map file names to 64 lower-case hex digits")
    missing = [f for f in REQUIRED_FILES if f not in hashes]
    if missing:
        raise ValueError(f"{where}: sha256 lacks {missing}")


def resolve_alias(name: str) -> str:
    """``"default"`` -> the id stored under ``"_default"`` in the index; any other name unchanged."""
    if name != DEFAULT_ALIAS:
        return name
    default = load_index().get(DEFAULT_KEY)
    if default is None:
        raise UnknownModelError(f"the pretrained index {index_path()} sets no {DEFAULT_KEY!r} model for 'default'")
    return default


def pretrained_entry(model_id: str) -> dict[str, Any] | None:
    """The index entry of ``model_id`` (aliases resolved), or None when the index does not list it."""
    return load_index().get(resolve_alias(model_id))


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Pretrained ids: those in the index plus local ``checkpoints/<id>/`` folders holding a config.json; sorted,
    optionally filtered by an fnmatch ``pattern``."""
    ids = {key for key in load_index() if key != DEFAULT_KEY}
    root = checkpoints_dir()
    if root.is_dir():
        ids |= {p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file() and _PRETRAINED_ID.fullmatch(p.name)}
    return sorted(i for i in ids if pattern is None or fnmatch.fnmatchcase(i, pattern))
