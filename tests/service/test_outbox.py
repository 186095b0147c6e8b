"""The transactional outbox against a real PostgreSQL: nothing from a rollback, everything
committed published once, kept through a bus outage, never doubled by two relays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import wire
from shared.bus import InMemoryBus, NatsBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import OutboxMessage
from shared.devservers import NatsServer
from shared.outbox import OutboxRelay, stage
from tests.service.processes_support import kill_nats
from tests.support import collect, wait_until

pytestmark = pytest.mark.service


class FlakyBus(InMemoryBus):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, subject: str, payload: dict[str, Any]) -> None:
        if self.down:
            raise ConnectionError("NATS away")
        await super().publish(subject, payload)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


def relay_for(db: async_sessionmaker[AsyncSession], bus: InMemoryBus | NatsBus) -> OutboxRelay:
    return OutboxRelay(lambda: db, lambda: bus)


async def pending(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as s:
        query = select(func.count()).where(OutboxMessage.published_at.is_(None))
        return int(await s.scalar(query) or 0)


async def test_rolled_back_changes_publish_nothing(db: async_sessionmaker[AsyncSession]) -> None:
    bus = InMemoryBus()
    with pytest.raises(RuntimeError):
        async with db() as s, s.begin():
            stage(s, "orders.events.1", {"order_id": 1})
            raise RuntimeError("the order failed")
    assert await relay_for(db, bus).relay_once() == 0
    assert bus.published == []


async def test_committed_messages_are_published_once_in_order(
    db: async_sessionmaker[AsyncSession],
) -> None:
    bus = InMemoryBus()
    async with db() as s, s.begin():
        for i in range(3):
            stage(s, "orders.events.1", {"order_id": i})
    relay = relay_for(db, bus)
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 0
    assert [p["order_id"] for _, p in bus.published] == [0, 1, 2]
    assert await pending(db) == 0


async def test_a_bus_outage_delays_messages_but_keeps_them(
    db: async_sessionmaker[AsyncSession],
) -> None:
    bus = FlakyBus()
    async with db() as s, s.begin():
        stage(s, "orders.events.7", {"order_id": 7})
    relay = relay_for(db, bus)
    bus.down = True
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert await pending(db) == 1
    bus.down = False
    assert await relay.relay_once() == 1
    assert [p["order_id"] for _, p in bus.published] == [7]


async def test_two_relays_never_publish_a_message_twice(
    db: async_sessionmaker[AsyncSession],
) -> None:
    bus = InMemoryBus()
    async with db() as s, s.begin():
        for i in range(50):
            stage(s, f"orders.events.{i % 3}", {"order_id": i})
    relays = [relay_for(db, bus) for _ in range(4)]
    for relay in relays:
        relay.batch = 7
    while await pending(db):
        await asyncio.gather(*(r.relay_once() for r in relays))
    ids = [p["order_id"] for _, p in bus.published]
    assert sorted(ids) == list(range(50))


async def test_the_running_relay_publishes_on_wake_and_drains_on_stop(
    db: async_sessionmaker[AsyncSession],
) -> None:
    bus = InMemoryBus()
    relay = relay_for(db, bus)
    relay.interval_s = 30  # only a wake (or stop) makes it publish in this test
    relay.start()
    async with db() as s, s.begin():
        stage(s, "orders.events.1", {"order_id": 1})
    relay.wake()
    await wait_until(lambda: bus.published)
    assert len(bus.published) == 1
    async with db() as s, s.begin():
        stage(s, "orders.events.1", {"order_id": 2})
    await relay.stop()
    assert [p["order_id"] for _, p in bus.published] == [1, 2]


async def stream_messages(bus: NatsBus) -> int:
    info = await bus.client.jetstream().stream_info(wire.ORDER_EVENTS_STREAM)
    return int(info.state.messages)


async def test_with_nats_down_rows_stay_pending_and_after_it_each_is_stored_once(
    db: async_sessionmaker[AsyncSession], own_nats: NatsServer
) -> None:
    """The outage the old relay lost: nats-py buffers a core publish while reconnecting, so
    only the broker's acknowledgement may mark a row published."""
    bus = await NatsBus.connect(own_nats.url)
    try:
        received = await collect(bus, wire.ORDERS_EVENTS_ALL)
        relay = relay_for(db, bus)
        async with db() as s, s.begin():
            stage(s, "orders.events.1", {"order_id": 1})
        assert await relay.relay_once() == 1  # creates the stream on first use
        async with db() as s, s.begin():
            stage(s, "orders.events.1", {"order_id": 2})
            stage(s, "orders.events.2", {"order_id": 3})
        kill_nats(own_nats)  # nats-server dies: no goodbye
        with pytest.raises(Exception):  # noqa: B017 (a timeout or a disconnect, by timing)
            await relay.relay_once()
        assert await pending(db) == 2

        own_nats.start()  # same port, same JetStream store
        await wait_until(lambda: bus.is_connected, timeout=10)

        async def relayed() -> int:  # once the stream answers again
            try:
                return await relay.relay_once()
            except Exception:
                return 0

        await wait_until(relayed, timeout=10)
        assert await pending(db) == 0
        await wait_until(lambda: {p["order_id"] for _, p in received} >= {1, 2, 3})
        assert await stream_messages(bus) == 3

        # a crash after the broker's ack but before the row was marked: sent again, and
        # the stream stores it once (Nats-Msg-Id is the outbox row id)
        async with db() as s, s.begin():
            await s.execute(update(OutboxMessage).values(published_at=None))
        assert await relay.relay_once() == 3
        assert await stream_messages(bus) == 3
    finally:
        await bus.close()
