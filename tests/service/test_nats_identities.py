"""NATS with identities, against a real nats-server configured as ``make run`` configures it:
no credentials, no connection; a subject outside an identity's permissions is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared import devservers, natsauth, wire
from shared.bus import NatsBus
from shared.launcher import nats_identities
from shared.leases.stores import NatsLeaseStore
from tests.support import wait_until

pytestmark = pytest.mark.service


class Server:
    def __init__(self, tmp: Path) -> None:
        identities, config = nats_identities(tmp)
        self.passwords = {name: ids["NATS_PASSWORD"] for name, ids in identities.items()}
        self.nats = devservers.NatsServer(tmp / "nats", config=config).start()

    async def connect(self, who: str, password: str | None = None) -> tuple[NatsBus, list[str]]:
        """Connected as ``who``; the list collects the server's refusals (error callback)."""
        import nats

        refusals: list[str] = []

        async def on_error(exc: Exception) -> None:
            refusals.append(str(exc))

        bus = NatsBus(None)
        bus._nc = await nats.connect(
            self.nats.url,
            user=who,
            password=password if password is not None else self.passwords[who],
            error_cb=on_error,
            allow_reconnect=False,
        )
        return bus, refusals


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = Server(tmp_path)
    yield s
    s.nats.stop()


async def handshake(url: str, connect: dict[str, Any]) -> str:
    """The server's answer to a CONNECT (the NATS protocol, spoken by hand)."""
    host, port = url.removeprefix("nats://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO {...}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_client_without_credentials_or_with_wrong_ones_is_refused(server: Server) -> None:
    base = {"verbose": False, "pedantic": False, "protocol": 1}
    assert "Authorization Violation" in await handshake(server.nats.url, base)
    wrong = {**base, "user": "gateway", "pass": "guess"}
    assert "Authorization Violation" in await handshake(server.nats.url, wrong)
    right = {**base, "user": "gateway", "pass": server.passwords["gateway"]}
    assert await handshake(server.nats.url, right) == "PONG"


async def received(bus: NatsBus, subject: str) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    async def on_msg(subj: str, payload: dict[str, Any]) -> None:
        got.append((subj, payload))

    await bus.subscribe(subject, on_msg)
    await bus.flush()
    return got


async def test_each_identity_may_publish_only_its_own_subjects(server: Server) -> None:
    gateway, gateway_refused = await server.connect("gateway")
    portfolio, portfolio_refused = await server.connect("portfolio")
    pricefeed, _ = await server.connect("pricefeed")
    try:
        parts = await received(gateway, wire.UI_ALL)  # the gateway reads every ui.* part
        ticks = await received(portfolio, wire.PRICES_TICKS)
        sessions = await received(portfolio, wire.SESSION_ALL)
        paces = await received(portfolio, wire.GATEWAY_PACE)

        # a forged part from the gateway's identity (or anyone who stole it) goes nowhere
        await gateway.publish(wire.ui_subject(1, "portfolio"), {"n": "forged"})
        # a component service cannot fake ticks
        await portfolio.publish(wire.PRICES_TICKS, {"n": "fake tick"})
        # ...nor announce sessions; the allowed ones pass
        await portfolio.publish(wire.SESSION_OPENED, {"n": "fake session"})
        # ...nor slow the other services down as if it were a gateway
        await portfolio.publish(wire.GATEWAY_PACE, {"n": "fake pace"})
        await portfolio.publish(wire.ui_subject(1, "portfolio"), {"n": "part"})
        await pricefeed.publish(wire.PRICES_TICKS, {"n": "tick"})
        await gateway.publish(wire.SESSION_OPENED, {"n": "session"})
        await gateway.publish(wire.GATEWAY_PACE, {"n": "pace"})
        for bus in (gateway, portfolio, pricefeed):
            await bus.flush()

        def violations(refusals: list[str]) -> int:
            return sum("permissions violation" in r.lower() for r in refusals)

        # the server says it refused each forbidden publish, and delivers the allowed ones
        await wait_until(lambda: violations(gateway_refused) >= 1)
        await wait_until(lambda: violations(portfolio_refused) >= 3)
        await wait_until(lambda: parts and ticks and sessions and paces)
        assert [p["n"] for _s, p in parts] == ["part"]
        assert [p["n"] for _s, p in ticks] == ["tick"]
        assert [p["n"] for _s, p in sessions] == ["session"]
        assert [p["n"] for _s, p in paces] == ["pace"]
    finally:
        for bus in (gateway, portfolio, pricefeed):
            await bus.close()


async def test_the_gateway_cannot_read_what_it_has_no_business_with(server: Server) -> None:
    gateway, refused = await server.connect("gateway")
    try:
        await gateway.subscribe(wire.PRICES_TICKS, lambda _s, _p: asyncio.sleep(0))
        await gateway.flush()
        await wait_until(lambda: any("permissions violation" in r.lower() for r in refused))
    finally:
        await gateway.close()


async def test_each_service_uses_its_own_jetstream_and_nobody_elses(server: Server) -> None:
    """Its lease bucket (created, written, renewed, watched, released by the real store) and,
    for the orders service, the order events' stream; another's it may not delete or purge."""
    orders, _ = await server.connect("orders")
    portfolio, refused = await server.connect("portfolio")
    try:
        for bus, name in ((orders, "orders"), (portfolio, "portfolio")):
            store = await NatsLeaseStore.open(bus._nc, wire.lease_bucket(name), ttl=5)
            revision = await store.create("k", b"1")
            revision = await store.renew("k", b"2", revision)
            assert await store.keys(">") == ["k"]
            await store.release("k", revision)
        await orders.ensure_stream(wire.ORDER_EVENTS_STREAM, [wire.ORDERS_EVENTS_ALL], 3600.0)
        await orders.publish_durable(wire.orders_events(1), {"n": 1}, "outbox-1")

        js = portfolio._nc.jetstream(timeout=0.5)
        attacks = (
            lambda: js.delete_key_value(wire.lease_bucket("orders")),
            lambda: js.purge_stream(wire.ORDER_EVENTS_STREAM),
            lambda: js.delete_stream(wire.ORDER_EVENTS_STREAM),
        )
        for attack in attacks:
            with pytest.raises(Exception):  # noqa: B017 (the server drops it: no answer)
                await attack()
        await wait_until(lambda: any("permissions violation" in r.lower() for r in refused))
        own = orders._nc.jetstream(timeout=2.0)
        assert (await own.stream_info(wire.ORDER_EVENTS_STREAM)).state.messages == 1
        await own.key_value(wire.lease_bucket("orders"))  # still there
    finally:
        for bus in (orders, portfolio):
            await bus.close()


def test_every_process_of_make_run_has_an_identity_and_a_password_of_its_own(
    tmp_path: Path,
) -> None:
    identities, config = nats_identities(tmp_path)
    passwords = [ids["NATS_PASSWORD"] for ids in identities.values()]
    assert set(identities) == set(natsauth.IDENTITIES)
    assert len(set(passwords)) == len(passwords) and all(len(p) >= 32 for p in passwords)
    assert (tmp_path / "nats-users.json").stat().st_mode & 0o077 == 0
    assert config.stat().st_mode & 0o077 == 0
    again, _ = nats_identities(tmp_path)  # kept: a restart keeps its identities
    assert again == identities
