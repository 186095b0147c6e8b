"""``Component`` and ``FormComponent``: the seed's API, async for SQLAlchemy."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import wire
from shared.components.cache import MountCache
from shared.components.permissions import BasePermission
from shared.components.pricebook import PriceBook
from shared.components.scope import Callback, UnitOfWork
from shared.identity import AnonymousUser, Identity

if TYPE_CHECKING:
    from shared.bus import MessageBus
    from shared.components.rendering import Part

__all__ = ["Component", "ComponentContext", "FormComponent", "LiveResult", "PartSpec"]

_NOT_EVENTS = frozenset({"ws_message", "commit"})

PartSpec = tuple[str, dict[str, Any]]
"""``(block name in the component's template, the block's context)``."""

LiveResult = bool | set[str] | frozenset[str] | list[str] | dict[str, None] | None
"""What ``on_ws_message`` says changed: nothing (``False``), these parts (in this order),
or "look" (``None``)."""

S = TypeVar("S", bound=Mapping[str, Any])
"""A component's state type: a ``TypedDict`` naming every key it holds. The framework names
any component ``Component`` (a state of any shape)."""


@dataclass
class ComponentContext:
    """What a component sees as ``self.request``."""

    user: Identity | AnonymousUser = field(default_factory=AnonymousUser)
    request_id: str = "-"
    db: async_sessionmaker[AsyncSession] | None = None
    bus: MessageBus | None = None
    cache: MountCache | None = None
    deps: object = None
    """The service's own dependencies (``ComponentOptions.deps``), e.g. its outbox."""
    prices: PriceBook | None = None


class Component(Generic[S]):
    """A server-side component: state, ``mount()``, ``on_<event>()``, ``on_ws_message()``.

    ``state`` is a dict. A component declares its keys by subclassing
    ``Component[MyState]``, ``MyState`` a ``TypedDict`` (total=False: the state is empty
    until ``mount()``), so mypy checks every key it reads or writes.

    Class attributes configure it: ``template_name`` (looked up in the ``templates/``
    directory beside the defining module), ``permission_classes``, ``rate_limit``
    (``"60/minute"``), ``cache_key_prefix`` / ``cache_ttl`` (seconds) and
    ``subscriptions`` (NATS subject template → event name given to ``on_ws_message``,
    e.g. ``{"orders.events.{account_id}": "order_event"}``).
    """

    name: ClassVar[str] = ""
    template_name: ClassVar[str] = ""
    template_dir: ClassVar[str | None] = None
    permission_classes: ClassVar[Sequence[type[BasePermission]]] = ()
    rate_limit: ClassVar[str | None] = None
    cache_key_prefix: ClassVar[str | None] = None
    cache_ttl: ClassVar[float] = 0
    subscriptions: ClassVar[Mapping[str, str]] = {}
    page_only_events: ClassVar[frozenset[str]] = frozenset()
    """Events whose result only the requesting page shows (e.g. suggestions while typing):
    the live instance does not take over their state."""
    live_root: ClassVar[bool] = True
    """Whether a live full render replaces the whole root element. A component holding a
    form the trader may be typing into sets False: its full render is all its live parts."""
    outside_root: ClassVar[frozenset[str]] = frozenset()
    """Ids of live parts that live elsewhere on the page (the header's account value):
    a full render sends them beside the root, and the root's template does not hold them."""
    shared_by_topic: ClassVar[bool] = False
    """How replicas share the work of :meth:`topic_parts`. False (the default): each
    replica renders the topics its own users show, and a page takes them only from its
    user's replica, so they agree with the page's per-user numbers (a portfolio's last
    price and its P&L). True, for parts that stand alone (a watchlist's quote cells): each
    topic is rendered once, by the owner of the topic's partition, for every page."""
    live_interval: ClassVar[float] = 0.0
    """About the time (seconds) between two tick-driven updates of one live instance:
    ticks in between are merged, so a slow-moving panel (a gauge) repaints less often. The
    instances are updated in staggered slices by partition (``LIVE_SLICES``), a slice per
    tick, so the work is spread over the ticks."""
    stencils: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Blocks rendered on the hot path as compiled stencils (block → the string fields of
    its view ``v``); see :class:`~shared.components.rendering.Stencil`."""

    def __init__(
        self,
        request: ComponentContext | None = None,
        *,
        component_id: str = "root",
        state: S | None = None,
    ) -> None:
        self.request = request if request is not None else ComponentContext()
        self.component_id = component_id
        self.state: S = state if state is not None else cast(S, {})
        self.answering: str | None = None
        """The event this instance is answering (set before ``mount()``), ``None`` for a
        mount: an answer may leave out what the page already holds (``hx-preserve``)."""
        self._uow: UnitOfWork | None = None

    # -- hooks a component overrides -------------------------------------------------
    def mount(self) -> Any:
        """Load the initial state (may be ``async``); ``self.session`` is available."""
        return None

    async def on_ws_message(self, message: dict[str, Any]) -> LiveResult:
        """A live message, ``message["event"]`` naming it (``price_tick``, …).

        Returning ``False`` tells the framework the state did not change, so it skips
        comparing parts (a tick most users hold nothing of); a set of part ids says
        exactly which parts changed (rendered without comparing the others); ``None``
        means "look".
        """
        return None

    def get_optimistic_patch(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """What the browser shows at once on submitting ``event`` (default nothing)."""
        return {}

    def live_parts(self) -> dict[str, PartSpec]:
        """Element id → (block name, block context) of each independently updated part.

        Each block renders one whole element carrying that id. The framework compares
        block contexts with what it last published and renders only changed blocks.
        Empty (the default) means: the whole fragment is re-rendered when state changes.
        """
        return {}

    def topics(self) -> list[str]:
        """The shared topics this instance's page shows (e.g. the tickers of its rows).

        The service renders a topic's parts once per tick for everyone
        (:meth:`topic_parts`); the gateway sends them to each page showing the topic.
        """
        return []

    @classmethod
    def topic_parts(cls, topics: Iterable[str], prices: PriceBook) -> dict[str, list[Part]]:
        """The shared parts of each of ``topics`` that changed on this tick."""
        return {}

    def adopt(self, state: S) -> None:
        """The live instance takes over the state a successful event left behind.

        Override to keep what only the live instance knows (e.g. recent price history).
        """
        self.state = state

    async def remount(self) -> None:
        """Reload from the database (bypassing the cache) and catch up with the latest
        quotes, as a fresh mount would; for handlers that know the data changed."""
        from shared.components.runtime import mount_into  # runtime imports this module

        self.invalidate_cache()
        await mount_into(self)

    def get_context(self) -> dict[str, Any]:
        """Extra variables for the full template (and every block)."""
        return {}

    # -- framework services ----------------------------------------------------------
    @property
    def root_id(self) -> str:
        return wire.element_id(self.name, self.component_id)

    @property
    def user(self) -> Identity | AnonymousUser:
        return self.request.user

    @property
    def session(self) -> AsyncSession:
        """The transaction of the current mount / event / live message."""
        if self._uow is None:
            raise RuntimeError("self.session exists only while the framework runs a handler")
        return self._uow.session

    def on_commit(self, callback: Callback) -> None:
        """Run ``callback`` (sync or async) once the current transaction has committed."""
        if self._uow is None:
            raise RuntimeError("on_commit exists only while the framework runs a handler")
        self._uow.on_commit(callback)

    def cache_key(self) -> tuple[str, int] | None:
        account_id = getattr(self.request.user, "account_id", None)
        if not self.cache_key_prefix or self.cache_ttl <= 0 or account_id is None:
            return None
        return self.cache_key_prefix, int(account_id)

    def invalidate_cache(self) -> None:
        """Forget the cached mount for this account, now and again after commit."""
        key, cache = self.cache_key(), self.request.cache
        if key is None or cache is None:
            return
        cache.invalidate(*key)
        if self._uow is not None:
            self._uow.on_commit(lambda: cache.invalidate(*key))

    def optimistic(self, event: str, payload: dict[str, Any] | None = None) -> str:
        """The optimistic patch of ``event`` as JSON (for ``data-optimistic``)."""
        patch = self.get_optimistic_patch(event, payload or {})
        return json.dumps(patch, separators=(",", ":"), ensure_ascii=False)

    def event_url(self, event: str) -> str:
        """Where the page posts ``event`` (the gateway's proxy)."""
        return wire.browser_event_url(self.name, event)

    @classmethod
    def has_event(cls, event: str) -> bool:
        if not event.isidentifier() or event in _NOT_EVENTS:
            return False
        return callable(getattr(cls, f"on_{event}", None))


class FormComponent(Component[S]):
    """A component whose events are validated against ``schema`` before the handler runs.

    The handler (``on_submit(self)``) reads ``self.validated_data``, the validated fields.
    """

    schema: ClassVar[type[BaseModel] | None] = None
    validated_data: Mapping[str, Any] = MappingProxyType({})
    """The event's fields as ``schema`` validated them, set before ``on_submit`` runs."""
