"""The app every process starts from: DB engine and NATS bus in the lifespan, ops routes.

Nothing connects at import or construction time; the lifespan opens and closes both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.bus import MessageBus, NatsBus
from shared.db.engine import create_engine, ping, session_factory
from shared.observability import (
    RequestIdMiddleware,
    configure_logging,
    install_ops_routes,
    process_registry,
)
from shared.settings import ServiceSettings

__all__ = ["Hook", "create_base_app"]

Hook = Callable[[FastAPI], Awaitable[None]]


async def _bus_connected(app: FastAPI) -> None:
    if not app.state.bus.is_connected:
        raise ConnectionError("NATS not connected")


def create_base_app(
    service: str,
    settings: ServiceSettings,
    *,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    release: Hook | None = None,
    bus: MessageBus | None = None,
) -> FastAPI:
    """A FastAPI app whose ``state`` holds ``settings``, ``engine``, ``sessions``, ``bus``;
    with ``release``, ``POST /ops/release`` (loopback only) runs it: a preStop hook that
    gives the process's leases back."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.async_database_url, pool_size=settings.db_pool_size)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.bus = bus or await NatsBus.connect(
            settings.nats_url, name=service, **settings.nats_options()
        )
        try:
            if on_start:
                await on_start(app)
            yield
        finally:
            if on_stop:
                await on_stop(app)
            if bus is None:
                await app.state.bus.close()
            await engine.dispose()

    configure_logging(service, settings.log_level, settings.log_format)
    app = FastAPI(title=service, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.metrics = process_registry()
    app.add_middleware(RequestIdMiddleware)
    install_ops_routes(
        app,
        service=service,
        registry=app.state.metrics,
        ready_checks={
            "database": lambda: ping(app.state.engine),
            "nats": lambda: _bus_connected(app),
        },
        release=release,
    )
    return app
