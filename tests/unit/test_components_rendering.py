"""Rendering: filters, the full fragment, and row-level parts from the same template."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.components import PartsTracker, render, render_parts
from shared.components.rendering import money, pct, qty, signed
from shared.components.testing import mount_component
from tests.example_service.components import Order, Portfolio, Watchlist


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (money, Decimal("1234567.891"), "1,234,567.89"),
        (money, 0.005, "0.01"),
        (money, None, ""),
        (pct, 12.345, "12.35"),
        (qty, 1500, "1,500"),
        (qty, Decimal("2.50"), "2.5"),
        (signed, 12.3, "+12.30"),
        (signed, Decimal("-4"), "-4.00"),
        (signed, "x", ""),
    ],
)
def test_filters(fn: object, value: object, text: str) -> None:
    assert fn(value) == text  # type: ignore[operator]


def _portfolio() -> Portfolio:
    return mount_component(Portfolio)


def test_full_render_is_data_then_html() -> None:
    component = _portfolio()
    rendered = render(component)
    assert rendered.template_name == "components/portfolio.html"
    assert rendered.context["state"] is component.state
    assert rendered.context["root_id"] == "portfolio-root"
    assert rendered.html.lstrip().startswith('<div id="portfolio-root" data-component="portfolio">')
    assert '<div role="table" class="positions-table">' in rendered.html
    assert "<table" not in rendered.html and "<tr" not in rendered.html


def test_autoescape_and_optimistic_attribute() -> None:
    component = mount_component(Order)
    component.state["message"] = "<script>x</script>"
    html = render(component).html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'data-optimistic="{&#34;status&#34;:&#34;pending&#34;' in html


def test_each_part_is_the_same_markup_as_in_the_full_render() -> None:
    component = _portfolio()
    full = render(component).html
    parts = render_parts(component)
    assert [p.id for p in parts] == ["portfolio-row-AAPL", "portfolio-row-MSFT", "portfolio-total"]
    for part in parts:
        assert part.html.strip().startswith(f'<div role="row" id="{part.id}">')
        assert part.html.strip() in full


def test_only_changed_rows_are_rendered() -> None:
    component, tracker = _portfolio(), PartsTracker()
    first = tracker.full(component)
    assert first.full and [p.id for p in first.parts] == ["portfolio-root"]
    component.state["positions"][0]["last"] = 195.0  # mutated in place, as handlers do
    component.state["positions"][0]["pnl"] = 150.0
    component.state["total_value"] = 3950.0
    changes = tracker.changes(component)
    assert not changes.full
    assert [p.id for p in changes.parts] == ["portfolio-row-AAPL", "portfolio-total"]
    assert "195.00" in changes.parts[0].html and "+150.00" in changes.parts[0].html


def test_unchanged_state_publishes_nothing() -> None:
    component, tracker = _portfolio(), PartsTracker()
    tracker.full(component)
    changes = tracker.changes(component)
    assert not changes and changes.parts == []


def test_added_or_removed_row_is_a_full_render() -> None:
    component, tracker = _portfolio(), PartsTracker()
    tracker.full(component)
    component.state["positions"].append(
        {"symbol": "NVDA", "qty": 1, "avg_cost": 1.0, "last": 1.0, "pnl": 0.0}
    )
    changes = tracker.changes(component)
    assert changes.full and [p.id for p in changes.parts] == ["portfolio-root"]
    assert "portfolio-row-NVDA" in changes.parts[0].html
    component.state["positions"].pop(0)
    assert tracker.changes(component).full
    assert not tracker.changes(component)


def test_component_without_parts_rerenders_whole_on_change() -> None:
    component, tracker = mount_component(Watchlist), PartsTracker()
    tracker.full(component)
    assert not tracker.changes(component)
    component.state["items"][0]["last"] = 1.5
    changes = tracker.changes(component)
    assert changes.full and [p.id for p in changes.parts] == ["watchlist-root"]
