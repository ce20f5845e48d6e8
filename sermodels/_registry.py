"""Architectures by name: ``@register_model`` and the lookups behind ``sermodels.create_model`` / ``list_models``.

Architectures register themselves with :func:`register_model` when the module defining them is imported. Every
module of the ``sermodels.models`` package is imported on the first lookup (found with ``pkgutil``: a new paper's
file registers by being there, with no list to keep); an import error surfaces rather than hiding the file's models.
Names are ``snake_case``; a pretrained model adds a tag, ``arch.tag`` (:mod:`sermodels.pretrained`). Registering a
name twice is an error naming both classes. Checkpoint folders: :mod:`sermodels.checkpoint`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
import re
import threading
from typing import Any

from sermodels.models.base import SERModel

# Packages whose modules are imported on the first lookup, so that their @register_model classes register.
_MODEL_PACKAGES: list[str] = ["sermodels.models"]

_ARCH_NAME = re.compile(r"[a-z][a-z0-9_]*")

_MODELS: dict[str, type[SERModel]] = {}
_modules_imported = False
_importing = False
_import_lock = threading.RLock()


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
        # The same class defined again (its module re-run after a failed import, importlib.reload) replaces itself.
        if name in _MODELS and _MODELS[name] is not cls and _qualname(_MODELS[name]) != _qualname(cls):
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


def is_registered(cls: type) -> bool:
    """Whether ``cls`` is the class registered under its ``arch`` name."""
    return bool(getattr(cls, "arch", "")) and _MODELS.get(cls.arch) is cls


def model_modules() -> list[str]:
    """Every module (and sub-package) of the :data:`_MODEL_PACKAGES`, sorted by name."""
    found: list[str] = []
    for package_name in _MODEL_PACKAGES:
        package = importlib.import_module(package_name)
        found += sorted(f"{package_name}.{info.name}" for info in pkgutil.iter_modules(package.__path__))
    return found


def _import_model_modules() -> None:
    """Import every module of the :data:`_MODEL_PACKAGES` once; an import error surfaces (a broken model file must
    not silently vanish from the zoo)."""
    global _modules_imported, _importing
    if _modules_imported:
        return
    with _import_lock:
        # A lookup from inside a model module being imported (a family building on another) sees what is
        # registered so far instead of waiting for itself; other threads wait for the discovery to finish.
        if _modules_imported or _importing:
            return
        _importing = True
        try:
            for module in model_modules():
                importlib.import_module(module)
            _modules_imported = True
        finally:
            _importing = False


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
