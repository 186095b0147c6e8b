"""Live portfolio rendering per price tick, in process: the live path vs full re-renders.

``python -m bench.bench_render [--users N] [--ticks N] [--quick]`` prints markdown tables.

1,000 live users of the real ``PortfolioComponent`` (20 positions each, state built without a
database) behind :class:`LiveSessions` with a :class:`PriceBook`, on an in-memory bus that
JSON-encodes every publish once, as NATS does. Each tick takes the service's own path: the
``prices.ticks`` message, the price book, the tick pass (``LiveSessions.ticks``, a
:class:`~shared.components.ticking.TickDriver`): each changed ticker's last-price cell
rendered once as a shared part, every instance's ``on_ws_message``, its named parts rendered
from stencils, one ``ui.<partition>.portfolio`` message per partition and the
``ui.shared.portfolio`` tick marker. The baseline applies the same tick and re-renders every
user's whole fragment (sent per partition too). Timed: the ``prices.ticks`` publish until
every ``ui.*`` message is encoded, one core, against the 250 ms tick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.portfolio import components as portfolio_components
from services.portfolio.components import PortfolioComponent, _row
from services.pricefeed.domain import GbmSimulation, tick_payload
from shared import wire
from shared.bus import InMemoryBus, decode, encode, subject_matches
from shared.components import ComponentContext, LiveSessions, PriceBook, Registry
from shared.components.base import LiveResult
from shared.components.rendering import Changes, Part, render, render_parts
from shared.db.demo_symbols import DEMO_SYMBOLS

__all__ = ["main"]

TICK_MS = 250.0
CENT = Decimal("0.01")
PRICES = {t: Decimal(p) for t, _name, _sector, p in DEMO_SYMBOLS}
TICKERS = sorted(PRICES)
HOT = TICKERS[:: len(TICKERS) // 16][:16]  # the ~25 % of symbols that change every tick
COLD = [t for t in TICKERS if t not in HOT]
TEMPLATES = Path(portfolio_components.__file__).parent / "templates"


@dataclass
class Stages:
    """Wall time inside the pieces of a tick (seconds, summed over a tick)."""

    shared: float = 0.0  # topic_parts: the shared last-price cells
    handle: float = 0.0  # on_ws_message of every instance: state and views
    encode: float = 0.0  # JSON encoding of every ui.* message

    def reset(self) -> Stages:
        done = Stages(self.shared, self.handle, self.encode)
        self.shared = self.handle = self.encode = 0.0
        return done


STAGES = Stages()


class BenchPortfolio(PortfolioComponent):
    """The real component; ``mount`` reads a prebuilt book instead of PostgreSQL."""

    template_dir = str(TEMPLATES)
    books: dict[int, list[tuple[str, int, Decimal]]] = {}

    async def mount(self) -> None:
        book = self.books[self.request.user.account_id]  # type: ignore[union-attr]
        self.state["positions"] = [
            _row(t, qty, cost, PRICES[t], PRICES[t]) for t, qty, cost in sorted(book)
        ]
        self._totals()

    async def on_ws_message(self, message: dict[str, Any]) -> LiveResult:
        started = time.perf_counter()
        try:
            return await super().on_ws_message(message)
        finally:
            STAGES.handle += time.perf_counter() - started

    @classmethod
    def topic_parts(cls, topics: Iterable[str], prices: PriceBook) -> dict[str, list[Part]]:
        started = time.perf_counter()
        try:
            return super().topic_parts(topics, prices)
        finally:
            STAGES.shared += time.perf_counter() - started


class EncodingBus(InMemoryBus):
    """In memory, like NATS on the publishing side: each message is JSON-encoded once;
    a subscriber (the service's own ``prices.ticks`` and ``session.*``) decodes it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, payload: dict[str, Any]) -> None:
        started = time.perf_counter()
        data = encode(payload)
        STAGES.encode += time.perf_counter() - started
        self.sent.append((subject, data))
        for sub in list(self._subs):
            if subject_matches(sub.pattern, subject):
                await sub.handler(subject, decode(data))


@dataclass(frozen=True)
class Case:
    label: str
    affected: float | None  # share of users holding ticked symbols; None: GBM over all symbols


CASES = (Case("10 %", 0.1), Case("50 %", 0.5), Case("100 %", 1.0), Case("GBM sim", None))


def _books(case: Case, users: int, rng: random.Random) -> dict[int, list[Any]]:
    books = {}
    for account in range(1, users + 1):
        hit = case.affected is None or account <= round(case.affected * users)
        pool = TICKERS if hit else COLD
        while True:
            held = rng.sample(pool, 20)
            if not hit or case.affected is None or set(held) & set(HOT):
                break
        books[account] = [(t, rng.randint(1, 500), PRICES[t] * Decimal("0.95")) for t in held]
    return books


def _ticks(case: Case, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    if case.affected is None:
        sim = GbmSimulation(PRICES, seed=seed)
        return [
            tick_payload(i, time.time() * 1000, sim.step(TICK_MS / 1000), PRICES)
            for i in range(1, count + 1)
        ]
    last, ticks = dict(PRICES), []
    for i in range(1, count + 1):
        prices = {}
        for t in HOT:
            new = (last[t] * Decimal(1 + rng.gauss(0, 0.002))).quantize(CENT)
            last[t] = new if new != last[t] else new + CENT
            s = str(last[t])
            prices[t] = {"last": s, "bid": str(last[t] - CENT), "ask": s, "chg_pct": "0.10"}
        ticks.append({"seq": i, "ts": time.time() * 1000, "prices": prices})
    return ticks


async def _world(books: dict[int, list[Any]]) -> tuple[EncodingBus, LiveSessions]:
    registry = Registry()
    cls = type("BenchPortfolio", (BenchPortfolio,), {"books": books})
    registry.register("portfolio")(cls)
    bus = EncodingBus()
    book = PriceBook()
    book.seed((t, p, p, p, p) for t, p in PRICES.items())
    live = LiveSessions(
        registry,
        bus,
        prices=book,
        context=lambda identity: ComponentContext(user=identity, prices=book),
        heartbeat_interval=3600,  # no heartbeats here: never sweep the sessions
    )
    await live.start()
    for uid in books:
        session = {"session_id": f"s{uid}", "user_id": uid, "account_id": uid, "username": "b"}
        await bus.publish(wire.SESSION_OPENED, {**session, "permissions": []})
    await live.settled()  # mounted, full renders published
    bus.sent.clear()
    return bus, live


async def _full_tick(live: LiveSessions, tick: dict[str, Any]) -> None:
    """The baseline: apply the tick, re-render every user's whole fragment, batched per
    partition like live updates, then the tick marker."""
    tick = decode(encode(tick))  # as received from NATS
    live.prices.apply(tick["prices"])
    ts, seq = tick["ts"], tick["seq"]
    message = {"event": wire.EVENT_PRICE_TICK, "prices": tick["prices"], "ts": ts}
    batch = live.publisher.batch("portfolio", ts, tick=seq)
    for (uid, _name), instance in live.instances.items():
        component = instance.component
        await component.on_ws_message(message)
        changes = Changes(True, [Part(component.root_id, render(component).html)])
        batch.add(uid, changes, topics=component.topics())
    await batch.send()
    await live.publisher.shared("portfolio", ts, {}, tick=seq)


@dataclass
class Run:
    ms: list[float] = field(default_factory=list)  # wall clock
    cpu: list[float] = field(default_factory=list)  # this process's CPU time
    counts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    stages: list[Stages] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return statistics.mean(self.counts[key])


def _count(sent: list[tuple[str, bytes]]) -> dict[str, float]:
    """What one tick published: messages, users updated, parts, bytes."""
    out = dict.fromkeys(("msgs", "users", "user_parts", "shared_parts", "kib"), 0.0)
    for subject, data in sent:
        if not subject.startswith("ui."):
            continue
        payload = json.loads(data)
        out["msgs"] += 1
        out["kib"] += len(data) / 1024
        if subject == wire.ui_shared_subject("portfolio"):
            out["shared_parts"] += sum(len(ps) for ps in payload["topics"].values())
        else:
            out["users"] += len(payload["updates"])
            out["user_parts"] += sum(len(u["parts"]) for u in payload["updates"])
    return out


async def _run(case: Case, users: int, ticks: int, warmup: int, full: bool) -> Run:
    bus, live = await _world(_books(case, users, random.Random(7)))
    run = Run()
    for i, tick in enumerate(_ticks(case, warmup + ticks, seed=11)):
        STAGES.reset()
        started, cpu0 = time.perf_counter(), time.process_time()
        if full:
            await _full_tick(live, tick)
        else:
            await bus.publish(wire.PRICES_TICKS, tick)
            await live.settled()  # the tick loop has published everything for this tick
        elapsed = (time.perf_counter() - started) * 1000
        used = (time.process_time() - cpu0) * 1000
        stages = STAGES.reset()
        sent = list(bus.sent)
        bus.sent.clear()
        if i >= warmup:
            run.ms.append(elapsed)
            run.cpu.append(used)
            run.stages.append(stages)
            for key, value in _count(sent).items():
                run.counts[key].append(value)
    await live.stop()
    return run


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed(fn: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


async def _micro(repeat: int = 300) -> str:
    """The design's render figures, for this machine: the whole fragment, one part."""
    _bus, live = await _world(_books(Case("", 1.0), 1, random.Random(3)))
    component = next(iter(live.instances.values())).component
    first = component.state["positions"][0]
    row_id, pl_id, ticker = first["id"], first["pl"]["id"], first["symbol"]
    rows = [
        ("whole 20-row portfolio fragment (`render`, Jinja2)", lambda: render(component)),
        ("one row block (`render_parts`, Jinja2 block)", lambda: render_parts(component, [row_id])),
        ("one P&L part (`render_parts`, stencil)", lambda: render_parts(component, [pl_id])),
        (
            "one shared last-price part (`topic_parts`, stencil)",
            lambda: PortfolioComponent.topic_parts([ticker], live.prices),
        ),
    ]
    lines = [f"| render (median of {repeat}) | µs |", "|---|---:|"]
    lines += [f"| {label} | {_timed(fn, repeat):.0f} |" for label, fn in rows]
    await live.stop()
    return "\n".join(lines)


async def _bench(users: int, ticks: int, warmup: int, cases: tuple[Case, ...]) -> str:
    lines = [
        "| users affected | mode | ui msgs/tick | users updated/tick | per-user parts/tick "
        "| shared parts/tick | KiB JSON/tick | CPU ms/tick p50 | CPU p95 "
        "| wall ms/tick p50 | wall p95 | share of the 250 ms tick, one core (CPU p50) |",
        "|---|---|" + "---:|" * 10,
    ]
    stage_lines = [
        "| users affected | CPU ms/tick p50 | shared parts (`topic_parts`) ms "
        "| `on_ws_message` ×users ms | JSON encode ms | the rest ms (part render, batching, "
        "loop) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        for full in (False, True):
            r = await _run(case, users, ticks, warmup, full)
            cpu50 = statistics.median(r.cpu)
            mode = "full re-render, every user" if full else "live path (shared + named parts)"
            lines.append(
                f"| {case.label} | {mode} | {r.mean('msgs'):,.0f} | {r.mean('users'):,.0f} "
                f"| {r.mean('user_parts'):,.0f} | {r.mean('shared_parts'):,.0f} "
                f"| {r.mean('kib'):,.0f} | {cpu50:.1f} | {_p(r.cpu, 0.95):.1f} "
                f"| {statistics.median(r.ms):.1f} | {_p(r.ms, 0.95):.1f} | {cpu50 / TICK_MS:.0%} |"
            )
            if not full:
                shared, handle, enc = (
                    statistics.median(getattr(s, k) * 1000 for s in r.stages)
                    for k in ("shared", "handle", "encode")
                )
                wall = statistics.median(r.ms)
                stage_lines.append(
                    f"| {case.label} | {cpu50:.1f} | {shared:.1f} | {handle:.1f} | {enc:.1f} "
                    f"| {max(0.0, wall - shared - handle - enc):.1f} |"
                )
    return (
        "\n".join(lines)
        + "\n\nWhere a live tick's time goes (wall ms, medians; *the rest* = wall p50 − the "
        "others):\n\n" + "\n".join(stage_lines) + "\n\n" + await _micro()
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 ticks per case")
    args = parser.parse_args(argv)
    ticks, warmup = (5, 1) if args.quick else (args.ticks, 3)
    load = os.getloadavg()[0]
    body = asyncio.run(_bench(args.users, ticks, warmup, CASES))
    out = (
        "### Portfolio live render per tick (in process, one core)\n\n"
        f"{args.users:,} live users × 20 positions over {len(TICKERS)} symbols; "
        f"{ticks} ticks per row after {warmup} warm-up; 1-min load average at start "
        f"{load:.2f} on {os.cpu_count()} CPUs (other load inflates the tail). "
        f"Rows 10/50/100 %: every tick moves the same {len(HOT)} symbols (25 %), held by that "
        "share of users (the others hold only unticked symbols). GBM sim: the pricefeed's "
        "simulation, every user 20 random symbols. *Live path*: `LiveSessions` with a "
        "`PriceBook`, as in the portfolio service: each changed ticker's last-price cell "
        "rendered once (*shared parts*, on `ui.shared.portfolio`, which also carries the "
        "tick marker), each affected user's P&L cells and totals rendered from stencils "
        "(*per-user parts*), batched into one `ui.<partition>.portfolio` message per "
        f"partition ({wire.LIVE_PARTITIONS} partitions). *Full re-render*: the same tick, "
        "every user's whole fragment re-rendered (Jinja2), batched the same way. Time per "
        "tick = the `prices.ticks` publish until every `ui.*` message is JSON-encoded (NATS "
        "socket I/O excluded); *KiB JSON* = the encoded `ui.*` payloads; CPU = this "
        "process's CPU time over the same span, which other load on the shared machine does "
        "not inflate (wall time it does).\n\n" + body
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
