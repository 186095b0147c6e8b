"""The live path from the pricefeed to the trader's screen, in a real headless Chromium."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from shared import devservers, wire
from shared.bus import NatsBus
from shared.domain import cents  # money as the server shows it: to the cent, half up
from tests.e2e.conftest import Stack, artifact, login
from tests.support import identity_of

pytestmark = pytest.mark.e2e

SNAPSHOT_JS = """() => {
  const cell = (row, cls) => row.querySelector('.' + cls)?.textContent.trim() ?? null;
  const rows = [...document.querySelectorAll('#portfolio-root [role=row][id^="portfolio-row-"]')];
  return {
    rows: rows.map(r => ({id: r.id, qty: cell(r, 'qty'), avg: cell(r, 'avg-cost'),
                          last: cell(r, 'last-price'), pnl: cell(r, 'pnl')})),
    total: document.querySelector('#portfolio-root .total-value')?.textContent.trim() ?? null,
    watch: [...document.querySelectorAll('#watchlist-root [role=row][id^="watchlist-row-"]')]
      .map(r => ({id: r.id, last: cell(r, 'last-price'), bid: cell(r, 'bid'),
                  ask: cell(r, 'ask')})),
  };
}"""


def num(text: str) -> Decimal:
    return Decimal(text.replace(",", "").replace("+", ""))


def snapshot(page: Any) -> dict[str, Any]:
    return page.evaluate(SNAPSHOT_JS)  # one JS turn: no swap lands halfway through


def assert_arithmetic(snap: dict[str, Any]) -> None:
    assert snap["rows"], "no positions shown"
    total = Decimal(0)
    for row in snap["rows"]:
        qty, avg, last = num(row["qty"]), num(row["avg"]), num(row["last"])
        # an average cost is kept to 12 places and shown to 4: a shown 4-place one may be
        # off by half a unit of the 4th place, each share
        slack = qty * Decimal("0.00005") if -avg.as_tuple().exponent >= 4 else 0
        assert abs(num(row["pnl"]) - cents((last - avg) * qty)) <= slack, row
        total += last * qty
    assert num(snap["total"]) == cents(total)


def wait_for_change(page: Any, before: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    old = {r["id"]: r["last"] for r in before["rows"] + before["watch"]}
    while time.monotonic() < deadline:
        snap = snapshot(page)
        new = {r["id"]: r["last"] for r in snap["rows"] + snap["watch"]}
        if any(new.get(k) not in (None, v) for k, v in old.items()):
            return snap
        page.wait_for_timeout(200)
    raise AssertionError("no price changed on the page without a reload")


def publish(stack: Stack, *messages: tuple[str, dict[str, Any]]) -> None:
    """Publish ``(subject, payload)`` messages back to back on one connection."""

    async def send() -> None:
        bus = await NatsBus.connect(stack.env["NATS_URL"])
        for subject, payload in messages:
            await bus.publish(subject, payload)
        await bus.flush()
        await bus.close()

    devservers.run_async(send())


class Tap:
    """Every ``ui.*`` message on one partition, collected by a subscriber in its own thread
    (the test's page talks to the stack meanwhile)."""

    def __init__(self, stack: Stack, partition: int) -> None:
        self.messages: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._run(stack, partition),), daemon=True
        )
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe"

    async def _run(self, stack: Stack, partition: int) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        bus = await NatsBus.connect(stack.env["NATS_URL"])

        async def on_msg(_subject: str, message: dict[str, Any]) -> None:
            self.messages.append(message)

        await bus.subscribe(f"ui.{partition}.*", on_msg)
        await bus.flush()
        self._ready.set()
        await self._stop.wait()
        await bus.close()

    def fence(self, component: str) -> tuple[str, int]:
        """(src, epoch) of the newest message of ``component`` seen."""
        deadline = time.monotonic() + 10
        while True:
            found = [m for m in self.messages if m.get("component") == component]
            if found:
                return str(found[-1]["src"]), int(found[-1]["epoch"])
            assert time.monotonic() < deadline, f"no {component} message on the partition"
            time.sleep(0.05)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def test_alice_sees_her_book_and_it_moves_with_exact_arithmetic(new_page: Any) -> None:
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#portfolio-root #portfolio-row-AAPL")
    page.wait_for_selector("#watchlist-root #watchlist-row-AAPL")
    first = snapshot(page)
    assert {r["id"] for r in first["rows"]} >= {"portfolio-row-AAPL", "portfolio-row-NVDA"}
    assert len(first["watch"]) >= 6
    assert_arithmetic(first)
    url = page.url
    moved = wait_for_change(page, first)
    assert page.url == url  # no reload, no navigation
    assert_arithmetic(moved)
    for _ in range(5):  # and it stays exact as more ticks land
        page.wait_for_timeout(300)
        assert_arithmetic(snapshot(page))
    # the server says how fresh the numbers are, and the link is live
    status = page.wait_for_selector("#feed-status[data-state=live]")
    assert status.text_content() == "prices live"
    assert page.get_attribute("body", "data-conn-state") == "live"
    page.screenshot(path=str(artifact("dashboard.png")), full_page=True)


def test_a_frame_mixing_every_component_swaps_every_part(new_page: Any, stack: Stack) -> None:
    alice = devservers.run_async(identity_of(stack.env["DATABASE_URL"], "alice"))
    # the gateway takes a partition's parts only under its owner's epoch, and a page's
    # shared parts only from its owner: learn both from the full renders of the login
    tap = Tap(stack, wire.partition_of(alice.user_id))
    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#portfolio-row-AAPL")
    try:
        fences = {c: tap.fence(c) for c in ("portfolio", "order", "risk_metrics", "watchlist")}
    finally:
        tap.close()
    marker = f"frame-{time.time_ns()}"
    shapes = {  # the element each id is on the page: sections, rows, cell wrappers, a rowgroup
        "risk-root": ("section", 'class="panel"'),
        "portfolio-row-AAPL": ("div", 'role="row" class="row"'),
        "portfolio-pl-MSFT": ("div", 'class="cells"'),
        "order-root": ("section", 'class="panel"'),
        "watchlist-quote-MSFT": ("div", 'class="cells"'),
        "portfolio-totals": ("div", 'role="rowgroup"'),
    }
    ids = list(shapes)
    for present in ids:
        page.wait_for_selector(f"#{present}", state="attached")

    def part(i: str) -> dict[str, str]:
        tag, attrs = shapes[i]
        return {"id": i, "html": f'<{tag} id="{i}" {attrs} data-status="{marker}">{i}</{tag}>'}

    # each component's parts as its service publishes them, back to back: the gateway
    # sends what arrives within its gather window as one frame
    # a part may be superseded by the next tick's within the same frame or right after it,
    # so record every element that lands with the marker, as it lands
    page.evaluate(
        """(marker) => {
            window.__landed = new Set();
            new MutationObserver((records) => {
                for (const r of records) for (const n of r.addedNodes)
                    if (n.dataset && n.dataset.status === marker) window.__landed.add(n.id);
            }).observe(document.body, {childList: true, subtree: true});
        }""",
        marker,
    )
    now = time.time() * 1000
    messages = []
    for component, mine in (
        # (a row holds its cell wrappers: a fake AAPL row would leave pl-AAPL no target)
        ("portfolio", ["portfolio-row-AAPL", "portfolio-pl-MSFT", "portfolio-totals"]),
        ("order", ["order-root"]),
        ("risk_metrics", ["risk-root"]),
    ):
        update = wire.ui_update(alice.user_id, [part(i) for i in mine], full=False)
        message = {"component": component, "ts": now, "updates": [update],
                   "epoch": fences[component][1], "src": fences[component][0]}  # fmt: skip
        messages.append((wire.ui_subject(alice.user_id, component), message))
    shared = {"MSFT": [part("watchlist-quote-MSFT")]}
    message = {"component": "watchlist", "ts": now, "topics": shared,
               "src": fences["watchlist"][0]}  # fmt: skip
    messages.append((wire.ui_shared_subject("watchlist"), message))
    # the gateway's buffer keeps the newest version of each element: a real tick's part that
    # arrives before the frame leaves replaces an injected one (newest wins, by design), so
    # publish again until every injected part has landed once
    for _attempt in range(5):
        publish(stack, *messages)
        try:
            page.wait_for_function(
                "(ids) => ids.every(id => window.__landed.has(id))", arg=ids, timeout=3_000
            )
            break
        except Exception:  # a part was coalesced away: send the frame again
            continue
    landed = page.evaluate("() => [...window.__landed]")
    assert sorted(landed) == sorted(ids), f"never swapped: {set(ids) - set(landed)}"


def test_watchlist_add_shows_live_row_and_unknown_ticker_error(new_page: Any) -> None:
    page = new_page()
    login(page, "bob")
    page.wait_for_selector("#watchlist-root")
    assert page.locator("#watchlist-row-GOOGL").count() == 0
    page.fill("#watchlist-root input[name=ticker]", "googl")
    page.press("#watchlist-root input[name=ticker]", "Enter")
    row = page.wait_for_selector("#watchlist-row-GOOGL", timeout=30_000)  # a busy CI box
    assert row.query_selector(".last-price").text_content().strip()
    first = row.query_selector(".last-price").text_content()
    page.wait_for_function(
        "(first) => document.querySelector('#watchlist-row-GOOGL .last-price')"
        "?.textContent !== first",
        arg=first,
        timeout=60_000,  # a quiet symbol may sit out a few dozen 250 ms cycles
    )
    page.fill("#watchlist-root input[name=ticker]", "zzzz")
    page.press("#watchlist-root input[name=ticker]", "Enter")
    error = page.wait_for_selector("#watchlist-root .field-error")
    assert "Unknown symbol: ZZZZ" in error.text_content()
    assert page.locator("#watchlist-row-ZZZZ").count() == 0


def _resync(stack: Stack, user_id: int, component: str) -> None:
    """Ask the gateways to re-announce ``user_id``'s sockets, as a replica taking over its
    partition does: the owner answers with a live full render of ``component``."""

    async def publish() -> None:
        bus = await NatsBus.connect(stack.env["NATS_URL"])
        request = {"components": [component], "partitions": [wire.partition_of(user_id)]}
        await bus.publish(wire.GATEWAY_RESYNC, request)
        await bus.flush()
        await bus.close()

    devservers.run_async(publish())


def test_a_live_full_render_keeps_what_the_trader_is_typing(new_page: Any, stack: Stack) -> None:
    bob = devservers.run_async(identity_of(stack.env["DATABASE_URL"], "bob"))
    page = new_page()
    login(page, "bob")
    ticker = page.locator("#watchlist-root input[name=ticker]")
    ticker.click()
    ticker.press_sequentially("orc")
    page.evaluate("() => { window.__root = document.getElementById('watchlist-root'); }")
    _resync(stack, bob.user_id, "watchlist")
    page.wait_for_function("() => document.getElementById('watchlist-root') !== window.__root")
    # the panel was replaced by the server's render; what bob typed and his focus stayed
    assert ticker.input_value() == "orc"
    assert page.evaluate("() => document.activeElement.getAttribute('name')") == "ticker"
    ticker.press_sequentially("l")
    ticker.press("Enter")
    page.wait_for_selector("#watchlist-row-ORCL")  # the live update may come first...
    # ...then the add's own answer clears the field (times out if it never does)
    page.wait_for_function(
        "() => document.querySelector('#watchlist-root input[name=ticker]').value === ''"
    )


def test_bob_never_sees_alices_data(new_page: Any) -> None:
    alice_page, bob_page = new_page(), new_page()
    login(alice_page, "alice")
    login(bob_page, "bob")
    bob_page.wait_for_selector("#portfolio-row-TSLA")
    for _ in range(10):  # across several ticks
        html = bob_page.content()
        assert "portfolio-row-NVDA" not in html and "Alice" not in html
        bob_page.wait_for_timeout(300)
    assert "portfolio-row-TSLA" not in alice_page.content()


def test_reconnect_shows_state_then_current_values(new_page: Any, stack: Stack) -> None:
    import psutil

    page = new_page()
    login(page, "alice")
    page.wait_for_selector("#portfolio-row-AAPL")
    gateway_port = str(stack.port("gateway"))
    gateway = next(
        p
        for p in psutil.Process(stack.process.pid).children(recursive=True)
        if gateway_port in " ".join(p.cmdline())
    )
    gateway.kill()  # the socket is cut; the launcher restarts the gateway
    page.wait_for_selector("body[data-conn-state=reconnecting]", timeout=10_000)
    page.wait_for_selector("body[data-conn-state=live]", timeout=60_000)
    assert_arithmetic(wait_for_change(page, snapshot(page)))
    # the page shows what the server holds now: each last price equals the server's
    # (allowing for a tick landing between the two page readings around the fetch)
    for _attempt in range(5):
        before = snapshot(page)
        served = server_lasts(page.request.get("/fragments/portfolio").text())
        after = snapshot(page)
        if all(
            served.get(row["id"]) in (row["last"], other["last"])
            for row, other in zip(before["rows"], after["rows"], strict=True)
        ) and set(served) == {r["id"] for r in after["rows"]}:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"page and server disagree: {before} / {served}")


def server_lasts(html: str) -> dict[str, str]:
    import re

    rows = re.findall(
        r'id="(portfolio-row-[^"]+)".*?class="num last-price[^"]*">([^<]+)<', html, re.S
    )
    return {row_id: last.strip() for row_id, last in rows}


def test_phone_width_is_one_column_without_sideways_scrolling(browser: Any, stack: Stack) -> None:
    context = browser.new_context(base_url=stack.base_url, viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        login(page, "alice")
        page.wait_for_selector("#portfolio-row-AAPL")
        overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
        lefts = page.evaluate(
            "() => [...document.querySelectorAll('main.dashboard > [data-slot]')]"
            ".map(e => Math.round(e.getBoundingClientRect().left))"
        )
        assert len(lefts) == 4 and len(set(lefts)) == 1  # one column
        page.screenshot(path=str(artifact("dashboard-phone.png")), full_page=True)
    finally:
        context.close()
