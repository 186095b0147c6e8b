"""Faults injected into the running stack, checked against the database and the screen:
nothing accepted is lost, nothing applied twice, nothing stale shown as live."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from shared import devservers
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, Order, OutboxMessage, Position, Symbol
from shared.db.queries import held_positions
from tests.e2e.conftest import login
from tests.e2e.test_live_dashboard import assert_arithmetic, snapshot
from tests.faults.conftest import DIE_AFTER_COMMIT, FaultStack
from tests.support import identity_of

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

STALE_WITHIN_MS = 5_000


def book(database_url: str, username: str, ticker: str) -> dict[str, Any]:
    """Position, cash, orders and unsent outbox rows of ``username``, from PostgreSQL."""

    async def read() -> dict[str, Any]:
        who = await identity_of(database_url, username)
        engine = create_engine(database_url, null_pool=True)
        try:
            async with session_factory(engine)() as s:
                held = held_positions(Position.quantity, account_id=who.account_id)
                qty = await s.scalar(held.where(Symbol.ticker == ticker))
                cash = await s.scalar(select(Account.cash).where(Account.id == who.account_id))
                orders = await s.scalar(
                    select(func.count()).where(Order.account_id == who.account_id)
                )
                unsent = await s.scalar(
                    select(func.count()).where(OutboxMessage.published_at.is_(None))
                )
        finally:
            await engine.dispose()
        return {"qty": qty or 0, "cash": cash, "orders": orders, "unsent": unsent}

    result: dict[str, Any] = devservers.run_async(read())
    return result


def portfolio_rows(page: Any) -> dict[str, tuple[str, str]]:
    """Symbol row → (quantity, average cost): what a fresh page must agree on."""
    return {r["id"]: (r["qty"], r["avg"]) for r in snapshot(page)["rows"]}


def buy(page: Any, ticker: str, quantity: int) -> str:
    """Buy at the market through the ticket; the order's id, from the ticket's outcome."""
    page.fill("#order-root input[name=symbol]", ticker)
    page.fill("#order-root input[name=quantity]", str(quantity))
    page.click("#order-root button[value=buy]")
    page.wait_for_function(
        "() => document.querySelector('#order-root [data-optimistic-message]')"
        "?.textContent.includes('filled')"
    )
    outcome = page.text_content("#order-root [data-optimistic-message]") or ""
    return outcome.split("#", 1)[1].split()[0]


def test_a_nats_outage_with_pages_open_and_orders_placed_loses_nothing(
    new_page: Any, fault_stack: FaultStack
) -> None:
    """Rows 1 and 2: NATS down for 10 s while alice's page is open; she buys twice; the
    orders process is killed meanwhile. Her page says "delayed" within 5 s, comes back
    by itself, and shows both fills exactly as a fresh page and the database do."""
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#portfolio-root #portfolio-row-AAPL")
    page.evaluate("() => { window.__same_page = true; }")
    before = book(fault_stack.database_url, "alice", "KO")

    fault_stack.stop_nats()
    outage_started = time.monotonic()
    page.wait_for_selector("#feed-status[data-state=delayed]", timeout=STALE_WITHIN_MS)
    page.wait_for_selector("#freshness-portfolio[data-state=delayed]", timeout=STALE_WITHIN_MS)
    assert "no connection to the price feed" in page.text_content("#feed-status")
    # the orders service stores the orders (HTTP and PostgreSQL need no NATS); their
    # events stay in the outbox until the broker has them
    bought = [buy(page, "KO", 7), buy(page, "KO", 5)]
    during = book(fault_stack.database_url, "alice", "KO")
    assert during["qty"] == before["qty"] + 12 and during["unsent"] >= 2
    fault_stack.kill("orders")  # and the process holding those rows dies
    time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
    fault_stack.start_nats()

    # back without a reload: live again, both fills on the page
    page.wait_for_selector("#feed-status[data-state=live]", timeout=30_000)
    page.wait_for_selector(
        "#freshness-portfolio[data-state=live]", state="attached", timeout=10_000
    )
    page.wait_for_function(
        "q => document.querySelector('#portfolio-row-KO .qty')?.textContent.trim() === q",
        arg=str(before["qty"] + 12),
        timeout=30_000,
    )
    for order_id in bought:  # the order history is live parts: it follows once NATS is back
        page.wait_for_selector(f"#order-recent-{order_id}", timeout=30_000)
    assert page.evaluate("() => window.__same_page === true")
    after = book(fault_stack.database_url, "alice", "KO")
    assert after["qty"] == before["qty"] + 12
    assert after["orders"] == before["orders"] + 2
    assert after["cash"] == during["cash"] < before["cash"]  # applied once, not again
    deadline = time.monotonic() + 30
    while book(fault_stack.database_url, "alice", "KO")["unsent"]:
        assert time.monotonic() < deadline, "outbox rows still unsent after the outage"
        time.sleep(0.5)
    fresh = new_page()
    login(fresh, "alice")
    fresh.wait_for_selector("#portfolio-root #portfolio-row-KO")
    assert portfolio_rows(page) == portfolio_rows(fresh)
    assert_arithmetic(snapshot(page))
    assert_arithmetic(snapshot(fresh))


def test_a_dead_component_service_is_marked_delayed_and_comes_back_by_itself(
    new_page: Any, fault_stack: FaultStack
) -> None:
    """Row 5: the watchlist service is SIGKILLed with a page open. The open page marks the
    watchlist "delayed"; a page loaded meanwhile shows the fallback; both recover without
    anyone reloading once the launcher has restarted the service."""
    page = new_page()
    login(page, "bob")
    page.wait_for_selector("#watchlist-root [id^=watchlist-row-]")
    fault_stack.kill("watchlist")
    fresh = new_page()
    login(fresh, "bob")
    assert fresh.query_selector("#watchlist-root.fragment-unavailable") is not None
    page.wait_for_selector("#freshness-watchlist[data-state=delayed]", timeout=STALE_WITHIN_MS)
    status = page.text_content("#freshness-watchlist") or ""
    assert status.startswith("delayed") and "last update" in status, status
    assert page.is_visible("#freshness-watchlist")
    page.wait_for_selector(
        "#freshness-watchlist[data-state=live]", state="attached", timeout=30_000
    )
    assert not page.is_visible("#freshness-watchlist")
    fresh.wait_for_selector("#watchlist-root [id^=watchlist-row-]", timeout=30_000)
    assert fresh.locator("#watchlist-root.fragment-unavailable").count() == 0


def test_an_order_sent_while_the_orders_service_is_down_says_so_and_a_retry_places_it_once(
    new_page: Any, fault_stack: FaultStack
) -> None:
    """The gateway cannot reach the orders service: the ticket says what happened in the
    server's words (never a stale "filled"), the form keeps what the trader typed, and the
    retry once the service is back places exactly one order."""
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#order-root form.order-form")
    before = book(fault_stack.database_url, "alice", "PFE")
    fault_stack.kill("orders")
    page.fill("#order-root input[name=symbol]", "PFE")
    page.fill("#order-root input[name=quantity]", "4")
    page.click("#order-root button[value=buy]")
    failed = page.wait_for_selector("#order-root [data-status=failed] [data-optimistic-message]")
    message = failed.text_content() or ""
    assert "orders service" in message and "retry" in message.lower(), message
    assert "filled" not in message
    assert page.input_value("#order-root input[name=quantity]") == "4"  # kept for the retry
    assert book(fault_stack.database_url, "alice", "PFE")["orders"] == before["orders"]

    deadline = time.monotonic() + 30
    while True:  # the launcher restarts it; the trader retries until it answers
        page.click("#order-root button[value=buy]")
        page.wait_for_function(
            "() => { const m = document.querySelector('#order-root [data-optimistic-message]');"
            " return m && !m.textContent.includes('Sending'); }"
        )
        if "filled" in (page.text_content("#order-root [data-optimistic-message]") or ""):
            break
        assert time.monotonic() < deadline, "the orders service did not come back"
        time.sleep(1)
    after = book(fault_stack.database_url, "alice", "PFE")
    assert after["orders"] == before["orders"] + 1
    assert after["qty"] == before["qty"] + 4


def test_the_orders_process_dying_after_commit_and_a_retry_returns_the_original_order(
    new_page: Any, fault_stack: FaultStack
) -> None:
    """Row 4: the orders process commits the order and dies before answering (a failpoint
    right after the commit). The ticket says the service did not answer; the trader's retry,
    with the same client order id, gets the original order back, and there is one order."""
    page = new_page()
    login(page, "bob")
    page.wait_for_selector("#order-root form.order-form")
    before = book(fault_stack.database_url, "bob", "BAC")
    client_order_id = f"{DIE_AFTER_COMMIT}{uuid.uuid4().hex[:12]}"
    page.evaluate(
        "cid => { document.querySelector('#order-root input[name=client_order_id]').value = cid; }",
        client_order_id,
    )
    page.fill("#order-root input[name=symbol]", "BAC")
    page.fill("#order-root input[name=quantity]", "6")
    page.click("#order-root button[value=buy]")
    failed = page.wait_for_selector("#order-root [data-status=failed] [data-optimistic-message]")
    message = failed.text_content() or ""
    assert "did not answer" in message and "cannot be placed twice" in message, message
    stored = book(fault_stack.database_url, "bob", "BAC")
    assert stored["orders"] == before["orders"] + 1  # committed before the process died

    deadline = time.monotonic() + 30
    while True:  # retry (same form, same client order id) until the service is back
        page.click("#order-root button[value=buy]")
        page.wait_for_function(
            "() => { const m = document.querySelector('#order-root [data-optimistic-message]');"
            " return m && !m.textContent.includes('Sending'); }"
        )
        text = page.text_content("#order-root [data-optimistic-message]") or ""
        if "already received" in text:
            break
        assert time.monotonic() < deadline, f"no answer from the orders service: {text}"
        time.sleep(1)
    assert "filled" in text
    after = book(fault_stack.database_url, "bob", "BAC")
    assert after["orders"] == before["orders"] + 1
    assert after["qty"] == before["qty"] + 6
