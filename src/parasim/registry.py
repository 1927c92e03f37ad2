"""Named policies (serving schedulers, routers, pipeline schedules): one registry shape for all.

A policy is a small class with a `name`; its registry maps names to classes in registration
order, rejects a second class under a taken name, and answers an unknown name with an
InputError naming the field, the close matches and every allowed name. Adding a policy is one
class plus `@REGISTRY.register`; validators, CLI help and the docs tables read `names()`, so no
list of names is copied anywhere else. Lowest layer: specs, cost, serving and training import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from parasim.errors import InputError, did_you_mean

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """name -> class for one kind of policy ("scheduler", "router", "schedule")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: adds `cls` under `cls.name` (a non-empty string, not yet taken)."""
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string `name`, {cls.__name__} has {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy policy clean up with this)."""
        del self._entries[name]

    def get(self, name: object, *, field: str | None = None) -> T:
        """The class registered as `name`; else InputError on `field` (default: the kind)."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        raise self.unknown(name, field=field)

    def unknown(self, name: object, *, field: str | None = None) -> InputError:
        return InputError(field or self.kind, f"unknown {self.kind} '{name}'{did_you_mean(str(name), self._entries)}"
                                              f"; allowed: {', '.join(self._entries)}")

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        """(name, class) pairs, in registration order."""
        return tuple(self._entries.items())

    def help(self, sep: str = " | ") -> str:
        """The names for a CLI help string."""
        return sep.join(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
