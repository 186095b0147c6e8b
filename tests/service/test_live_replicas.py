"""Component services as N replicas: one producer per user, takeover, fencing, events.

Each replica is its own OS process (uvicorn, as in ``make run`` and in a pod), against one
nats-server and one database; killing one is a SIGKILL. The test plays the gateway's
part of the protocol: it announces sessions and answers ``gateway.resync`` with
``session.announce`` for the partitions a replica took over. The gateway's own fence (a
real :class:`~gateway.fanout.Fanout`) checks that a deposed owner's late message is
dropped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.buffer import PartBuffer
from gateway.fanout import Fanout
from gateway.metrics import GatewayMetrics
from shared import wire
from shared.bus import NatsBus
from shared.identity import Identity
from shared.leases import rendezvous_owner
from tests.service.processes_support import Uvicorn, sample, start_uvicorn, wait_ready
from tests.support import identity_headers, identity_of, session_payload, wait_until

pytestmark = pytest.mark.service

LEASE_TTL_S = "2"
TAKEOVER_BOUND_S = 10.0
FACTORIES = {
    "portfolio": "services.portfolio.app:create_app",
    "watchlist": "services.watchlist.app:create_app",
}


class Replica(Uvicorn):
    def metric(self, name: str) -> float:
        return sample(httpx.get(f"{self.url}/metrics", timeout=2).text, name, self.name)


@contextmanager
def replicas(service: str, count: int, database_url: str, nats_url: str) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "LEASE_TTL_S": LEASE_TTL_S,
        "LOG_LEVEL": "WARNING",
    }
    try:
        for i in range(1, count + 1):
            name = f"{service}-{i}-{os.getpid()}"
            port, process = start_uvicorn(FACTORIES[service], {**env, "REPLICA_ID": name})
            started.append(Replica(name, port, process))
        for replica in started:
            wait_ready(replica.port, process=replica.process)
        yield started
    finally:
        for replica in started:
            replica.stop()


def settled(group: list[Replica]) -> bool:
    """Every partition owned, each by the replica rendezvous hashing gives it to."""
    owned = [r.metric("component_live_partitions") for r in group if r.process.poll() is None]
    alive = [r.name for r in group if r.process.poll() is None]
    expected = [
        sum(1 for p in range(wire.LIVE_PARTITIONS) if rendezvous_owner(p, alive) == name)
        for name in alive
    ]
    return owned == expected


def owner_of(user_id: int, group: list[Replica]) -> Replica:
    alive = [r.name for r in group if r.process.poll() is None]
    name = rendezvous_owner(wire.partition_of(user_id), alive)
    return next(r for r in group if r.name == name)


@dataclass(eq=False)
class Socket:
    user_id: int
    session_id: str
    buffer: PartBuffer = field(default_factory=PartBuffer)


@dataclass
class FakeGateway:
    """The gateway's side of the live protocol, with a real fan-out and fence."""

    bus: NatsBus
    sessions: dict[str, Identity] = field(default_factory=dict)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    metrics: GatewayMetrics = field(default_factory=lambda: GatewayMetrics(CollectorRegistry()))
    fanout: Fanout = field(init=False)

    def __post_init__(self) -> None:
        self.fanout = Fanout(self.metrics)

    async def start(self) -> None:
        async def on_ui(subject: str, message: dict[str, Any]) -> None:
            self.messages.append((subject, message))
            await self.fanout.on_ui(subject, message)

        async def on_resync(_subject: str, request: dict[str, Any]) -> None:
            wanted = set(request["partitions"])
            announced = [
                session_payload(who)
                for who in self.sessions.values()
                if wire.partition_of(who.user_id) in wanted
            ]
            if announced:
                payload = {"components": request["components"], "sessions": announced}
                await self.bus.publish(wire.SESSION_ANNOUNCE, payload)

        await self.bus.subscribe(wire.UI_ALL, on_ui)
        await self.bus.subscribe(wire.GATEWAY_RESYNC, on_resync)
        await self.bus.flush()

    async def open(self, who: Identity) -> Socket:
        self.sessions[who.session_id] = who
        socket = Socket(who.user_id, who.session_id)
        self.fanout.add(socket)
        await self.bus.publish(wire.SESSION_OPENED, session_payload(who))
        return socket

    def done_with(self, seq: int, replicas: int, component: str = "portfolio") -> bool:
        """Whether ``replicas`` producers have said they are done with tick ``seq``."""
        return (
            len(
                {
                    message["src"]
                    for subject, message in self.messages
                    if subject == wire.ui_shared_subject(component) and message.get("tick") == seq
                }
            )
            >= replicas
        )

    def updates(self, user_id: int, *, since: int = 0) -> list[tuple[dict[str, Any], dict]]:
        """(message, update) for ``user_id`` in messages from index ``since`` on."""
        found = []
        for _subject, message in self.messages[since:]:
            for update in message.get("updates") or ():
                if update.get("user") == user_id:
                    found.append((message, update))
        return found


@asynccontextmanager
async def gateway(bus: NatsBus) -> AsyncIterator[FakeGateway]:
    fake = FakeGateway(bus)
    await fake.start()
    yield fake


def tick(seq: int, move: Decimal) -> dict[str, Any]:
    base = {"AAPL": "190", "MSFT": "410", "TSLA": "250", "KO": "60", "WMT": "80"}
    quotes = {t: Decimal(p) + move for t, p in base.items()}
    return {
        "seq": seq,
        "ts": time.time() * 1000,
        "prices": {
            t: {"last": str(p), "bid": str(p - Decimal("0.01")), "ask": str(p), "chg_pct": "0"}
            for t, p in quotes.items()
        },
    }


async def users(database_url: str) -> list[Identity]:
    names = ("alice", "bob", "viewer")  # every demo user holds one of the ticked symbols
    return [await identity_of(database_url, name, f"{name}-tab") for name in names]


@pytest.mark.parametrize("count", [2, 3])
async def test_each_users_updates_come_from_exactly_one_replica(
    count: int, demo_database_url: str, nats_url: str, bus: NatsBus
) -> None:
    people = await users(demo_database_url)
    with replicas("portfolio", count, demo_database_url, nats_url) as group:
        await wait_until(lambda: settled(group), timeout=15)
        async with gateway(bus) as gw:
            for who in people:
                await gw.open(who)
            await wait_until(lambda: all(gw.updates(w.user_id) for w in people), timeout=10)
            start = len(gw.messages)
            for seq in range(1, 16):  # one at a time: each replica done before the next
                await bus.publish(wire.PRICES_TICKS, tick(seq, Decimal(seq) / 10))
                await wait_until(partial(gw.done_with, seq, count), timeout=10)
            await wait_until(lambda: all(len(gw.updates(w.user_id, since=start)) >= 10
                                         for w in people), timeout=10)  # fmt: skip
            instances = [r.metric("component_live_instances") for r in group]
    for who in people:
        producers = {m["src"] for m, _u in gw.updates(who.user_id)}
        assert len(producers) == 1, (who.username, producers)
    # shared parts: a replica publishes only the topics its own users' pages show, and
    # every replica says when it is done with a tick
    shown: dict[str, set[str]] = {}
    for who in people:
        for message, update in gw.updates(who.user_id):
            if update.get("full"):
                shown.setdefault(message["src"], set()).update(update.get("topics", ()))
    markers: dict[str, int] = {}
    published = 0
    for subject, message in gw.messages[start:]:
        if subject == wire.ui_shared_subject("portfolio"):
            assert set(message["topics"]) <= shown.get(message["src"], set()), message["topics"]
            published += len(message["topics"])
            markers[message["src"]] = markers.get(message["src"], 0) + 1
    assert published and len(markers) == count
    # one live instance per user, summed over the replicas
    assert sum(instances) == len(people)


async def test_a_killed_owners_users_are_taken_over_and_its_late_messages_dropped(
    demo_database_url: str, nats_url: str, bus: NatsBus
) -> None:
    alice, bob, _viewer = await users(demo_database_url)
    with replicas("portfolio", 2, demo_database_url, nats_url) as group:
        await wait_until(lambda: settled(group), timeout=15)
        async with gateway(bus) as gw:
            socket = await gw.open(alice)
            await gw.open(bob)
            await wait_until(lambda: gw.updates(alice.user_id), timeout=10)
            for seq in range(1, 4):  # one at a time: both replicas done before the next
                await bus.publish(wire.PRICES_TICKS, tick(seq, Decimal(seq) / 10))
                await wait_until(partial(gw.done_with, seq, 2), timeout=10)
            await wait_until(lambda: len(gw.updates(alice.user_id)) >= 3)
            old_message, _ = gw.updates(alice.user_id)[-1]
            victim = owner_of(alice.user_id, group)
            victim.kill()
            killed_at = time.monotonic()
            since = len(gw.messages)

            def full_render() -> bool:
                return any(
                    u.get("full") and u.get("session") == alice.session_id
                    for _m, u in gw.updates(alice.user_id, since=since)
                )

            seq = 3
            while not full_render():  # the market keeps moving meanwhile
                assert time.monotonic() - killed_at < TAKEOVER_BOUND_S, "no takeover in time"
                seq += 1
                await bus.publish(wire.PRICES_TICKS, tick(seq, Decimal(seq) / 10))
                await asyncio.sleep(0.25)
            takeover_s = time.monotonic() - killed_at
            new_message, _ = gw.updates(alice.user_id, since=since)[-1]
            assert new_message["src"] != old_message["src"]
            assert new_message["epoch"] > old_message["epoch"]
            survivor = next(r for r in group if r is not victim)
            assert survivor.metric("component_live_partitions") == wire.LIVE_PARTITIONS

            # the deposed owner's message arrives late: the gateway's fence drops it
            socket.buffer.drain()
            fenced_before = gw.metrics.fenced._value.get()
            late = {**old_message, "seq": old_message["seq"] + 1}
            await bus.publish(wire.ui_subject(alice.user_id, "portfolio"), late)
            await wait_until(lambda: gw.metrics.fenced._value.get() > fenced_before)
            assert socket.buffer.drain().frames == []
    print(f"takeover after SIGKILL: {takeover_s:.1f} s")  # shown with -s


async def test_a_watchlist_change_through_one_replica_is_what_the_next_owner_renders(
    demo_database_url: str, nats_url: str, bus: NatsBus
) -> None:
    alice = (await users(demo_database_url))[0]
    with replicas("watchlist", 2, demo_database_url, nats_url) as group:
        await wait_until(lambda: settled(group), timeout=15)
        owner = owner_of(alice.user_id, group)
        other = next(r for r in group if r is not owner)
        async with gateway(bus) as gw:
            await gw.open(alice)
            await wait_until(lambda: gw.updates(alice.user_id), timeout=10)
            since = len(gw.messages)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{other.port}") as client:
                r = await client.post(
                    "/components/watchlist/events/add_symbol",
                    data={"ticker": "KO"},
                    headers=identity_headers(alice),
                )
            assert r.status_code == 200 and 'id="watchlist-row-KO"' in r.text

            def owner_shows_ko() -> bool:  # the owner reloaded and published the new row
                return any(
                    'id="watchlist-row-KO"' in p["html"]
                    for _m, u in gw.updates(alice.user_id, since=since)
                    for p in u["parts"]
                )

            await wait_until(owner_shows_ko, timeout=5)
            producers = {m["src"] for m, _u in gw.updates(alice.user_id)}
            assert len(producers) == 1  # the replica that handled the event did not publish

            owner.kill()
            since = len(gw.messages)

            def takeover_render() -> list[dict[str, Any]]:
                return [
                    u
                    for _m, u in gw.updates(alice.user_id, since=since)
                    if u.get("full") and u.get("session") == alice.session_id
                ]

            renders = await wait_until(takeover_render, timeout=TAKEOVER_BOUND_S)
            html = "".join(p["html"] for p in renders[-1]["parts"])
            assert 'id="watchlist-row-KO"' in html
