"""The shared queries, as the SQL they send."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from shared.db.models import Position, Symbol
from shared.db.queries import held_positions


def _sql(query: Select[Any]) -> str:
    return " ".join(str(query.compile(dialect=postgresql.dialect())).split())


def test_held_positions_joins_symbols_and_skips_closed_positions() -> None:
    sql = _sql(held_positions(Position.quantity, Symbol.ticker, account_id=7))
    assert sql.startswith("SELECT positions.quantity, symbols.ticker FROM positions JOIN symbols")
    assert "positions.quantity > " in sql and "positions.account_id = " in sql


def test_held_positions_of_every_account() -> None:
    sql = _sql(held_positions(Symbol.ticker, Position.account_id))
    assert "FROM positions JOIN symbols" in sql and "account_id =" not in sql
