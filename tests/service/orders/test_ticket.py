"""The ticket's what-if and a large buy's confirmation, through the real orders service:
the what-if shows the figures and refusals of the very check that accepts orders."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders import components, queries
from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.identity import Identity
from tests.service.orders.support import (
    book,
    last_order,
    order_form,
    place_limit,
    set_cash,
    started,
    submit,
    tick,
)
from tests.support import collect_ui, identity_headers, session_payload, wait_until

pytestmark = pytest.mark.service


async def whatif(client: httpx.AsyncClient, who: Identity, **fields: str) -> str:
    r = await client.post(
        "/components/order/events/whatif", data=fields, headers=identity_headers(who)
    )
    assert r.status_code == 200, r.text
    start = r.text.index('id="order-root-whatif"')
    return r.text[start : r.text.index("</div>", start)]


async def test_the_what_if_is_the_pre_trade_check(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    await set_cash(db, alice.account_id, 1000)
    box = await whatif(client, alice, symbol="aapl", quantity="3", order_type="market")
    assert 'class="num whatif-power">1,000.00<' in box
    assert "whatif-cost" in box and "whatif-after" in box
    # 30 AAPL cost more than 1,000.00: the what-if says so in the words a submit gets
    box = await whatif(client, alice, symbol="AAPL", quantity="30")
    refusal = box[box.index('class="whatif__refusal">') :].split(">", 1)[1].split("<", 1)[0]
    assert refusal.startswith("Insufficient cash: 30 × ")
    r = await submit(client, alice, symbol="AAPL", side="buy", quantity=30)
    assert r.status_code == 422 and refusal in r.text
    # nothing to say about an incomplete ticket, nor a limit that is no price
    assert "whatif-cost" not in await whatif(client, alice, symbol="AAPL", quantity="")
    for limit in ("NaN", "inf", "-5", "0"):
        box = await whatif(client, alice, symbol="AAPL", quantity="3", **limit_order(limit))
        assert "whatif-cost" not in box
    # a buy limit above the ask fills at the ask: priced there, as the submit prices it
    # (1,100 would be more than the cash; the ask, ~230, is not)
    assert "Insufficient cash" not in await whatif(
        client, alice, symbol="AAPL", quantity="1", **limit_order("1100")
    )
    r = await submit(client, alice, symbol="AAPL", side="buy", quantity=1, **limit_order("1100"))
    assert r.status_code == 200 and "filled" in r.text


def limit_order(price: str) -> dict[str, str]:
    return {"order_type": "limit", "limit_price": price}


def symbol_list(html: str) -> list[str]:
    """The symbols the ticket's datalist offers."""
    start = html.index('<datalist id="order-root-symbols">')
    body = html[start : html.index("</datalist>", start)]
    return [o.split('"', 1)[0] for o in body.split('<option value="')[1:]]


async def test_the_page_gets_the_symbols_once_and_answers_leave_them_out(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    """The page's ticket lists every symbol, outside the desk that an event's answer
    replaces; an answer (a submit, a refusal, a what-if) lists none, so it does not grow
    with the market."""
    await set_cash(db, alice.account_id, 10_000)
    page = await client.get("/components/order", headers=identity_headers(alice))
    assert {"AAPL", "MSFT"} <= set(symbol_list(page.text))
    desk = page.text.index('<div id="order-root-desk">')
    assert page.text.index("</datalist>") < desk
    assert page.text.count('hx-target="#order-root-desk" hx-select="#order-root-desk"') == 1
    answers = [
        await submit(client, alice, symbol="AAPL", side="buy", quantity=1),
        await submit(client, alice, symbol="NOPE", side="buy", quantity=1),
        await client.post(
            "/components/order/events/whatif",
            data={"symbol": "AAPL", "quantity": "2"},
            headers=identity_headers(alice),
        ),
    ]
    assert [r.status_code for r in answers] == [200, 422, 200]
    for r in answers:
        assert symbol_list(r.text) == []


async def test_a_large_buy_waits_for_its_confirmation(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    await set_cash(db, alice.account_id, 10_000)
    before = await book(db, alice.account_id, "KO")
    form = order_form(symbol="KO", side="buy", quantity=50)  # ≈ 3,000: 30 % of the cash
    r = await submit(client, alice, **form)
    assert r.status_code == 200 and "Not placed yet" in r.text
    assert "Confirm buy 50 KO ≈ $" in r.text
    assert await book(db, alice.account_id, "KO") == before  # nothing written
    intent = r.text.split('name="confirm" value="', 1)[1].split('"', 1)[0]
    changed = {**form, "quantity": "60", "confirm": intent}  # not what was confirmed
    r = await submit(client, alice, **changed)
    assert "Confirm buy 60 KO" in r.text and await book(db, alice.account_id, "KO") == before
    r = await submit(client, alice, **form, confirm=intent)
    assert r.status_code == 200 and "filled: bought 50 KO" in r.text
    assert (await book(db, alice.account_id, "KO"))["position"][0] == 50
    small = await submit(client, alice, symbol="KO", side="buy", quantity=1)
    assert "filled: bought 1 KO" in small.text  # under the share: no question asked
    assert Decimal(0) < (await book(db, alice.account_id, "KO"))["cash"] < 10_000


async def test_a_resting_fill_raises_one_notice(
    settings: OrdersSettings,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    bus: NatsBus,
) -> None:
    ui = await collect_ui(bus, alice.user_id, "order")
    async with started(settings) as orders:
        await bus.publish(wire.PRICES_TICKS, tick(1, KO=("60.00", "60.02")))
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: len(ui) >= 1)  # the live instance is mounted
        await place_limit(orders.client, alice, "buy", 4, "KO", "59.00")
        order = await last_order(db, alice.account_id)
        assert order.status == "open"
        # crosses: the venue fills
        await bus.publish(wire.PRICES_TICKS, tick(2, KO=("58.48", "58.50")))
        key = f'data-notice="{order.id}-filled"'

        def notices() -> list[str]:
            return [
                p["html"]
                for _, m in ui
                for u in m.get("updates", [m])
                for p in u.get("parts", [])
                if key in p.get("html", "")
            ]

        await wait_until(lambda: notices())
        await bus.publish(wire.PRICES_TICKS, tick(3, KO=("58.00", "58.02")))  # crosses again
        await submit(orders.client, alice, symbol="KO", side="buy", quantity=1)  # more updates
        later = await last_order(db, alice.account_id)
        await wait_until(
            lambda: any(f"order-recent-{later.id}" in p.get("html", "") for _, u in ui
                        for p in u.get("parts", []))
        )  # fmt: skip
        [html] = notices()  # one notice, sent once
        assert f"Order #{order.id} filled: bought 4 KO @ 58.50 at " in html


async def test_the_live_lists_are_read_again_only_for_what_the_trader_did_not_do_here(
    settings: OrdersSettings,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    bus: NatsBus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lists_read: list[str] = []

    async def order_rows(*args: Any) -> Any:
        lists_read.append("read")
        return await queries.order_rows(*args)

    monkeypatch.setattr(components, "order_rows", order_rows)
    ui = await collect_ui(bus, alice.user_id, "order")
    async with started(settings) as orders:
        await bus.publish(wire.PRICES_TICKS, tick(1, KO=("60.00", "60.02")))
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: len(ui) >= 1)  # the live instance is mounted
        assert len(lists_read) == 1
        r = await submit(orders.client, alice, symbol="KO", side="buy", quantity=1)
        assert "filled: bought 1 KO" in r.text
        await place_limit(orders.client, alice, "buy", 4, "KO", "59.00")  # each answer reads
        resting = await last_order(db, alice.account_id)
        await bus.publish(wire.PRICES_TICKS, tick(2, KO=("58.48", "58.50")))  # the venue fills
        await wait_until(lambda: any(f'data-notice="{resting.id}-filled"' in str(m) for m in ui))
    # the two orders' own events (filled, open) came first and changed nothing the lists
    # showed; the fill, which happened elsewhere, is read once: 4 reads, where reading on
    # every event made 6. (An event delivered before its answer's lists were adopted,
    # which the outbox's round trips make unlikely, is read: 5.)
    assert 4 <= len(lists_read) <= 5, lists_read
