"""From a model id to a verified checkpoint folder: local ``checkpoints/<id>/`` or the Hugging Face Hub.

:func:`resolve` looks in this order: an existing folder path; the repository's embedded ``checkpoints/<id>/`` (the
default model works with no network); the Hub repository and pinned revision that ``_pretrained.json`` lists for
the id, downloaded with ``huggingface_hub`` into its cache (``HF_HOME``/``HF_HUB_CACHE``, or ``cache_dir``). Every
file the index lists is checked against its sha256 wherever it came from, so a moved branch, a corrupted cache or a
tampered mirror is an error rather than a silently different model. ``HF_HUB_OFFLINE=1`` uses the cache only.

:func:`push` uploads a checkpoint folder; :func:`index_entry` gives the lines the maintainers add to
``_pretrained.json`` for a release.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sermodels._io import sha256_of
from sermodels._version import __version__
from sermodels.checkpoint import CHECKPOINT_FILES, CONFIG_NAME, REQUIRED_FILES, load_folder, save_pretrained
from sermodels.checkpoint import read_config as read_folder_config
from sermodels.models.base import SERModel
from sermodels.pretrained import checkpoints_dir, index_path, list_pretrained, pretrained_entry, resolve_alias

__all__ = [
    "ChecksumError",
    "HubUnavailableError",
    "index_entry",
    "load",
    "load_folder",
    "push",
    "read_config",
    "resolve",
    "save_pretrained",
    "sha256_of",
]

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class ChecksumError(ValueError):
    """A checkpoint file whose sha256 differs from the one the pretrained index pins."""


class HubUnavailableError(FileNotFoundError):
    """A pretrained model that is neither local nor cached, while the Hub cannot be reached (offline)."""


def verify_folder(folder: Path, expected: dict[str, str], model_id: str) -> None:
    """Check each file of ``expected`` (name -> sha256) in ``folder``; the first difference is an error."""
    for name, want in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            raise ChecksumError(f"{model_id}: {path} is missing but the pretrained index pins its sha256 {want}")
        got = sha256_of(path)
        if got != want:
            raise ChecksumError(
                f"{model_id}: sha256 mismatch for {name} in {folder}: expected {want}, got {got} "
                f"(the file differs from the released one; index: {index_path()})"
            )


def resolve(
    id_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_only: bool = False,
) -> Path:
    """The checkpoint folder of a folder path, a pretrained id (``arch.tag``) or ``"default"``.

    ``revision`` (a commit sha or branch) overrides the index's pinned revision and fetches from the Hub even when
    ``checkpoints/<id>/`` exists; such files are not checked against the index, whose sha256 belong to the pinned
    revision. ``local_only`` never touches the network (local folders and the Hub cache only).
    """
    path = Path(id_or_path)
    if path.is_dir():
        return path
    if path.is_file():
        raise FileNotFoundError(
            f"{path} is a file: pass its checkpoint folder (with config.json and model.safetensors)"
        )
    name = str(id_or_path)
    if "/" in name or "\\" in name:
        raise FileNotFoundError(f"checkpoint folder {name} does not exist")
    model_id = resolve_alias(name)
    entry = pretrained_entry(model_id)
    local = checkpoints_dir() / model_id
    if local.is_dir() and (revision is None or entry is None):
        if entry is not None:
            verify_folder(local, entry["sha256"], model_id)
        return local
    if entry is None:
        known = ", ".join(list_pretrained()) or "none"
        raise FileNotFoundError(
            f"unknown pretrained model {model_id!r}: not a folder, not in {checkpoints_dir()}, not in the index "
            f"{index_path()} (known: {known})"
        )
    if revision is None and entry["revision"] is None:
        raise HubUnavailableError(
            f"{model_id} is not published on the Hub yet (its index entry pins no revision) and {local} does not "
            "exist: use a checkout of the sermodels repository, whose checkpoints/ folder ships it, or pass a "
            "checkpoint folder"
        )
    pinned = revision is None or revision == entry["revision"]
    folder = _download(model_id, entry["repo_id"], revision or entry["revision"], cache_dir, local_only)
    if pinned:
        verify_folder(folder, entry["sha256"], model_id)
    return folder


def _download(model_id: str, repo_id: str, revision: str, cache_dir: str | Path | None, local_only: bool) -> Path:
    """Fetch the checkpoint files of ``repo_id@revision`` into the Hub cache; return their snapshot folder.

    config.json is fetched first; its snapshot folder names the commit a branch resolved to, and the other files
    are then fetched at that commit, so that all files come from one commit even if the branch moves meanwhile.
    """
    from huggingface_hub import constants

    offline = local_only or constants.is_offline_mode()
    folder: Path | None = None
    for name in CHECKPOINT_FILES:
        path = _fetch(model_id, repo_id, name, revision, cache_dir, offline, required=name in REQUIRED_FILES)
        if path is None:
            continue
        if folder is None:
            folder = path.parent
            if _COMMIT_SHA.fullmatch(folder.name) and folder.parent.name == "snapshots":
                revision = folder.name
        elif path.parent != folder:
            raise RuntimeError(f"{model_id}: {name} landed in {path.parent}, not with config.json in {folder}")
    assert folder is not None  # config.json is required: _fetch raised otherwise
    return folder


def _fetch(
    model_id: str,
    repo_id: str,
    filename: str,
    revision: str,
    cache_dir: str | Path | None,
    offline: bool,
    required: bool,
) -> Path | None:
    """One file from the cache or the Hub; None for an optional file that the repository does not have."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    where = f"{repo_id}@{revision}"
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    if cached is _CACHED_NO_EXIST:
        if required:
            raise FileNotFoundError(f"{model_id}: the Hub repository {where} has no {filename}")
        return None
    if isinstance(cached, str) and (offline or _COMMIT_SHA.fullmatch(revision)):
        return Path(cached)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline,
                library_name="sermodels",
                library_version=__version__,
            )
        )
    except LocalEntryNotFoundError:
        if not required:
            return None
        raise HubUnavailableError(
            f"pretrained model {model_id!r} ({filename} of Hugging Face repo {where}) is not in the local cache "
            f"and the Hub cannot be reached{' (offline mode: HF_HUB_OFFLINE=1)' if offline else ''}. To fix: "
            f"run once with network access (unset HF_HUB_OFFLINE) to download it, or place the checkpoint folder "
            f"at {checkpoints_dir() / model_id}, or pass a checkpoint folder path instead of the id."
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{model_id}: revision {revision!r} does not exist in Hub repo {repo_id}") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{model_id}: Hub repo {repo_id} does not exist (or is private)") from None
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"{model_id}: the Hub repository {where} has no {filename}") from None
        return None


def load(
    id_or_path: str | Path,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> SERModel:
    """A pretrained model (id, ``"default"`` or folder), verified, on ``device``, in eval mode."""
    return load_folder(resolve(id_or_path, revision=revision, cache_dir=cache_dir), map_location=device).eval()


def read_config(
    id_or_path: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """The config.json of a pretrained id or folder (resolved and verified like :func:`load`), without building
    the model."""
    return read_folder_config(resolve(id_or_path, revision=revision, cache_dir=cache_dir))


def push(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload sermodels checkpoint",
) -> str:
    """Upload a checkpoint folder's files (config.json, model.safetensors, README.md, metrics.json) to the Hub
    model repository ``repo_id`` (created if needed) on branch ``revision`` (created from main if needed; default
    main). Returns the commit sha to pin in the index."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot push {folder}: it lacks {missing}")
    read_folder_config(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    info = api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
        allow_patterns=[name for name in CHECKPOINT_FILES if (folder / name).is_file()],
    )
    return info.oid


def index_entry(folder: str | Path, repo_id: str, revision: str | None) -> dict[str, Any]:
    """The ``_pretrained.json`` entry of a pushed folder: repo, revision, and the sha256 of each file present.

    ``revision=None`` records a release that is not on the Hub yet: only a local ``checkpoints/<id>/`` serves it."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: not a checkpoint folder")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'ORG/NAME', got {repo_id!r}")
    if revision is not None and not revision:
        raise ValueError("revision must be the pushed commit sha (recommended), a branch name, or None (unpublished)")
    hashes = {name: sha256_of(folder / name) for name in CHECKPOINT_FILES if (folder / name).is_file()}
    return {"repo_id": repo_id, "revision": revision, "sha256": hashes}
