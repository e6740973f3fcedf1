"""A name -> entry table: the one shape of every extension point (activations, optimizers, data kinds, metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...  # read-only: the entries are frozen dataclasses


T = TypeVar("T", bound=_Named)


class Registry(Generic[T]):
    """Entries by name; registering a name twice is a
    programming error, an unknown name a KeyError listing the known."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Add `entry` under its name and return it."""
        if entry.name in self._entries:
            raise ValueError(f"{self.what} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry called `name`."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r} (known: {', '.join(self._entries)})") from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def values(self) -> Iterator[T]:
        """Registered entries, in registration order."""
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def one_of(self) -> str:
        """ "must be one of 'a', 'b' or 'c'": the config message for a name that is not registered."""
        return one_of(self.names())


def one_of(known: list[str]) -> str:
    """ "must be one of 'a', 'b' or 'c'" for a list of known names."""
    quoted = [repr(n) for n in known]
    return "must be one of " + (", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else "".join(quoted))
