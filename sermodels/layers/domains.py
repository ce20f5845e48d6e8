"""Names of domains (corpora, label spaces) as keys of ``nn.ModuleDict`` / ``nn.ParameterDict``.

A domain may be named after anything a user has, e.g. the folder ``train`` of a new corpus; ``nn.ModuleDict`` refuses
keys that are attributes of a module (``train``, ``eval``, ``forward``, ``to``, ...). Such a name is stored under
``<name>__domain`` (:func:`check_domain_name` keeps domain names free of ``__domain``), every other name as it is,
so the parameter names of released checkpoints do not change.
"""

from __future__ import annotations

import re

from torch import nn

SUFFIX = "__domain"
_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_RESERVED = frozenset(dir(nn.ModuleDict())) | frozenset(dir(nn.ParameterDict())) | {""}


def domain_key(name: str) -> str:
    """The dictionary key that stores domain ``name``."""
    return f"{name}{SUFFIX}" if name in _RESERVED else name


def check_domain_name(name: str) -> str:
    """``name``, or a ValueError: letters, digits, '_' and '-' only, and not ending in ``__domain`` (the suffix under
    which :func:`domain_key` stores names such as ``train``)."""
    if not isinstance(name, str) or not _DOMAIN_NAME.match(name):
        raise ValueError(f"domain/head names use letters, digits, '_' and '-' only, got {name!r}")
    if name.endswith(SUFFIX):
        raise ValueError(f"domain/head names may not end in {SUFFIX!r}, got {name!r}")
    return name
