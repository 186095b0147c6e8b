"""Order entry in a real browser: optimistic feedback, a fill reaching the portfolio live,
a refused order changing nothing, and a read-only trader."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import login

pytestmark = pytest.mark.e2e

SYMBOLS = "#order-root-symbols option"
RECORD_MESSAGES_JS = """() => {
  window.__messages = [];
  const record = () => {
    const el = document.querySelector('#order-root [data-optimistic-message]');
    if (el) window.__messages.push(el.textContent.trim());
  };
  new MutationObserver(record).observe(document.body,
    {subtree: true, childList: true, characterData: true});
}"""


def fill_order(page: Any, symbol: str, quantity: int) -> None:
    page.fill("#order-root input[name=symbol]", symbol)
    page.fill("#order-root input[name=quantity]", str(quantity))


def test_market_buy_shows_pending_then_fills_into_the_portfolio(new_page: Any) -> None:
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#order-root form.order-form")
    assert page.locator("#portfolio-row-KO").count() == 0
    offered = page.locator(SYMBOLS).count()
    assert offered > 50  # every demo symbol, from the page's own render
    page.evaluate(RECORD_MESSAGES_JS)
    fill_order(page, "ko", 10)
    page.click("#order-root button[value=buy]")
    page.wait_for_function(
        "() => document.querySelector('#order-root [data-optimistic-message]')"
        "?.textContent.includes('filled')"
    )
    assert "Sending order…" in page.evaluate("() => window.__messages")
    row = page.wait_for_selector("#portfolio-row-KO")  # pushed live by the order event
    assert row.query_selector(".qty").text_content().strip() == "10"
    # the next order form carries a fresh client order id and an empty form
    assert page.input_value("#order-root input[name=quantity]") == ""
    # the answer held no symbols and replaced only the desk: the page kept its list
    assert page.locator(SYMBOLS).count() == offered


def test_refused_order_shows_the_reason_and_changes_nothing(new_page: Any) -> None:
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#portfolio-row-AAPL")
    held = page.text_content("#portfolio-row-AAPL .qty").strip()
    fill_order(page, "AAPL", 5000)
    page.click("#order-root button[value=sell]")
    error = page.wait_for_selector("#order-root .field-error")
    assert "cannot sell 5,000" in error.text_content()
    assert page.input_value("#order-root input[name=quantity]") == "5000"  # kept for editing
    page.wait_for_timeout(500)
    assert page.text_content("#portfolio-row-AAPL .qty").strip() == held
    assert page.locator(SYMBOLS).count() > 50  # the refusal's answer kept the page's list


def test_viewer_cannot_trade(new_page: Any) -> None:
    page = new_page()
    login(page, "viewer")
    page.wait_for_selector("#portfolio-root")
    panel = page.wait_for_selector("#order-root")
    assert "not available" in panel.text_content()
    assert page.locator("#order-root form.order-form").count() == 0
