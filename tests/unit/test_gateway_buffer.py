"""The per-socket buffer: newest part per id, full renders supersede, bounded, rows first."""

from __future__ import annotations

from typing import Any

from gateway.buffer import PartBuffer, message_ts_ms, prepare_groups, prepare_parts, with_oob


def msg(component: str, *parts: tuple[str, str], full: bool = False, ts: Any = 1) -> dict:
    return {
        "component": component,
        "full": full,
        "parts": [{"id": i, "html": h} for i, h in parts],
        "ts": ts,
    }


def div(part_id: str, text: str) -> tuple[str, str]:
    return part_id, f'<div id="{part_id}" role="row">{text}</div>'


def test_oob_attribute_goes_into_the_first_tag_without_wrapping() -> None:
    assert with_oob('<div id="a" class="x">hi</div>') == (
        '<div hx-swap-oob="true" id="a" class="x">hi</div>'
    )
    assert with_oob('\n  <span id="r">1</span>') == '<span hx-swap-oob="true" id="r">1</span>'
    assert with_oob("<div>x</div>") == '<div hx-swap-oob="true">x</div>'
    assert with_oob("just text") is None
    assert with_oob("<1a>") is None and with_oob("") is None and with_oob("< div>") is None


def test_newest_part_per_id_wins_and_goes_last() -> None:
    buf = PartBuffer()
    buf.put(msg("watchlist", div("watchlist-row-AAPL", "1"), div("watchlist-row-MSFT", "1")))
    buf.put(msg("watchlist", div("watchlist-row-AAPL", "2")))
    buf.put(msg("watchlist", div("watchlist-row-AAPL", "3")))
    assert len(buf) == 2
    drained = buf.drain()
    assert drained.parts == 2
    assert len(drained.frames) == 1
    frame = drained.frames[0]
    assert ">3</div>" in frame and ">1</div>" in frame and ">2</div>" not in frame
    assert frame.index("watchlist-row-MSFT") < frame.index("watchlist-row-AAPL")
    assert frame.count('hx-swap-oob="true"') == 2
    assert len(buf) == 0 and not buf.ready.is_set()


def test_a_full_render_supersedes_pending_parts_of_its_component_only() -> None:
    buf = PartBuffer()
    buf.put(msg("portfolio", div("portfolio-row-AAPL", "old")))
    buf.put(msg("watchlist", div("watchlist-row-AAPL", "w")))
    buf.put(msg("portfolio", div("portfolio-root", "full"), full=True))
    buf.put(msg("portfolio", div("portfolio-row-AAPL", "newer")))
    frame = buf.drain().frames[0]
    assert "old" not in frame
    assert frame.index("portfolio-root") < frame.index("newer")
    assert "watchlist-row-AAPL" in frame


def test_parts_that_are_not_elements_are_dropped() -> None:
    buf = PartBuffer()
    accepted = buf.put(
        {"component": "risk_metrics", "parts": [{"id": "risk-x", "html": "text"}, {"html": "<p>"}]}
    )
    assert accepted == 0 and len(buf) == 0 and not buf.ready.is_set()


def test_the_buffer_is_bounded_and_reports_overflow() -> None:
    buf = PartBuffer(max_parts=10)
    buf.put(msg("risk_metrics", *(div(f"risk-alert-{i}", "x") for i in range(11))))
    assert len(buf) == 0 and buf.ready.is_set()
    drained = buf.drain()
    assert drained.overflowed and drained.frames == []
    assert not buf.drain().overflowed


def test_tick_parts_wait_to_be_released_and_coalesce_like_any_other() -> None:
    buf = PartBuffer(max_parts=3)
    buf.put_tick([div("watchlist-row-A", "1"), div("watchlist-row-B", "1")], 2_000)
    buf.put_tick([div("watchlist-row-A", "2")], 3_000)
    assert buf.ready.is_set() and not buf.go.is_set() and not buf.urgent  # not sent alone
    buf.put_tick([div("watchlist-row-C", "1")], None)  # no time: C has none
    drained = buf.drain()
    assert drained.parts == 3 and drained.oldest_ts_ms == 2_000
    frame = drained.frames[0]
    assert frame.index("watchlist-row-B") < frame.index("watchlist-row-A") and ">2</div>" in frame
    assert div("watchlist-row-C", "1")[1] in frame  # as prepared: put_tick adds nothing


def test_tick_parts_past_the_bound_overflow_and_are_sent_soon() -> None:
    buf = PartBuffer(max_parts=3, gather_s=0.01)
    buf.put_tick([div(f"risk-alert-{i}", "x") for i in range(4)], 1_000)
    assert len(buf) == 0 and buf.overflowed and buf.urgent  # the sender asks for full renders
    assert buf.go.is_set()  # no loop running: at once (with one, after gather_s)
    assert buf.drain().overflowed


def test_a_component_may_swap_only_its_own_elements() -> None:
    buf = PartBuffer()
    accepted = buf.put(msg("watchlist", div("portfolio-row-AAPL", "w"), div("watchlist-x", "1")))
    assert accepted == 1
    [frame] = buf.drain().frames
    assert "portfolio-row-AAPL" not in frame and 'id="watchlist-x"' in frame
    assert prepare_parts("nonsense", [{"id": "nonsense-1", "html": "<div></div>"}]) == []


def test_put_signals_the_sender_and_tracks_the_oldest_timestamp() -> None:
    buf = PartBuffer()
    buf.put(msg("watchlist", div("watchlist-row-A", "1"), ts=2_000))
    buf.put(msg("watchlist", div("watchlist-row-B", "1"), ts=1_000))
    assert buf.ready.is_set()
    assert buf.drain().oldest_ts_ms == 1_000


def test_message_timestamps() -> None:
    assert message_ts_ms(1_700_000_000_000) == 1_700_000_000_000.0
    assert message_ts_ms("1970-01-01T00:00:01+00:00") == 1000.0
    assert message_ts_ms("nonsense") is None
    assert message_ts_ms(True) is None


def test_parts_for_the_gateways_own_elements_are_dropped() -> None:
    buf = PartBuffer()
    accepted = buf.put(
        msg("portfolio", div("live", "x"), div("logout-form", "x"), div("portfolio-row-A", "1"))
    )
    assert accepted == 1
    drained = buf.drain()
    assert drained.parts == 1
    assert drained.frames == ['<div hx-swap-oob="true" id="portfolio-row-A" role="row">1</div>']


def test_active_content_and_foreign_requests_never_reach_a_page() -> None:
    reasons: list[str] = []
    bad = [
        '<div id="portfolio-x"><script>alert(1)</script></div>',
        '<div id="portfolio-x" onclick="steal()">x</div>',
        '<div id="portfolio-x"><img src=x onerror=steal()></div>',
        '<div id="portfolio-x" hx-post="/c/order/submit" hx-trigger="load">x</div>',
        '<div id="portfolio-x"><button hx-get=https://evil.example/x>go</button></div>',
        '<div id="portfolio-x"><a href="javascript:steal()">x</a></div>',
        '<div id="portfolio-x" hx-on:click="steal()">x</div>',
        '<div id="portfolio-x" hx-vals="js:{a: steal()}">x</div>',
        '<div id="portfolio-x"><iframe src="/"></iframe></div>',
    ]
    parts = [{"id": "portfolio-x", "html": html} for html in bad]
    assert prepare_parts("portfolio", parts, reasons.append) == []
    assert len(reasons) == len(bad)
    assert set(reasons) == {"active content", "request to a foreign URL"}
    for one in parts:  # alone, as a full render comes: the same verdict
        assert prepare_parts("portfolio", [one]) == []
    # what the components really send passes: requests to their own event URLs
    good = [
        {
            "id": "watchlist-row-KO",
            "html": '<div id="watchlist-row-KO"><button hx-post="/c/watchlist/remove_symbol" '
            'hx-vals=\'{"ticker": "KO"}\'>✕</button></div>',
        },
        {
            "id": "watchlist-root",
            "html": '<section id="watchlist-root" hx-get="/fragments/watchlist">x</section>',
        },
        {"id": "watchlist-note", "html": '<p id="watchlist-note">Ongoing: one online</p>'},
    ]
    assert [p[0] for p in prepare_parts("watchlist", good, reasons.append)] == [
        "watchlist-row-KO", "watchlist-root", "watchlist-note"
    ]  # fmt: skip


def test_one_active_part_among_many_is_the_only_one_dropped() -> None:
    reasons: list[str] = []
    rows = [part(f"risk-sector-S{i}", f"{i}.0%") for i in range(20)]
    rows.insert(7, part("risk-sector-X", '<img src=x onerror="steal()">'))
    kept = prepare_parts("risk_metrics", rows, reasons.append)
    assert [pid for pid, _html in kept] == [f"risk-sector-S{i}" for i in range(20)]
    assert reasons == ["active content"]


def test_active_content_is_refused_whatever_its_case_or_the_whitespace_before_it() -> None:
    reasons: list[str] = []
    bad = [
        '<div id="portfolio-x"><SCRIPT>steal()</SCRIPT></div>',
        '<div id="portfolio-x"\fonclick="steal()">x</div>',  # a form feed is HTML whitespace
        '<div id="portfolio-x"\tONCLICK="steal()">x</div>',
        '<div id="portfolio-x"><span HX-POST="/c/order/submit">x</span></div>',
        '<div id="portfolio-x" HX-ON:click="steal()">x</div>',
        '<div id="portfolio-x"><span data-hx-post="/c/order/submit">x</span></div>',
        '<div id="portfolio-x" title="…"\u00a0onclick="steal()">x</div>',  # a Unicode space
        '<div id="portfolio-x">▲ <span hx-get="/C/portfolio/x">x</span></div>',  # as written
    ]
    parts = [{"id": "portfolio-x", "html": html} for html in bad]
    assert prepare_parts("portfolio", parts, reasons.append) == []
    assert len(reasons) == len(bad)
    for one in parts:  # alone, as a full render comes: the same verdict
        assert prepare_parts("portfolio", [one]) == []
    good = '<div id="portfolio-x" title="…">▲ <span hx-get="/c/portfolio/x">Ünïcode on</span></div>'
    assert prepare_parts("portfolio", [{"id": "portfolio-x", "html": good}]) != []


def test_the_groups_of_a_message_are_checked_together_and_dropped_alone() -> None:
    reasons: list[str] = []
    groups = {
        "AAPL": [part("watchlist-quote-AAPL", "1")],
        "KO": [part("watchlist-quote-KO", "<script>x</script>"), part("watchlist-note", "n")],
        "MSFT": [part("portfolio-last-MSFT", "2")],  # not the watchlist's element
    }
    prepared = prepare_groups("watchlist", groups, reasons.append)
    assert {topic: [pid for pid, _ in parts] for topic, parts in prepared.items()} == {
        "AAPL": ["watchlist-quote-AAPL"],
        "KO": ["watchlist-note"],
        "MSFT": [],
    }
    assert sorted(reasons) == ["active content", "foreign id"]


def part(part_id: str, text: str) -> dict[str, str]:
    return {"id": part_id, "html": f'<span id="{part_id}" class="num">{text}</span>'}


def test_the_oldest_timestamp_is_that_of_a_part_still_pending() -> None:
    buf = PartBuffer()
    buf.put(msg("watchlist", div("watchlist-row-A", "1"), ts=1_000))
    buf.put(msg("watchlist", div("watchlist-row-B", "1"), ts=2_000))
    buf.put(msg("watchlist", div("watchlist-row-A", "2"), ts=3_000))  # A's 1 000 is gone
    assert buf.drain().oldest_ts_ms == 2_000
    buf.put(msg("portfolio", div("portfolio-row-A", "1"), ts=500))
    buf.put(msg("watchlist", div("watchlist-row-A", "3"), ts=4_000))
    buf.put(msg("portfolio", div("portfolio-root", "all"), full=True, ts=None))
    assert buf.drain().oldest_ts_ms == 4_000  # the full render took the 500 one away
    buf.put(msg("watchlist", div("watchlist-row-A", "4"), ts=5_000))
    buf.put(msg("watchlist", div("watchlist-row-A", "5"), ts=None))
    assert buf.drain().oldest_ts_ms is None  # what is sent carries no time
