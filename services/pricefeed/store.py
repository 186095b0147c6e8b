"""The pricefeed's database access: the startup snapshot and the batched writes.

Batched writes are one ``UPDATE … FROM (VALUES …)`` statement per batch of rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Integer, Numeric, func, insert, select, update, values
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import column

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

_Row = tuple[object, ...]
# risk_alerts.utilisation_pct is NUMERIC(7, 2)
_MAX_STORED_PCT = Decimal("99999.99")
# asyncpg allows 32,767 bind parameters per statement; 4 per price row.
BATCH_ROWS = 5_000


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


def _chunks(rows: Sequence[_Row], size: int) -> list[Sequence[_Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def write_prices(session: AsyncSession, quotes: Mapping[int, Quote]) -> int:
    """Set last/bid/ask of symbols by id; one statement per batch. Returns statements run."""
    rows = [(sid, q.last, q.bid, q.ask) for sid, q in sorted(quotes.items())]
    for batch in _chunks(rows, BATCH_ROWS):
        v = values(
            column("id", Integer),
            column("last", Numeric(18, 4)),
            column("bid", Numeric(18, 4)),
            column("ask", Numeric(18, 4)),
            name="v",
        ).data(list(batch))
        await session.execute(
            update(Symbol)
            .where(Symbol.id == v.c.id)
            .values(last=v.c.last, bid=v.c.bid, ask=v.c.ask, updated_at=func.now())
        )
    return len(_chunks(rows, BATCH_ROWS))


async def write_margins(session: AsyncSession, used: Mapping[int, Decimal]) -> int:
    """Set accounts' margin_used (to the cent); one statement per batch."""
    rows = [(aid, cents(u)) for aid, u in sorted(used.items())]
    for batch in _chunks(rows, BATCH_ROWS * 2):
        v = values(column("id", Integer), column("used", Numeric(18, 2)), name="v").data(
            list(batch)
        )
        await session.execute(
            update(Account).where(Account.id == v.c.id).values(margin_used=v.c.used)
        )
    return len(_chunks(rows, BATCH_ROWS * 2))


async def insert_alert(session: AsyncSession, breach: Breach) -> None:
    await session.execute(
        insert(RiskAlert).values(
            account_id=breach.account_id,
            level=breach.level,
            text=breach.text,
            utilisation_pct=min(breach.utilisation_pct, _MAX_STORED_PCT),
        )
    )
