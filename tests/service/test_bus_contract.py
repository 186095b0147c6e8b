"""One contract for both message bus adapters (``shared.bus``): the in-memory bus the unit
tests use and the NATS bus the services use, against a real nats-server.

The contract is what both guarantee: per-subject order from one publisher, NATS wildcard
matching, no delivery after unsubscribe, publishing from inside a handler, and a JSON
round trip. It does not say *when* a handler runs: the in-memory bus runs handlers inside
``publish()``, NATS later, so every check waits for a message to arrive (never for a
time), and "nothing arrived" is checked up to a later message on the same subscription.
The NATS bus also comes back after its server restarts.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared import devservers
from shared.bus import InMemoryBus, MessageBus, NatsBus

pytestmark = pytest.mark.service

WAIT_S = 10.0  # only a failing test waits this long


class Inbox:
    """What one subscription received, in order; :meth:`until` waits for a condition."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    async def handler(self, subject: str, payload: dict[str, Any]) -> None:
        self.messages.append((subject, payload))
        self._changed.set()

    @property
    def subjects(self) -> list[str]:
        return [s for s, _ in self.messages]

    async def until(self, done: Callable[[list[tuple[str, dict[str, Any]]]], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not done(self.messages):
                self._changed.clear()
                await self._changed.wait()

    async def has(self, subject: str) -> None:
        await self.until(lambda messages: any(s == subject for s, _ in messages))


@pytest.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[MessageBus]:
    """Each adapter in turn (this module's ``bus`` replaces the NATS-only one)."""
    b: MessageBus
    if request.param == "memory":
        b = InMemoryBus()
    else:
        b = await NatsBus.connect(request.getfixturevalue("nats_url"), name="contract")
    yield b
    await b.close()


@pytest.fixture
def prefix() -> str:
    """Subjects of this test only (the run's nats-server is shared)."""
    return f"contract.{secrets.token_hex(4)}"


async def subscribed(bus: MessageBus, subject: str) -> Inbox:
    inbox = Inbox()
    await bus.subscribe(subject, inbox.handler)
    await bus.flush()
    return inbox


async def test_one_subjects_messages_arrive_in_publish_order(bus: MessageBus, prefix: str) -> None:
    a, b = await subscribed(bus, f"{prefix}.a"), await subscribed(bus, f"{prefix}.b")
    for i in range(50):
        await bus.publish(f"{prefix}.a", {"i": i})
        await bus.publish(f"{prefix}.b", {"i": -i})
    await a.until(lambda m: len(m) == 50)
    await b.until(lambda m: len(m) == 50)
    assert [p["i"] for _, p in a.messages] == list(range(50))
    assert [p["i"] for _, p in b.messages] == [-i for i in range(50)]


async def test_wildcards_match_one_token_or_the_rest(bus: MessageBus, prefix: str) -> None:
    one, rest = await subscribed(bus, f"{prefix}.*"), await subscribed(bus, f"{prefix}.>")
    exact = await subscribed(bus, f"{prefix}.x.y")
    for subject in (prefix, f"{prefix}.x", f"{prefix}.x.y", f"{prefix}.x.y.z", f"{prefix}x.q"):
        await bus.publish(subject, {"s": subject})
    await bus.publish(f"{prefix}.end", {})  # after all of them, on every wildcard subscription
    await one.has(f"{prefix}.end")
    await rest.has(f"{prefix}.end")
    assert one.subjects == [f"{prefix}.x", f"{prefix}.end"]
    assert rest.subjects == [f"{prefix}.x", f"{prefix}.x.y", f"{prefix}.x.y.z", f"{prefix}.end"]
    await bus.publish(f"{prefix}.x.y", {"s": "again"})  # after the first, on its subscription
    await exact.until(lambda m: len(m) == 2)
    assert [p["s"] for p in (m[1] for m in exact.messages)] == [f"{prefix}.x.y", "again"]


async def test_unsubscribe_stops_delivery(bus: MessageBus, prefix: str) -> None:
    gone = Inbox()
    subscription = await bus.subscribe(f"{prefix}.u", gone.handler)
    await bus.publish(f"{prefix}.u", {"n": 1})
    await gone.until(lambda m: len(m) == 1)
    await subscription.unsubscribe()
    stays = await subscribed(bus, f"{prefix}.u")
    await bus.publish(f"{prefix}.u", {"n": 2})
    await stays.until(lambda m: len(m) == 1)
    await bus.publish(f"{prefix}.u", {"n": 3})  # a round trip later: `gone` had its chance
    await stays.until(lambda m: len(m) == 2)
    assert gone.messages == [(f"{prefix}.u", {"n": 1})]
    assert [p["n"] for _, p in stays.messages] == [2, 3]


async def test_a_handler_may_publish(bus: MessageBus, prefix: str) -> None:
    replies = await subscribed(bus, f"{prefix}.reply")

    async def echo(_subject: str, payload: dict[str, Any]) -> None:
        await bus.publish(f"{prefix}.reply", {"echo": payload["n"]})

    await bus.subscribe(f"{prefix}.ask", echo)
    await bus.flush()
    for n in range(3):
        await bus.publish(f"{prefix}.ask", {"n": n})
    await replies.until(lambda m: len(m) == 3)
    assert [p["echo"] for _, p in replies.messages] == [0, 1, 2]


async def test_payloads_round_trip_as_json(bus: MessageBus, prefix: str) -> None:
    inbox = await subscribed(bus, f"{prefix}.json")
    sent: dict[str, Any] = {
        "text": 'Ünïcode ✓ "quoted" \n',
        "int": -(2**53),
        "float": 0.1,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "two", [3.5], {"four": 4}],
        "nested": {"a": {"b": {"c": []}}},
        "money": Decimal("1234.5600"),
    }
    await bus.publish(f"{prefix}.json", sent)
    await inbox.until(lambda m: len(m) == 1)
    [(_, received)] = inbox.messages
    assert received == {**sent, "money": "1234.5600"}  # a Decimal travels as its string
    assert type(received["float"]) is float and type(received["int"]) is int
    received["nested"]["a"]["b"]["c"].append("mine")  # a copy: the sender's dict is its own
    assert sent["nested"] == {"a": {"b": {"c": []}}}


async def test_nats_bus_delivers_again_after_its_server_restarts(tmp_path: Path) -> None:
    server = devservers.NatsServer(tmp_path / "nats").start()
    bus = await NatsBus.connect(server.url, name="contract-reconnect")
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    bus.on_reconnect(on_reconnect)
    try:
        inbox = await subscribed(bus, "contract.restart.>")
        await bus.publish("contract.restart.before", {})
        await inbox.has("contract.restart.before")

        server.stop()
        server = devservers.NatsServer(tmp_path / "nats", port=server.port).start()
        await asyncio.wait_for(reconnected.wait(), WAIT_S)
        assert bus.is_connected
        await bus.publish("contract.restart.after", {})  # the subscription was renewed
        await inbox.has("contract.restart.after")
        assert inbox.subjects == ["contract.restart.before", "contract.restart.after"]
    finally:
        await bus.close()
        server.stop()
