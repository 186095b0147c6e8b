"""Test helpers: run a component with no broker, no market data and no server.

``dispatch_event`` and friends use the environment of the running
:class:`ComponentTestCase` (or a fresh default one): an authenticated identity with the
trading permission, an in-memory rate limiter and mount cache, no bus, no database.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import wire
from shared.bus import MessageBus
from shared.components.base import Component, ComponentContext
from shared.components.cache import MountCache
from shared.components.errors import PermissionDenied
from shared.components.ratelimit import InMemoryRateLimiter, RateLimiter
from shared.components.rendering import Rendered, render
from shared.components.runtime import dispatch, mount
from shared.identity import PERM_TRADE, AnonymousUser, Identity

__all__ = [
    "ComponentTestCase",
    "TestEnvironment",
    "aassert_permission_denied",
    "adispatch_event",
    "amount_component",
    "assert_permission_denied",
    "assert_state",
    "blocking",
    "dispatch_event",
    "mount_component",
    "render_component",
    "shared_parts",
    "trader",
    "ui_updates",
]

T = TypeVar("T")
P = ParamSpec("P")
C = TypeVar("C", bound=Component)
User = Identity | AnonymousUser


def trader(user_id: int = 1, account_id: int = 1, *, can_trade: bool = True) -> Identity:
    """An authenticated test identity (with the trading permission by default)."""
    perms = frozenset({PERM_TRADE}) if can_trade else frozenset()
    return Identity(user_id, account_id, f"trader{user_id}", perms, f"test-session-{user_id}")


@dataclass
class TestEnvironment:
    """What the helpers run components with."""

    __test__ = False

    user: User = field(default_factory=trader)
    db: async_sessionmaker[AsyncSession] | None = None
    limiter: RateLimiter = field(default_factory=InMemoryRateLimiter)
    cache: MountCache = field(default_factory=MountCache)
    bus: MessageBus | None = None
    deps: object = None

    def context(self, user: User | None = None) -> ComponentContext:
        return ComponentContext(
            user=user if user is not None else self.user,
            request_id="test",
            db=self.db,
            bus=self.bus,
            cache=self.cache,
            deps=self.deps,
        )


_current: list[ComponentTestCase] = []


class ComponentTestCase:
    """Base for pytest test classes; ``dispatch_event`` inside its tests uses :attr:`env`.

    Override :meth:`context_factory` (or set ``db`` / ``user`` / ``bus`` before the first
    dispatch, e.g. in an autouse fixture) to run against a real database. For the sync
    helpers (``asyncio.run`` per call) build the engine with ``null_pool=True``.
    """

    db: async_sessionmaker[AsyncSession] | None = None
    user: User | None = None
    bus: MessageBus | None = None
    _env: TestEnvironment | None = None

    def setup_method(self, method: Any = None) -> None:
        self._env = None
        _current.append(self)

    def teardown_method(self, method: Any = None) -> None:
        if self in _current:
            _current.remove(self)

    def context_factory(self) -> TestEnvironment:
        return TestEnvironment(user=self.user or trader(), db=self.db, bus=self.bus)

    @property
    def env(self) -> TestEnvironment:
        if self._env is None:
            self._env = self.context_factory()
        return self._env


def _environment() -> TestEnvironment:
    return _current[-1].env if _current else TestEnvironment()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError("an event loop is running: await the a-prefixed helper instead")


def blocking(helper: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The synchronous twin of an ``a``-prefixed helper, for sync tests (as in the seed's):
    ``dispatch_event = blocking(adispatch_event)``."""

    @functools.wraps(helper)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return _run(helper(*args, **kwargs))

    run.__name__ = run.__qualname__ = helper.__name__.removeprefix("a")
    return run


async def adispatch_event(
    component_cls: type[C],
    event: str,
    payload: Mapping[str, Any] | None = None,
    user: User | None = None,
    *,
    env: TestEnvironment | None = None,
) -> C:
    """Mount ``component_cls`` and run ``on_<event>``; the component (``state["errors"]``
    on a validation error). Raises ``PermissionDenied``, ``RateLimited``, ``UnknownEvent``
    or the handler's own exception."""
    env = env or _environment()
    outcome = await dispatch(
        component_cls, env.context(user), event, dict(payload or {}), limiter=env.limiter
    )
    component = outcome.component
    component.status_code = outcome.status  # type: ignore[attr-defined]
    return component  # type: ignore[return-value]


async def amount_component(
    component_cls: type[C], user: User | None = None, *, env: TestEnvironment | None = None
) -> C:
    env = env or _environment()
    return await mount(component_cls, env.context(user))  # type: ignore[return-value]


def render_component(component: Component) -> Rendered:
    return render(component)


def assert_state(component: Component, **expected: Any) -> None:
    """Each keyword equals ``component.state[key]``."""
    for key, value in expected.items():
        assert key in component.state, f"state has no {key!r}: {sorted(component.state)}"
        actual = component.state[key]
        assert actual == value, f"state[{key!r}] == {actual!r}, expected {value!r}"


async def aassert_permission_denied(
    component_cls: type[Component],
    event: str,
    user: User | None = None,
    payload: Mapping[str, Any] | None = None,
    *,
    status: int | None = None,
) -> PermissionDenied:
    """Async :func:`assert_permission_denied`."""
    try:
        await adispatch_event(
            component_cls, event, payload or {}, user if user is not None else AnonymousUser()
        )
    except PermissionDenied as exc:
        if status is not None:
            assert exc.status == status, f"denied with {exc.status}, expected {status}"
        return exc
    raise AssertionError(f"{component_cls.__name__}.{event} was not denied")


def ui_updates(
    published: Iterable[tuple[str, dict[str, Any]]], user_id: int, component: str
) -> list[dict[str, Any]]:
    """The updates of ``component`` for ``user_id`` among published ``(subject, payload)``
    pairs, in order, each with its message's ``component`` and ``ts``."""
    subject = wire.ui_subject(user_id, component)
    return [
        {"component": payload["component"], "ts": payload.get("ts"), **update}
        for s, payload in published
        if s == subject
        for update in payload.get("updates", ())
        if update.get("user") == user_id
    ]


def shared_parts(
    published: Iterable[tuple[str, dict[str, Any]]], component: str
) -> list[dict[str, list[dict[str, str]]]]:
    """The ``topics`` of each ``ui.shared.<component>`` message among ``published``."""
    subject = wire.ui_shared_subject(component)
    return [payload["topics"] for s, payload in published if s == subject]


dispatch_event = blocking(adispatch_event)
mount_component = blocking(amount_component)
assert_permission_denied = blocking(aassert_permission_denied)
