"""``/ws``: the browser's one WebSocket (DESIGN.md §3.3).

The handshake is refused (HTTP 403, before any data) unless the Origin is allowed, the session
cookie is valid and the ``csrf`` query parameter is the session's CSRF token. An accepted socket
joins the gateway's :class:`~gateway.fanout.Fanout` (one ``ui.>`` subscription for the whole
process), announces itself when :mod:`gateway.admission` lets it (``session.opened``; a
window of sockets waits for full renders at once; :func:`heartbeat_forever` re-checks every
socket's session and sends one batched ``session.heartbeat`` per interval; ``session.closed``),
and forwards parts as out-of-band swaps through its :class:`~gateway.buffer.PartBuffer`.

The fan-out only writes into the buffer, so a slow socket never delays another; one sender
task per socket drains it, at most one frame per ``ws_frame_interval_ms`` with the newest
version of each element, and a send that has not finished after ``ws_send_timeout_s``
(checked every second) closes the socket (1013: the browser reconnects and gets full
renders). Dead peers are found by the server's protocol pings: run uvicorn with
``--ws-ping-interval``/``--ws-ping-timeout`` (defaults 20 s / 20 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any

import httpx
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

from gateway.buffer import PartBuffer, now_ms
from gateway.csrf import tokens_match
from gateway.freshness import FEED_STATUS_ID, KEEPALIVE_S
from gateway.hub import CLOSE_POLICY, CLOSE_RESTART, CLOSE_TRY_AGAIN
from gateway.security import origin_allowed
from gateway.sessions import SessionUser, valid_sessions
from gateway.state import Gateway, gw
from shared import wire
from shared.db.engine import database_busy, database_unavailable

__all__ = [
    "Connection",
    "heartbeat_forever",
    "heartbeat_once",
    "reannounce",
    "router",
    "services_forever",
    "status_forever",
]

log = logging.getLogger(__name__)
router = APIRouter()
CLOSE_TIMEOUT_S = 2.0
HEARTBEAT_BATCH = 500
STATUS = "gateway"  # the buffer's name for the gateway's own parts


class Connection:
    """One accepted browser socket: its buffer, sender, heartbeat and announcements."""

    def __init__(self, websocket: WebSocket, g: Gateway, user: SessionUser, bus: Any) -> None:
        self.ws, self.g, self.user, self.bus = websocket, g, user, bus
        self.web_session_id = user.session_id
        self.user_id = user.user_id
        # Unique per socket, so two tabs of one login are two live sessions for the services.
        self.session_id = f"{user.public_id}:{secrets.token_hex(8)}"
        self.buffer = PartBuffer(
            max_parts=g.settings.ws_buffer_max_parts, gather_s=g.settings.ws_gather_ms / 1000
        )
        self.announced = False  # the services have heard of this socket's session
        self.rendered = False  # its first full renders are in (or will not come)
        self.last_sent = 0.0  # loop time of the last frame
        self.sending_since: float | None = None  # loop time the unfinished send began
        self._close: tuple[int, str] | None = None
        self._close_requested = asyncio.Event()

    def request_close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        self._close_requested.set()

    def announce(self, components: Iterable[str] = wire.COMPONENTS) -> None:
        """(Re)announce this socket's session when the window allows: the services answer
        with full renders (:mod:`gateway.admission`)."""
        self.g.admissions.ask(self, components)

    def admitted(self) -> None:
        """Its full renders are in: the page's freshness, from now on as every page's."""
        self.rendered = True
        self.show_status(self.g.freshness.parts())

    async def run(self) -> None:
        metrics = self.g.metrics
        self.g.hub.add(self)
        self.g.fanout.add(self)
        metrics.sockets.inc()
        try:
            # a reconnecting tab keeps its page, "prices live" included: not until its
            # full renders are in
            self.show_status([(FEED_STATUS_ID, self.g.freshness.waiting())])
            self.announce()
            tasks = [
                asyncio.create_task(self._receive()),
                asyncio.create_task(self._send()),
                asyncio.create_task(self._close_requested.wait()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(result, WebSocketDisconnect | OSError):  # the peer left
                        log.debug("socket %s: peer gone (%s)", self.session_id, result)
                    elif isinstance(result, Exception):  # why a socket dropped, for operators
                        log.warning("socket %s task failed", self.session_id, exc_info=result)
            if self._close is not None:
                code, reason = self._close
                metrics.closed.labels(reason).inc()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT_S)
        finally:
            self.g.hub.remove(self)
            self.g.fanout.remove(self)
            self.g.admissions.forget(self.session_id)
            metrics.sockets.dec()
            if self.announced:
                try:
                    await self.bus.publish(
                        wire.SESSION_CLOSED, self.user.announcement(self.session_id)
                    )
                except Exception:
                    log.warning("could not publish session.closed for %s", self.session_id)

    def show_status(self, parts: list[tuple[str, str]]) -> None:
        """Send the page's ``#feed-status`` and panel freshness with the next frame."""
        self.buffer.put_prepared(STATUS, parts, None)

    async def _receive(self) -> None:
        # The page sends nothing; reading is how a close or a dropped peer is noticed.
        while (await self.ws.receive())["type"] != "websocket.disconnect":
            pass

    async def _send(self) -> None:
        metrics, buffer, pace = self.g.metrics, self.buffer, self.g.pace
        loop = asyncio.get_running_loop()
        last_sent = -pace.slow_interval_s
        while True:
            # released by the fan-out once a tick is complete, or soon after urgent parts
            await buffer.go.wait()
            spacing = last_sent + pace.frame_s - loop.time()
            if spacing > 0:
                await asyncio.sleep(spacing)
            last_sent = self.last_sent = loop.time()
            drained = self.buffer.drain()
            if drained.overflowed:
                metrics.overflows.inc()
                # Ask the services for full renders of everything instead of the lost parts.
                self.announce()
            for frame in drained.frames:
                # no timer per send: status_forever closes a socket whose send waits too long
                self.sending_since = loop.time()
                await self.ws.send_text(frame)
                self.sending_since = None
            metrics.frames.inc(len(drained.frames))
            metrics.parts.inc(drained.parts)
            if drained.oldest_ts_ms is not None:
                latency = max(0.0, now_ms() - drained.oldest_ts_ms) / 1000
                metrics.latency_sent.observe(latency)


async def heartbeat_forever(g: Gateway, sessions: Any, bus: Any) -> None:
    """Every ``heartbeat_interval_s``: re-check the web sessions of all sockets in one query,
    close those whose session ended, and announce the rest in batched heartbeats."""
    while True:
        await asyncio.sleep(g.settings.heartbeat_interval_s)
        try:
            await heartbeat_once(g, sessions, bus)
        except Exception:
            log.exception("socket heartbeat failed")


async def status_forever(g: Gateway) -> None:
    """Every second: the page's freshness to every socket when it changed, and to each
    socket that got no frame for ``KEEPALIVE_S`` (a keep-alive a quiet page can count on);
    and close (1013) each socket whose send has waited ``ws_send_timeout_s`` (a peer that
    stopped reading: its TCP window and the transport's buffer are full)."""
    sent = ""
    while True:
        await asyncio.sleep(1.0)
        try:
            sent = _status_once(g, sent)
        except Exception:  # one bad value must not end every socket's keep-alives
            log.exception("socket status round failed")


def _status_once(g: Gateway, sent: str) -> str:
    """One round of :func:`status_forever`; the freshness element now sent."""
    loop = asyncio.get_running_loop()
    parts = g.freshness.parts()
    element = "".join(html for _id, html in parts)
    changed, sent = element != sent, element
    now = loop.time()
    quiet_before, stuck_before = now - KEEPALIVE_S, now - g.settings.ws_send_timeout_s
    waiting = [(FEED_STATUS_ID, g.freshness.waiting())]
    for conn in g.hub.connections():
        if not isinstance(conn, Connection):
            continue
        if conn.sending_since is not None and conn.sending_since < stuck_before:
            conn.request_close(CLOSE_TRY_AGAIN, "too slow")
        elif not conn.rendered:
            if conn.last_sent < quiet_before:  # its renders are not in: not "live" yet
                conn.show_status(waiting)
        elif changed or conn.last_sent < quiet_before:
            conn.show_status(parts if changed else parts[:1])  # keep-alive: the header
    return sent


SERVICE_CHECK_S = 2.0


async def services_forever(g: Gateway) -> None:
    """Every ``SERVICE_CHECK_S``: is each component's service answering (``/healthz``)?
    A panel whose service does not answer says so, whether or not it follows ticks."""
    g.freshness.watched = set(wire.COMPONENTS)
    while True:
        try:
            results = await asyncio.gather(*(_answers(g, c) for c in wire.COMPONENTS))
            g.freshness.unreachable = {
                c for c, ok in zip(wire.COMPONENTS, results, strict=True) if not ok
            }
        except Exception:  # the check must go on: "unreachable" would be frozen
            log.exception("service health round failed")
        await asyncio.sleep(SERVICE_CHECK_S)


async def _answers(g: Gateway, component: str) -> bool:
    base = g.service_url(component)
    if base is None or g.http is None:
        return True
    try:
        r = await g.http.get(f"{base.rstrip('/')}/healthz", timeout=SERVICE_CHECK_S)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


async def heartbeat_once(g: Gateway, sessions: Any, bus: Any) -> None:
    conns = [c for c in g.hub.connections() if isinstance(c, Connection)]
    if not conns:
        return
    drops = g.sessions.drops  # a session dropped during the query is not cached again
    try:
        valid = await valid_sessions(sessions, {c.web_session_id for c in conns})
    except Exception:
        log.warning("could not re-check the sockets' sessions")
        valid = None  # a database blip does not log everyone out
    alive = []
    still_open = set(g.hub.connections())  # a socket closed during the query said goodbye:
    for conn in conns:  # announcing it now would bring its session back to life
        if conn not in still_open:
            continue
        if valid is not None and conn.web_session_id not in valid:
            g.sessions.drop(conn.web_session_id)
            conn.request_close(CLOSE_POLICY, "session ended")
        else:
            if valid is not None:  # read just now: its requests need not ask again
                fresh, expires_at = valid[conn.web_session_id]
                g.sessions.put(fresh, expires_at, drops=drops)
                if fresh.identity != conn.user.identity:
                    # a permission or the account changed: the services' live instances
                    # were mounted for the old one; the page reconnects and is mounted anew
                    conn.request_close(CLOSE_RESTART, "identity changed")
                    continue
            if conn.announced:  # else the services would mount it out of its turn
                entry = conn.user.announcement(conn.session_id)
                waiting = g.admissions.waiting_for(conn.session_id)
                if waiting:  # queued again (a takeover, a reconnect, a gap): not mounted
                    entry["waiting"] = sorted(waiting)  # by these services from this beat
                alive.append(entry)
    for start in range(0, len(alive), HEARTBEAT_BATCH):
        batch = {"sessions": alive[start : start + HEARTBEAT_BATCH]}
        with contextlib.suppress(Exception):
            await bus.publish(wire.SESSION_HEARTBEAT, batch)


def reannounce(g: Gateway, components: Iterable[str], partitions: Iterable[int]) -> int:
    """Announce again the sockets of users in ``partitions`` (a replica took them over,
    or their updates had a gap): their owners answer with full renders of
    ``components``, a window at a time (:mod:`gateway.admission`). How many sockets."""
    wanted, names = set(partitions), sorted(set(components))
    conns = [
        c
        for c in g.hub.connections()
        if isinstance(c, Connection) and wire.partition_of(c.user_id) in wanted
    ]
    for conn in conns:
        conn.announce(names)
    return len(conns)


async def _authorise(websocket: WebSocket, g: Gateway) -> tuple[SessionUser | None, str]:
    """The user a handshake may be accepted for, or ``None`` and why not."""
    if not origin_allowed(websocket.headers, g.settings.allowed_origins):
        return None, "origin"
    session_id = g.cookie.session_id(websocket)
    if session_id is None:
        return None, "no_session"
    if not tokens_match(g.csrf_token(session_id), websocket.query_params.get("csrf")):
        return None, "csrf"
    user = await g.lookups.user(websocket.app.state.db, session_id)
    return (user, "ok") if user is not None else (None, "session_invalid")


@router.websocket("/ws")
async def browser_socket(websocket: WebSocket) -> None:
    g = gw(websocket)
    try:
        user, reason = await _authorise(websocket, g)
    except Exception as exc:  # the session lookup: PostgreSQL away, or every connection busy
        if not (database_unavailable(exc) or database_busy(exc)):
            raise
        g.metrics.refused.labels("database").inc()
        log.warning("WebSocket handshake: the session could not be looked up: %r", exc)
        await websocket.send_denial_response(
            PlainTextResponse(
                "The server cannot check this session for a moment; the page will retry.",
                status_code=503,
                headers={wire.HEADER_RETRY_AFTER: "2"},
            )
        )
        return
    if user is None:
        g.metrics.refused.labels(reason).inc()
        log.info("refused a WebSocket handshake: %s", reason)
        await websocket.close(code=CLOSE_POLICY)  # before accept: an HTTP 403
        return
    await websocket.accept()
    await Connection(websocket, g, user, websocket.app.state.bus).run()
