"""Sockets are announced to the services a window at a time (gateway/admission.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.admission import ANNOUNCE_BATCH, Admissions
from gateway.metrics import GatewayMetrics
from shared import wire
from shared.bus import InMemoryBus
from tests.support import wait_until


class _User:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id

    def announcement(self, socket_session_id: str) -> dict[str, Any]:
        return {"user_id": self.user_id, "session_id": socket_session_id}


class Socket:
    def __init__(self, n: int) -> None:
        self.session_id = f"tab-{n}"
        self.user = _User(n)
        self.announced = False
        self.admissions = 0

    def admitted(self) -> None:
        self.admissions += 1


@asynccontextmanager
async def running(admissions: Admissions) -> AsyncIterator[InMemoryBus]:
    bus = InMemoryBus()
    task = asyncio.create_task(admissions.run(bus))
    try:
        yield bus
    finally:
        task.cancel()


def opened(bus: InMemoryBus) -> list[str]:
    return [p["session_id"] for s, p in bus.published if s == wire.SESSION_OPENED]


def announced(bus: InMemoryBus) -> list[dict[str, Any]]:
    return [p for s, p in bus.published if s == wire.SESSION_ANNOUNCE]


def render_all(admissions: Admissions, socket: Socket) -> None:
    for component in wire.COMPONENTS:
        admissions.rendered(socket.session_id, component)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_a_window_of_sockets_waits_for_full_renders() -> None:
    admissions = Admissions(window=2, timeout_s=30)
    sockets = [Socket(n) for n in range(5)]
    async with running(admissions) as bus:
        for socket in sockets:
            admissions.ask(socket)
        await wait_until(lambda: len(opened(bus)) == 2)
        await settle()
        assert opened(bus) == ["tab-0", "tab-1"]  # in the order they came
        assert [s.announced for s in sockets] == [True, True, False, False, False]
        assert admissions.pending("tab-4") and admissions.queued == 3
        for component in wire.COMPONENTS[:-1]:
            admissions.rendered("tab-0", component)
        await settle()
        assert len(opened(bus)) == 2  # one component still to come
        assert sockets[0].admissions == 0
        admissions.rendered("tab-0", wire.COMPONENTS[-1])
        await wait_until(lambda: len(opened(bus)) == 3)
        assert opened(bus)[-1] == "tab-2" and sockets[0].admissions == 1
        assert not admissions.pending("tab-0")
        admissions.rendered("tab-0", "portfolio")  # a later full render changes nothing
        render_all(admissions, sockets[1])
        render_all(admissions, sockets[2])
        await wait_until(lambda: len(opened(bus)) == 5)
        assert admissions.outstanding == 2 and admissions.queued == 0


async def test_a_socket_asked_for_twice_before_its_turn_is_announced_once() -> None:
    admissions = Admissions(window=1, timeout_s=30)
    first, second = Socket(1), Socket(2)
    async with running(admissions) as bus:
        admissions.ask(first)
        await wait_until(lambda: opened(bus) == ["tab-1"])
        admissions.ask(second)
        admissions.ask(second, ["watchlist"])  # e.g. its buffer overflowed meanwhile
        render_all(admissions, first)
        await wait_until(lambda: len(opened(bus)) == 2)
        await settle()
        assert opened(bus) == ["tab-1", "tab-2"] and announced(bus) == []


async def test_announced_sockets_asked_again_are_re_announced_in_batches_per_components() -> None:
    """A takeover or a gap asks for some components of many sockets: ``session.announce``
    names them, a batch at a time; a socket still waiting waits for both."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    admissions = Admissions(window=1000, timeout_s=30, metrics=metrics)
    sockets = [Socket(n) for n in range(ANNOUNCE_BATCH + 20)]
    async with running(admissions) as bus:
        for socket in sockets:
            admissions.ask(socket)
        await wait_until(lambda: len(opened(bus)) == len(sockets))
        for socket in sockets[1:]:
            render_all(admissions, socket)
        for socket in sockets:
            admissions.ask(socket, ["watchlist"])
        admissions.ask(sockets[0], ["risk_metrics"])
        await wait_until(lambda: sum(len(m["sessions"]) for m in announced(bus)) == len(sockets))
        by_components: dict[tuple[str, ...], int] = {}
        for message in announced(bus):
            assert len(message["sessions"]) <= ANNOUNCE_BATCH
            key = tuple(message["components"])
            by_components[key] = by_components.get(key, 0) + len(message["sessions"])
        assert by_components == {("watchlist",): len(sockets) - 1, ("risk_metrics", "watchlist"): 1}
        assert registry.get_sample_value("gateway_resync_sessions_total") == len(sockets)
        admissions.rendered("tab-0", "watchlist")
        admissions.rendered("tab-0", "risk_metrics")
        await settle()
        assert admissions.pending("tab-0")  # its first renders are still to come
        render_all(admissions, sockets[0])
        assert not admissions.pending("tab-0")


async def test_a_socket_whose_renders_do_not_all_come_frees_its_place_after_the_timeout() -> None:
    registry = CollectorRegistry()
    admissions = Admissions(window=1, timeout_s=0.2, metrics=GatewayMetrics(registry))
    first, second = Socket(1), Socket(2)
    async with running(admissions) as bus:
        admissions.ask(first)
        admissions.ask(second)
        await wait_until(lambda: opened(bus) == ["tab-1"])
        admissions.rendered("tab-1", "portfolio")  # e.g. the order ticket is not for this user
        await wait_until(lambda: len(opened(bus)) == 2, timeout=3)
        assert first.admissions == 1  # its page may say "live" for what it has
        assert registry.get_sample_value("gateway_announce_timeouts_total") == 1


async def test_waiting_only_for_services_that_do_not_answer_frees_the_place_at_once() -> None:
    down: set[str] = set()
    admissions = Admissions(window=1, timeout_s=30, excused=lambda: down)
    first, second = Socket(1), Socket(2)
    async with running(admissions) as bus:
        admissions.ask(first)
        admissions.ask(second)
        await wait_until(lambda: opened(bus) == ["tab-1"])
        for component in ("portfolio", "watchlist", "order"):
            admissions.rendered("tab-1", component)
        down.add("risk_metrics")
        await wait_until(lambda: len(opened(bus)) == 2, timeout=3)  # looked at each second
        assert first.admissions == 1


async def test_a_closed_socket_frees_its_place_and_is_never_announced_if_it_was_waiting() -> None:
    admissions = Admissions(window=1, timeout_s=30)
    first, second, third = Socket(1), Socket(2), Socket(3)
    async with running(admissions) as bus:
        for socket in (first, second, third):
            admissions.ask(socket)
        await wait_until(lambda: opened(bus) == ["tab-1"])
        admissions.forget("tab-2")  # closed while waiting for its turn
        admissions.forget("tab-1")  # closed while waiting for its renders
        await wait_until(lambda: len(opened(bus)) == 2)
        assert opened(bus) == ["tab-1", "tab-3"] and not second.announced
        assert first.admissions == 0


async def test_a_socket_asked_again_says_which_renders_it_waits_its_turn_for() -> None:
    """The heartbeat names those (``waiting``): a service that does not know the socket
    (it took the partition over) mounts it at its turn, not from the heartbeat."""
    admissions = Admissions(window=1, timeout_s=30)
    first, second = Socket(1), Socket(2)
    async with running(admissions) as bus:
        admissions.ask(first)
        admissions.ask(second)
        await wait_until(lambda: opened(bus) == ["tab-1"])
        assert admissions.waiting_for("tab-2") == set(wire.COMPONENTS)
        assert admissions.waiting_for("tab-1") == set()  # announced: its renders may come
        render_all(admissions, first)
        await wait_until(lambda: opened(bus) == ["tab-1", "tab-2"])
        assert admissions.waiting_for("tab-2") == set()


async def test_a_socket_closed_while_its_batch_is_announced_is_not_announced() -> None:
    """nats-py's publish may yield: a socket of the same batch that closes meanwhile said
    ``session.closed`` already, and its ``session.opened`` must not follow it."""
    admissions = Admissions(window=10, timeout_s=30)
    first, second = Socket(1), Socket(2)

    class Yielding(InMemoryBus):
        async def publish(self, subject: str, payload: dict[str, Any]) -> None:
            if payload.get("session_id") == "tab-1":
                admissions.forget("tab-2")  # tab-2 closes while tab-1's publish waits
                await asyncio.sleep(0)
            await super().publish(subject, payload)

    bus = Yielding()
    admissions.ask(first)
    admissions.ask(second)
    task = asyncio.create_task(admissions.run(bus))
    try:
        await wait_until(lambda: opened(bus) == ["tab-1"])
        await settle()
        assert opened(bus) == ["tab-1"]
    finally:
        task.cancel()
