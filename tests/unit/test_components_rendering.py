"""Rendering: filters, the full fragment, and row-level parts from the same template."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment
from markupsafe import Markup

from shared.components import PartsTracker, render, render_parts
from shared.components.base import Component
from shared.components.formatting import money, pct, qty, signed
from shared.components.rendering import Stencil, environment_for, render_block
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
        (signed, Decimal("-0.0033"), "+0.00"),  # a fraction of a cent below zero
        (signed, -0.001, "+0.00"),
        (money, Decimal("-0.001"), "0.00"),
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


def _half_up(value: Decimal, places: int, sign: str) -> str:
    """The filters' rounding and layout, spelled out (the reference for their fast path)."""
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # no "-0.00": what rounds to nothing has no sign
    return f"{rounded:{sign},.{places}f}"


@given(
    st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, places=6),
    st.integers(min_value=0, max_value=12),
)
def test_money_and_signed_round_half_up_at_any_places(value: Decimal, places: int) -> None:
    assert money(value, places) == _half_up(value, places, "")
    assert signed(value, places) == _half_up(value, places, "+")


def test_money_and_signed_round_halves_away_from_zero() -> None:
    assert money(Decimal("2.675")) == "2.68"  # half-even (or a float) would give 2.67
    assert signed(Decimal("-0.005")) == "-0.01"
    assert signed(Decimal("-1234.565")) == "-1,234.57"
    assert signed(Decimal("0.25"), 1) == "+0.3"
    assert money(Decimal("0.0000000005"), 9) == "0.000000001"  # beyond the cached quanta


class _Plain(Component):
    template_name = "plain.html"


def _stencil(directory: Path, markup: str, fields: tuple[str, ...]) -> tuple[Stencil, type]:
    """A stencil of ``markup`` (one block, no whitespace between tags), and its component."""
    (directory / "plain.html").write_text("{% block b %}" + markup + "{% endblock %}")
    cls = type("Plain", (_Plain,), {"template_dir": str(directory)})
    return Stencil(cls, "b", fields), cls


def _jinja(cls: type, view: dict[str, str]) -> str:
    return render_block(environment_for(Path(cls.template_dir)), "plain.html", "b", v=view)


_TEXT = st.text(alphabet=st.sampled_from("aZ0 .,+-%{}<>&\"'\x00"), max_size=8)


def test_stencils_escape_and_lay_out_as_jinja_does(tmp_path: Path) -> None:
    # literal %, %s and braces in the markup; a field twice; values needing escaping or not
    markup = (
        '<p id="{{ v.id }}" class="w-{{ v.a }}%" data-x=\'{"k": "%s"}\'>'
        "{{ v.a }} of {{ v.b }} 100%%</p>"
    )
    stencil, cls = _stencil(tmp_path, markup, ("id", "a", "b"))

    @given(_TEXT, _TEXT, _TEXT)
    def check(id_: str, a: str, b: str) -> None:
        view = {"id": id_, "a": a, "b": b}
        assert stencil(view) == _jinja(cls, view)

    check()
    view = {"id": "x", "a": "+1.00", "b": '<b a="1">&'}  # one value unsafe, the others not
    assert stencil(view) == _jinja(cls, view)
    assert "&lt;b a=&#34;1&#34;&gt;&amp;" in stencil(view) and "+1.00" in stencil(view)


def test_stencils_of_one_field_and_markup_values(tmp_path: Path) -> None:
    stencil, cls = _stencil(tmp_path, "<i>{{ v.a }}</i>", ("a",))
    for view in ({"a": "1 < 2"}, {"a": Markup("<b>safe</b>")}, {"a": "plain"}):
        assert stencil(view) == _jinja(cls, view)
    assert stencil({"a": Markup("<b>safe</b>")}) == "<i><b>safe</b></i>"


class _Row(dict[str, object]):
    pass


def test_templates_read_dict_keys_as_jinja_does() -> None:
    """The services' environment looks a dict's key up first (no AttributeError on every
    ``row.symbol``); what any template shows is what Jinja's own lookup shows."""
    source = (
        "{{ d.symbol }}|{{ d.missing }}|{{ d.get('symbol') }}|{{ d['items'] }}|"
        "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ sub.symbol }}|"
        "{{ obj.real }}|{{ d.symbol.lower() }}"
    )
    context = {
        "d": {"symbol": "AAPL", "items": "held"},  # a key named like a dict method
        "sub": _Row(symbol="MSFT"),
        "obj": 3 + 4j,
    }
    ours = environment_for(Path(__file__).parent).from_string(source).render(context)
    jinja = Environment(autoescape=True).from_string(source).render(context)
    assert ours == jinja == "AAPL||AAPL|held|symbol=AAPL;items=held;|MSFT|3.0|aapl"
