"""The fan-out gives the event loop turns: a tick's sockets released and its shared parts
delivered in batches, and a turn between messages while a request waits for a service."""

from __future__ import annotations

import asyncio

from gateway.fanout import DELIVER_TURN, RELEASE_TURN, release_in_turns
from shared import wire
from tests.unit.test_gateway_fanout import Socket, fanout, part, shared, updates


async def test_a_tick_releases_its_sockets_in_turns_letting_other_work_in_between() -> None:
    sockets = [Socket(user_id=i, session_id=f"s{i}") for i in range(3 * RELEASE_TURN)]
    served_at: list[int] = []

    def released() -> int:
        return sum(s.buffer.go.is_set() for s in sockets)

    async def request() -> None:  # something the loop reads meanwhile (an order)
        served_at.append(released())

    release_in_turns(list(sockets))
    assert released() == RELEASE_TURN
    await asyncio.create_task(request())
    await asyncio.wait_for(asyncio.gather(*(s.buffer.go.wait() for s in sockets)), 5)
    assert served_at and served_at[0] < len(sockets)  # not after the last socket


def test_without_a_running_loop_every_socket_is_released_at_once() -> None:
    sockets = [Socket(user_id=i, session_id=f"s{i}") for i in range(2 * RELEASE_TURN + 1)]
    release_in_turns(sockets)
    assert all(s.buffer.go.is_set() for s in sockets)


async def test_shared_parts_for_many_pages_are_delivered_in_turns() -> None:
    n = 2 * DELIVER_TURN + 10
    sockets = [Socket(user_id=i, session_id=f"s{i}") for i in range(n)]
    fan = fanout(*sockets)
    full = {"full": True, "parts": [part("watchlist-root")], "topics": ["KO"]}
    for s in sockets:
        await fan.on_ui(*updates("watchlist", {"user": s.user_id, **full}))
        s.buffer.drain()
    holding: list[int] = []

    async def request() -> None:  # something the loop serves meanwhile (an order)
        holding.append(sum(len(s.buffer) for s in sockets))
        fan.remove(sockets[-1])  # and a page closing while its part is on the way

    task = asyncio.get_running_loop().create_task(request())
    await fan.on_ui(*shared("watchlist", {"KO": [part("watchlist-quote-KO")]}))
    await task
    assert holding and 0 < holding[0] < n  # served between two turns, not after the last
    assert [s.ids() for s in sockets[:-1]] == [["watchlist-quote-KO"]] * (n - 1)
    assert sockets[-1].ids() == []  # gone before its turn came


async def test_a_request_waiting_for_a_service_gets_turns_of_the_loop_between_messages() -> None:
    a = Socket(1, "a")
    fan = fanout(a)
    message = updates("portfolio", wire.ui_update(1, [part("portfolio-pl-X")], full=False))
    answered: list[int] = []
    loop = asyncio.get_running_loop()

    loop.call_soon(answered.append, 1)  # an answer from a service, ready to be read
    await fan.on_ui(*message)
    assert answered == []  # no request waits: the burst of messages is read at once

    with fan.serving(), fan.serving():  # two requests wait
        await fan.on_ui(*message)
        assert answered == [1]  # its answer is read between two messages
    loop.call_soon(answered.append, 2)
    await fan.on_ui(*message)  # every request answered: no turn
    assert answered == [1]
    assert a.ids() == ["portfolio-pl-X"]
