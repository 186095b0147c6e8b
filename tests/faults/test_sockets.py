"""Row 7: a slow reader and a mass reconnect. The gateway's memory stays bounded, and the
other sockets keep getting their frames meanwhile.

The traders and their web sessions are written straight into the stack's database
(:mod:`tests.faults.sockets_support`), so hundreds of sockets open without the login form.
A page's frames are counted when they carry service parts (ticks, renders), not the
gateway's own freshness keep-alives. Run with ``-s`` to see the figures measured.

The tests are synchronous and run their sockets on an event loop of their own
(``devservers.run_async``): the package's Playwright browser holds the main thread's loop.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.hub import CLOSE_TRY_AGAIN
from shared import devservers
from shared.settings import DEV_PLACEHOLDER_SECRET
from tests.faults.conftest import FaultStack
from tests.faults.sockets_support import (
    StalledSocket,
    Tab,
    gaps,
    holds_connection,
    metric,
    percentile,
    process_on_port,
    seed_traders,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

WATCHERS = 3  # pages that stay open through each fault and must not notice it
STORM = 200  # sockets closed and reconnected at once
MB = 1 << 20
RSS_GROWTH_MAX = 100 * MB
GAP_P50_MAX_S = 1.0  # ticks every 250 ms: a watcher's median gap between frames
GAP_MAX_S = 10.0  # and its longest silence, even while the gateway is busiest
RENDER_WITHIN_S = 60.0  # every (re)connected socket has its full renders
SLOW_CLOSED_WITHIN_S = 60.0  # a send stuck for GATEWAY_WS_SEND_TIMEOUT_S (5 s) closes it
# session.closed forgets a session at once; one a heartbeat announced again goes with the
# services' sweep: 3 missed heartbeats of 10 s, checked every 10 s
FORGOTTEN_WITHIN_S = 60.0
COMPONENT_SERVICES = ("portfolio", "watchlist", "orders", "risk")
SECRET_ENV = "GATEWAY_SESSION_SECRET"
TOO_SLOW = 'gateway_ws_closed_total{reason="too slow"}'
SOCKETS = "gateway_ws_sockets"


def session_secret(stack: FaultStack) -> str:
    """The gateway's cookie key: from the environment, else the launcher's own secrets
    file in its data directory (made on first start), else the development placeholder."""
    if secret := stack.stack.env.get(SECRET_ENV):
        return secret
    made = Path(stack.pg_data).parent / "secrets.json"
    known = json.loads(made.read_text()) if made.exists() else {}
    return str(known.get(SECRET_ENV) or DEV_PLACEHOLDER_SECRET)


async def until(check: Callable[[], Awaitable[bool] | bool], within_s: float, what: str) -> float:
    """Poll ``check()`` until it is true; the seconds it took."""
    started = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.1)


class PeakRss:
    """The gateway process's resident memory: at the start and the highest seen since."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.start = self.peak = process.memory_info().rss

    async def follow(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.2)

    @property
    def growth(self) -> int:
        return self.peak - self.start


@asynccontextmanager
async def watched(stack: FaultStack) -> AsyncIterator[tuple[list[Tab], PeakRss]]:
    """``WATCHERS`` pages open and rendered, and the gateway's RSS followed, meanwhile."""
    traders = await seed_traders(stack.database_url, session_secret(stack), WATCHERS)
    tabs = [Tab(t) for t in traders]
    rss = PeakRss(process_on_port(stack.stack.process.pid, stack.port("gateway")))
    follower = asyncio.create_task(rss.follow())
    try:
        await asyncio.gather(*(tab.open(stack.base_url) for tab in tabs))
        await rendered(tabs, "the watchers' renders")
        yield tabs, rss
    finally:
        follower.cancel()
        await asyncio.gather(*(tab.close() for tab in tabs), return_exceptions=True)


async def rendered(tabs: list[Tab], what: str) -> list[float]:
    """Wait until every tab has its full renders; each one's seconds from its connect."""

    def done() -> bool:
        closed = [t.close_code for t in tabs if t.close_code is not None]
        assert not closed, f"{what}: {len(closed)} sockets closed before their renders: {closed}"
        return all(t.rendered_at is not None for t in tabs)

    await until(done, RENDER_WITHIN_S, f"{what} of {len(tabs)} sockets")
    return [t.render_s or 0.0 for t in tabs]


def assert_kept_receiving(tabs: list[Tab], start: float, end: float) -> tuple[float, float]:
    """Every watcher got frames all along ``[start, end]``; (worst median gap, worst gap)."""
    medians, longest = [], []
    for tab in tabs:
        assert tab.close_code is None, f"a watcher's socket closed: {tab.close_code}"
        between = gaps(tab.arrivals, start, end)
        medians.append(percentile(between, 0.5))
        longest.append(max(between))
    assert max(medians) < GAP_P50_MAX_S, f"watchers' median gaps {medians}"
    assert max(longest) < GAP_MAX_S, f"watchers' longest gaps {longest}"
    return max(medians), max(longest)


def test_a_socket_that_never_reads_is_closed_and_slows_no_one_else(
    fault_stack: FaultStack,
) -> None:
    """One page's socket stops reading (a tiny receive buffer, Ethernet-sized segments).
    The gateway closes it once a send has waited ``GATEWAY_WS_SEND_TIMEOUT_S`` ("too
    slow"), the other pages get their frames all along, and the gateway's memory stays
    bounded. Read again later, the socket gets what was queued and the connection ends
    (without the 1013 close frame: it could not be written in time; a browser sees 1006,
    and reconnects just the same)."""
    devservers.run_async(slow_reader(fault_stack))


async def slow_reader(fault_stack: FaultStack) -> None:
    secret = session_secret(fault_stack)
    # the heaviest page of the demo market: every symbol held and watched
    (heavy,) = await seed_traders(fault_stack.database_url, secret, 1, holdings=(65, 65))
    gateway = fault_stack.port("gateway")
    async with httpx.AsyncClient(timeout=10) as http, watched(fault_stack) as (tabs, rss):
        closed_before = await metric(http, gateway, TOO_SLOW)
        sockets_before = await metric(http, gateway, SOCKETS)

        async def dropped() -> bool:
            return await metric(http, gateway, TOO_SLOW) > closed_before

        async def gone() -> bool:
            return await metric(http, gateway, SOCKETS) <= sockets_before

        stalled = await asyncio.to_thread(StalledSocket, fault_stack.base_url, heavy)
        try:
            started = time.monotonic()
            took = await until(dropped, SLOW_CLOSED_WITHIN_S, "the gateway dropping it")
            # its close (1013) waits for the socket to be writable, at most 2 s, in vain
            await until(gone, 10, "the stalled socket leaving the gateway's count")
            p50, longest = assert_kept_receiving(tabs, started, time.monotonic())
            # what was queued for it is still held, until the peer reads (or goes away)
            held = holds_connection(rss.process, stalled.port)
            read, ended, close = await asyncio.to_thread(stalled.drain)
            assert await metric(http, gateway, TOO_SLOW) == closed_before + 1
        finally:
            stalled.close()
    assert ended, "the gateway did not end the stalled connection once it was read"
    assert close is None or close.code == CLOSE_TRY_AGAIN, close
    assert rss.growth < RSS_GROWTH_MAX, f"gateway RSS grew {rss.growth / MB:.0f} MB"
    print(
        f"\nslow reader: closed as too slow after {took:.1f} s; the gateway still held the"
        f" connection: {held}; read afterwards: {read} bytes, then {close!r}; watchers'"
        f" median gap ≤ {p50:.2f} s, longest {longest:.2f} s; gateway RSS"
        f" {rss.start / MB:.0f} MB, +{rss.growth / MB:.1f} MB at peak"
    )


async def live(http: httpx.AsyncClient, ports: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Each component service's (live sessions, live instances)."""
    return {
        name: (
            await metric(http, port, "component_live_sessions"),
            await metric(http, port, "component_live_instances"),
        )
        for name, port in ports.items()
    }


def test_a_reconnect_storm_renders_every_page_and_the_services_forget_the_old_ones(
    fault_stack: FaultStack,
) -> None:
    """``STORM`` pages connect, then all close and reconnect at once (as after a gateway
    restart). Every page gets its full renders within ``RENDER_WITHIN_S``, the pages that
    stayed open keep getting frames, the gateway's memory stays bounded, and once everyone
    has left the component services hold nothing for them."""
    devservers.run_async(reconnect_storm(fault_stack))


async def reconnect_storm(fault_stack: FaultStack) -> None:
    secret = session_secret(fault_stack)
    tabs = [Tab(t) for t in await seed_traders(fault_stack.database_url, secret, STORM)]
    base, ports = fault_stack.base_url, {s: fault_stack.port(s) for s in COMPONENT_SERVICES}
    async with httpx.AsyncClient(timeout=10) as http, watched(fault_stack) as (watchers, rss):
        before = await live(http, ports)
        try:
            await asyncio.gather(*(tab.open(base) for tab in tabs))
            first = await rendered(tabs, "the first renders")
            started = time.monotonic()
            await asyncio.gather(*(tab.close() for tab in tabs))
            await asyncio.gather(*(tab.open(base) for tab in tabs))
            storm = await rendered(tabs, "the renders after the storm")
            p50, longest = assert_kept_receiving(watchers, started, time.monotonic())
            during = await live(http, ports)
        finally:
            await asyncio.gather(*(tab.close() for tab in tabs), return_exceptions=True)
        for name, (sessions, instances) in during.items():
            assert sessions >= STORM and instances >= STORM, (name, during[name])

        async def forgotten() -> bool:
            now = await live(http, ports)
            return all(now[s][0] <= before[s][0] and now[s][1] <= before[s][1] for s in now)

        took = await until(forgotten, FORGOTTEN_WITHIN_S, "the services forgetting them")
    assert rss.growth < RSS_GROWTH_MAX, f"gateway RSS grew {rss.growth / MB:.0f} MB"
    print(
        f"\nreconnect storm of {STORM}: first connect median {statistics.median(first):.1f} s,"
        f" worst {max(first):.1f} s; after the storm median {statistics.median(storm):.1f} s,"
        f" worst {max(storm):.1f} s; watchers' median gap ≤ {p50:.2f} s, longest"
        f" {longest:.2f} s; services forgot the sessions {took:.1f} s after the last close;"
        f" gateway RSS {rss.start / MB:.0f} MB, +{rss.growth / MB:.1f} MB at peak;"
        f" live (sessions, instances) before {before}, during {during}"
    )
