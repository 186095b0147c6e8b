"""The service contract (DESIGN.md §3.1): one call builds a component service's app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from shared import wire
from shared.bus import MessageBus, NatsBus, Subscription
from shared.components.base import Component, ComponentContext
from shared.components.cache import MountCache
from shared.components.errors import ComponentError, HandlerError, RateLimited
from shared.components.live import LiveSessions
from shared.components.metrics import ComponentMetrics
from shared.components.pricebook import PriceBook
from shared.components.ratelimit import (
    InMemoryRateLimiter,
    PostgresRateLimiter,
    RateLimiter,
    RateLimitStatus,
)
from shared.components.registry import Registry
from shared.components.rendering import render
from shared.components.runtime import dispatch, mount
from shared.db.engine import database_busy, database_unavailable
from shared.db.models import Symbol
from shared.identity import Identity, InvalidIdentity, Revocations, verify_identity
from shared.leases import LeaseStore, NatsLeaseStore, PartitionLeases
from shared.observability import request_id_var
from shared.process import Connections, Part, create_process_app
from shared.settings import ServiceSettings

__all__ = [
    "ComponentOptions",
    "ComponentRuntime",
    "create_component_app",
    "live_instance",
    "rate_limit_headers",
    "read_payload",
]

log = logging.getLogger(__name__)


def rate_limit_headers(policy: str, status: RateLimitStatus | RateLimited) -> dict[str, str]:
    """``RateLimit-Policy`` / ``RateLimit`` (IETF draft) and, when refused, ``Retry-After``."""
    if isinstance(status, RateLimited):
        remaining, reset = 0, status.retry_after
    else:
        remaining, reset = status.remaining, status.reset
    headers = {
        wire.HEADER_RATELIMIT_POLICY: f'"{policy}";q={status.limit};w={status.window}',
        wire.HEADER_RATELIMIT: f'"{policy}";r={remaining};t={reset}',
    }
    if isinstance(status, RateLimited):
        headers[wire.HEADER_RETRY_AFTER] = str(status.retry_after)
    return headers


MAX_FIELDS = 100  # no dashboard form has more than a dozen
MAX_DEPTH = 8  # nor nests JSON deeper than this


def _checked(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` if every string in it is text PostgreSQL can store; else ValueError."""
    if depth > MAX_DEPTH:
        raise ValueError("JSON nested too deeply")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"a NUL character in {where!r}")
        return value
    if isinstance(value, dict):
        if len(value) > MAX_FIELDS:
            raise ValueError(f"more than {MAX_FIELDS} fields")
        return {_checked(k, where): _checked(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > MAX_FIELDS:
            raise ValueError(f"more than {MAX_FIELDS} values in {where!r}")
        return [_checked(v, where, depth + 1) for v in value]
    return value


async def read_payload(request: Request) -> dict[str, Any]:
    """A form-encoded or JSON body as a dict (repeated form keys become lists).

    Raises ValueError, with a message for the caller, for anything malformed: undecodable
    or deeply nested JSON, a multipart body without its boundary, too many fields, a NUL
    character (which PostgreSQL cannot store).
    """
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        if not body:
            return {}
        try:
            data = json.loads(body)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        return dict(_checked(data, "body"))
    payload: dict[str, Any] = {}
    try:
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    except (HTTPException, MultiPartException, KeyError) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or "bad form"
        raise ValueError(str(detail)) from None
    for key, value in form.multi_items():
        if not isinstance(value, str):
            continue
        if key in payload:
            prev = payload[key]
            payload[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            payload[key] = value
    return dict(_checked(payload, "form"))


DB_RETRY_AFTER_S = 2
BUSY_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ComponentOptions:
    """How a component service runs beyond its settings (tests turn these)."""

    limiter: RateLimiter | None = None
    """Counts events against ``rate_limit``; PostgreSQL's (in memory without a database)."""
    cache: MountCache | None = None
    """Cached mounts (``cache_key_prefix``); a fresh one per app."""
    heartbeat_interval_s: float | None = None
    """How often live sessions are expected to beat; ``HEARTBEAT_INTERVAL_S``."""
    price_book: bool = False
    """Keep a book of the latest quotes even when no component follows ticks (orders)."""
    deps: object = None
    """What the components see as ``self.request.deps`` (the orders service's own)."""


class ComponentRuntime(Part):
    """The component half of a component service: the price book, the live sessions and
    their partition leases, and the sessions revoked meanwhile.

    A service whose components follow ticks (or that asks with ``price_book``) keeps a
    :class:`PriceBook` of the latest quotes, given to components as
    ``self.request.prices``; live components render every symbol from it, so it starts
    from the stored prices.
    """

    def __init__(
        self,
        service: str,
        registry: Registry,
        settings: ServiceSettings,
        options: ComponentOptions,
        metrics: ComponentMetrics,
    ) -> None:
        self.service, self.registry, self.settings = service, registry, settings
        self.options, self.metrics = options, metrics
        self.cache = options.cache if options.cache is not None else MountCache()
        self.follows_ticks = any(wire.PRICES_TICKS in cls.subscriptions for cls in registry)
        wants_book = self.follows_ticks or options.price_book
        self.prices = PriceBook() if wants_book else None
        self.revoked = Revocations()
        self.live: LiveSessions | None = None
        self.db: async_sessionmaker[AsyncSession] | None = None
        self.bus: MessageBus | None = None
        self._subs: list[Subscription] = []

    def limiter(self, database: bool) -> RateLimiter:
        if self.options.limiter is not None:
            return self.options.limiter
        return PostgresRateLimiter() if database else InMemoryRateLimiter()

    def context(self, user: Identity, request_id: str) -> ComponentContext:
        return ComponentContext(
            user=user,
            request_id=request_id,
            db=self.db,
            bus=self.bus,
            cache=self.cache,
            deps=self.options.deps,
            prices=self.prices,
        )

    async def start(self, app: FastAPI) -> None:
        self.db, self.bus = app.state.db, app.state.bus
        bus = app.state.bus
        app.state.prices = self.prices
        if self.prices is not None and self.follows_ticks and self.db is not None:
            await seed_prices(self.db, self.prices)
        if self.prices is not None and not self.follows_ticks:
            self._subs.append(await bus.subscribe(wire.PRICES_TICKS, self.prices.on_tick))
        store = await lease_store(bus, self.service, self.settings)
        app.state.lease_store = store
        leases = None if store is None else PartitionLeases(store, self.settings.replica_id)
        self.live = app.state.live = LiveSessions(
            self.registry,
            bus,
            context=lambda identity: self.context(identity, "live"),
            prices=self.prices,
            heartbeat_interval=self.options.heartbeat_interval_s
            or self.settings.heartbeat_interval_s,
            metrics=self.metrics,
            leases=leases,
            cache=self.cache,
        )
        await self.live.start()
        watch_reconnects(bus, self.live)
        if leases is not None:
            leases.on_gained = self.live.partitions_gained
            leases.on_lost = self.live.partitions_lost
            await leases.start()
            app.state.leases.append(leases)
        self._subs.append(await bus.subscribe(wire.SESSION_REVOKED, self._on_revoked))
        await bus.flush()

    async def stop(self, app: FastAPI) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        if self.live is not None:
            await self.live.stop()

    async def _on_revoked(self, _subject: str, payload: dict[str, Any]) -> None:
        self.revoked.revoke(str(payload.get("public_id", "")))


def create_component_app(
    service: str,
    registry: Registry,
    settings: ServiceSettings,
    *,
    parts: Sequence[Part] = (),
    connections: Connections | None = None,
    options: ComponentOptions | None = None,
) -> FastAPI:
    """The FastAPI app of a component service (a process, see :mod:`shared.process`):
    ``GET /components/<name>`` and ``POST /components/<name>/events/<event>`` over its
    ``registry``, the live sessions, then the service's own ``parts`` (the orders venue,
    its outbox relay)."""
    metrics = ComponentMetrics()
    runtime = ComponentRuntime(service, registry, settings, options or ComponentOptions(), metrics)
    app = create_process_app(
        service, settings, [runtime, *parts], connections=connections, registry=metrics.registry
    )
    database = connections is None or connections.database
    app.state.registry, app.state.component_metrics = registry, metrics
    app.state.cache, app.state.limiter = runtime.cache, runtime.limiter(database)
    app.state.live = app.state.prices = app.state.lease_store = None
    install_component_routes(app, runtime)
    return app


def install_component_routes(app: FastAPI, runtime: ComponentRuntime) -> None:
    """The two routes every component service serves, each answering errors plainly."""
    registry, metrics, limiter = runtime.registry, runtime.metrics, app.state.limiter
    secret = runtime.settings.identity_secret.get_secret_value()

    def text(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        return PlainTextResponse(message, status_code=status, headers=headers)

    async def run(request: Request, name: str, event: str | None) -> Response:
        try:
            user = verify_identity(request.headers.get(wire.HEADER_IDENTITY), secret)
        except InvalidIdentity as exc:
            return text(401, exc.reason)
        if user.session_id in runtime.revoked:
            return text(401, "session ended")
        cls = registry.get(name)
        context = runtime.context(user, request_id_var.get())
        if event is None:
            return HTMLResponse(render(await mount(cls, context)).html)
        try:
            payload = await read_payload(request)
        except ValueError as exc:
            return text(400, f"Malformed request: {exc}. Nothing was changed.")
        outcome = await dispatch(cls, context, event, payload, limiter=limiter)
        headers = rate_limit_headers(f"{name}.{event}", outcome.rate) if outcome.rate else {}
        html = render(outcome.component).html
        if outcome.status == 200 and runtime.live is not None:
            await runtime.live.adopt(outcome.component, event)
        return HTMLResponse(html, status_code=outcome.status, headers=headers)

    def failed(name: str, event: str | None, exc: BaseException) -> Response:
        if database_unavailable(exc):
            log.warning("component %s event %s: database unavailable", name, event)
            message = "The database is unavailable for a moment. Nothing was changed; retry."
            return text(503, message, {wire.HEADER_RETRY_AFTER: str(DB_RETRY_AFTER_S)})
        if database_busy(exc):
            log.warning("component %s event %s: no database connection free", name, event)
            # every connection stayed in use for the pool's timeout
            message = "The server is busy. Nothing was changed; retry in a moment."
            return text(503, message, {wire.HEADER_RETRY_AFTER: str(BUSY_RETRY_AFTER_S)})
        rid = request_id_var.get()
        log.error("component %s event %s failed [request_id=%s]", name, event, rid, exc_info=exc)
        return text(500, f"Internal error (request id {rid}). Nothing was changed.")

    async def guarded(request: Request, name: str, event: str | None) -> Response:
        started = time.perf_counter()
        try:
            response = await run(request, name, event)
        except HandlerError as exc:
            response = failed(name, event, exc.__cause__ or exc)
        except RateLimited as exc:
            response = text(429, str(exc), rate_limit_headers(f"{name}.{event}", exc))
        except ComponentError as exc:
            response = text(exc.status, str(exc))
        except Exception as exc:
            response = failed(name, event, exc)
        known = name if name in registry else "unknown"
        # labels only from names the service knows: a caller can't mint metric series
        known_event = event is not None and name in registry and registry.get(name).has_event(event)
        label = (event if known_event else "unknown") if event else ""
        metrics.requests.labels(known, label, str(response.status_code)).inc()
        kind = "event" if event else "mount"
        metrics.latency.labels(known, kind).observe(time.perf_counter() - started)
        return response

    @app.get("/components/{name}")
    async def get_component(request: Request, name: str) -> Response:
        return await guarded(request, name, None)

    @app.post("/components/{name}/events/{event}")
    async def post_event(request: Request, name: str, event: str) -> Response:
        return await guarded(request, name, event)


async def seed_prices(db: async_sessionmaker[AsyncSession], book: PriceBook) -> None:
    """Start the price book from the stored prices, so every ticker is known before the
    feed's first tick mentions it."""
    query = select(Symbol.ticker, Symbol.last, Symbol.bid, Symbol.ask, Symbol.prev_close)
    async with db() as session:
        rows = (await session.execute(query)).all()
    book.seed((t, last, bid, ask, prev) for t, last, bid, ask, prev in rows)


def watch_reconnects(bus: MessageBus, live: LiveSessions) -> None:
    """After a NATS outage every live instance is reloaded from the database (events
    published meanwhile are gone), in the background: other reconnect work goes on."""
    tasks: set[asyncio.Task[None]] = set()

    async def reconnected() -> None:
        task = asyncio.create_task(live.reload_all())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    bus.on_reconnect(reconnected)


async def lease_store(
    bus: MessageBus, service: str, settings: ServiceSettings
) -> LeaseStore | None:
    """The service's lease bucket in JetStream KV; ``None`` on an in-memory bus (unit
    tests: one process owns every partition)."""
    if not isinstance(bus, NatsBus):
        return None
    return await NatsLeaseStore.open(bus.client, wire.lease_bucket(service), settings.lease_ttl_s)


def live_instance(app: FastAPI, user_id: int, name: str) -> Component | None:
    """The live instance of ``name`` for ``user_id`` in ``app``, if any (for tests)."""
    live_sessions: LiveSessions | None = app.state.live
    if live_sessions is None:
        return None
    instance = live_sessions.instances.get((user_id, name))
    return instance.component if instance else None
