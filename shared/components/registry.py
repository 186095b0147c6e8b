"""Which components a service serves, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from shared.components.errors import UnknownComponent

if TYPE_CHECKING:
    from shared.components.base import Component

__all__ = ["Registry", "registry"]

C = TypeVar("C", bound="type[Component]")


class Registry:
    """A name → component class map; each service keeps its own (or uses ``registry``)."""

    def __init__(self) -> None:
        self._components: dict[str, type[Component]] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: ``@registry.register("portfolio")``."""

        def decorate(cls: C) -> C:
            existing = self._components.get(name)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"component {name!r} already registered by {existing!r}")
            cls.name = name
            self._components[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> type[Component]:
        """The class registered as ``name``; :class:`UnknownComponent` otherwise."""
        try:
            return self._components[name]
        except KeyError:
            raise UnknownComponent(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[type[Component]]:
        return iter(list(self._components.values()))

    def __len__(self) -> int:
        return len(self._components)

    def names(self) -> list[str]:
        return list(self._components)


registry = Registry()
