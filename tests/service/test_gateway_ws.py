"""/ws against a real uvicorn and NATS: handshake checks, announcements, OOB frames, isolation."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.responses import Response
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.csrf import session_token
from gateway.sessions import SessionCookie
from gateway.settings import GatewaySettings
from shared import wire
from shared.bus import NatsBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import User, WebSession
from shared.devservers import free_port
from shared.identity import Identity
from tests.service.gateway_support import (
    Browser,
    browser,
    gateway,
    of,
    opened,
    part,
    send_ui,
    unserved_settings,
)
from tests.support import wait_until

pytestmark = pytest.mark.service


@pytest.fixture
def settings(service_env: None) -> GatewaySettings:
    return unserved_settings()


@asynccontextmanager
async def alice_and_bob(
    settings: GatewaySettings, events: list[tuple[str, dict[str, Any]]]
) -> AsyncIterator[tuple[Browser, Any, Any]]:
    """A gateway, alice and bob logged in with a socket each, both sessions announced;
    yields alice's browser, her socket and bob's socket."""
    async with (
        gateway(settings) as served,
        browser(served, "alice") as a,
        browser(served, "bob") as b,
        a.socket() as alice_ws,
        b.socket() as bob_ws,
    ):
        await wait_until(lambda: len(of(events, wire.SESSION_OPENED)) == 2)
        yield a, alice_ws, bob_ws


_STATUS = re.compile(
    r'<span id="feed-status"[^>]*>[^<]*</span>\n?|<p id="freshness-[^"]*"[^>]*>[^<]*</p>\n?'
)


async def recv(ws: Any, timeout: float) -> str:  # noqa: ASYNC109
    """The next frame's service parts, skipping the gateway's own freshness status."""
    async with asyncio.timeout(timeout):
        while True:
            frame = _STATUS.sub("", str(await ws.recv())).strip()
            if frame:
                return frame


async def test_handshakes_without_origin_cookie_or_csrf_are_refused(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    events = await opened(bus)
    async with gateway(settings) as served, browser(served, "alice") as b:
        refusals: list[dict[str, Any]] = [
            {"origin": "http://evil.example"},
            {"origin": None},
            {"csrf": None},
            {"csrf": "0" * 64},
        ]
        for options in refusals:
            with pytest.raises(InvalidStatus) as refused:
                async with b.socket(**options):
                    pass
            assert refused.value.response.status_code == 403, options
        b.client.cookies.clear()
        with pytest.raises(InvalidStatus):
            async with b.socket():
                pass
    assert of(events, wire.SESSION_OPENED) == []


async def test_sockets_and_tabs_add_no_nats_subscription_to_the_gateway(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    events = await opened(bus)
    async with gateway(settings) as served:
        nc = served.server.config.app.state.bus._nc  # the gateway's one NATS connection
        before = len(nc._subs)
        assert [s.subject for s in nc._subs.values()].count(wire.UI_ALL) == 1
        async with (
            browser(served, "alice") as a,
            browser(served, "bob") as b,
            a.socket(),
            a.socket(),
            b.socket(),
        ):
            await wait_until(lambda: len(of(events, wire.SESSION_OPENED)) == 3)
            assert len(nc._subs) == before  # one ui.> subscription, fanned out in process


async def test_each_socket_is_its_own_announced_session(
    settings: GatewaySettings, bus: NatsBus, alice: Identity
) -> None:
    settings = settings.model_copy(update={"heartbeat_interval_s": 0.2})
    events = await opened(bus)
    async with gateway(settings) as served, browser(served, "alice") as b:
        async with b.socket() as tab1, b.socket() as tab2:
            await wait_until(lambda: len(of(events, wire.SESSION_OPENED)) == 2)
            first, second = of(events, wire.SESSION_OPENED)
            assert first["session_id"] != second["session_id"]
            assert first["session_id"].split(":")[0] == second["session_id"].split(":")[0]
            assert {k: v for k, v in first.items() if k != "session_id"} == {
                "user_id": alice.user_id,
                "account_id": alice.account_id,
                "username": "alice",
                "permissions": ["trade"],
            }
            # one batched heartbeat per interval names both sockets
            await wait_until(lambda: len(of(events, wire.SESSION_HEARTBEAT)) >= 2)
            beat = of(events, wire.SESSION_HEARTBEAT)[-1]
            beating = {a["session_id"] for a in beat["sessions"]}
            assert beating == {first["session_id"], second["session_id"]}
            await tab1.close()
            await wait_until(lambda: of(events, wire.SESSION_CLOSED))
            [closed] = of(events, wire.SESSION_CLOSED)
            assert closed["session_id"] in (first["session_id"], second["session_id"])
            assert tab2.state.name == "OPEN"


async def test_parts_arrive_as_oob_swaps_and_only_to_their_user(
    settings: GatewaySettings, bus: NatsBus, alice: Identity, bob: Identity
) -> None:
    events = await opened(bus)
    async with alice_and_bob(settings, events) as (a, alice_ws, bob_ws):
        await send_ui(bus, alice.user_id, "watchlist", part("watchlist-row-AAPL", "1"))
        frame = await recv(alice_ws, 3)
        assert frame == '<div hx-swap-oob="true" id="watchlist-row-AAPL" role="row">1</div>'

        # One of each component, published back to back: every part lands.
        ids = {
            "portfolio": "portfolio-row-MSFT",
            "watchlist": "watchlist-row-MSFT",
            "order": "order-status",
            "risk_metrics": "risk-gauge",
        }
        for component, part_id in ids.items():
            await send_ui(bus, alice.user_id, component, part(part_id, "x"))
        seen = ""
        while not all(f'id="{i}"' in seen for i in ids.values()):
            seen += await recv(alice_ws, 3)
        assert seen.count('hx-swap-oob="true"') == 4

        await send_ui(bus, bob.user_id, "portfolio", part("portfolio-row-KO", "b"))
        # none of alice's parts reached bob, nor bob's alice: each socket's frames up to a
        # later marker of its own (the gateway forwards ui.* in order) hold only its own
        for who, ws, others in (
            (bob, bob_ws, set(ids.values())),
            (alice, alice_ws, {"portfolio-row-KO"}),
        ):
            await send_ui(bus, who.user_id, "portfolio", part("portfolio-marker", "end"))
            seen = ""
            while "portfolio-marker" not in seen:
                seen += await recv(ws, 10)
            assert not any(f'id="{i}"' in seen for i in others), seen
        metrics = (await a.client.get("/metrics")).text
        assert 'gateway_ui_latency_seconds_count{stage="sent"}' in metrics


async def _web_session_of(database_url: str, username: str) -> str:
    engine = create_engine(database_url, null_pool=True)
    try:
        async with session_factory(engine)() as s:
            sid = await s.scalar(
                select(WebSession.id)
                .join(User, User.id == WebSession.user_id)
                .where(User.username == username, WebSession.revoked_at.is_(None))
            )
            assert sid is not None
            return sid
    finally:
        await engine.dispose()


async def test_logout_closes_that_sessions_sockets(settings: GatewaySettings, bus: NatsBus) -> None:
    events = await opened(bus)
    async with alice_and_bob(settings, events) as (a, alice_ws, bob_ws):
        r = await a.client.post("/logout", data={"csrf_token": a.csrf})
        assert r.status_code == 303
        with pytest.raises(ConnectionClosed):
            await recv(alice_ws, 10)
        assert alice_ws.close_code == 1008
        await wait_until(lambda: of(events, wire.SESSION_CLOSED))
        assert bob_ws.state.name == "OPEN"  # another user's socket stays


async def test_sessions_ended_elsewhere_close_their_sockets(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    settings = settings.model_copy(update={"heartbeat_interval_s": 0.3})
    events = await opened(bus)
    async with alice_and_bob(settings, events) as (_, alice_ws, bob_ws):
        # Another gateway replica logged alice out: it announces the revocation.
        sid = await _web_session_of(settings.database_url, "alice")
        await bus.publish(wire.GATEWAY_SESSION_REVOKED, {"web_session_id": sid})
        with pytest.raises(ConnectionClosed):
            await recv(alice_ws, 3)
        # Bob's session expires or is revoked in the database: the next heartbeat notices.
        engine = create_engine(settings.database_url, null_pool=True)
        async with session_factory(engine)() as s, s.begin():
            await s.execute(update(WebSession).values(revoked_at=WebSession.created_at))
        await engine.dispose()
        with pytest.raises(ConnectionClosed):
            await recv(bob_ws, 3)
        assert bob_ws.close_code == 1008


async def test_the_heartbeat_keeps_the_sessions_of_open_sockets_believed(
    settings: GatewaySettings,
) -> None:
    # a trader's orders then never look the session up: the heartbeat found it valid
    settings = settings.model_copy(update={"heartbeat_interval_s": 0.3, "session_cache_s": 0.5})
    async with gateway(settings) as served, browser(served, "alice") as a:
        ws = await a.socket()
        sessions = served.server.config.app.state.gw.sessions
        sid = await _web_session_of(settings.database_url, "alice")
        await asyncio.sleep(1.5)  # three lifetimes of an entry: only the heartbeat renews it
        assert sessions.get(sid).can_trade
        engine = create_engine(settings.database_url, null_pool=True)
        async with session_factory(engine)() as s, s.begin():  # a permission taken away
            await s.execute(update(User).where(User.username == "alice").values(can_trade=False))
        # the heartbeat reads the user afresh: the cache does not keep the old identity,
        # and the socket, announced with it, is closed to reconnect (1012) with the new one
        await wait_until(lambda: not sessions.get(sid).can_trade, 3)
        with pytest.raises(ConnectionClosed):
            await recv(ws, 3)
        assert ws.close_code == 1012
        ws = await a.socket()  # as the page does: the new identity, kept
        await asyncio.sleep(0.9)
        assert ws.state.name == "OPEN"
        async with session_factory(engine)() as s, s.begin():
            await s.execute(update(WebSession).values(revoked_at=WebSession.created_at))
        await engine.dispose()
        await wait_until(lambda: sessions.get(sid) is None, 3)  # the next one drops it
        with pytest.raises(ConnectionClosed):
            await recv(ws, 3)
        assert ws.close_code == 1008


def _tiny_receive_window(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_a_stalled_socket_does_not_delay_another(
    settings: GatewaySettings, bus: NatsBus, alice: Identity
) -> None:
    settings = settings.model_copy(update={"ws_send_timeout_s": 4.0})
    events = await opened(bus)
    async with gateway(settings) as served, browser(served, "alice") as a:
        stalled: ClientConnection
        async with (
            a.socket(
                max_queue=1, close_timeout=0.5, sock=_tiny_receive_window(served.port)
            ) as stalled,
            a.socket() as healthy,
        ):
            await wait_until(lambda: len(of(events, wire.SESSION_OPENED)) == 2)
            received: list[str] = []

            async def read() -> None:
                while True:
                    received.append(await healthy.recv())

            reader = asyncio.create_task(read())
            for i in range(120):  # 12 MB: far more than the stalled peer's buffers hold
                blob = os.urandom(50_000).hex()
                await send_ui(
                    bus, alice.user_id, "watchlist", part(f"watchlist-row-{i % 30}", blob)
                )
            await send_ui(bus, alice.user_id, "watchlist", part("watchlist-marker", "done"))
            await wait_until(lambda: any("watchlist-marker" in f for f in received), timeout=20)
            reader.cancel()
            # the healthy socket did not wait for the stalled one: when its marker arrived,
            # the stalled socket's send had not yet waited ws_send_timeout_s
            too_slow = 'gateway_ws_closed_total{reason="too slow"} 1.0'
            assert too_slow not in (await a.client.get("/metrics")).text

            # The stalled socket is closed once a send has waited ws_send_timeout_s. Frames
            # are conflated (newest part per id), so keep new bytes coming until the
            # kernel's buffers are full and a send has to wait.
            async def closed_as_slow() -> bool:
                for i in range(4):
                    more = part(f"watchlist-more-{i}", os.urandom(50_000).hex())
                    await send_ui(bus, alice.user_id, "watchlist", more)
                text = (await a.client.get("/metrics")).text
                return too_slow in text

            await wait_until(closed_as_slow, timeout=10)
            assert healthy.state.name == "OPEN"
            del stalled


async def test_shared_parts_reach_the_tabs_whose_page_shows_their_topic(
    settings: GatewaySettings, bus: NatsBus, alice: Identity, bob: Identity
) -> None:
    events = await opened(bus)
    async with alice_and_bob(settings, events) as (_a, alice_ws, bob_ws):
        tabs = of(events, wire.SESSION_OPENED)
        alice_tab = next(t["session_id"] for t in tabs if t["user_id"] == alice.user_id)
        # each page's full render names the quotes it shows; one goes to alice's tab only
        root = part("watchlist-root", "")
        await send_ui(bus, alice.user_id, "watchlist", root, full=True, session=alice_tab,
                      topics=["AAPL", "KO"])  # fmt: skip
        await send_ui(bus, bob.user_id, "watchlist", root, full=True, topics=["KO"])
        assert "watchlist-root" in await recv(alice_ws, 3)
        assert "watchlist-root" in await recv(bob_ws, 3)
        quotes = {
            "AAPL": [part("watchlist-quote-AAPL", "190")],
            "KO": [part("watchlist-quote-KO", "60")],
        }
        message = {"component": "watchlist", "ts": time.time() * 1000, "topics": quotes}
        await bus.publish(wire.ui_shared_subject("watchlist"), message)
        seen = ""
        while "watchlist-quote-KO" not in seen or "watchlist-quote-AAPL" not in seen:
            seen += await recv(alice_ws, 3)
        to_bob = await recv(bob_ws, 3)
        assert "watchlist-quote-KO" in to_bob and "AAPL" not in to_bob


async def test_a_handshake_while_the_database_is_away_is_a_503_to_retry_not_a_500(
    settings: GatewaySettings,
) -> None:
    away = settings.model_copy(
        update={
            "database_url": f"postgresql://away@127.0.0.1:{free_port()}/x",
            "session_cache_s": 0,
        }
    )
    secret = away.session_secret.get_secret_value()
    signed = Response()  # a valid cookie for a session the gateway has not seen yet
    SessionCookie(secret, away.session_max_age_s).set(signed, "s-unseen", secure=False)
    cookie = signed.headers["set-cookie"].split(";")[0]
    async with gateway(away) as served:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"{served.ws_url}/ws?csrf={session_token(secret, 's-unseen')}",
                origin=served.url,  # type: ignore[arg-type]
                additional_headers={"Cookie": cookie},
            ):
                pass
    response = refused.value.response
    assert response.status_code == 503, response
    assert response.headers["Retry-After"] == "2"
    assert b"retry" in response.body
