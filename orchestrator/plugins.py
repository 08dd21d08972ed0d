"""Looks up a named policy: a built-in name, or ``package.module:function`` for a user's own."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping, TypeVar

F = TypeVar("F", bound=Callable)


def resolve(kind: str, name: str, builtins: Mapping[str, F]) -> F:
    if name in builtins:
        return builtins[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"{kind} {name!r} cannot be loaded: {e}") from None
    raise ValueError(f"unknown {kind} {name!r}; built-in: {sorted(builtins)} or 'module:function'")
