"""The service contract (DESIGN.md §3.1): one call builds a component service's app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from shared import wire
from shared.bus import Handler, MessageBus, NatsBus, Subscription
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
from shared.db.engine import create_engine, database_unavailable, ping, session_factory
from shared.db.models import Symbol
from shared.identity import Identity, InvalidIdentity, Revocations, verify_identity
from shared.leases import LeaseStore, NatsLeaseStore, PartitionLeases
from shared.observability import RequestIdMiddleware, install_ops_routes, request_id_var
from shared.settings import ServiceSettings

__all__ = ["create_component_app", "live_instance", "rate_limit_headers", "read_payload"]

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


def unavailable_response() -> Response:
    return PlainTextResponse(
        "The database is unavailable for a moment. Nothing was changed; retry.",
        status_code=503,
        headers={wire.HEADER_RETRY_AFTER: str(DB_RETRY_AFTER_S)},
    )


def create_component_app(
    service_name: str,
    registry: Registry,
    settings: ServiceSettings,
    *,
    bus: MessageBus | None = None,
    engine: AsyncEngine | None = None,
    database: bool = True,
    limiter: RateLimiter | None = None,
    cache: MountCache | None = None,
    handlers: Mapping[str, Handler] | None = None,
    extras: Mapping[str, Any] | None = None,
    live: bool = True,
    heartbeat_interval: float | None = None,
    price_book: bool = False,
    on_start: Callable[[FastAPI], Awaitable[None]] | None = None,
    on_stop: Callable[[FastAPI], Awaitable[None]] | None = None,
) -> FastAPI:
    """The FastAPI app of a component service; nothing connects until its lifespan starts.

    The lifespan creates the engine and connects NATS unless ``engine`` / ``bus`` are
    given (given ones are not closed), starts :class:`LiveSessions` and subscribes
    ``handlers`` (extra subject → handler, e.g. the orders venue's tick handler).
    ``database=False`` runs without PostgreSQL (unit tests). A service whose components
    follow ticks (or that asks with ``price_book=True``) keeps a :class:`PriceBook` of the
    latest quotes, given to components as ``self.request.prices``. ``on_start`` /
    ``on_stop`` run once the database and bus are up / before they close (background
    tasks such as an outbox relay).
    """
    metrics = ComponentMetrics()
    secret = settings.identity_secret.get_secret_value()
    mount_cache = cache if cache is not None else MountCache()
    follows_ticks = any(wire.PRICES_TICKS in cls.subscriptions for cls in registry)
    prices = PriceBook() if (follows_ticks or price_book) else None
    rate_limiter: RateLimiter = limiter or (
        PostgresRateLimiter() if database else InMemoryRateLimiter()
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None and database
        app.state.engine = (
            create_engine(settings.async_database_url, pool_size=settings.db_pool_size)
            if own_engine
            else engine
        )
        app.state.db = session_factory(app.state.engine) if app.state.engine else None
        app.state.prices = prices  # the latest quotes this service has seen (None: no book)
        own_bus = bus is None
        app.state.bus = (
            await NatsBus.connect(settings.nats_url, service_name, **settings.nats_options())
            if own_bus
            else bus
        )
        subs: list[Subscription] = []
        try:
            if prices is not None and follows_ticks and app.state.db is not None:
                # live components render every symbol from the book (the orders service
                # prices a symbol the book lacks from the table, read in its transaction)
                await seed_prices(app.state.db, prices)
            if prices is not None and not (live and follows_ticks):
                subs.append(await app.state.bus.subscribe(wire.PRICES_TICKS, prices.on_tick))
            store = await lease_store(app.state.bus, service_name, settings)
            app.state.lease_store = store
            if live:
                app.state.live = LiveSessions(
                    registry,
                    app.state.bus,
                    context=lambda identity: context_for(app, identity, "live"),
                    prices=prices,
                    heartbeat_interval=heartbeat_interval or settings.heartbeat_interval_s,
                    metrics=metrics,
                    leases=None if store is None else PartitionLeases(store, settings.replica_id),
                )
                await app.state.live.start()
                watch_reconnects(app.state.bus, app.state.live)
                if app.state.live.leases is not None:
                    leases = app.state.live.leases
                    leases.on_gained = app.state.live.partitions_gained
                    leases.on_lost = app.state.live.partitions_lost
                    await leases.start()
                    app.state.leases.append(leases)
            subs.append(await app.state.bus.subscribe(wire.SESSION_REVOKED, on_revoked))
            for subject, handler in (handlers or {}).items():
                subs.append(await app.state.bus.subscribe(subject, handler))
            await app.state.bus.flush()
            if on_start is not None:
                await on_start(app)
            try:
                yield
            finally:
                await release_leases(app)
                if on_stop is not None:
                    await on_stop(app)
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            if app.state.live is not None:
                await app.state.live.stop()
            if own_bus:
                await app.state.bus.close()
            if own_engine:
                await app.state.engine.dispose()

    app = FastAPI(
        title=service_name, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings, app.state.registry, app.state.metrics = settings, registry, metrics
    app.state.cache, app.state.limiter, app.state.live = mount_cache, rate_limiter, None
    app.state.engine = app.state.db = app.state.bus = app.state.lease_store = None
    app.state.leases = []  # every lease holder of this process, released on shutdown
    app.add_middleware(RequestIdMiddleware)

    async def db_ready() -> None:
        if app.state.engine is not None:
            await ping(app.state.engine)

    async def nats_ready() -> None:
        if app.state.bus is None or not app.state.bus.is_connected:
            raise ConnectionError("NATS not connected")

    checks = {"database": db_ready, "nats": nats_ready} if database else {"nats": nats_ready}
    install_ops_routes(
        app,
        service=service_name,
        registry=metrics.registry,
        ready_checks=checks,
        release=release_leases,
    )

    def context_for(app: FastAPI, user: Identity, request_id: str) -> ComponentContext:
        return ComponentContext(
            user=user,
            request_id=request_id,
            db=app.state.db,
            bus=app.state.bus,
            cache=mount_cache,
            extras=extras or {},
            prices=prices,
        )

    def text(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        return PlainTextResponse(message, status_code=status, headers=headers)

    revoked = Revocations()

    async def on_revoked(_subject: str, payload: dict[str, Any]) -> None:
        revoked.revoke(str(payload.get("public_id", "")))

    async def run(request: Request, name: str, event: str | None) -> Response:
        rid = request_id_var.get()
        try:
            user = verify_identity(request.headers.get(wire.HEADER_IDENTITY), secret)
        except InvalidIdentity as exc:
            return text(401, exc.reason)
        if user.session_id in revoked:
            return text(401, "session ended")
        cls = registry.get(name)
        context = context_for(request.app, user, rid)
        if event is None:
            return HTMLResponse(render(await mount(cls, context)).html)
        try:
            payload = await read_payload(request)
        except ValueError as exc:
            return text(400, f"Malformed request: {exc}. Nothing was changed.")
        outcome = await dispatch(cls, context, event, payload, limiter=rate_limiter)
        headers = rate_limit_headers(f"{name}.{event}", outcome.rate) if outcome.rate else {}
        html = render(outcome.component).html
        if outcome.status == 200 and request.app.state.live is not None:
            await request.app.state.live.adopt(outcome.component, event)
        return HTMLResponse(html, status_code=outcome.status, headers=headers)

    async def guarded(request: Request, name: str, event: str | None) -> Response:
        started = time.perf_counter()
        try:
            response = await run(request, name, event)
        except HandlerError as exc:
            rid = request_id_var.get()
            if database_unavailable(exc.__cause__):
                log.warning("component %s event %s: database unavailable", name, event)
                response = unavailable_response()
            else:
                log.error(
                    "component %s event %s failed [request_id=%s]",
                    name,
                    event,
                    rid,
                    exc_info=exc.__cause__ or exc,
                )
                response = text(500, f"Internal error (request id {rid}). Nothing was changed.")
        except RateLimited as exc:
            response = text(429, str(exc), rate_limit_headers(f"{name}.{event}", exc))
        except ComponentError as exc:
            response = text(exc.status, str(exc))
        except Exception as exc:
            rid = request_id_var.get()
            if database_unavailable(exc):
                log.warning("component %s event %s: database unavailable", name, event)
                response = unavailable_response()
            else:
                log.exception("component %s event %s failed [request_id=%s]", name, event, rid)
                response = text(500, f"Internal error (request id {rid}). Nothing was changed.")
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

    return app


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


async def release_leases(app: FastAPI) -> None:
    """Give back every lease this process holds (shutdown, or a preStop hook): a
    survivor takes over within one renewal round instead of one lease TTL."""
    for holder in app.state.leases:
        await holder.stop(release=True)


def live_instance(app: FastAPI, user_id: int, name: str) -> Component | None:
    """The live instance of ``name`` for ``user_id`` in ``app``, if any (for tests)."""
    live_sessions: LiveSessions | None = app.state.live
    if live_sessions is None:
        return None
    instance = live_sessions.instances.get((user_id, name))
    return instance.component if instance else None
