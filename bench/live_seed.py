"""The market and the traders of the live benchmark, written straight into the database
before the stack starts (:mod:`bench.bench_live`): 500 extra symbols, and N traders with
books, watchlists and live web sessions."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

__all__ = ["Trader", "seed_market"]

CENT = Decimal("0.01")


@dataclass(frozen=True)
class Trader:
    user_id: int
    cookie: str  # "session=…"
    csrf: str
    tickers: tuple[str, ...]  # held, for the order task's market buys
    book: tuple[tuple[str, int, str], ...] = ()  # (ticker, quantity, average cost) as seeded


def _quote(last: Decimal) -> tuple[Decimal, Decimal]:
    half = max(CENT, (last * Decimal("0.0002")).quantize(CENT))
    return last - half, last + half


def _extra_symbols(rng: random.Random, count: int, taken: set[str]) -> list[dict[str, Any]]:
    from shared.db.demo import HIGH_MARGIN, LOW_MARGIN_SECTORS
    from shared.db.demo_symbols import DEMO_SYMBOLS
    from shared.domain import DEFAULT_MARGIN_RATE

    sectors = sorted({sector for _t, _n, sector, _p in DEMO_SYMBOLS})
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        ticker = "".join(rng.choice(letters) for _ in range(rng.choice((3, 4, 4))))
        if ticker in taken:
            continue
        taken.add(ticker)
        sector = rng.choice(sectors)
        # log-uniform $8–$600, as a broad equity universe
        last = Decimal(math.exp(rng.uniform(math.log(8), math.log(600)))).quantize(CENT)
        bid, ask = _quote(last)
        prev = (last * Decimal(1 + rng.gauss(0, 0.012))).quantize(CENT)
        rate = LOW_MARGIN_SECTORS.get(sector, DEFAULT_MARGIN_RATE)
        if rng.random() < 0.05:
            rate = max(HIGH_MARGIN.values())
        rows.append(
            {
                "ticker": ticker,
                "name": f"{ticker.title()} {rng.choice(('Corp.', 'Inc.', 'Holdings', 'Group'))}",
                "sector": sector,
                "last": last,
                "bid": bid,
                "ask": ask,
                "prev_close": max(CENT, prev),
                "margin_rate": rate,
            }
        )
    return rows


async def seed_market(
    url: str, traders: int, secret: str, *, extra_symbols: int = 500, seed: int = 7
) -> tuple[int, list[Trader]]:
    """Extra symbols, then ``traders`` traders, each with cash, a margin limit for 40–70 %
    utilisation, 10–20 positions, 10–15 watchlist symbols and one live web session.

    Returns the number of symbols and the traders. The demo data must be loaded already.
    """
    from sqlalchemy import bindparam, insert, select, update

    from bench.relay_support import seed_sessions
    from shared.db.engine import create_engine
    from shared.db.models import Account, Position, Symbol, WatchlistItem

    rng = random.Random(seed)
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.begin() as db:
            taken = set((await db.execute(select(Symbol.ticker))).scalars())
            await db.execute(insert(Symbol), _extra_symbols(rng, extra_symbols, taken))
            symbols = (
                await db.execute(select(Symbol.id, Symbol.ticker, Symbol.last, Symbol.margin_rate))
            ).all()
        creds = await seed_sessions(url, traders, secret, 6 * 3600)
        accounts_t = Account.__table__
        async with engine.begin() as db:
            by_user = dict(
                (
                    await db.execute(
                        select(Account.user_id, Account.id).where(
                            Account.user_id.in_([uid for uid, _c, _t in creds])
                        )
                    )
                ).all()
            )
            positions, watch, account_rows, out = [], [], [], []
            for uid, cookie, csrf in creds:
                held = rng.sample(symbols, rng.randint(10, 20))
                used = Decimal(0)
                book = []
                for sid, ticker, last, rate in held:
                    qty = max(1, int(rng.uniform(3_000, 40_000) / float(last)))
                    used += qty * last * rate
                    avg = (last * Decimal(rng.uniform(0.85, 1.15))).quantize(CENT)
                    book.append((ticker, qty, str(avg)))
                    positions.append(
                        {
                            "account_id": by_user[uid],
                            "symbol_id": sid,
                            "quantity": qty,
                            "avg_cost": avg,
                            "realised_pnl": Decimal(0),
                        }
                    )
                used = used.quantize(CENT)
                target = Decimal(rng.uniform(40, 70))
                limit = (used * 100 / target).quantize(Decimal(1), rounding=ROUND_CEILING)
                account_rows.append(
                    {
                        "b_id": by_user[uid],
                        "b_cash": Decimal(rng.randint(50_000, 300_000)),
                        "b_limit": limit,
                        "b_used": used,
                    }
                )
                for rank, (sid, *_rest) in enumerate(rng.sample(symbols, rng.randint(10, 15))):
                    watch.append({"user_id": uid, "symbol_id": sid, "rank": rank})
                tickers = tuple(t for _s, t, _l, _r in held)
                out.append(Trader(uid, cookie, csrf, tickers, tuple(book)))
            await db.execute(insert(Position), positions)
            await db.execute(insert(WatchlistItem), watch)
            await db.execute(
                update(accounts_t)
                .where(accounts_t.c.id == bindparam("b_id"))
                .values(
                    cash=bindparam("b_cash"),
                    margin_limit=bindparam("b_limit"),
                    margin_used=bindparam("b_used"),
                ),
                account_rows,
            )
        return len(symbols), out
    finally:
        await engine.dispose()
