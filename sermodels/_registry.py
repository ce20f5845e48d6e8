"""Architectures by name, the pretrained index, and the checkpoint folder format.

Architectures register themselves with :func:`register_model` when the module defining them is imported; the
modules are listed in :data:`_MODEL_MODULES` and imported on the first lookup. Pretrained checkpoints are named
``arch.tag`` (``logmel_svm.emodb``): the architecture, then what it was trained on. ``_pretrained.json`` maps each
released id to a Hub repository, a pinned revision and the sha256 of its files; ``"_default"`` names the model that
the alias ``"default"`` stands for.

A checkpoint folder has the Hugging Face Hub layout: ``config.json`` (architecture, constructor arguments, labels,
training provenance, software versions) and ``model.safetensors`` (the ``state_dict``), plus ``README.md`` (model
card, :mod:`sermodels.card`) and ``metrics.json`` when released. Weights are never pickled.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import json
import os
import platform
import re
import threading
from pathlib import Path
from typing import Any

import torch

from sermodels.models.base import SERModel
from sermodels.outputs import specs_from_json, specs_to_json

# Modules whose import registers architectures. Add a module here when it defines a @register_model class.
_MODEL_MODULES: list[str] = ["sermodels.models.svm", "sermodels.models.emonet", "sermodels.models.deep_spectrum"]

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
# Files of a checkpoint folder, in upload/download order; the first two are required.
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, METRICS_NAME)
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
RESERVED_CONFIG_KEYS = (
    "architecture",
    "model_args",
    "sample_rate",
    "heads",
    "default_head",
    "outputs",
    "format_version",
    "software",
)

DEFAULT_ALIAS = "default"
DEFAULT_KEY = "_default"
INDEX_ENV = "SERMODELS_PRETRAINED_INDEX"
CHECKPOINTS_ENV = "SERMODELS_CHECKPOINTS"

_ARCH_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PRETRAINED_ID = re.compile(r"[a-z][a-z0-9_]*\.[A-Za-z0-9][A-Za-z0-9_\-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_MODELS: dict[str, type[SERModel]] = {}
_modules_imported = False
_import_lock = threading.Lock()
_index_path_override: Path | None = None


class UnknownModelError(KeyError):
    """An architecture or pretrained name that is not known; the message lists close matches."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# -- architectures ------------------------------------------------------------------------------------------------


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def register_model(name_or_cls: str | type[SERModel] | None = None):
    """Class decorator: ``@register_model("logmel_svm")``, or bare ``@register_model`` (name = snake_case of the
    class name). Sets ``cls.arch``. Registering a name twice is a ``ValueError`` naming both classes."""

    def decorate(cls: type[SERModel], name: str | None) -> type[SERModel]:
        if not (isinstance(cls, type) and issubclass(cls, SERModel)):
            raise TypeError(f"@register_model decorates SERModel subclasses, got {cls!r}")
        name = _snake_case(cls.__name__) if name is None else name
        if not _ARCH_NAME.fullmatch(name):
            raise ValueError(f"architecture name {name!r} of {_qualname(cls)} must match {_ARCH_NAME.pattern}")
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(
                f"architecture {name!r} is registered twice: by {_qualname(_MODELS[name])} and by {_qualname(cls)}"
            )
        cls.arch = name
        _MODELS[name] = cls
        return cls

    if isinstance(name_or_cls, type):
        return decorate(name_or_cls, None)
    return lambda cls: decorate(cls, name_or_cls)


def unregister_model(name: str) -> type[SERModel]:
    """Remove ``name`` from the registry (tests register throw-away classes) and return its class."""
    if name not in _MODELS:
        raise _unknown(name, list(_MODELS), "architecture")
    return _MODELS.pop(name)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_model_modules() -> None:
    """Import every module of :data:`_MODEL_MODULES` once; an import error surfaces (a broken model file must
    not silently vanish from the zoo)."""
    global _modules_imported
    if _modules_imported:
        return
    with _import_lock:
        if _modules_imported:
            return
        for module in _MODEL_MODULES:
            importlib.import_module(module)
        _modules_imported = True


def _unknown(name: str, known: list[str], what: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known)) or 'none'}"
    return UnknownModelError(f"unknown {what} {name!r}{hint}")


def get_model_class(name: str) -> type[SERModel]:
    """The class registered as ``name``."""
    _import_model_modules()
    if name not in _MODELS:
        err = _unknown(name, list(_MODELS), "architecture")
        if "." in name and name.split(".", 1)[0] in _MODELS:
            err = UnknownModelError(f"{err}; {name!r} looks like a pretrained id: use sermodels.load({name!r})")
        raise err
    return _MODELS[name]


def create_model(name: str, **kwargs: Any) -> SERModel:
    """A new, untrained ``name`` model built with ``kwargs`` (its constructor arguments)."""
    return get_model_class(name)(**kwargs)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered architecture names, sorted, optionally filtered by an fnmatch ``pattern`` (``"*svm*"``)."""
    _import_model_modules()
    return sorted(n for n in _MODELS if pattern is None or fnmatch.fnmatchcase(n, pattern))


# -- pretrained index ---------------------------------------------------------------------------------------------


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


# -- checkpoint folders -------------------------------------------------------------------------------------------


def software_versions() -> dict[str, str]:
    from sermodels import __version__

    return {"sermodels": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save_pretrained(model: SERModel, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``folder`` (created) and return it.

    ``extra`` adds top-level keys to config.json, e.g. ``"id"`` and ``"training"`` (corpora with licences, split,
    recipe, schedule) that the model card reads. Tensors are saved contiguous, on CPU, in their own dtype.
    """

    if not isinstance(model, SERModel):
        raise TypeError(f"save_pretrained needs a SERModel, got {type(model).__name__}")
    if not model.arch or _MODELS.get(model.arch) is not type(model):
        raise ValueError(f"{_qualname(type(model))} is not registered (arch={model.arch!r}): use @register_model")
    clash = sorted(set(extra or {}) & set(RESERVED_CONFIG_KEYS))
    if clash:
        raise ValueError(f"extra keys {clash} would overwrite config.json fields written by save_pretrained")
    config = {
        "architecture": model.arch,
        "model_args": model.config(),
        "sample_rate": model.sample_rate,
        "heads": {head: list(labels) for head, labels in model.heads.items()},
        "default_head": model.default_head,
        "outputs": specs_to_json(model.output_specs()),
        "format_version": FORMAT_VERSION,
        "software": software_versions(),
        **(extra or {}),
    }
    try:
        text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.json of {model.arch}: model.config() or extra is not plain JSON ({err})") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "architecture": model.arch}
    (folder / WEIGHTS_NAME).write_bytes(safetensors_bytes(_plain_state_dict(model), metadata))
    (folder / CONFIG_NAME).write_text(text)
    return folder


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """``state`` serialised as safetensors, byte for byte the same on every run: safetensors writes
    ``__metadata__`` in hash-map order, which changes from run to run, so it is sorted (the header keeps its length,
    padded with spaces as the format allows)."""
    from safetensors.torch import save

    blob = save(state, metadata=metadata)
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > size:
        raise RuntimeError(f"re-serialised safetensors header grew from {size} to {len(text)} bytes")
    return blob[:8] + text.ljust(size) + blob[8 + size :]


def _plain_state_dict(model: SERModel) -> dict[str, torch.Tensor]:
    """The state_dict as contiguous CPU tensors, tensors that share storage (tied weights) copied apart, as
    safetensors stores each tensor on its own."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} of {model.arch} is a {type(value).__name__}, not a tensor")
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object (config.json, metrics.json, the index); errors name the file."""
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def read_config(folder: str | Path) -> dict[str, Any]:
    """The validated config.json of a checkpoint folder."""
    path = Path(folder) / CONFIG_NAME
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint folder {folder} has no {CONFIG_NAME}")
    config = read_json_object(path)
    missing = [k for k in ("architecture", "model_args", "format_version") if k not in config]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a sermodels checkpoint")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {config['format_version']!r}; this sermodels reads version {FORMAT_VERSION}"
        )
    if not isinstance(config["model_args"], dict):
        raise ValueError(f"{path}: model_args must be an object of constructor arguments")
    return config


def load_folder(folder: str | Path, map_location: str | torch.device = "cpu") -> SERModel:
    """Rebuild the model of a checkpoint folder and load its weights strictly; returned in eval mode on
    ``map_location``. Reads safetensors only."""
    from safetensors import safe_open

    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint folder {folder} has no {WEIGHTS_NAME}")
    try:
        model = create_model(config["architecture"], **config["model_args"])
    except UnknownModelError as err:
        raise UnknownModelError(f"{folder / CONFIG_NAME}: {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG_NAME}: model_args do not build {config['architecture']!r}: {err}") from None
    _check_config_matches(folder, config, model)
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            stored_arch = (f.metadata() or {}).get("architecture")
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as err:  # safetensors raises its own error types for truncated or corrupt files
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from None
    if stored_arch is not None and stored_arch != config["architecture"]:
        raise ValueError(f"{weights} holds {stored_arch!r} weights but config.json says {config['architecture']!r}")
    _check_tensors(weights, tensors, model.state_dict())
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location).eval()


def _check_config_matches(folder: Path, config: dict[str, Any], model: SERModel) -> None:
    for key in ("sample_rate", "heads", "default_head"):
        if key in config and config[key] != getattr(model, key):
            raise ValueError(
                f"{folder / CONFIG_NAME}: {key} {config[key]!r} differs from the rebuilt {model.arch}'s "
                f"{getattr(model, key)!r} (was the architecture changed since this checkpoint was saved?)"
            )
    # Checkpoints saved before output specs existed have none: their heads are categories heads, as rebuilt.
    if "outputs" in config:
        stored = specs_from_json(config["outputs"], f"{folder / CONFIG_NAME}: outputs")
        if stored != model.output_specs():
            raise ValueError(
                f"{folder / CONFIG_NAME}: output specs {specs_to_json(stored)} differ from the rebuilt "
                f"{model.arch}'s {specs_to_json(model.output_specs())}"
            )


def _check_tensors(path: Path, stored: dict[str, torch.Tensor], expected: dict[str, Any]) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: tensors missing from the file {missing}, not in the model {unexpected}")
    for name, tensor in stored.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(expected[name].shape)}"
            )
