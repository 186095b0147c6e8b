"""The gateway: login, the composed page, the event proxy and the browser WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway import auth, compose, proxy, ws
from gateway.hub import CLOSE_RESTART
from gateway.metrics import GatewayMetrics
from gateway.pace import announce_forever
from gateway.security import CachedStaticFiles, SecurityHeadersMiddleware
from gateway.settings import GatewaySettings
from gateway.state import STATIC_DIR, Gateway
from gateway.upstream import open_client
from shared import wire
from shared.bus import MessageBus, Subscription
from shared.db.engine import database_busy, database_unavailable
from shared.process import Connections, Part, create_process_app

__all__ = ["GatewayPart", "create_app"]

log = logging.getLogger(__name__)


class GatewayPart(Part):
    """The gateway's live half: one ``ui.>`` subscription fanned out to every socket in
    process, session revocations, resync requests from services that took partitions
    over, and the heartbeat, pace, status and service-watch loops."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, app: FastAPI) -> None:
        g: Gateway = app.state.gw
        bus: MessageBus = app.state.bus
        g.http = open_client()
        g.freshness.connected = lambda: bool(bus.is_connected)

        async def on_revoked(_subject: str, payload: dict[str, Any]) -> None:
            g.session_ended(str(payload.get("web_session_id")), "logged out")

        async def on_resync(_subject: str, payload: dict[str, Any]) -> None:
            components, partitions = payload.get("components"), payload.get("partitions")
            if isinstance(components, list) and isinstance(partitions, list):
                ws.reannounce(
                    g, [str(c) for c in components], [p for p in partitions if isinstance(p, int)]
                )

        def on_gap(component: str, partition: int) -> None:
            ws.reannounce(g, [component], [partition])

        g.fanout.on_resync = on_gap
        self._subs = [
            await bus.subscribe(wire.GATEWAY_SESSION_REVOKED, on_revoked),
            await bus.subscribe(wire.GATEWAY_RESYNC, on_resync),
            # one subscription for every socket of this process: the fan-out is in process
            await bus.subscribe(wire.UI_ALL, g.fanout.on_ui),
        ]
        self._tasks = [
            asyncio.create_task(g.admissions.run(bus)),
            asyncio.create_task(ws.heartbeat_forever(g, app.state.db, bus)),
            asyncio.create_task(g.pace.run()),
            asyncio.create_task(
                announce_forever(
                    g.pace,
                    bus,
                    f"gateway-{uuid.uuid4().hex[:12]}",
                    hold_s=g.settings.ws_pace_hold_s,
                    on_ask=g.metrics.pace_ask.set,
                )
            ),
            asyncio.create_task(ws.status_forever(g)),
            asyncio.create_task(ws.services_forever(g)),
        ]

        async def resync() -> None:  # parts published while NATS was away are lost
            for conn in g.hub.connections():
                conn.announce()

        bus.on_reconnect(resync)

    async def stop(self, app: FastAPI) -> None:
        g: Gateway = app.state.gw
        g.hub.close_all(CLOSE_RESTART, "server restart")
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if g.http is not None:
            await g.http.aclose()


def create_app(
    settings: GatewaySettings | None = None, *, connections: Connections | None = None
) -> FastAPI:
    """The gateway app; with no arguments its settings come from the environment."""
    settings = settings or GatewaySettings()
    static = CachedStaticFiles(STATIC_DIR)
    app = create_process_app("gateway", settings, [GatewayPart()], connections=connections)

    async def database_away(request: Request, exc: Exception) -> Response:
        """PostgreSQL restarting, or every connection in use: the page gets a clear 503, not
        a bare 500."""
        if database_busy(exc):
            log.warning("%s %s: no database connection free", request.method, request.url.path)
            return PlainTextResponse(
                "The server is busy. Nothing was submitted; retry in a moment.",
                status_code=503,
                headers={wire.HEADER_RETRY_AFTER: "1"},
            )
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
    app.add_exception_handler(PoolTimeout, database_away)
    app.state.gw = Gateway(settings, GatewayMetrics(app.state.metrics), static)
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/static", static, name="static")
    for module in (auth, compose, proxy, ws):
        app.include_router(module.router)
    return app
