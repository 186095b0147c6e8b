"""Pricefeed cycle time, in process: provider + price book + tick encoding + risk monitor.

``python -m bench.bench_pricefeed [--cycles N]`` prints a markdown table. The default case is
the issue's: 5,000 symbols and 10,000 accounts (10 positions each), against the 250 ms tick;
the goal is 100,000 accounts in a 100 ms median cycle. ``take dirty`` is the monitor handing
the changed margins to the batched write: here after every cycle, in the service once per
``db_write_interval_s`` (1 s) on the same event loop, outside the cycle.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from services.pricefeed.domain import (
    GbmSimulation,
    QuoteBoard,
    SymbolInfo,
    quote_around,
    tick_payload,
)
from services.pricefeed.monitor import RiskMonitor
from shared.bus import encode

__all__ = ["Case", "main", "run_case", "table"]

TICK_MS = 250.0


@dataclass(frozen=True)
class Case:
    symbols: int
    accounts: int
    positions: int


CASES = (
    Case(5_000, 10_000, 10),
    Case(5_000, 10_000, 30),
    Case(5_000, 100_000, 10),
    Case(1_000, 1_000, 10),
)


@dataclass
class Result:
    case: Case
    load_ms: float
    changed: float
    touched: float
    parts: dict[str, list[float]]


def _world(case: Case, seed: int) -> tuple[GbmSimulation, QuoteBoard, RiskMonitor, float]:
    rng = random.Random(seed)
    tickers = [f"S{i:05d}" for i in range(case.symbols)]
    infos = []
    for i, ticker in enumerate(tickers, 1):
        price = Decimal(rng.randint(500, 50_000)) / 100
        infos.append(SymbolInfo(i, ticker, price, Decimal("0.5"), quote_around(price, Decimal(5))))
    book = QuoteBoard(infos)
    sim = GbmSimulation(book.last_prices(), seed=seed)
    monitor = RiskMonitor(book.last_prices(), {s.ticker: s.margin_rate for s in infos})
    # Popular symbols are held by many accounts (a Pareto-ish choice), as in real books.
    cum = list(itertools.accumulate(1 / (rank + 1) ** 0.8 for rank in range(case.symbols)))
    books = []
    for _ in range(case.accounts):
        held = set(rng.choices(tickers, cum_weights=cum, k=case.positions))
        books.append({t: rng.randint(1, 500) for t in held})
    started = time.perf_counter()
    for account_id, positions in enumerate(books, 1):
        monitor.load_account(account_id, Decimal(10_000_000), positions)
    monitor.take_dirty()
    return sim, book, monitor, (time.perf_counter() - started) * 1000


def run_case(case: Case, cycles: int = 40, warmup: int = 5, seed: int = 1) -> Result:
    sim, book, monitor, load_ms = _world(case, seed)
    prev_close = {t: s.prev_close for t, s in book.symbols.items()}
    parts: dict[str, list[float]] = {
        k: [] for k in ("provider", "book", "encode", "monitor", "total", "take")
    }
    changed_n, touched_n = [], []
    for i in range(warmup + cycles):
        t0 = time.perf_counter()
        quotes = sim.step(TICK_MS / 1000)
        t1 = time.perf_counter()
        changed = book.apply(quotes)
        t2 = time.perf_counter()
        encode(tick_payload(i, time.time() * 1000, changed, prev_close))
        t3 = time.perf_counter()
        monitor.on_prices({t: q.last for t, q in changed.items()})
        t4 = time.perf_counter()
        touched = monitor.take_dirty()
        t5 = time.perf_counter()
        if i < warmup:
            continue
        steps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0, t5 - t4)
        for key, value in zip(parts, steps, strict=True):
            value_ms = value * 1000
            parts[key].append(value_ms)
        changed_n.append(len(changed))
        touched_n.append(len(touched))
    return Result(case, load_ms, statistics.mean(changed_n), statistics.mean(touched_n), parts)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(results: list[Result]) -> str:
    lines = [
        "| symbols | accounts | positions/acct | changed/tick | accounts touched/tick "
        "| provider ms | book ms | encode ms | monitor ms | cycle p50 ms | cycle p95 ms "
        "| cycle max ms | budget used (p95 / 250 ms) | take dirty ms | monitor load ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    med: Callable[[list[float]], float] = statistics.median
    for r in results:
        total = r.parts["total"]
        lines.append(
            f"| {r.case.symbols:,} | {r.case.accounts:,} | {r.case.positions} "
            f"| {r.changed:,.0f} | {r.touched:,.0f} "
            f"| {med(r.parts['provider']):.1f} | {med(r.parts['book']):.1f} "
            f"| {med(r.parts['encode']):.1f} | {med(r.parts['monitor']):.1f} "
            f"| {med(total):.1f} | {_p(total, 0.95):.1f} | {max(total):.1f} "
            f"| {_p(total, 0.95) / TICK_MS:.0%} | {med(r.parts['take']):.1f} "
            f"| {r.load_ms:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="only the issue's case")
    args = parser.parse_args(argv)
    cases = CASES[:1] if args.quick else CASES
    load = os.getloadavg()[0]
    results = [run_case(c, cycles=args.cycles) for c in cases]
    out = (
        "### Pricefeed cycle (in process, one core)\n\n"
        f"{args.cycles} cycles per case after 5 warm-up; 1-min load average at start {load:.2f} "
        f"on {os.cpu_count()} CPUs (other load inflates the tail).\n\n" + table(results)
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
