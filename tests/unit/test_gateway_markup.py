"""What a component service may put on a page: one element of the HTML the templates use,
read as the browser reads it (gateway/markup.py)."""

from __future__ import annotations

import pytest

from gateway.markup import check

PID = "portfolio-x"


def refused(html: str, part_id: str = PID, component: str = "portfolio") -> str | None:
    return check(component, part_id, html)


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        # a second element, or another element than the part's, for htmx to swap
        ('<div id="portfolio-x"></div><div id="logout-form">fake</div>', "foreign id"),
        ('<div id="portfolio-x"></div><div id="portfolio-y">fake</div>', "not an element"),
        ('<div id="logout-form">fake</div>', "foreign id"),
        ('<div id="portfolio-y">y</div>', "foreign id"),
        ('<div id="portfolio-y" id="portfolio-x">y</div>', "foreign id"),  # the first counts
        ('<div class="x">no id</div>', "foreign id"),
        ('<div id="portfolio-x"><span id="risk-gauge">0</span></div>', "foreign id"),
        ('<div id="portfolio-x&amp;y">1</div>', "foreign id"),  # the browser reads "x&y"
        ('<div id="portfolio-x" hx-swap-oob="innerHTML:body">pwned</div>', "active content"),
        (
            '<div id="portfolio-x"><span hx-swap-oob="true" id="portfolio-y">1</span></div>',
            "active content",
        ),
        # what the parser repairs: an element closed early, moved, dropped, or raw text
        (
            '<div id="portfolio-x"><span></div><div id="portfolio-y"></span></div>',
            "not an element",
        ),
        ('<div id="portfolio-x"><p><div>x</div></p></div>', "not an element"),
        ('<div id="portfolio-x"><ul><div>x</div></ul></div>', "not an element"),
        ('<div id="portfolio-x"><li>x</li></div>', "not an element"),
        ('<div id="portfolio-x"><select><div>x</div></select></div>', "not an element"),
        (
            '<div id="portfolio-x"><select><option><span>x</span></option></select></div>',
            "not an element",
        ),
        ('<form id="portfolio-x"><div><form></form></div></form>', "not an element"),
        ('<div id="portfolio-x"><button><button>x</button></button></div>', "not an element"),
        ('<div id="portfolio-x"><h2><h3>x</h3></h2></div>', "not an element"),
        ('<div id="portfolio-x"><svg><div>x</div></svg></div>', "not an element"),
        ('<div id="portfolio-x"><svg><rect></rect></svg></div>', "not an element"),
        ('<div id="portfolio-x"><rect/></div>', "not an element"),
        ('<div id="portfolio-x"><div/>x</div>', "not an element"),  # "/>" opens a div anyway
        ('<div id="portfolio-x"><textarea></div><div id="x"></textarea></div>', "active content"),
        ('<div id="portfolio-x"><!-- --></div>', "not an element"),
        ('<div id="portfolio-x">1 < 2</div>', "not an element"),
        ('<div id="portfolio-x" title=unquoted>x</div>', "not an element"),
        ('<div id="portfolio-x" title="<div>">x</div>', "not an element"),
        ('<div id="portfolio-x"\rclass="x">x</div>', "not an element"),
        ('<div id="portfolio-x" class="a"class="b">x</div>', "not an element"),
        ('<div id="portfolio-x">x', "not an element"),
        ("just text", "not an element"),
        ('<input id="portfolio-x">', "not an element"),
        # requests: only to the component's own event URLs, exactly
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/../order/submit" hx-trigger="load">'
            "x</div>",
            "request to a foreign URL",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/%2e%2e/order/submit">x</div>',
            "request to a foreign URL",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/&#46;&#46;/order/submit">x</div>',
            "request to a foreign URL",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/..\\order/submit">x</div>',
            "request to a foreign URL",
        ),
        (
            '<div id="portfolio-x" hx-get="/fragments/portfolio/../../logout">x</div>',
            "request to a foreign URL",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/close?then=/c/order/submit">x</div>',
            "request to a foreign URL",
        ),
        (
            '<div id="portfolio-x" title=\'hx-get="/c/portfolio/\''
            ' hx-post="/c/order/submit">x</div>',
            "request to a foreign URL",
        ),
        (
            '<form id="portfolio-x" hx-boost="true" method="post" action="/c/order/submit"></form>',
            "active content",
        ),
        (
            '<div id="portfolio-x"><button formaction="/c/order/submit">x</button></div>',
            "active content",
        ),
        ('<div id="portfolio-x"><button form="logout-form">x</button></div>', "active content"),
        # script in any spelling, and what htmx evaluates
        ('<div id="portfolio-x"><a href="&#106;avascript:alert(1)">x</a></div>', "active content"),
        ('<div id="portfolio-x"><a href="java\tscript:alert(1)">x</a></div>', "active content"),
        (
            '<div id="portfolio-x" hx-get="/c/portfolio/x" hx-vals="&#106;s:alert(1)">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-get="/c/portfolio/x" hx-vals="\u00a0js:alert(1)">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-get="/c/portfolio/x" hx-trigger="load[alert(1)]">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/x" hx-target="#risk-gauge">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/x" hx-target="body">x</div>',
            "active content",
        ),
        ('<div id="portfolio-x" style="background:url(//evil.example)">x</div>', "active content"),
        ('<div id="portfolio-x"></script></div>', "active content"),
        ('<div id="portfolio-x" hx-on:click="steal()">x</div>', "active content"),
        ('<div id="portfolio-x" onclick="steal()">x</div>', "active content"),
        # selectors, references and triggers that reach past the component
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/t" hx-include="closest body">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/t" hx-target="next section">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/t" hx-target="closest main">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/t" hx-trigger="input from:body">x</div>',
            "active content",
        ),
        (
            '<div id="portfolio-x" hx-post="/c/portfolio/t" hx-trigger="every 1ms">x</div>',
            "active content",
        ),
        (
            '<label id="portfolio-x" for="order-root-buy" data-ticket="{}">AAPL</label>',
            "foreign id",
        ),
        ('<div id="portfolio-x"><input list="order-root-symbols"></div>', "foreign id"),
        ('<div id="portfolio-x" aria-owns="portfolio-y risk-gauge">x</div>', "foreign id"),
        ('<div id="portfolio-x" data-ws-connect="wss://evil.example/s">1</div>', "active content"),
        # what the parser would make several elements of, or show beside the element
        (
            '<select id="portfolio-x"><option>x</option><input id="portfolio-y"></select>',
            "not an element",
        ),
        ('<div id="portfolio-x"><ul><input></ul></div>', "not an element"),
        ('<div id="portfolio-x"><section>a</section></div>trailing text', "not an element"),
        ("<div>" * 100 + '<div id="portfolio-x"></div>' + "</div>" * 100, "foreign id"),
        ('<div id="portfolio-x">' + "<div>" * 200 + "</div>" * 201, "not an element"),
    ],
)
def test_what_a_page_must_not_get_is_refused_with_its_reason(html: str, reason: str) -> None:
    assert refused(html) == reason


@pytest.mark.parametrize(
    ("component", "part_id", "html"),
    [
        (
            "watchlist",
            "watchlist-quote-AAPL",
            '<div class="cells" id="watchlist-quote-AAPL" data-symbol="AAPL">'
            '<div role="cell" class="num bid">1.00</div>'
            '<div role="cell" class="num last-price flash-up">1.01</div>'
            '<div role="cell" class="trend pnl-pos"><svg class="sparkline" viewBox="0 0 290 100"'
            ' preserveAspectRatio="none" aria-hidden="true"><polyline points="0,1 10,2"/></svg>'
            "</div></div>",
        ),
        (
            "risk_metrics",
            "risk-gauge",
            '<div id="risk-gauge" class="gauge"><svg viewBox="0 0 100 8">'
            '<rect x="0" y="0" width="42.5" height="8"/></svg><span>42 %</span></div>',
        ),
        (
            "watchlist",
            "watchlist-root",
            '<section id="watchlist-root" class="panel" aria-labelledby="watchlist-root-title">\n'
            '  <h2 class="panel__title" id="watchlist-root-title">Watchlist</h2>\n'
            '  <form class="watchlist-add" hx-post="/c/watchlist/add_symbol"'
            ' hx-target="#watchlist-root" hx-swap="outerHTML">\n'
            '    <input name="ticker" list="watchlist-suggestions" required'
            ' hx-post="/c/watchlist/suggest" hx-trigger="input changed delay:250ms"'
            ' hx-target="#watchlist-suggestions" hx-select="#watchlist-suggestions">\n'
            '    <button type="submit" class="btn" aria-label="Add">+</button>\n'
            '    <datalist id="watchlist-suggestions"><option value="KO">Coca-Cola</option>'
            "</datalist>\n"
            "  </form>\n"
            '  <p class="empty">Nothing here: <span>add a symbol</span>.</p>\n'
            '  <ul><li><button type="button" hx-post="/c/watchlist/move" hx-include="closest form"'
            ' hx-vals=\'{"ticker": "KO", "direction": "up"}\'>▲</button></li></ul>\n'
            '  <select name="order_type"><option value="market" selected>Market</option></select>\n'
            '  <time datetime="2026-12-01T10:00:00Z">10:00</time>\n'
            "</section>\n",
        ),
        ("order", "order-root", '<div id="order-root" hx-get="/fragments/order">Loading</div>'),
        (
            "order",
            "order-root",
            '<form id="order-root" hx-post="/c/order/whatif" hx-target="#order-root-whatif"'
            ' hx-trigger="input from:closest form delay:300ms" aria-labelledby="order-root-t">'
            '<label for="order-root-symbol">Symbol</label>'
            '<input id="order-root-symbol" list="order-root-symbols">'
            '<div id="order-root-whatif" aria-live="polite"></div></form>',
        ),
    ],
)
def test_what_the_templates_send_goes_through(component: str, part_id: str, html: str) -> None:
    assert check(component, part_id, html) is None


@pytest.mark.timeout(20)  # each is milliseconds; a pattern that backtracks takes hours
def test_a_deep_huge_or_crafted_part_is_answered_without_backtracking() -> None:
    """Nesting and size are bounded, and every pattern is linear (the check runs on the
    gateway's event loop: one slow part would stall every trader's frames)."""
    nested = '<div id="portfolio-x">' + "<h2>x</h2>" * 1000 + "</div>"
    assert check("portfolio", PID, nested) is None
    huge = '<div id="portfolio-x">' + "x" * 300_000 + "</div>"
    assert check("portfolio", PID, huge) == "not an element"
    listens = " ".join(["from:#portfolio-aaaaaaaa"] * 40)  # each split tried: 2**40
    crafted = f'<div id="portfolio-x" hx-get="/c/portfolio/x" hx-trigger="click {listens}!">t</div>'
    assert check("portfolio", PID, crafted) == "active content"
    long_ref = '<div id="portfolio-x" hx-trigger="click from:#portfolio-' + "a" * 100_000 + '!">'
    assert check("portfolio", PID, long_ref + "t</div>") == "active content"
    shapes = '<p id="portfolio-x"><svg viewBox="0 0 1 1"><rect x="0"/></svg> 12 %</p>'
    assert check("portfolio", PID, shapes) is None  # a shape in an svg in a paragraph


def test_a_part_of_a_tick_and_the_same_part_through_the_tokens_agree() -> None:
    """The quick pattern for a tick's parts and the tokenizer for the rest give one verdict."""
    from gateway import markup

    parts = [
        '<div class="cells" id="portfolio-x"><div role="cell" class="num">+1.00</div></div>',
        '<div class="cells" id="portfolio-x"><div role="cell"></span></div>',
        '<span id="portfolio-x"><span id="portfolio-y">1</span><span>2</span></span>',
        '<div id="portfolio-x"></div><div id="portfolio-y"></div>',
        '<div id="portfolio-x" data-hx-post="/c/order/submit">x</div>',
    ]
    for html in parts:
        quick = markup._quick("portfolio-").fullmatch(html) is not None
        tokens = markup._lexicon("portfolio", "portfolio-").fullmatch(html) is not None and (
            markup._structure(html) is None
        )
        assert not quick or tokens, html  # what the quick pattern lets through, the tokens do
    assert check("portfolio", PID, parts[0]) is None
    assert check("portfolio", PID, parts[2]) is None
    assert [check("portfolio", PID, html) for html in parts[1:2] + parts[3:]] == [
        "not an element",
        "not an element",
        "active content",
    ]
