"""The gateway: login, the composed page, the event proxy and the browser WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import DBAPIError

from gateway import auth, compose, proxy, ws
from gateway.hub import CLOSE_POLICY, CLOSE_RESTART
from gateway.metrics import GatewayMetrics
from gateway.security import CachedStaticFiles, SecurityHeadersMiddleware
from gateway.settings import GatewaySettings
from gateway.state import STATIC_DIR, Gateway
from gateway.upstream import open_client
from shared import wire
from shared.app_base import create_base_app
from shared.bus import MessageBus
from shared.db.engine import database_unavailable

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    bus: MessageBus | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The gateway app; with no arguments its settings come from the environment.

    ``bus`` and ``transport`` replace the NATS connection and the services' HTTP transport
    (tests).
    """
    settings = settings or GatewaySettings()
    static = CachedStaticFiles(STATIC_DIR)

    async def on_start(app: FastAPI) -> None:
        g: Gateway = app.state.gw
        g.http = open_client(transport)
        g.freshness.connected = lambda: bool(app.state.bus.is_connected)

        async def on_revoked(_subject: str, payload: dict[str, Any]) -> None:
            g.hub.close_session(str(payload.get("web_session_id")), CLOSE_POLICY, "logged out")

        app.state.revoked_sub = await app.state.bus.subscribe(
            wire.GATEWAY_SESSION_REVOKED, on_revoked
        )
        resyncs: set[asyncio.Task[None]] = set()
        app.state.resync_tasks = resyncs

        def resync_later(components: list[str], partitions: list[int]) -> None:
            task = asyncio.create_task(ws.reannounce(g, app.state.bus, components, partitions))
            resyncs.add(task)
            task.add_done_callback(resyncs.discard)

        async def on_resync(_subject: str, payload: dict[str, Any]) -> None:
            components, partitions = payload.get("components"), payload.get("partitions")
            if isinstance(components, list) and isinstance(partitions, list):
                resync_later(
                    [str(c) for c in components], [p for p in partitions if isinstance(p, int)]
                )

        g.fanout.on_resync = lambda component, partition: resync_later([component], [partition])
        app.state.resync_sub = await app.state.bus.subscribe(wire.GATEWAY_RESYNC, on_resync)
        # one subscription for every socket of this process: the fan-out is in process
        app.state.ui_sub = await app.state.bus.subscribe(wire.UI_ALL, g.fanout.on_ui)
        app.state.heartbeat = asyncio.create_task(
            ws.heartbeat_forever(g, app.state.sessions, app.state.bus)
        )
        app.state.pace = asyncio.create_task(g.pace.run())
        app.state.status = asyncio.create_task(ws.status_forever(g))
        app.state.services = asyncio.create_task(ws.services_forever(g))

        async def resync() -> None:  # parts published while NATS was away are lost
            for conn in g.hub.connections():
                await conn.announce()

        app.state.bus.on_reconnect(resync)

    async def on_stop(app: FastAPI) -> None:
        g: Gateway = app.state.gw
        g.hub.close_all(CLOSE_RESTART, "server restart")
        for task in (app.state.heartbeat, app.state.pace, app.state.status, app.state.services):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in list(app.state.resync_tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await app.state.revoked_sub.unsubscribe()
            await app.state.resync_sub.unsubscribe()
            await app.state.ui_sub.unsubscribe()
        if g.http is not None:
            await g.http.aclose()

    app = create_base_app("gateway", settings, on_start=on_start, on_stop=on_stop, bus=bus)

    async def database_away(request: Request, exc: Exception) -> Response:
        """PostgreSQL restarting: the page gets a clear 503, not a bare 500."""
        if not database_unavailable(exc):
            raise exc
        log.warning("%s %s: database unavailable", request.method, request.url.path)
        return PlainTextResponse(
            "The server cannot reach its database for a moment. Nothing was submitted; retry.",
            status_code=503,
            headers={wire.HEADER_RETRY_AFTER: "2"},
        )

    app.add_exception_handler(DBAPIError, database_away)
    app.add_exception_handler(OSError, database_away)
    app.state.gw = Gateway(settings, GatewayMetrics(app.state.metrics), static)
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/static", static, name="static")
    for module in (auth, compose, proxy, ws):
        app.include_router(module.router)
    return app
