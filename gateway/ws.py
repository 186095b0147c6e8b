"""``/ws``: the browser's one WebSocket (DESIGN.md §3.3).

The handshake is refused (HTTP 403, before any data) unless the Origin is allowed, the session
cookie is valid and the ``csrf`` query parameter is the session's CSRF token. An accepted socket
subscribes ``ui.<user_id>.>``, announces itself (``session.opened``, a heartbeat every 10 s that
also re-checks the session, ``session.closed``), and forwards the parts of each message as
out-of-band swaps through its :class:`~gateway.buffer.PartBuffer`.

The NATS callback only writes into the buffer, so a slow socket never delays another; one
sender task per socket drains it, and a send that does not finish within ``ws_send_timeout_s``
closes the socket (1013: the browser reconnects and gets full renders). Dead peers are found by
the server's protocol pings: run uvicorn with ``--ws-ping-interval``/``--ws-ping-timeout``
(defaults 20 s / 20 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from fastapi import APIRouter, WebSocket

from gateway.buffer import PartBuffer, message_ts_ms, now_ms
from gateway.csrf import tokens_match
from gateway.hub import CLOSE_POLICY, CLOSE_TRY_AGAIN
from gateway.security import origin_allowed
from gateway.sessions import SessionUser, load_session
from gateway.state import Gateway, gw
from shared import wire

__all__ = ["Connection", "router"]

log = logging.getLogger(__name__)
router = APIRouter()
CLOSE_TIMEOUT_S = 2.0


class Connection:
    """One accepted browser socket: its buffer, sender, heartbeat and announcements."""

    def __init__(self, websocket: WebSocket, g: Gateway, user: SessionUser, bus: Any) -> None:
        self.ws, self.g, self.user, self.bus = websocket, g, user, bus
        self.web_session_id = user.session_id
        self.user_id = user.user_id
        # Unique per socket, so two tabs of one login are two live sessions for the services.
        self.session_id = f"{user.public_id}:{secrets.token_hex(8)}"
        self.buffer = PartBuffer(max_parts=g.settings.ws_buffer_max_parts)
        self._close: tuple[int, str] | None = None
        self._close_requested = asyncio.Event()

    def request_close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        self._close_requested.set()

    async def announce(self) -> None:
        """(Re)announce this socket's session: the services answer with full renders."""
        await self.bus.publish(wire.SESSION_OPENED, self.user.announcement(self.session_id))

    async def on_ui(self, _subject: str, message: dict[str, Any]) -> None:
        ts = message_ts_ms(message.get("ts"))
        if ts is not None:
            self.g.metrics.latency_received.observe(max(0.0, now_ms() - ts) / 1000)
        self.buffer.put(message)

    async def run(self) -> None:
        metrics = self.g.metrics
        self.g.hub.add(self)
        metrics.sockets.inc()
        sub = None
        try:
            sub = await self.bus.subscribe(wire.ui_user_wildcard(self.user_id), self.on_ui)
            await self.announce()
            tasks = [
                asyncio.create_task(self._receive()),
                asyncio.create_task(self._send()),
                asyncio.create_task(self._heartbeat()),
                asyncio.create_task(self._close_requested.wait()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(result, Exception):  # why a socket dropped, for operators
                        log.warning("socket %s task failed", self.session_id, exc_info=result)
            if self._close is not None:
                code, reason = self._close
                metrics.closed.labels(reason).inc()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT_S)
        finally:
            self.g.hub.remove(self)
            metrics.sockets.dec()
            with contextlib.suppress(Exception):
                if sub is not None:
                    await sub.unsubscribe()
            try:
                await self.bus.publish(wire.SESSION_CLOSED, self.user.announcement(self.session_id))
            except Exception:
                log.warning("could not publish session.closed for %s", self.session_id)

    async def _receive(self) -> None:
        # The page sends nothing; reading is how a close or a dropped peer is noticed.
        while (await self.ws.receive())["type"] != "websocket.disconnect":
            pass

    async def _send(self) -> None:
        metrics, timeout = self.g.metrics, self.g.settings.ws_send_timeout_s
        while True:
            await self.buffer.ready.wait()
            drained = self.buffer.drain()
            if drained.overflowed:
                metrics.overflows.inc()
                # Ask the services for full renders of everything instead of the lost parts.
                await self.announce()
            for frame in drained.frames:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                    # cancellation that ends this task if a send completes at that moment
                    async with asyncio.timeout(timeout):
                        await self.ws.send_text(frame)
                except TimeoutError:
                    self.request_close(CLOSE_TRY_AGAIN, "too slow")
                    return
            metrics.frames.inc(len(drained.frames))
            metrics.parts.inc(drained.parts)
            if drained.oldest_ts_ms is not None:
                latency = max(0.0, now_ms() - drained.oldest_ts_ms) / 1000
                metrics.latency_sent.observe(latency)

    async def _heartbeat(self) -> None:
        sessions = self.ws.app.state.sessions
        while True:
            await asyncio.sleep(self.g.settings.heartbeat_interval_s)
            try:
                valid = await load_session(sessions, self.web_session_id) is not None
            except Exception:
                log.warning("could not re-check session of socket %s", self.session_id)
                valid = True  # a database blip does not log everyone out
            if not valid:
                self.request_close(CLOSE_POLICY, "session ended")
                return
            with contextlib.suppress(Exception):
                await self.bus.publish(
                    wire.SESSION_HEARTBEAT, self.user.announcement(self.session_id)
                )


async def _authorise(websocket: WebSocket, g: Gateway) -> tuple[SessionUser | None, str]:
    """The user a handshake may be accepted for, or ``None`` and why not."""
    if not origin_allowed(websocket.headers, g.settings.allowed_origins):
        return None, "origin"
    session_id = g.cookie.session_id(websocket)
    if session_id is None:
        return None, "no_session"
    if not tokens_match(g.csrf_token(session_id), websocket.query_params.get("csrf")):
        return None, "csrf"
    user = await load_session(websocket.app.state.sessions, session_id)
    return (user, "ok") if user is not None else (None, "session_invalid")


@router.websocket("/ws")
async def browser_socket(websocket: WebSocket) -> None:
    g = gw(websocket)
    user, reason = await _authorise(websocket, g)
    if user is None:
        g.metrics.refused.labels(reason).inc()
        log.info("refused a WebSocket handshake: %s", reason)
        await websocket.close(code=CLOSE_POLICY)  # before accept: an HTTP 403
        return
    await websocket.accept()
    await Connection(websocket, g, user, websocket.app.state.bus).run()
