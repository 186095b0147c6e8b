"""The pricefeed's database access: the startup snapshot and the batched writes.

A batched write is one ``UPDATE … FROM unnest(…)`` statement with one array parameter
per column: the same SQL every cycle, so SQLAlchemy compiles it once and asyncpg prepares
it once (a ``VALUES`` list of literal rows was compiled anew every cycle: over half of
the pricefeed's CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Numeric, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY, distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import column
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import TableValuedAlias

from services.pricefeed.domain import Quote, SymbolInfo
from services.pricefeed.monitor import Breach
from shared.db.models import Account, Position, RiskAlert, Symbol
from shared.db.queries import held_positions
from shared.domain import AlertLevel, cents

__all__ = [
    "AccountRow",
    "Snapshot",
    "insert_alert",
    "load_account",
    "load_snapshot",
    "write_margins",
    "write_prices",
]

# risk_alerts.utilisation_pct is NUMERIC(7, 2)
_MAX_STORED_PCT = Decimal("99999.99")


@dataclass(slots=True)
class AccountRow:
    id: int
    margin_limit: Decimal
    positions: dict[str, int] = field(default_factory=dict)
    stored_level: AlertLevel | None = None


@dataclass(slots=True)
class Snapshot:
    symbols: list[SymbolInfo]
    accounts: list[AccountRow]


def _symbol_info(s: Symbol) -> SymbolInfo:
    return SymbolInfo(s.id, s.ticker, s.prev_close, s.margin_rate, Quote(s.last, s.bid, s.ask))


async def _positions(session: AsyncSession, account_id: int | None) -> list[tuple[int, str, int]]:
    query = held_positions(
        Position.account_id, Symbol.ticker, Position.quantity, account_id=account_id
    )
    return [(a, t, q) for a, t, q in (await session.execute(query)).all()]


async def _latest_levels(session: AsyncSession) -> dict[int, AlertLevel]:
    stmt = (
        select(RiskAlert.account_id, RiskAlert.level)
        .ext(distinct_on(RiskAlert.account_id))
        .order_by(RiskAlert.account_id, RiskAlert.created_at.desc(), RiskAlert.id.desc())
    )
    return {a: level for a, level in (await session.execute(stmt)).all()}  # type: ignore[misc]


async def load_snapshot(session: AsyncSession) -> Snapshot:
    """Every symbol, every account with its open positions and its newest alert level."""
    symbols = [_symbol_info(s) for s in (await session.scalars(select(Symbol))).all()]
    levels = await _latest_levels(session)
    accounts = {
        a: AccountRow(a, limit, stored_level=levels.get(a))
        for a, limit in (await session.execute(select(Account.id, Account.margin_limit))).all()
    }
    for account_id, ticker, qty in await _positions(session, None):
        accounts[account_id].positions[ticker] = qty
    return Snapshot(symbols, list(accounts.values()))


async def load_account(session: AsyncSession, account_id: int) -> AccountRow | None:
    """One account's margin limit and open positions, or None if it does not exist."""
    limit = await session.scalar(select(Account.margin_limit).where(Account.id == account_id))
    if limit is None:
        return None
    row = AccountRow(account_id, limit)
    for _, ticker, qty in await _positions(session, account_id):
        row.positions[ticker] = qty
    return row


def _unnest(name: str, *columns: ColumnClause[Any]) -> TableValuedAlias:
    """``unnest(:<col>s, …) AS name(<col>, …)``: rows from one typed array per column."""
    arrays = (bindparam(f"{c.name}s", type_=ARRAY(c.type)) for c in columns)
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


_PRICES = _unnest(
    "v",
    column("id", Integer),
    column("last", Numeric(18, 4)),
    column("bid", Numeric(18, 4)),
    column("ask", Numeric(18, 4)),
)
_WRITE_PRICES = (
    update(Symbol)
    .where(Symbol.id == _PRICES.c.id)
    .values(last=_PRICES.c.last, bid=_PRICES.c.bid, ask=_PRICES.c.ask, updated_at=func.now())
    .execution_options(synchronize_session=False)
)
_MARGINS = _unnest("v", column("id", Integer), column("used", Numeric(18, 2)))
_WRITE_MARGINS = (
    update(Account)
    .where(Account.id == _MARGINS.c.id)
    .values(margin_used=_MARGINS.c.used)
    .execution_options(synchronize_session=False)
)


async def write_prices(session: AsyncSession, quotes: Mapping[int, Quote]) -> int:
    """Set last/bid/ask of symbols by id in one statement. Returns statements run."""
    if not quotes:
        return 0
    ids = sorted(quotes)  # one lock order for every writer
    await session.execute(
        _WRITE_PRICES,
        {
            "ids": ids,
            "lasts": [quotes[i].last for i in ids],
            "bids": [quotes[i].bid for i in ids],
            "asks": [quotes[i].ask for i in ids],
        },
    )
    return 1


async def write_margins(session: AsyncSession, used: Mapping[int, Decimal]) -> int:
    """Set accounts' margin_used (to the cent) in one statement. Returns statements run."""
    if not used:
        return 0
    ids = sorted(used)
    await session.execute(_WRITE_MARGINS, {"ids": ids, "useds": [cents(used[i]) for i in ids]})
    return 1


async def insert_alert(session: AsyncSession, breach: Breach, ts_ms: float | None = None) -> None:
    """Store ``breach`` as alerted at ``ts_ms`` (the time its live message carries, so a
    page that mounts the stored one sees the same alert, not a second; else now)."""
    values: dict[str, Any] = {
        "account_id": breach.account_id,
        "level": breach.level,
        "text": breach.text,
        "utilisation_pct": min(breach.utilisation_pct, _MAX_STORED_PCT),
    }
    if ts_ms is not None:
        values["created_at"] = datetime.fromtimestamp(ts_ms / 1000, UTC)
    await session.execute(insert(RiskAlert).values(**values))
