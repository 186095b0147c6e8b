"""The schema: migrations both ways, the migrated schema equal to the models (columns,
types, keys, indexes), and every constraint rejecting its bad row."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import IntegrityError

from shared.db.engine import create_engine
from shared.db.migrate import downgrade, upgrade
from shared.db.models import Base
from tests.support import table_names

pytestmark = pytest.mark.service


async def test_migrations_upgrade_and_downgrade(database_url: str) -> None:
    import asyncio

    assert await table_names(database_url) == set(Base.metadata.tables)
    await asyncio.to_thread(downgrade, database_url, "base")
    assert await table_names(database_url) == set()
    await asyncio.to_thread(upgrade, database_url, "head")
    assert await table_names(database_url) == set(Base.metadata.tables)


def _drift(conn: Connection) -> list[object]:
    """What Alembic's autogenerate would change to make the database the models: tables,
    columns, types, nullability, indexes, unique and foreign keys."""
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "include_name": lambda name, kind, _parent: (
                not (kind == "table" and name == "alembic_version")
            ),
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_is_the_models(database_url: str) -> None:
    engine = create_engine(database_url, null_pool=True)
    async with engine.connect() as conn:
        drift = await conn.run_sync(_drift)
    await engine.dispose()
    assert drift == [], "a model and the migrations disagree (write a migration)"


SETUP = """
INSERT INTO users (id, username, display_name, password_hash, can_trade)
    VALUES (1, 'u1', '', 'x', true), (2, 'u2', '', 'x', false);
INSERT INTO accounts (id, user_id, cash, margin_limit, margin_used) VALUES (1, 1, 100, 1000, 0);
INSERT INTO symbols (id, ticker, name, sector, last, bid, ask, prev_close, margin_rate)
    VALUES (1, 'AAPL', 'Apple', 'Technology', 100, 99.9, 100.1, 100, 0.5);
INSERT INTO orders (id, account_id, client_order_id, symbol_id, side, order_type, quantity,
                    limit_price, status, filled_qty)
    VALUES (1, 1, 'c1', 1, 'buy', 'market', 10, NULL, 'submitted', 0);
"""

ORDER = (
    "INSERT INTO orders (account_id, client_order_id, symbol_id, side, order_type, quantity,"
    " limit_price, status, filled_qty, reject_reason) VALUES "
)

BAD_ROWS = {
    "duplicate username": "INSERT INTO users (username, display_name, password_hash, can_trade)"
    " VALUES ('u1', '', 'x', false)",
    "empty username": "INSERT INTO users (username, display_name, password_hash, can_trade)"
    " VALUES ('', '', 'x', false)",
    "second account for a user": "INSERT INTO accounts (user_id, cash, margin_limit, margin_used)"
    " VALUES (1, 0, 0, 0)",
    "negative cash": "UPDATE accounts SET cash = -1",
    "negative margin limit": "UPDATE accounts SET margin_limit = -1",
    "account of unknown user": "INSERT INTO accounts (user_id, cash, margin_limit, margin_used)"
    " VALUES (99, 0, 0, 0)",
    "lowercase ticker": "INSERT INTO symbols (ticker, name, sector, last, bid, ask, prev_close,"
    " margin_rate) VALUES ('aapl', 'x', 's', 1, 1, 1, 1, 0.5)",
    "duplicate ticker": "INSERT INTO symbols (ticker, name, sector, last, bid, ask, prev_close,"
    " margin_rate) VALUES ('AAPL', 'x', 's', 1, 1, 1, 1, 0.5)",
    "bid above ask": "UPDATE symbols SET bid = 101",
    "zero price": "UPDATE symbols SET last = 0",
    "margin rate above 1": "UPDATE symbols SET margin_rate = 1.5",
    "negative position": "INSERT INTO positions (account_id, symbol_id, quantity, avg_cost,"
    " realised_pnl) VALUES (1, 1, -5, 10, 0)",
    "duplicate position": "INSERT INTO positions (account_id, symbol_id, quantity, avg_cost,"
    " realised_pnl) VALUES (1, 1, 5, 10, 0), (1, 1, 6, 10, 0)",
    "duplicate watchlist item": "INSERT INTO watchlist_items (user_id, symbol_id, rank)"
    " VALUES (1, 1, 0), (1, 1, 1)",
    "negative rank": "INSERT INTO watchlist_items (user_id, symbol_id, rank) VALUES (1, 1, -1)",
    "unknown side": ORDER + "(1, 'c2', 1, 'hold', 'market', 10, NULL, 'submitted', 0, NULL)",
    "unknown order type": ORDER + "(1, 'c2', 1, 'buy', 'stop', 10, NULL, 'submitted', 0, NULL)",
    "unknown status": ORDER + "(1, 'c2', 1, 'buy', 'market', 10, NULL, 'pending', 0, NULL)",
    "zero quantity": ORDER + "(1, 'c2', 1, 'buy', 'market', 0, NULL, 'submitted', 0, NULL)",
    "quantity over 10000": ORDER + "(1, 'c2', 1, 'buy', 'market', 10001, NULL, 'submitted', 0,"
    " NULL)",
    "limit order without price": ORDER + "(1, 'c2', 1, 'buy', 'limit', 10, NULL, 'open', 0, NULL)",
    "limit order at zero": ORDER + "(1, 'c2', 1, 'buy', 'limit', 10, 0, 'open', 0, NULL)",
    "market order with price": ORDER + "(1, 'c2', 1, 'buy', 'market', 10, 5, 'submitted', 0, NULL)",
    "duplicate client order id": ORDER + "(1, 'c1', 1, 'buy', 'market', 10, NULL, 'submitted', 0,"
    " NULL)",
    "rejected without reason": ORDER + "(1, 'c2', 1, 'buy', 'market', 10, NULL, 'rejected', 0,"
    " NULL)",
    "reason without rejection": ORDER + "(1, 'c2', 1, 'buy', 'market', 10, NULL, 'submitted', 0,"
    " 'x')",
    "overfilled order": "UPDATE orders SET filled_qty = 11",
    "filled without full quantity": "UPDATE orders SET status = 'filled', filled_qty = 5",
    "zero fill": "INSERT INTO fills (order_id, quantity, price) VALUES (1, 0, 10)",
    "fill at zero price": "INSERT INTO fills (order_id, quantity, price) VALUES (1, 1, 0)",
    "fill of unknown order": "INSERT INTO fills (order_id, quantity, price) VALUES (42, 1, 10)",
    "unknown alert level": "INSERT INTO risk_alerts (account_id, level, text, utilisation_pct)"
    " VALUES (1, 'info', 'x', 50)",
}


@pytest.fixture
async def seeded_engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(database_url, null_pool=True)
    async with engine.begin() as conn:
        for statement in SETUP.strip().split(";\n"):
            await conn.execute(text(statement))
    yield engine
    await engine.dispose()


async def test_the_setup_rows_are_valid(seeded_engine) -> None:  # type: ignore[no-untyped-def]
    async with seeded_engine.connect() as conn:
        assert await conn.scalar(text("SELECT quantity FROM orders")) == 10
        assert await conn.scalar(text("SELECT last FROM symbols")) == Decimal("100.0000")


@pytest.mark.parametrize("statement", BAD_ROWS.values(), ids=BAD_ROWS.keys())
async def test_constraint_rejects_bad_row(seeded_engine, statement: str) -> None:  # type: ignore[no-untyped-def]
    async with seeded_engine.connect() as conn:
        with pytest.raises(IntegrityError):
            await conn.execute(text(statement))


async def test_every_table_has_a_primary_key(database_url: str) -> None:
    engine = create_engine(database_url, null_pool=True)
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(text("count(*)"))
            .select_from(text("information_schema.tables t"))
            .where(
                text(
                    "t.table_schema = 'public' AND NOT EXISTS (SELECT 1 FROM "
                    "information_schema.table_constraints c WHERE c.table_name = t.table_name "
                    "AND c.constraint_type = 'PRIMARY KEY')"
                )
            )
        )
    await engine.dispose()
    assert count == 0
