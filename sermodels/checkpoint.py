"""The checkpoint folder format: a model <-> ``config.json`` + ``model.safetensors`` (Hugging Face Hub layout).

``config.json`` holds the architecture, its constructor arguments, sample rate, heads and their output specs,
training provenance and software versions; ``model.safetensors`` the ``state_dict``. A released folder also has
``README.md`` (model card, :mod:`sermodels.card`) and ``metrics.json``. Weights are never pickled. Loading rebuilds
the architecture by name from the registry (:mod:`sermodels._registry`) and checks that config.json and the tensors
match what it builds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sermodels._io import atomic_write_bytes, atomic_write_text, software_versions
from sermodels._registry import UnknownModelError, create_model, is_registered
from sermodels.models.base import SERModel
from sermodels.outputs import specs_from_json, specs_to_json

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


def save_pretrained(model: SERModel, folder: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``folder`` (created) and return it.

    ``extra`` adds top-level keys to config.json, e.g. ``"id"`` and ``"training"`` (corpora with licences, split,
    recipe, schedule) that the model card reads. Tensors are saved contiguous, on CPU, in their own dtype.
    """

    if not isinstance(model, SERModel):
        raise TypeError(f"save_pretrained needs a SERModel, got {type(model).__name__}")
    if not is_registered(type(model)):
        cls = type(model)
        raise ValueError(
            f"{cls.__module__}.{cls.__qualname__} is not registered (arch={model.arch!r}): use @register_model"
        )
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
    # Each file whole or not at all, config.json last (the file that makes a folder a checkpoint).
    atomic_write_bytes(folder / WEIGHTS_NAME, safetensors_bytes(_plain_state_dict(model), metadata))
    atomic_write_text(folder / CONFIG_NAME, text)
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
