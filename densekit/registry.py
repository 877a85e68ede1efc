"""One registry mechanism for every kind of component: backbones, heads, datasets and tasks.

A component registers itself where it is defined, with the facts the rest of densekit asks about
(timm's ``@register_model`` habit)::

    @BACKBONES.register("mobilenetv3_large", dims=2, preset={"variant": "large"})
    class MobileNetV3Backbone(Backbone): ...

The registry maps a name to the registered object (a class or a builder function) and keeps each
name's facts (``dims``, ``tasks`` served, ``preset`` arguments, sweep ``width_keys``, ...). No module
edits another module's entries: registering a name twice is an error, so a copied file cannot silently
replace a component. Unknown names are a ``ValueError`` that lists the valid ones.

Pure Python (no torch): every layer (models, data, tasks) may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any


class Registry(Mapping[str, Any]):
    """name -> registered object, plus read-only per-name facts.

    ``kind`` names the component in messages ("backbone", "head", ...). Mapping access
    (``REG[name]``, ``name in REG``, iteration, ``len``) gives the registered objects; ``get_or_fail``
    and ``facts`` raise a ``ValueError`` that lists the valid names.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._facts: dict[str, dict[str, Any]] = {}

    # -- registering ------------------------------------------------------------------------------------
    def register(self, name: str | None = None, **facts: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated class or function under ``name`` (default: its
        ``__name__``) with ``facts``. Returns the object unchanged, so decorators stack (one class
        registered under several preset names)."""

        def decorate(obj: Any) -> Any:
            self.add(name or obj.__name__, obj, **facts)
            return obj

        return decorate

    def add(self, name: str, obj: Any, **facts: Any) -> None:
        """Register ``obj`` under ``name`` (the non-decorator form, for a builder made at import time)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            old = self._entries[name]
            raise ValueError(
                f"{self.kind} {name!r} is already registered (by {_where(old)}); {_where(obj)} cannot register it again"
            )
        self._entries[name] = obj
        self._facts[name] = dict(facts)

    # -- asking --------------------------------------------------------------------------------------
    def get_or_fail(self, name: str) -> Any:
        """The object registered as ``name``; a ValueError listing the valid names otherwise."""
        self._check(name)
        return self._entries[name]

    def facts(self, name: str) -> Mapping[str, Any]:
        """The facts ``name`` was registered with (read-only)."""
        self._check(name)
        return MappingProxyType(self._facts[name])

    def fact(self, name: str, key: str, default: Any = None) -> Any:
        """One fact of ``name`` (``default`` when it was not given)."""
        return self.facts(name).get(key, default)

    def names(self, **where: Any) -> list[str]:
        """Sorted names whose facts match ``where``. A fact that is a tuple/list/set/frozenset matches
        when it contains the value (``names(tasks="seg")``); any other fact matches by equality."""
        out = []
        for name, facts in self._facts.items():
            if all(_matches(facts.get(key), value) for key, value in where.items()):
                out.append(name)
        return sorted(out)

    def _check(self, name: str) -> None:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {sorted(self._entries)}")

    # -- Mapping --------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {sorted(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


def _matches(fact: Any, value: Any) -> bool:
    if isinstance(fact, (tuple, list, set, frozenset)):
        return value in fact
    return fact == value


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__name__)}"


__all__ = ["Registry"]
