"""The orders service against real PostgreSQL and NATS, order entry: validation, pre-trade
checks, permissions, idempotency, rate limit."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders import components, execution
from services.orders.settings import OrdersSettings
from shared.db.models import OutboxMessage
from shared.identity import Identity
from tests.service.orders.support import book, place, set_cash, started, submit, symbol
from tests.support import identity_headers, identity_of

pytestmark = pytest.mark.service


# -- rejections: 422, nothing written -----------------------------------------------------


async def _nothing_written(
    db: async_sessionmaker[AsyncSession], who: Identity, before: dict, ticker: str = "AAPL"
) -> None:
    after = await book(db, who.account_id, ticker)
    assert after["orders"] == [] and after["fills"] == before["fills"]
    assert (after["cash"], after["position"]) == (before["cash"], before["position"])


async def test_selling_more_than_held_is_422(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    before = await book(db, alice.account_id, "AAPL")
    r = await submit(client, alice, symbol="AAPL", side="sell", quantity=401)
    assert r.status_code == 422
    assert "You hold 400 AAPL; cannot sell 401" in r.text and 'aria-invalid="true"' in r.text
    await _nothing_written(db, alice, before)
    r = await submit(client, alice, symbol="TSLA", side="sell", quantity=1)  # bob's, not alice's
    assert r.status_code == 422 and "You hold 0 TSLA; cannot sell 1" in r.text


async def test_unknown_symbol_is_422_naming_it(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    before = await book(db, alice.account_id, "AAPL")
    r = await submit(client, alice, symbol="zzzz", side="buy", quantity=1)
    assert r.status_code == 422 and "Unknown symbol: ZZZZ" in r.text
    assert 'class="field-error"' in r.text and 'value="zzzz"' in r.text  # values kept
    await _nothing_written(db, alice, before)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"quantity": 0}, "quantity", "greater than 0"),
        ({"quantity": 10_001}, "quantity", "less than or equal to 10000"),
        ({"order_type": "limit"}, "limit_price", "Enter a limit price for a limit order"),
        ({"order_type": "limit", "limit_price": "0"}, "limit_price", "greater than 0"),
        ({"limit_price": "100"}, "limit_price", "Leave the limit price empty"),
    ],
)
async def test_invalid_payloads_are_422(
    client: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    fields: dict[str, Any],
    field: str,
    message: str,
) -> None:
    before = await book(db, alice.account_id, "AAPL")
    r = await submit(client, alice, **{"symbol": "AAPL", "side": "buy", "quantity": 1, **fields})
    assert r.status_code == 422 and message in r.text
    assert f'id="order-root-{field}-error"' in r.text
    await _nothing_written(db, alice, before)


async def test_pre_trade_checks_reject_before_storing(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    # margin: plenty of cash, but 5,000 NVDA would take utilisation far over 100 %
    await set_cash(db, alice.account_id, "10000000")
    before = await book(db, alice.account_id, "NVDA")
    r = await submit(client, alice, symbol="NVDA", side="buy", quantity=5000)
    assert r.status_code == 422 and "Margin limit exceeded" in r.text
    await _nothing_written(db, alice, before, "NVDA")

    # cash: 10 AAPL cost more than 1,000.00
    await set_cash(db, alice.account_id, "1000")
    before = await book(db, alice.account_id, "AAPL")
    r = await submit(client, alice, symbol="AAPL", side="buy", quantity=10)
    assert r.status_code == 422 and "Insufficient cash" in r.text
    r = await submit(
        client, alice, symbol="AAPL", side="buy", quantity=10, order_type="limit", limit_price="200"
    )
    assert r.status_code == 422 and "Insufficient cash" in r.text
    await _nothing_written(db, alice, before)


async def test_viewer_without_trading_permission_gets_403(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: OrdersSettings
) -> None:
    viewer = await identity_of(settings.database_url, "viewer")
    before = await book(db, viewer.account_id, "WMT")
    r = await submit(client, viewer, symbol="WMT", side="sell", quantity=1)
    assert r.status_code == 403
    assert (
        await client.get("/components/order", headers=identity_headers(viewer))
    ).status_code == 403
    assert (await client.get("/components/order")).status_code == 401
    await _nothing_written(db, viewer, before, "WMT")


# -- idempotency and rate limit -----------------------------------------------------------


async def test_same_client_order_id_yields_one_order(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    before = await book(db, alice.account_id, "KO")
    cid = uuid4().hex
    first = await submit(client, alice, symbol="KO", side="buy", quantity=3, client_order_id=cid)
    again = await submit(client, alice, symbol="KO", side="buy", quantity=3, client_order_id=cid)
    assert first.status_code == again.status_code == 200
    after = await book(db, alice.account_id, "KO")
    assert len(after["orders"]) == 1 and after["fills"] == before["fills"] + 1
    assert f"Order #{after['orders'][0].id} already received: filled" in again.text
    assert after["cash"] == before["cash"] - (await symbol(db, "KO")).ask * 3

    # the same id with a different order is refused, never silently dropped
    other = await submit(client, alice, symbol="KO", side="buy", quantity=4, client_order_id=cid)
    assert other.status_code == 422 and "already used for order" in other.text

    # concurrently: five identical submits, one order
    cid = uuid4().hex
    answers = await asyncio.gather(
        *(
            submit(client, alice, symbol="KO", side="buy", quantity=1, client_order_id=cid)
            for _ in range(5)
        )
    )
    assert [a.status_code for a in answers] == [200] * 5
    # each that waited for the first one's lock found its order (by the id's conflict)
    assert sum("already received" in a.text for a in answers) == 4
    final = await book(db, alice.account_id, "KO")
    assert len(final["orders"]) == 2 and final["fills"] == before["fills"] + 2
    # and were booked once: one share, its price once (an insert that found the id taken
    # writes no fill, position, cash or event)
    assert final["position"][0] == after["position"][0] + 1
    assert final["cash"] == after["cash"] - (await symbol(db, "KO")).ask


async def test_an_id_committed_while_the_lock_was_awaited_is_found_and_booked_once(
    client: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The account's locking read sees the rows as they were when it began: an order with
    the form's id committed while it waited for the lock is not among them. The insert's
    conflict finds it; nothing of the second submit is written (no fill, no position or
    cash moved, no event)."""
    cid = uuid4().hex
    await submit(client, alice, symbol="KO", side="buy", quantity=2, client_order_id=cid)
    before = await book(db, alice.account_id, "KO")
    async with db() as s:
        events = await s.scalar(select(func.count()).select_from(OutboxMessage))

    async def read_before_the_commit(*args: Any) -> Any:
        account, found, _existing = await execution.lock_account_and_find(*args)
        return account, found, None  # as if the read began before the first commit

    monkeypatch.setattr(components, "lock_account_and_find", read_before_the_commit)
    again = await submit(client, alice, symbol="KO", side="buy", quantity=2, client_order_id=cid)
    assert again.status_code == 200
    assert f"Order #{before['orders'][-1].id} already received: filled" in again.text
    after = await book(db, alice.account_id, "KO")
    assert [o.id for o in after.pop("orders")] == [o.id for o in before.pop("orders")]
    assert after == before  # cash, position, fills
    async with db() as s:
        assert await s.scalar(select(func.count()).select_from(OutboxMessage)) == events


async def test_61st_submit_in_a_minute_is_429_and_writes_nothing(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    for _ in range(60):
        await place(client, alice, symbol="KO", side="buy", quantity=1)
    before = await book(db, alice.account_id, "KO")
    r = await submit(client, alice, symbol="KO", side="buy", quantity=1)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    after = await book(db, alice.account_id, "KO")
    assert len(after["orders"]) == 60
    assert (after["cash"], after["position"], after["fills"]) == (
        before["cash"],
        before["position"],
        before["fills"],
    )


async def test_with_every_database_connection_in_use_an_order_is_503_busy_and_then_placed_once(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    busy = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_s": 0.2})
    form = {"symbol": "KO", "side": "buy", "quantity": 1, "client_order_id": uuid4().hex}
    before = await book(db, alice.account_id, "KO")
    async with started(busy) as process:
        engine = process.app.state.engine
        held = [await engine.connect(), await engine.connect()]  # the pool's one and overflow
        try:
            r = await submit(process.client, alice, **form)
        finally:
            for connection in held:
                await connection.close()
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert "busy" in r.text and "Nothing was changed" in r.text
        await _nothing_written(db, alice, before, "KO")
        await place(process.client, alice, **form)  # the same form again: placed
        again = await submit(process.client, alice, **form)  # and only once
    assert again.status_code == 200 and "already received" in again.text.lower(), again.text
    after = await book(db, alice.account_id, "KO")
    assert before["position"] is None  # alice holds no KO in the demo data
    assert len(after["orders"]) == 1 and after["position"][0] == 1
