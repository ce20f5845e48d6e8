"""Names of domains (corpora, label spaces) as keys of ``nn.ModuleDict`` / ``nn.ParameterDict``.

A domain may be named after anything a user has, e.g. the folder ``train`` of a new corpus; ``nn.ModuleDict`` refuses
keys that are attributes of a module (``train``, ``eval``, ``forward``, ``to``, ...). Such a name is stored under
``<name>__domain`` (``check_domain_name`` elsewhere keeps domain names free of ``__domain``), every other name as it is,
so the parameter names of released checkpoints do not change.
"""

from __future__ import annotations

from torch import nn

SUFFIX = "__domain"
_RESERVED = frozenset(dir(nn.ModuleDict())) | frozenset(dir(nn.ParameterDict())) | {""}


def domain_key(name: str) -> str:
    """The dictionary key that stores domain ``name``."""
    return f"{name}{SUFFIX}" if name in _RESERVED else name


def domain_name(key: str) -> str:
    """The domain stored under ``key`` (inverse of :func:`domain_key`)."""
    return key[: -len(SUFFIX)] if key.endswith(SUFFIX) else key
