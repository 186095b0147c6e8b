"""The trader's desk in a real browser: every submit ends in its own outcome (filled,
resting, refused, failed), never an earlier order's; what the trader typed survives a
failure."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import login

pytestmark = pytest.mark.e2e

OUTCOME = "#order-root [data-optimistic-message]"
SUBMIT_URL = "**/c/order/submit"


def order(page: Any, symbol: str, quantity: int, side: str, limit: str = "") -> None:
    page.fill("#order-root input[name=symbol]", symbol)
    page.fill("#order-root input[name=quantity]", str(quantity))
    page.select_option("#order-root select[name=order_type]", "limit" if limit else "market")
    page.fill("#order-root input[name=limit_price]", limit)
    page.click(f"#order-root button[value={side}]")


def outcome(page: Any, contains: str) -> dict[str, str]:
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel)?.textContent.includes(text)",
        arg=[OUTCOME, contains],
    )
    return page.evaluate(
        """(sel) => { const el = document.querySelector(sel);
            return {text: el.textContent.trim(), cls: el.className,
                    status: el.closest('form').getAttribute('data-status') || ''}; }""",
        OUTCOME,
    )


def test_every_submit_ends_in_its_own_outcome(new_page: Any) -> None:
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#order-root form.order-form")

    order(page, "MSFT", 1, "buy")
    filled = outcome(page, "filled")
    assert "bought 1 MSFT @" in filled["text"] and "UTC" in filled["text"]
    assert "order-status--filled" in filled["cls"]

    # a 500: the form keeps what was typed, the outcome says it failed, not "filled"
    page.route(SUBMIT_URL, lambda route: route.fulfill(status=500, body="Internal Server Error"))
    order(page, "AAPL", 7, "buy")
    failed = outcome(page, "Internal Server Error")
    assert "filled" not in failed["text"] and "order-status--filled" not in failed["cls"]
    assert failed["status"] == "failed"
    assert page.input_value("#order-root input[name=symbol]") == "AAPL"
    assert page.input_value("#order-root input[name=quantity]") == "7"

    # no answer at all (the network dropped): nothing was submitted, says the ticket
    page.unroute(SUBMIT_URL)
    page.route(SUBMIT_URL, lambda route: route.abort())
    page.click("#order-root button[value=buy]")
    aborted = outcome(page, "Could not reach the server")
    assert "Nothing was submitted" in aborted["text"] and "filled" not in aborted["text"]
    page.unroute(SUBMIT_URL)

    # refused by the pre-trade check: the reason, as the outcome
    order(page, "AAPL", 5000, "sell")
    refused = outcome(page, "Not placed")
    assert "cannot sell 5,000" in refused["text"] and "filled" not in refused["text"]
    assert "order-status--refused" in refused["cls"]

    # resting: its id, and the ticket says it is open
    order(page, "KO", 1, "buy", limit="1.00")
    resting = outcome(page, "open")
    assert resting["text"].startswith("Order #") and "limit 1.00" in resting["text"]
    assert "order-status--open" in resting["cls"]


def test_a_resting_order_cancelled_elsewhere_is_announced_once(new_page: Any) -> None:
    desk, other = new_page(), new_page()
    login(desk, "alice")
    login(other, "alice")  # a second tab of alice's
    desk.evaluate(
        """() => { window.__frames = 0;
            document.addEventListener('htmx:wsAfterMessage', () => window.__frames++); }"""
    )
    order(desk, "KO", 2, "buy", limit="1.00")
    resting = outcome(desk, "open")
    order_id = resting["text"].split()[1].lstrip("#")
    other.click(f"#order-open-{order_id} button")  # cancelled from the other tab
    toast = desk.wait_for_selector(f"[data-notice='{order_id}-cancelled']")
    assert _serious(desk) == []  # with a toast on screen
    assert f"Order #{order_id} cancelled: buy 2 KO" in toast.text_content()
    frames = desk.evaluate("() => window.__frames")
    desk.wait_for_function("(n) => window.__frames >= n + 8", arg=frames)  # more frames came
    spoken = desk.evaluate(
        "() => [...document.querySelectorAll('#announcer p')].map(p => p.textContent)"
    )
    assert [t for t in spoken if f"Order #{order_id} cancelled" in t] == [
        toast.text_content().strip()
    ]
    # the ticket did not change under the trader: it still shows its own last outcome
    assert "open" in desk.text_content(OUTCOME)


def test_enter_asks_for_a_side_instead_of_buying(new_page: Any) -> None:
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#order-root form.order-form")
    recent = page.locator("#order-recent [role=row].row").count()
    page.fill("#order-root input[name=symbol]", "AAPL")
    page.fill("#order-root input[name=quantity]", "247")
    page.press("#order-root input[name=quantity]", "Enter")
    asked = outcome(page, "Choose Buy or Sell")
    assert asked["text"].startswith("Not placed:")
    assert page.input_value("#order-root input[name=quantity]") == "247"  # kept
    assert page.locator("#order-recent [role=row].row").count() == recent  # nothing placed


def test_focus_stays_on_a_watchlist_button_across_ticks(new_page: Any) -> None:
    page = new_page()
    login(page, "bob")
    button = page.locator("#watchlist-row-NFLX button[aria-label='Remove NFLX']")
    button.focus()
    page.evaluate(
        """() => { window.__frames = 0; window.__lost = [];
            document.addEventListener('htmx:wsAfterMessage', () => {
                window.__frames++;
                const label = document.activeElement?.getAttribute('aria-label');
                const where = label || document.activeElement?.tagName;
                if (label !== 'Remove NFLX') window.__lost.push(where);
            }); }"""
    )
    page.wait_for_function("() => window.__frames >= 20", timeout=30_000)  # 20 live frames
    assert page.evaluate("() => window.__lost") == []
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Remove NFLX"


HEADER_JS = """() => {
    const text = (sel) => document.querySelector(sel)?.textContent.trim();
    return {value: text('#portfolio-summary .account-value'),
            cash: text('#portfolio-summary .account-cash'),
            total: text('#portfolio-totals .total-value'),
            margin: text('#risk-summary .header-margin__pct'),
            gauge: text('#risk-gauge .utilisation-pct')};
}"""


def test_the_header_is_live_and_adds_up(new_page: Any) -> None:
    from decimal import Decimal

    def num(text: str) -> Decimal:
        return Decimal(text.replace(",", ""))

    page = new_page()
    login(page, "alice")
    page.wait_for_function("() => document.querySelector('#portfolio-summary .account-cash')")
    first = page.evaluate(HEADER_JS)  # one JS turn: the totals and the header of one frame
    assert num(first["value"]) == num(first["total"]) + num(first["cash"])
    page.wait_for_function(
        "(before) => document.querySelector('#portfolio-summary .account-value')"
        "?.textContent.trim() !== before",
        arg=first["value"],
        timeout=30_000,
    )
    later = page.evaluate(HEADER_JS)
    assert num(later["value"]) == num(later["total"]) + num(later["cash"])  # moved, still adds up
    page.wait_for_function("() => document.querySelector('#risk-summary .header-margin__pct')")
    header = page.evaluate(HEADER_JS)
    assert header["margin"] == header["gauge"]  # the same figure as the risk panel's gauge


SCROLLS_SIDEWAYS_JS = """() => [...document.querySelectorAll('#dashboard *')]
    .filter(e => e.offsetParent !== null && !e.matches('.sr-only')
                 && e.scrollWidth > e.clientWidth + 1
                 && getComputedStyle(e).overflowX !== 'visible')
    .map(e => `${e.id || e.className}: ${e.scrollWidth} > ${e.clientWidth}`)"""


def test_a_phone_reaches_every_control_without_scrolling_sideways(browser: Any, stack: Any) -> None:
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        login(page, "bob")
        page.wait_for_selector("#watchlist-row-NFLX")
        # a resting order: its Cancel buttons and the history's status are in view too
        order(page, "KO", 1, "buy", limit="1.00")
        order_id = outcome(page, "open")["text"].split()[1].lstrip("#")
        page.locator(f"#order-recent-{order_id}").wait_for()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        assert page.evaluate(SCROLLS_SIDEWAYS_JS) == []  # nor anything inside a panel
        small = page.evaluate(
            """() => [...document.querySelectorAll(
                    '#dashboard button:not(.sr-only), #app-header button')]
                .filter(b => b.offsetParent !== null)
                .map(b => { const r = b.getBoundingClientRect();
                            return {label: b.getAttribute('aria-label') || b.textContent.trim(),
                                    w: r.width, h: r.height, left: r.left, right: r.right}; })
                .filter(b => b.w < 44 || b.h < 44 || b.left < 0 || b.right > 390)"""
        )
        assert small == []
        assert _serious(page) == []
        page.locator(f"#order-recent-{order_id} button", has_text="Cancel").click()
        page.locator(f"#order-open-{order_id}").wait_for(state="detached")
        page.locator(f"#order-recent-{order_id} .order-status--cancelled").wait_for()
        assert page.evaluate(SCROLLS_SIDEWAYS_JS) == []
    finally:
        context.close()


def test_no_panel_scrolls_sideways_from_a_tablet_to_a_desktop(new_page: Any) -> None:
    page = new_page()
    login(page, "bob")
    page.wait_for_selector("#watchlist-row-NFLX")
    order(page, "KO", 1, "buy", limit="1.00")
    order_id = outcome(page, "open")["text"].split()[1].lstrip("#")
    page.locator(f"#order-recent-{order_id}").wait_for()
    # one column up to 900 px, then two: 901 is the narrowest panel of all
    for width in (768, 901, 1024, 1280, 1600):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(50)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        assert page.evaluate(SCROLLS_SIDEWAYS_JS) == [], width
        # the last price and P&L, and each order's status, stay at every width
        for cell in ("#portfolio-root .pnl", "#watchlist-root .last-price", ".order-status"):
            assert page.locator(cell).first.is_visible(), (width, cell)
    page.locator(f"#order-recent-{order_id} button", has_text="Cancel").click()
    page.locator(f"#order-open-{order_id}").wait_for(state="detached")


def _serious(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_nothing_serious_on_login_and_dashboard(new_page: Any) -> None:
    page = new_page()
    page.goto("/login")
    assert _serious(page) == []
    login(page, "alice")
    page.wait_for_selector("#portfolio-summary .account-cash")
    assert page.locator("h1").count() == 1
    assert _serious(page) == []
    order(page, "AAPL", 5000, "sell")  # a refused order: the ticket with its field errors
    outcome(page, "Not placed")
    assert _serious(page) == []


WHATIF_JS = """() => {
    const box = document.querySelector('#order-root-whatif');
    const text = (sel) => box.querySelector(sel)?.textContent.trim() || '';
    const buy = box.querySelector('[data-side=buy]'), sell = box.querySelector('[data-side=sell]');
    return {power: text('.whatif-power'),
            cost: buy?.querySelector('.whatif-cost')?.textContent.trim(),
            after: buy?.querySelector('.whatif-after')?.textContent.trim(),
            buyRefusal: buy?.querySelector('.whatif__refusal')?.textContent.trim() || '',
            sellRefusal: sell?.querySelector('.whatif__refusal')?.textContent.trim() || ''};
}"""


def test_the_ticket_shows_what_if_and_a_large_buy_asks_to_confirm(new_page: Any) -> None:
    from decimal import Decimal

    def num(text: str) -> Decimal:
        return Decimal(text.replace(",", ""))

    page = new_page()
    login(page, "alice")
    page.fill("#order-root input[name=symbol]", "AAPL")
    page.fill("#order-root input[name=quantity]", "1")
    page.wait_for_selector("#order-root-whatif .whatif-cost")
    one = page.evaluate(WHATIF_JS)
    qty = int(num(one["power"]) * Decimal("0.3") / num(one["cost"]))
    page.fill("#order-root input[name=quantity]", str(qty))
    page.wait_for_function(
        "(q) => document.querySelector('#order-root-whatif .whatif-cost') && "
        "document.querySelector('#order-root-whatif .whatif-cost').textContent.trim() !== q",
        arg=one["cost"],
    )
    big = page.evaluate(WHATIF_JS)
    assert big["buyRefusal"] == ""
    assert num(big["after"]) == num(big["power"]) - num(big["cost"])  # the check's own figures

    page.click("#order-root button.btn-buy:not(.btn-confirm)")
    asked = outcome(page, "Not placed yet")
    assert "buying power" in asked["text"]
    confirm = page.locator("#order-root button.btn-confirm")
    assert confirm.text_content().startswith(f"Confirm buy {qty:,} AAPL ≈ $")
    assert _serious(page) == []  # the ticket with its what-if and the confirmation
    confirm.click()
    filled = outcome(page, "filled")
    assert f"bought {qty:,} AAPL @" in filled["text"]

    # the what-if refuses what the check refuses, in the same words
    page.fill("#order-root input[name=symbol]", "AAPL")
    page.fill("#order-root input[name=quantity]", "9999")
    page.wait_for_function("() => document.querySelector('#order-root-whatif .whatif__refusal')")
    said = page.evaluate(WHATIF_JS)["sellRefusal"]
    page.click("#order-root button[value=sell]")
    refused = outcome(page, "Not placed")
    assert said and said in refused["text"]


def test_rows_fill_the_ticket_and_close_sells_the_whole_position(new_page: Any) -> None:
    page = new_page()
    login(page, "bob")
    page.click("#watchlist-row-NFLX button.ticker-link")
    assert page.input_value("#order-root input[name=symbol]") == "NFLX"
    assert page.evaluate("() => document.activeElement.name") == "quantity"

    held = page.text_content("#portfolio-row-LIN .qty").strip()
    page.click("#portfolio-row-LIN button.btn-close")
    assert page.input_value("#order-root input[name=symbol]") == "LIN"
    assert page.input_value("#order-root input[name=quantity]") == held
    assert page.evaluate("() => document.activeElement.value") == "sell"  # nothing sent yet
    page.wait_for_selector("#order-root-whatif [data-side=sell] .whatif-cost")
    page.keyboard.press("Enter")  # the trader presses the focused Sell
    sold = outcome(page, "filled")
    assert f"sold {held} LIN @" in sold["text"]
    page.wait_for_selector("#portfolio-row-LIN", state="detached")  # closed, live


def test_the_order_history_says_what_happened_and_cancels_open_orders(new_page: Any) -> None:
    page = new_page()
    login(page, "alice")
    order(page, "KO", 3, "buy", limit="1.50")
    resting = outcome(page, "open")
    order_id = resting["text"].split()[1].lstrip("#")
    row = page.locator(f"#order-recent-{order_id}")
    row.wait_for()  # a live part: it comes over the socket, beside the answer
    cells = [c.strip() for c in row.locator("[role=cell]").all_text_contents()]
    assert cells[0] == order_id and cells[2:7] == ["buy", "KO", "limit", "3", "1.50"]
    assert len(cells[1]) == 8 and cells[1].count(":") == 2  # placed at, HH:MM:SS UTC
    assert cells[7].startswith("open") and cells[8] == "–"
    row.locator("button", has_text="Cancel").click()
    page.wait_for_function(
        "(id) => document.querySelector(`#order-recent-${id} .order-status`)"
        "?.textContent.trim() === 'cancelled'",
        arg=order_id,
    )
    assert page.locator(f"#order-open-{order_id}").count() == 0


def test_focus_stays_on_the_button_a_keyboard_user_pressed(new_page: Any) -> None:
    page = new_page()
    login(page, "bob")
    rows = (
        "() => [...document.querySelectorAll('#watchlist-root [role=row].row')]"
        ".map(r => r.dataset.symbol)"
    )
    before = page.evaluate(rows)
    page.focus("#watchlist-row-PFE-up")
    page.keyboard.press("Enter")  # PFE moves up one place
    page.wait_for_function(f"() => ({rows})().indexOf('PFE') === {before.index('PFE') - 1}")
    assert page.evaluate("() => document.activeElement.id") == "watchlist-row-PFE-up"
    page.keyboard.press("Enter")  # and again, without reaching for the mouse
    # pressed the moment the answer landed: htmx wires new content up at once (no settle delay)
    page.wait_for_function(f"() => ({rows})().indexOf('PFE') === {before.index('PFE') - 2}")
