"""Demo data for local development: a market, three traders, positions and watchlists.

Loading is idempotent: every row is inserted on its natural key with ON CONFLICT DO
NOTHING, so loading twice changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import domain
from shared.db.demo_symbols import DEMO_SYMBOLS
from shared.db.engine import create_engine, session_factory
from shared.db.migrate import upgrade
from shared.db.models import Account, Position, Symbol, User, WatchlistItem

__all__ = ["DEMO_PASSWORD_DEFAULT", "DEMO_USERS", "demo_password", "load_demo_data"]

DEMO_PASSWORD_DEFAULT = "demo-trader-2026"
HIGH_MARGIN = {"TSLA": Decimal("0.6"), "NVDA": Decimal("0.6"), "AMD": Decimal("0.6")}
LOW_MARGIN_SECTORS = {"Utilities": Decimal("0.4"), "Consumer Staples": Decimal("0.4")}


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    can_trade: bool
    cash: Decimal
    target_utilisation: Decimal
    positions: tuple[tuple[str, int, Decimal], ...]  # ticker, qty, avg cost as share of price
    watchlist: tuple[str, ...]


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser(
        "alice",
        "Alice Archer",
        True,
        Decimal("250000"),
        Decimal("78"),
        (
            ("AAPL", 400, Decimal("0.92")),
            ("MSFT", 150, Decimal("0.97")),
            ("NVDA", 500, Decimal("0.81")),
            ("JPM", 200, Decimal("1.04")),
            ("XOM", 300, Decimal("1.06")),
            ("JNJ", 150, Decimal("0.99")),
            ("AMZN", 180, Decimal("0.88")),
            ("CAT", 60, Decimal("1.02")),
            ("NEE", 250, Decimal("1.08")),
        ),
        ("AAPL", "MSFT", "NVDA", "TSLA", "GOOGL", "META", "JPM", "XOM"),
    ),
    DemoUser(
        "bob",
        "Bob Baker",
        True,
        Decimal("100000"),
        Decimal("45"),
        (
            ("TSLA", 120, Decimal("1.12")),
            ("KO", 400, Decimal("0.95")),
            ("PFE", 800, Decimal("1.10")),
            ("BAC", 600, Decimal("0.90")),
            ("LIN", 40, Decimal("0.97")),
        ),
        ("TSLA", "KO", "PFE", "BAC", "AMD", "NFLX"),
    ),
    DemoUser(
        "viewer",
        "Vera Viewer",
        False,
        Decimal("50000"),
        Decimal("20"),
        (
            ("WMT", 300, Decimal("0.93")),
            ("PLD", 100, Decimal("1.01")),
            ("DIS", 150, Decimal("1.05")),
        ),
        ("WMT", "DIS", "AAPL", "COST"),
    ),
)


def demo_password() -> str:
    return os.environ.get("DEMO_PASSWORD") or DEMO_PASSWORD_DEFAULT


def _margin_rate(ticker: str, sector: str) -> Decimal:
    return HIGH_MARGIN.get(ticker) or LOW_MARGIN_SECTORS.get(sector, domain.DEFAULT_MARGIN_RATE)


def _quote(price: Decimal) -> tuple[Decimal, Decimal]:
    half_spread = max(Decimal("0.01"), (price * Decimal("0.0002")).quantize(Decimal("0.01")))
    return price - half_spread, price + half_spread


async def _load_symbols(session: AsyncSession) -> dict[str, Symbol]:
    rows = []
    for ticker, name, sector, price in DEMO_SYMBOLS:
        last = Decimal(price)
        bid, ask = _quote(last)
        rows.append(
            dict(
                ticker=ticker,
                name=name,
                sector=sector,
                last=last,
                bid=bid,
                ask=ask,
                prev_close=last,
                margin_rate=_margin_rate(ticker, sector),
            )
        )
    await session.execute(
        insert(Symbol).values(rows).on_conflict_do_nothing(index_elements=["ticker"])
    )
    result = await session.scalars(select(Symbol))
    return {s.ticker: s for s in result}


async def _load_user(
    session: AsyncSession, spec: DemoUser, symbols: dict[str, Symbol], password_hash: str
) -> None:
    user_id = await session.scalar(
        insert(User)
        .values(
            username=spec.username,
            display_name=spec.display_name,
            password_hash=password_hash,
            can_trade=spec.can_trade,
        )
        .on_conflict_do_nothing(index_elements=["username"])
        .returning(User.id)
    )
    if user_id is None:  # already loaded
        return
    holdings = [
        domain.Holding(ticker, qty, symbols[ticker].last, margin_rate=symbols[ticker].margin_rate)
        for ticker, qty, _ in spec.positions
    ]
    used = domain.margin_used(holdings).quantize(Decimal("0.01"))
    limit = (used * 100 / spec.target_utilisation).quantize(Decimal("1"), rounding=ROUND_CEILING)
    account_id = await session.scalar(
        insert(Account)
        .values(user_id=user_id, cash=spec.cash, margin_limit=limit, margin_used=used)
        .returning(Account.id)
    )
    await session.execute(
        insert(Position).values(
            [
                dict(
                    account_id=account_id,
                    symbol_id=symbols[ticker].id,
                    quantity=qty,
                    avg_cost=(symbols[ticker].last * share).quantize(Decimal("0.01")),
                    realised_pnl=Decimal(0),
                )
                for ticker, qty, share in spec.positions
            ]
        )
    )
    await session.execute(
        insert(WatchlistItem)
        .values(
            [
                dict(user_id=user_id, symbol_id=symbols[ticker].id, rank=rank)
                for rank, ticker in enumerate(spec.watchlist)
            ]
        )
        .on_conflict_do_nothing()
    )


async def load_demo_data(
    sessions: async_sessionmaker[AsyncSession], password: str | None = None
) -> bool:
    """Load the demo market and users; returns whether anything was new."""
    password_hash = PasswordHasher().hash(password or demo_password())
    async with sessions.begin() as session:
        before = await session.scalar(select(User.id).limit(1))
        symbols = await _load_symbols(session)
        for spec in DEMO_USERS:
            await _load_user(session, spec, symbols, password_hash)
    return before is None


async def prepare_database(url: str, *, demo: bool = True) -> bool:
    """Migrate to head; with ``demo``, load the demo market and users (whether anything
    was new)."""
    await asyncio.to_thread(upgrade, url)
    if not demo:
        return False
    engine = create_engine(url, null_pool=True)
    try:
        return await load_demo_data(session_factory(engine))
    finally:
        await engine.dispose()


def wants_demo_data(env: Mapping[str, str], own_database: bool) -> bool:
    """The demo users (a published password) go only into the database ``make run``
    started, or any database in development: never into one given outside development."""
    return own_database or env.get("APP_ENV", "development") == "development"


async def _main(url: str) -> None:
    engine = create_engine(url, null_pool=True)
    try:
        loaded = await load_demo_data(session_factory(engine))
        print("demo data loaded" if loaded else "demo data already present")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Load demo data into DATABASE_URL")
    parser.parse_args()
    asyncio.run(_main(os.environ["DATABASE_URL"]))
