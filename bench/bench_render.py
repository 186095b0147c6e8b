"""Live portfolio rendering per price tick, in process: row-level parts vs full re-renders.

``python -m bench.bench_render [--users N] [--ticks N] [--quick]`` prints markdown tables.

1,000 live users of the real ``PortfolioComponent`` (20 positions each, state built without a
database) behind :class:`LiveSessions` on the :class:`InMemoryBus`. Each tick goes through the
framework's own path: delivery to every instance, ``on_ws_message``, the parts diff, the
partial render and the ``ui.*`` publish (JSON-encoded, as on NATS). The baseline applies the
same tick and re-renders every user's whole fragment. Timed: the ``prices.ticks`` publish
until every ``ui.*`` message is out, one core, against the 250 ms tick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.portfolio import components as portfolio_components
from services.portfolio.components import PortfolioComponent, _row
from services.pricefeed.domain import GbmSimulation, tick_payload
from shared import wire
from shared.bus import InMemoryBus
from shared.components import ComponentContext, LiveSessions, Registry
from shared.components.rendering import render, render_parts
from shared.db.demo_symbols import DEMO_SYMBOLS

__all__ = ["main"]

TICK_MS = 250.0
CENT = Decimal("0.01")
PRICES = {t: Decimal(p) for t, _name, _sector, p in DEMO_SYMBOLS}
TICKERS = sorted(PRICES)
HOT = TICKERS[:: len(TICKERS) // 16][:16]  # the ~25 % of symbols that change every tick
COLD = [t for t in TICKERS if t not in HOT]
TEMPLATES = Path(portfolio_components.__file__).parent / "templates"


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
            for i in range(count)
        ]
    last, ticks = dict(PRICES), []
    for i in range(count):
        prices = {}
        for t in HOT:
            new = (last[t] * Decimal(1 + rng.gauss(0, 0.002))).quantize(CENT)
            last[t] = new if new != last[t] else new + CENT
            prices[t] = {"last": str(last[t]), "bid": str(last[t] - CENT), "ask": str(last[t])}
        ticks.append({"seq": i, "ts": time.time() * 1000, "prices": prices})
    return ticks


async def _world(books: dict[int, list[Any]]) -> tuple[InMemoryBus, LiveSessions]:
    registry = Registry()
    cls = type("BenchPortfolio", (BenchPortfolio,), {"books": books})
    registry.register("portfolio")(cls)
    bus = InMemoryBus()
    live = LiveSessions(registry, bus, context=lambda identity: ComponentContext(user=identity))
    await live.start()
    for uid in books:
        session = {"session_id": f"s{uid}", "user_id": uid, "account_id": uid, "username": "b"}
        await bus.publish(wire.SESSION_OPENED, {**session, "permissions": []})
    bus.published.clear()
    return bus, live


async def _full_tick(bus: InMemoryBus, live: LiveSessions, tick: dict[str, Any]) -> None:
    """The baseline: apply the tick, re-render and publish every user's whole fragment."""
    message = {**tick, "event": wire.EVENT_PRICE_TICK}
    for (uid, _name), instance in live.instances.items():
        component = instance.component
        await component.on_ws_message(message)
        part = {"id": component.root_id, "html": render(component).html}
        payload = {"component": "portfolio", "full": True, "parts": [part], "ts": tick["ts"]}
        await bus.publish(wire.ui_subject(uid, "portfolio"), payload)


@dataclass
class Run:
    ms: list[float]  # wall clock
    cpu: list[float]  # this process's CPU time: what other load on the machine cannot inflate
    messages: float
    parts: float
    kbytes: float


async def _run(case: Case, users: int, ticks: int, warmup: int, full: bool) -> Run:
    bus, live = await _world(_books(case, users, random.Random(7)))
    ms, cpu, messages, parts, size = [], [], [], [], []
    for i, tick in enumerate(_ticks(case, warmup + ticks, seed=11)):
        started, cpu0 = time.perf_counter(), time.process_time()
        if full:
            await _full_tick(bus, live, tick)
        else:
            await bus.publish(wire.PRICES_TICKS, tick)
        elapsed = (time.perf_counter() - started) * 1000
        used = (time.process_time() - cpu0) * 1000
        ui = [p for s, p in bus.published if s.startswith("ui.")]
        bus.published.clear()
        if i >= warmup:
            ms.append(elapsed)
            cpu.append(used)
            messages.append(len(ui))
            parts.append(sum(len(p["parts"]) for p in ui))
            size.append(sum(len(x["html"]) for p in ui for x in p["parts"]) / 1024)
    await live.stop()
    mean = statistics.mean
    return Run(ms, cpu, mean(messages), mean(parts), mean(size))


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _micro(repeat: int = 300) -> str:
    """The design's Jinja2 figures, for this machine: one 20-row fragment, one row block."""
    _bus, live = await _world(_books(Case("", 1.0), 1, random.Random(3)))
    component = next(iter(live.instances.values())).component
    row_id = component.state["positions"][0]["id"]
    timings = []
    for fn in (lambda: render(component), lambda: render_parts(component, [row_id])):
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e6)
        timings.append(statistics.median(samples))
    await live.stop()
    return (
        "| Jinja2 render (median of {n}) | µs |\n|---|---:|\n"
        "| whole 20-row portfolio fragment (`render`) | {0:.0f} |\n"
        "| one row block (`render_parts`, 1 id) | {1:.0f} |"
    ).format(*timings, n=repeat)


async def _bench(users: int, ticks: int, warmup: int, cases: tuple[Case, ...]) -> str:
    lines = [
        "| users affected | mode | ui msgs/tick | parts/tick | KiB html/tick "
        "| CPU ms/tick p50 | CPU p95 | wall ms/tick p50 | wall p95 "
        "| share of the 250 ms tick, one core (CPU p50) |",
        "|---|---|" + "---:|" * 8,
    ]
    for case in cases:
        for full in (False, True):
            r = await _run(case, users, ticks, warmup, full)
            cpu50 = statistics.median(r.cpu)
            mode = "full re-render, every user" if full else "live parts (diff + partial)"
            lines.append(
                f"| {case.label} | {mode} | {r.messages:,.0f} | {r.parts:,.0f} "
                f"| {r.kbytes:,.0f} | {cpu50:.1f} | {_p(r.cpu, 0.95):.1f} "
                f"| {statistics.median(r.ms):.1f} | {_p(r.ms, 0.95):.1f} | {cpu50 / TICK_MS:.0%} |"
            )
    return "\n".join(lines) + "\n\n" + await _micro()


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
        "simulation, every user 20 random symbols. Time per tick = the `prices.ticks` publish "
        "on the in-memory bus until every `ui.*` message is encoded and published (NATS "
        "socket I/O excluded); CPU = this process's CPU time over the same span, which other "
        "load on the shared machine does not inflate (wall time it does).\n\n" + body
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
