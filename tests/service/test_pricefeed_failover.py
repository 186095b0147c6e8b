"""Two pricefeed processes, one leader and a hot standby, against one nats-server and one
database. Each replica is an OS process (uvicorn, as in a pod); killing one is a SIGKILL.

The leases are short here (``PRICEFEED_LEASE_TTL_S=2``) to keep the run quick; the takeover
is held to the real bound, the orders service's feed-silence limit.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, LeaderEpoch, Position, Symbol, User
from shared.db.queries import held_positions
from shared.devservers import NatsServer
from shared.domain import Holding, margin_used
from tests.service.processes_support import STARTUP_S, Uvicorn, sample, start_uvicorn
from tests.support import wait_until

pytestmark = pytest.mark.service

D = Decimal
LEASE_TTL_S = 2.0
TICK_MS = 100
SIM_DAY_S = 120
# One simulated step moves a price by vol × sqrt(tick / day) × N(0, 1), vol at most 4 % a
# day: 0.12 % per standard deviation here, so a 1 % move is a jump, not a step.
ONE_STEP = D("0.01")


@dataclass
class Feed(Uvicorn):
    log: Path

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{self.url}/metrics", timeout=2)).text
        return sample(text, name, self.name)


Start = Callable[[str], Awaitable[Feed]]


@pytest.fixture
async def feeds(
    demo_database_url: str, own_nats: NatsServer, tmp_path: Path
) -> AsyncIterator[tuple[Start, list[Feed]]]:
    env = {
        **os.environ,
        "DATABASE_URL": demo_database_url,
        "NATS_URL": own_nats.url,  # this test's own: the lease bucket has this test's TTL
        "PRICEFEED_LEASE_TTL_S": str(LEASE_TTL_S),
        "PRICEFEED_TICK_INTERVAL_MS": str(TICK_MS),
        "PRICEFEED_SIM_DAY_SECONDS": str(SIM_DAY_S),
        "PRICEFEED_DB_WRITE_INTERVAL_S": "0.2",
        "PRICEFEED_MARGIN_WRITE_INTERVAL_S": "0.2",
        "LOG_LEVEL": "INFO",
    }
    started: list[Feed] = []

    async def start(name: str) -> Feed:
        log = tmp_path / f"{name}.log"
        port, process = start_uvicorn(
            "services.pricefeed.app:create_app", {**env, "REPLICA_ID": name}, log
        )
        feed = Feed(name, port, process, log)
        started.append(feed)

        async def ready() -> bool:
            assert feed.process.poll() is None, f"{name} exited:\n{feed.log.read_text()}"
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{feed.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, timeout=STARTUP_S)
        return feed

    try:
        yield start, started
    finally:
        for feed in started:
            feed.stop()
            print(f"--- {feed.name} ---\n{feed.log.read_text()[-4000:]}")  # shown on failure


@dataclass
class Seen:
    """What a subscriber sees, with arrival times."""

    ticks: list[tuple[float, dict[str, Any]]]
    alerts: list[tuple[int, str]]

    def by(self, src: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, p) for t, p in self.ticks if p.get("src") == src]


@asynccontextmanager
async def watching(nats_url: str) -> AsyncIterator[Seen]:
    bus = await NatsBus.connect(nats_url, name="probe")
    seen = Seen([], [])

    async def on_tick(_subject: str, payload: dict[str, Any]) -> None:
        seen.ticks.append((time.monotonic(), payload))

    async def on_alert(subject: str, payload: dict[str, Any]) -> None:
        seen.alerts.append((wire.account_of_subject(subject), payload["level"]))

    await bus.subscribe(wire.PRICES_TICKS, on_tick)
    await bus.subscribe(wire.RISK_BREACH_ALL, on_alert)
    await bus.flush()
    try:
        yield seen
    finally:
        await bus.close()


async def accounts(db: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with db() as s:
        rows = (await s.execute(select(User.username, Account.id).join(Account))).all()
    return {name: account_id for name, account_id in rows}


async def place(db: async_sessionmaker[AsyncSession], utilisation: dict[int, str]) -> None:
    """Set each account's margin limit so it starts at the given utilisation (%)."""
    async with db.begin() as s:
        for account_id, pct in utilisation.items():
            columns = (Symbol.ticker, Position.quantity, Symbol.last, Symbol.margin_rate)
            rows = await s.execute(held_positions(*columns, account_id=account_id))
            used = margin_used(
                Holding(ticker, qty, last, margin_rate=rate) for ticker, qty, last, rate in rows
            )
            assert used > 0, account_id
            limit = (used * 100 / D(pct)).quantize(D("0.01"))
            await s.execute(
                update(Account).where(Account.id == account_id).values(margin_limit=limit)
            )


async def double_positions(
    db: async_sessionmaker[AsyncSession], bus_url: str, account: int
) -> None:
    """What a big fill does: the orders service commits, then announces the order event."""
    async with db.begin() as s:
        await s.execute(
            update(Position)
            .where(Position.account_id == account)
            .values(quantity=Position.quantity * 2)
        )
    bus = await NatsBus.connect(bus_url, name="orders")
    await bus.publish(wire.orders_events(account), {"order_id": 0, "status": "filled"})
    await bus.close()


async def prices(db: async_sessionmaker[AsyncSession]) -> dict[str, Decimal]:
    async with db() as s:
        return {t: last for t, last in (await s.execute(select(Symbol.ticker, Symbol.last))).all()}


def check_handoff(seen: Seen, old: str, new: str, start: dict[str, Decimal]) -> float:
    """Ticks come from one replica at a time, ``seq`` continues across the handoff, and the
    new leader's first prices are one step from the old one's last. Returns the silence
    a subscriber saw between the two."""
    sources = [p["src"] for _, p in seen.ticks]
    handoff = sources.index(new)
    assert set(sources[:handoff]) == {old} and set(sources[handoff:]) == {new}, sources
    seqs = [p["seq"] for _, p in seen.ticks]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    last_old, first_new = seen.ticks[handoff - 1], seen.ticks[handoff]
    assert first_new[1]["seq"] == last_old[1]["seq"] + 1
    last = dict(start)
    for _, payload in seen.ticks[:handoff]:
        last.update({t: D(q["last"]) for t, q in payload["prices"].items()})
    for ticker, quote in first_new[1]["prices"].items():
        moved = abs(D(quote["last"]) - last[ticker]) / last[ticker]
        assert moved < ONE_STEP, f"{ticker} jumped {moved:.2%} at the handoff"
    return first_new[0] - last_old[0]


async def test_the_standby_takes_over_a_killed_leader_without_a_jump_or_a_repeated_alert(
    feeds: tuple[Start, list[Feed]], demo_database_url: str, own_nats: NatsServer
) -> None:
    start, _ = feeds
    engine = create_engine(demo_database_url, null_pool=True)
    db = session_factory(engine)
    ids = await accounts(db)
    alice, bob, viewer = ids["alice"], ids["bob"], ids["viewer"]
    await place(db, {alice: "88", bob: "50", viewer: "50"})  # alice starts above warn
    before = await prices(db)

    async with watching(own_nats.url) as seen:
        a = await start("feed-a")
        await wait_until(lambda: (alice, "warn") in seen.alerts)  # the leader's, at start
        b = await start("feed-b")
        await wait_until(lambda: _at_least(b.metric("pricefeed_followed_ticks_total"), 20))
        assert {p["src"] for _, p in seen.ticks} == {"feed-a"}
        assert await b.metric("pricefeed_ticks_total") == 0
        assert (await a.metric("pricefeed_leader"), await b.metric("pricefeed_leader")) == (1, 0)

        await double_positions(db, own_nats.url, bob)  # 100 %: the leader alerts critical
        await wait_until(lambda: (bob, "critical") in seen.alerts)
        mark = len(seen.ticks)
        await wait_until(lambda: len(seen.ticks) >= mark + 5)  # the standby has seen it too

        killed = time.monotonic()
        a.kill()
        await wait_until(lambda: seen.by("feed-b"), timeout=10)
        resumed = seen.by("feed-b")[0][0] - killed
        silence = check_handoff(seen, "feed-a", "feed-b", before)
        limit = OrdersSettings().max_feed_silence_s
        assert silence < limit, f"feed silent {silence:.2f} s at the handoff (limit {limit} s)"
        print(f"takeover: ticks resumed {resumed:.2f} s after SIGKILL, silence {silence:.2f} s")

        await double_positions(db, own_nats.url, viewer)  # the new leader alerts
        await wait_until(lambda: (viewer, "critical") in seen.alerts)
        assert sorted(seen.alerts) == sorted(
            [(alice, "warn"), (bob, "critical"), (viewer, "critical")]
        ), "an alert was repeated or lost at the handoff"

        async def written() -> bool:  # the new leader's writes pass the fence
            published: dict[str, set[Decimal]] = {}
            for _, payload in seen.by("feed-b"):
                for ticker, quote in payload["prices"].items():
                    published.setdefault(ticker, set()).add(D(quote["last"]))
            stored = await prices(db)
            return all(stored[t] in published[t] for t in seen.by("feed-b")[0][1]["prices"])

        await wait_until(written)
        async with db() as s:
            holder = await s.scalar(select(LeaderEpoch.holder))
        assert holder == "feed-b"
    await engine.dispose()


async def test_a_released_lease_is_taken_over_within_one_round(
    feeds: tuple[Start, list[Feed]], demo_database_url: str, own_nats: NatsServer
) -> None:
    start, _ = feeds
    engine = create_engine(demo_database_url, null_pool=True)
    before = await prices(session_factory(engine))
    await engine.dispose()
    async with watching(own_nats.url) as seen:
        a = await start("feed-a")
        await wait_until(lambda: seen.by("feed-a"))
        b = await start("feed-b")
        await wait_until(lambda: _at_least(b.metric("pricefeed_followed_ticks_total"), 5))
        async with httpx.AsyncClient() as client:  # the pod's preStop hook
            release = {"X-Ops-Release": "1"}
            assert (await client.post(f"{a.url}/ops/release", headers=release)).status_code == 204
        await wait_until(lambda: seen.by("feed-b"), timeout=10)
        silence = check_handoff(seen, "feed-a", "feed-b", before)
        # one renewal round (TTL / 4) and a tick, not the TTL a dead leader's lease takes
        assert silence < LEASE_TTL_S, f"feed silent {silence:.2f} s after a release"
        print(f"handoff after a release: silence {silence:.2f} s")
        assert await a.metric("pricefeed_leader") == 0
        followed = await a.metric("pricefeed_followed_ticks_total")
        await wait_until(
            lambda: _at_least(a.metric("pricefeed_followed_ticks_total"), followed + 3)
        )
    for feed in (a, b):  # uvicorn re-raises the signal once shut down
        assert feed.stop() in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in feed.log.read_text()


async def _at_least(value: Awaitable[float], minimum: float) -> bool:
    return await value >= minimum
