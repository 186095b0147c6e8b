"""One way to start a process: the gateway, the four component services and the pricefeed
are each an app built by :func:`create_process_app` from their settings and their parts.

Nothing connects at import or construction time. The lifespan opens the database engine
(pool size ``<PREFIX>_DB_POOL_SIZE``) and the NATS connection, then starts each
:class:`Part` in order. On shutdown it gives every lease back, stops the parts in reverse
order and closes the connections. Every process serves ``/healthz``, ``/readyz``,
``/metrics`` and ``POST /ops/release`` (a preStop hook: leases back, so a survivor takes
over within one renewal round instead of one lease TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import MessageBus, NatsBus
from shared.db.engine import create_engine, ping, session_factory
from shared.leases import LeaseHolder
from shared.observability import (
    RequestIdMiddleware,
    configure_logging,
    install_ops_routes,
    process_registry,
)
from shared.settings import ServiceSettings

__all__ = [
    "GC_THRESHOLDS",
    "Connections",
    "Part",
    "create_process_app",
    "dump_tasks",
    "release_leases",
    "tune_gc",
]

GC_THRESHOLDS = (20_000, 50, 100)
"""The collector's thresholds once a process has started (CPython's default: 700, 10, 10).
A live process allocates a few small objects per part per socket per tick, nearly all
short-lived: with the default, the gateway at 1,000 traders spent ~37 ms/s collecting and
stalled its event loop ~210 ms every ~10 s in full collections."""


class Part:
    """A piece of a process's work with a lifecycle: started once the database and the bus
    are up (``app.state.db``, ``app.state.bus``), stopped before they close. The hooks do
    nothing unless overridden."""

    async def start(self, app: FastAPI) -> None:
        """Subscribe, start background tasks; a failure aborts the process's start."""

    async def stop(self, app: FastAPI) -> None:
        """Stop what :meth:`start` started (the connections are still open)."""

    async def release(self, app: FastAPI) -> None:
        """Hand over leadership this part holds beyond ``app.state.leases`` (preStop)."""


@dataclass(frozen=True)
class Connections:
    """What a test gives a process instead of opening its own: a given bus or engine is
    used and not closed; ``database=False`` runs without PostgreSQL."""

    bus: MessageBus | None = None
    engine: AsyncEngine | None = None
    database: bool = True


def create_process_app(
    service: str,
    settings: ServiceSettings,
    parts: Sequence[Part],
    *,
    connections: Connections | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The app of the process ``service``. Its ``state`` holds ``settings``; ``metrics``,
    the Prometheus registry ``/metrics`` serves (``registry``, else a new one); ``engine``
    and ``db``, a session factory (both ``None`` without a database); ``bus``; ``parts``;
    and ``leases``, every lease a part holds, given back on shutdown and by
    ``/ops/release``."""
    given = connections or Connections()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGUSR1, dump_tasks)  # main thread only
        own_engine = given.engine is None and given.database
        engine = (
            create_engine(
                settings.async_database_url,
                pool_size=settings.db_pool_size,
                pool_timeout=settings.db_pool_timeout_s,
            )
            if own_engine
            else given.engine
        )
        app.state.engine = engine
        app.state.db = session_factory(engine) if engine is not None else None
        started: list[Part] = []
        try:
            app.state.bus = given.bus or await NatsBus.connect(
                settings.nats_url, service, **settings.nats_options()
            )
            for part in parts:
                await part.start(app)
                started.append(part)
            tune_gc()
            yield
        finally:
            await release_leases(app)
            for part in reversed(started):
                await part.stop(app)
            if given.bus is None and app.state.bus is not None:
                await app.state.bus.close()
            if own_engine and engine is not None:
                await engine.dispose()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGUSR1)

    configure_logging(service, settings.log_level, settings.log_format)
    app = FastAPI(title=service, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.parts = settings, tuple(parts)
    app.state.metrics = registry if registry is not None else process_registry()
    app.state.engine = app.state.db = app.state.bus = None
    app.state.leases = []
    app.add_middleware(RequestIdMiddleware)

    async def database_ready() -> None:
        if app.state.engine is not None:
            await ping(app.state.engine)

    async def nats_ready() -> None:
        if app.state.bus is None or not app.state.bus.is_connected:
            raise ConnectionError("NATS not connected")

    checks = {"database": database_ready, "nats": nats_ready}
    if not given.database:
        del checks["database"]
    install_ops_routes(
        app,
        service=service,
        registry=app.state.metrics,
        ready_checks=checks,
        release=release_leases,
    )
    return app


def dump_tasks() -> None:
    """Every asyncio task of the process and where it waits, on stderr: ``kill -USR1 <pid>``
    (what a process that does not stop is waiting for)."""
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio tasks (SIGUSR1)", file=sys.stderr)
    for task in tasks:
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def tune_gc() -> None:
    """Once per process, when its first app has started: move everything alive (modules,
    templates, settings, the price book) out of the collector's sight, then collect young
    objects less often."""
    if gc.get_threshold() == GC_THRESHOLDS:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def release_leases(app: FastAPI) -> None:
    """Give back every lease the process holds, then let each part hand over what it
    leads: a survivor takes over within one renewal round instead of one lease TTL."""
    leases: list[LeaseHolder] = app.state.leases
    for lease in leases:
        await lease.stop(release=True)
    for part in app.state.parts:
        await part.release(app)
