"""RiskMetricsComponent without servers: utilisation, gauge classes, alerts, live parts."""

from __future__ import annotations

import asyncio
import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.risk.components import (
    ALERTS_ID,
    EXPOSURE_ID,
    GAUGE_ID,
    SUMMARY_ID,
    RiskMetricsComponent,
    RiskState,
)
from services.risk.state import recompute
from shared import domain, wire
from shared.components import ComponentContext, PartsTracker, PriceBook, render
from shared.components.base import LiveResult
from shared.components.instance import LiveInstance, changes_after
from shared.wire import EVENT_ORDER


def _holding(ticker: str, qty: int, last: str, sector: str) -> dict[str, Any]:
    return {
        "symbol": ticker,
        "qty": qty,
        "last": Decimal(last),
        "margin_rate": Decimal("0.5"),
        "sector": sector,
    }


def _component() -> RiskMetricsComponent:
    """Seed-style state (floats, as the seed's mount wrote them) plus the holdings."""
    component = RiskMetricsComponent()
    component.state = {
        "margin_used": 7000.0,  # 0.5 × (100 × 100 + 40 × 100)
        "margin_limit": 10000.0,
        "utilisation_pct": 70.0,
        "alerts": [],
        "sector_exposure": [],
        "holdings": [
            _holding("AAPL", 100, "100", "Technology"),
            _holding("XOM", 40, "100", "Energy"),
        ],
    }
    return component


def _tick(prices: dict[str, str], seq: int = 1) -> dict[str, Any]:
    return {
        "event": "price_tick",
        "seq": seq,
        "ts": 1700000000000.0,
        "prices": {t: {"last": p, "bid": p, "ask": p, "chg_pct": "0"} for t, p in prices.items()},
    }


def _run(component: RiskMetricsComponent, message: dict[str, Any]) -> None:
    asyncio.run(component.on_ws_message(message))


def test_tick_raises_utilisation_and_gauge_class() -> None:
    component = _component()
    _run(component, _tick({"AAPL": "100.01"}, seq=0))  # the sectors are known
    tracker = PartsTracker()
    tracker.full(component)
    _run(component, _tick({"AAPL": "125.00"}))  # 0.5 × (12,500 + 4,000) = 8,250
    assert component.state["margin_used"] == Decimal("8250.000")
    assert component.state["utilisation_pct"] == Decimal("82.5")
    changes = tracker.changes(component)
    assert not changes.full
    # the gauge and each sector whose figures moved (in a stable order, by name)
    sectors = [
        wire.element_id("risk_metrics", "sector", s, part)
        for s in ("Energy", "Technology")
        for part in "fb"
    ]
    # ... and the header's margin figure (a warn level, 1,750 of margin left)
    assert [p.id for p in changes.parts] == [GAUGE_ID, *sectors, SUMMARY_ID]
    header = changes.parts[-1].html
    assert 'class="header-margin header-margin--warn"' in header and ">82.5%<" in header
    assert ">1,750<" in header
    assert "4,000 · 24.2%" in changes.parts[1].html and 'width="24.2"' in changes.parts[2].html
    assert "75.8%" in changes.parts[3].html
    gauge = changes.parts[0].html
    assert gauge.lstrip().startswith(f'<div id="{GAUGE_ID}"')
    assert 'class="gauge__fill gauge--warn"' in gauge and 'width="82.5"' in gauge
    assert "8,250 / 10,000 (" in gauge and "82.5%" in gauge
    exposure = component.state["sector_exposure"]
    assert [(s["sector"], s["value"]) for s in exposure] == [
        ("Technology", Decimal("12500.00")),
        ("Energy", Decimal("4000")),
    ]

    _run(component, _tick({"XOM": "200.00"}, seq=2))  # 0.5 × (12,500 + 8,000) = 10,250
    assert component.state["utilisation_pct"] == Decimal("102.5")
    gauge = tracker.changes(component).parts[0].html
    assert "gauge--critical" in gauge and 'width="100.0"' in gauge  # clamped


def test_breach_appends_an_alert_and_yields_only_the_alerts_part() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    _run(
        component,
        {
            "event": "risk_breach",
            "level": "critical",
            "text": "Margin at 96.0%",
            "ts": 1700000000000.0,  # 2023-11-14 22:13:20 UTC
            "utilisation_pct": "96.00",
        },
    )
    assert component.state["alerts"] == [
        {"level": "critical", "text": "Margin at 96.0%", "ts": 1700000000000.0}
    ]
    changes = tracker.changes(component)
    assert not changes.full and [p.id for p in changes.parts] == [ALERTS_ID]
    html = changes.parts[0].html
    assert f'<ul id="{ALERTS_ID}" class="alert-feed"' in html
    assert 'class="alert alert--critical"' in html and "Margin at 96.0%" in html
    assert '<time class="alert__ts" datetime="2023-11-14T22:13:20+00:00">22:13:20</time>' in html


def test_newest_alert_first_and_only_ten_kept() -> None:
    component = _component()
    for i in range(12):
        _run(component, {"event": "risk_breach", "level": "warn", "text": f"a{i}", "ts": i})
    assert [a["text"] for a in component.state["alerts"]] == [f"a{i}" for i in range(11, 1, -1)]


def test_unknown_breach_level_is_ignored() -> None:
    component = _component()
    _run(component, {"event": "risk_breach", "level": 'x" onclick="', "text": "t", "ts": 1})
    assert component.state["alerts"] == []


def test_tick_on_symbols_not_held_publishes_nothing() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    _run(component, _tick({"TSLA": "1.00"}))
    assert not tracker.changes(component)
    assert component.state["utilisation_pct"] == 70.0  # not even recomputed
    _run(component, _tick({"AAPL": "100.00"}))  # an unchanged price is no change either
    assert not tracker.changes(component)


@pytest.mark.parametrize(
    ("used", "cls"),
    [("7990", ""), ("8000", "gauge--warn"), ("9490", "gauge--warn"), ("9500", "gauge--critical")],
)
def test_gauge_classes_at_the_thresholds(used: str, cls: str) -> None:  # 79.9, 80, 94.9, 95
    component = RiskMetricsComponent()
    component.state = {
        "margin_used": Decimal(used),
        "margin_limit": Decimal("10000"),
        "utilisation_pct": Decimal(used) / 100,
        "alerts": [],
        "sector_exposure": [],
    }
    html = render(component).html
    expected = f'class="gauge__fill {cls}"' if cls else 'class="gauge__fill"'
    assert expected in html
    assert f"{Decimal(used) / 100:.1f}% of margin limit used" in html


def test_shown_figure_never_crosses_a_threshold_the_class_does_not() -> None:
    component = RiskMetricsComponent()
    component.state = {"margin_limit": 100, "utilisation_pct": Decimal("79.96"), "alerts": []}
    html = render(component).html
    assert "79.9%" in html and "gauge--warn" not in html


def test_full_render_keeps_the_seed_class_names_and_no_inline_styles() -> None:
    component = _component()
    _run(component, _tick({"AAPL": "101.00"}))
    html = render(component).html
    for name in (
        'data-component="risk_metrics"',
        'class="panel"',
        'class="gauge"',
        "gauge__fill",
        'class="alert-feed"',
        'class="sector-bar"',
        "sector-bar__fill",
        f'id="{GAUGE_ID}"',
        f'id="{EXPOSURE_ID}"',
        f'id="{ALERTS_ID}"',
    ):
        assert name in html
    assert "style=" not in html and "<tr" not in html and "<td" not in html
    assert "No alerts" in html  # an empty feed still renders its element


# -- a tick moves the figures by what it moved: exactly what a full recompute finds --------

D = Decimal
TICKERS = [f"T{i:02}" for i in range(16)]
# prices as stored (4 places) and as the feed sends them (cents)
prices = st.decimals(min_value=D("0.01"), max_value=D("5000"), places=2) | st.decimals(
    min_value=D("0.0001"), max_value=D("5000"), places=4
)
holdings = st.lists(
    st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(TICKERS),
            "qty": st.integers(1, 100_000),
            "last": prices,
            "margin_rate": st.sampled_from([D("0.25"), D("0.4000"), D("0.5"), D("1")]),
            "sector": st.sampled_from(["Technology", "Energy", "Utilities", ""]),
        }
    ),
    max_size=12,
    unique_by=lambda h: h["symbol"],
)
# a tick's new prices, or None for a breach
events = st.lists(
    st.dictionaries(st.sampled_from(TICKERS), prices.map(str), max_size=10) | st.none(),
    max_size=8,
)


def _handle(component: RiskMetricsComponent, message: dict[str, Any]) -> LiveResult:
    return asyncio.run(component.on_ws_message(message))


def _summed(state: RiskState) -> RiskState:
    """The figures of ``state`` summed in full from its holdings, by the domain formulas."""
    rows = copy.deepcopy(state["holdings"])
    held = [
        domain.Holding(
            h["symbol"], h["qty"], h["last"], sector=h["sector"], margin_rate=h["margin_rate"]
        )
        for h in rows
    ]
    used = domain.margin_used(held)
    return {
        "margin_limit": state["margin_limit"],
        "margin_used": used,
        "utilisation_pct": domain.utilisation_pct(used, domain.dec(state["margin_limit"])),
        "holdings": rows,
        "sector_exposure": [
            {"sector": s.sector, "value": s.value, "share_pct": s.share_pct}
            for s in domain.sector_exposure(held)
        ],
        "alerts": copy.deepcopy(state.get("alerts", [])),
    }


def _figures(state: RiskState) -> tuple[Any, ...]:
    exposure = [(s["sector"], s["value"], s["share_pct"]) for s in state["sector_exposure"]]
    return state["margin_used"], state["utilisation_pct"], exposure


@settings(max_examples=150, deadline=None)
@given(holdings, st.integers(0, 10**7), events)
def test_ticks_publish_exactly_what_a_full_recompute_shows(
    rows: list[dict[str, Any]], limit: int, sequence: list[dict[str, str] | None]
) -> None:
    component = RiskMetricsComponent()
    component.state = {"margin_limit": D(limit), "holdings": rows, "alerts": []}
    recompute(component.state)  # as mount() leaves it
    instance = LiveInstance(component)
    instance.tracker.full(component)
    # the oracle: each state summed in full, its views built afresh, compared by a tracker
    oracle = PartsTracker()
    oracle.full(RiskMetricsComponent(state=_summed(component.state)))
    for i, prices_or_breach in enumerate(sequence):
        if prices_or_breach is None:
            message = {"event": "risk_breach", "level": "warn", "text": f"a{i}", "ts": i}
        else:
            message = _tick(prices_or_breach, seq=i)
        published = changes_after(instance, _handle(component, message))
        summed = _summed(component.state)
        assert _figures(component.state) == _figures(summed)
        expected = oracle.changes(RiskMetricsComponent(state=summed))
        assert published.full == expected.full
        assert [(p.id, p.html) for p in published.parts] == [(p.id, p.html) for p in expected.parts]


def test_a_tick_whose_sums_would_round_is_summed_in_full() -> None:
    component = _component()
    component.state["holdings"][0]["last"] = D("1234567890123456.1234")
    component.state["holdings"][0]["qty"] = 98_765_432_109
    _handle(component, _tick({"AAPL": "1234567890123456.1235"}, seq=0))  # summed in full
    _handle(component, _tick({"AAPL": "1234567890123457.01", "XOM": "100.01"}))
    assert _figures(component.state) == _figures(_summed(component.state))


async def test_an_order_event_names_exactly_the_parts_it_changed() -> None:
    book = PriceBook()
    book.apply(_tick({"AAPL": "101.00", "XOM": "100.00"})["prices"])
    component = RiskMetricsComponent(ComponentContext(prices=book))
    component.state = _component().state
    await component.on_ws_message(book.as_tick())
    instance = LiveInstance(component)
    instance.tracker.full(component)
    changes_after(instance, await component.on_ws_message(_tick({"AAPL": "102.00"})))
    oracle = PartsTracker()  # compares every part with what was published
    oracle.full(RiskMetricsComponent(state=copy.deepcopy(component.state)))

    # the order: 40 more XOM, at the stored prices
    rows = [_holding("AAPL", 100, "100", "Technology"), _holding("XOM", 80, "100", "Energy")]

    async def mount() -> None:
        component.state["margin_limit"] = D(10000)
        component.state["holdings"] = copy.deepcopy(rows)
        component.state["alerts"] = []
        recompute(component.state)

    component.mount = mount  # type: ignore[method-assign]
    published = changes_after(instance, await component.on_ws_message({"event": EVENT_ORDER}))
    # AAPL back at the book's 101 (its catch-up tick), 8,000 of XOM: every figure moved
    assert [p.id for p in published.parts] == [
        GAUGE_ID,
        wire.element_id("risk_metrics", "sector", "Energy", "f"),
        wire.element_id("risk_metrics", "sector", "Energy", "b"),
        wire.element_id("risk_metrics", "sector", "Technology", "f"),
        wire.element_id("risk_metrics", "sector", "Technology", "b"),
        SUMMARY_ID,
    ]
    assert "8,000 · 44.2%" in published.parts[1].html  # of 18,100
    expected = oracle.changes(RiskMetricsComponent(state=copy.deepcopy(component.state)))
    assert [(p.id, p.html) for p in published.parts] == [(p.id, p.html) for p in expected.parts]

    rows.append(_holding("NEE", 10, "70", "Utilities"))  # a sector more: a new panel
    published = changes_after(instance, await component.on_ws_message({"event": EVENT_ORDER}))
    assert published.full and [p.id for p in published.parts] == [component.root_id, SUMMARY_ID]
    assert "Utilities" in published.parts[0].html
