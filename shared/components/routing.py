"""Routing for live components: which instances a bus message reaches.

:class:`Routes` works out once, from the components' ``subscriptions``, which
``(component, event)`` pairs each subscribed subject pattern feeds;
:class:`InstanceIndex` holds the live instances by user and by component. A message on
``orders.events.7`` then reaches exactly the order instances of account 7's users: a
lookup, never a scan of every instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache

from shared import wire
from shared.components.base import Component
from shared.components.instance import LiveInstance
from shared.components.sessions import SessionTable

__all__ = ["InstanceIndex", "Route", "Routes", "subject_pattern"]

_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")


@cache
def subject_pattern(template: str) -> str:
    """``"orders.events.{account_id}"`` → ``"orders.events.*"``."""
    return ".".join("*" if _PLACEHOLDER.match(t) else t for t in template.split("."))


@dataclass(frozen=True)
class Route:
    """Messages on ``template``'s subjects go to ``component``'s instances as ``event``."""

    template: str
    component: type[Component]
    event: str

    def bindings(self, subject: str) -> dict[str, str]:
        """``{"account_id": "7"}`` for ``orders.events.7`` on ``orders.events.{account_id}``."""
        return {
            m.group(1): token
            for t, token in zip(self.template.split("."), subject.split("."), strict=False)
            if (m := _PLACEHOLDER.match(t))
        }


class Routes:
    """The routes of every subscribed subject pattern but ``prices.ticks`` (ticks are
    driven per component, see :mod:`shared.components.ticking`)."""

    def __init__(self, components: Iterable[type[Component]]) -> None:
        self.by_pattern: dict[str, list[Route]] = {}
        for cls in components:
            for template, event in cls.subscriptions.items():
                if template != wire.PRICES_TICKS:
                    route = Route(template, cls, event)
                    self.by_pattern.setdefault(subject_pattern(template), []).append(route)


class InstanceIndex(Mapping[tuple[int, str], LiveInstance]):
    """Live instances by ``(user_id, component name)`` (a read-only mapping) and by
    component. ``on_change(name)`` is told whenever ``name``'s set of instances changes
    (the tick driver then recomputes which topics are shown)."""

    def __init__(self, on_change: Callable[[str], None] = lambda _name: None) -> None:
        self._by_key: dict[tuple[int, str], LiveInstance] = {}
        self._by_class: dict[str, dict[int, LiveInstance]] = {}
        self._on_change = on_change

    def __getitem__(self, key: tuple[int, str]) -> LiveInstance:
        return self._by_key[key]

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def of(self, name: str) -> Mapping[int, LiveInstance]:
        """``name``'s instances by user id."""
        return self._by_class.get(name, {})

    def install(self, user_id: int, component: Component) -> LiveInstance:
        instance = self._by_key[(user_id, component.name)] = LiveInstance(component)
        self._by_class.setdefault(component.name, {})[user_id] = instance
        self._on_change(component.name)
        return instance

    def drop_user(self, user_id: int) -> None:
        """Forget every instance of ``user_id``."""
        for name, instances in self._by_class.items():
            if instances.pop(user_id, None) is not None:
                del self._by_key[(user_id, name)]
                self._on_change(name)

    def addressees(self, route: Route, subject: str, sessions: SessionTable) -> list[LiveInstance]:
        """The instances a message on ``subject`` reaches through ``route``: the user's or
        the account's users' when the template binds one, else all of the component's."""
        instances = self.of(route.component.name)
        bound = route.bindings(subject)
        try:
            if "user_id" in bound:
                users: Iterable[int] = (int(bound["user_id"]),)
            elif "account_id" in bound:
                users = sessions.users_of_account(int(bound["account_id"]))
            else:
                return list(instances.values())
        except ValueError:
            return []
        return [instances[u] for u in users if u in instances]

    def clear(self) -> None:
        self._by_key.clear()
        self._by_class.clear()
