"""The domain formulas of DESIGN.md §4, over Decimal."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders.domain import Rejected, assess, check_cash, check_margin_after, check_sell
from shared import domain
from shared.domain import Holding

D = Decimal


def test_position_pnl_and_totals() -> None:
    a = Holding("AAPL", 10, D("195.00"), avg_cost=D("180.00"), prev_close=D("190.00"))
    b = Holding("MSFT", 5, D("400.00"), avg_cost=D("410.00"), prev_close=None)
    assert domain.position_pnl(a.last, a.avg_cost, a.qty) == D("150.00")
    assert domain.total_value([a, b]) == D("3950.00")
    assert domain.total_pnl([a, b]) == D("100.00")
    assert domain.total_day_change([a, b]) == D("50.00")  # MSFT has no previous close


def test_change_pct_and_trade_value() -> None:
    assert domain.change_pct(D("110"), D("100")) == D("10")
    assert domain.change_pct(D("110"), D("0")) == 0
    assert domain.trade_value(3, D("33.3333")) == D("100.00")


def test_margin_and_utilisation() -> None:
    holdings = [
        Holding("AAPL", 10, D("100"), margin_rate=D("0.5")),
        Holding("TSLA", 2, D("250"), margin_rate=D("0.6")),
    ]
    used = domain.margin_used(holdings)
    assert used == D("800.0")
    assert domain.utilisation_pct(used, D("1000")) == D("80")
    assert domain.utilisation_pct(used, D("0")) == 0


@pytest.mark.parametrize(
    ("pct", "level"),
    [("79.99", None), ("80", "warn"), ("94.99", "warn"), ("95", "critical"), ("120", "critical")],
)
def test_gauge_levels(pct: str, level: str | None) -> None:
    assert domain.gauge_level(D(pct)) == level


def test_alerts_fire_upwards_once_with_hysteresis() -> None:
    path = ["79", "80.5", "81", "79", "78.5", "95.1", "96", "93.5", "92.9", "77.9", "80"]
    level, fired = None, []
    for pct in path:
        level, fire = domain.next_alert_level(level, D(pct))
        if fire:
            fired.append((pct, level))
    # warn once at 80.5; 79 and 78.5 stay warn (cleared only below 78); critical at 95.1,
    # held at 93.5 (cleared only below 93), back to warn at 92.9, cleared at 77.9, warn again
    assert fired == [("80.5", "warn"), ("95.1", "critical"), ("80", "warn")]
    assert level == "warn"


def test_sector_exposure_shares_sum_to_100() -> None:
    holdings = [
        Holding("AAPL", 10, D("100"), sector="Technology"),
        Holding("MSFT", 10, D("100"), sector="Technology"),
        Holding("XOM", 10, D("50"), sector="Energy"),
    ]
    shares = domain.sector_exposure(holdings)
    assert [(s.sector, s.value) for s in shares] == [("Technology", D(2000)), ("Energy", D(500))]
    assert sum(s.share_pct for s in shares) == D(100)
    assert domain.sector_exposure([]) == []


def test_average_cost_and_realised_pnl() -> None:
    bought = domain.apply_fill(10, D("100"), "buy", 10, D("110"))
    assert (bought.qty, bought.avg_cost, bought.cash) == (20, D("105"), D("-1100.00"))
    sold = domain.apply_fill(bought.qty, bought.avg_cost, "sell", 5, D("120"))
    assert (sold.qty, sold.avg_cost, sold.cash, sold.realised) == (15, D("105"), D("600"), D("75"))
    assert domain.apply_fill(15, sold.avg_cost, "sell", 15, D("100")).avg_cost == 0
    with pytest.raises(ValueError, match="cannot sell 16"):
        domain.apply_fill(15, sold.avg_cost, "sell", 16, D("100"))


cent_prices = st.decimals(min_value=D("0.01"), max_value=D("5000"), places=2)
fills = st.lists(
    st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 5_000), cent_prices), max_size=30
)


@given(fills, cent_prices)
def test_any_fills_conserve_money_to_the_cent(
    steps: list[tuple[str, int, Decimal]], mark: Decimal
) -> None:
    qty, avg, cash, realised, value_in = 0, D(0), D(0), D(0), D(0)
    for side, want, price in steps:
        fill_qty = want if side == "buy" else min(want, qty)
        if fill_qty == 0:
            continue
        trade = domain.apply_fill(qty, avg, side, fill_qty, price)
        assert trade.qty >= 0 and trade.cash == trade.cash.quantize(D("0.01"))
        qty, avg = trade.qty, trade.avg_cost
        cash, realised = cash + trade.cash, realised + trade.realised
        value_in += price * fill_qty * (1 if side == "buy" else -1)
        # the books balance after every fill: realised less the basis still held is the
        # cash moved, and cash plus holdings at the fill prices is what came in
        assert realised - domain.cost_basis(qty, avg) == cash
        assert cash + value_in == 0
    if qty == 0:
        assert realised == cash  # a closed position made exactly the cash it moved
    # marked to any price, value + cash = unrealised + realised
    unrealised = mark * qty - domain.cost_basis(qty, avg)
    assert cash + mark * qty == realised + unrealised


@given(st.decimals(min_value=D("0.01"), max_value=D("1e9"), places=2))
def test_a_zero_margin_limit_fits_no_margin(used: Decimal) -> None:
    with pytest.raises(Rejected, match="No margin available"):
        check_margin_after(used, D(0))
    check_margin_after(used, used)  # exactly 100 % fits
    with pytest.raises(Rejected, match="Margin limit exceeded") as refused:
        check_margin_after(used + D("0.01"), used)
    assert "to 100.0%" not in refused.value.reason  # over the maximum says so


prices = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)


@given(st.lists(st.tuples(st.integers(1, 10_000), prices, prices), max_size=20))
def test_total_pnl_is_value_minus_cost(rows: list[tuple[int, Decimal, Decimal]]) -> None:
    holdings = [Holding(f"T{i}", q, last, avg_cost=avg) for i, (q, last, avg) in enumerate(rows)]
    cost = sum((h.avg_cost * h.qty for h in holdings), D(0))
    assert domain.total_pnl(holdings) == domain.total_value(holdings) - cost


@pytest.mark.parametrize("value", ["1.25", 3, 2.5, D("0.01")])
def test_a_positive_price_from_text_or_a_number(value: object) -> None:
    assert domain.positive_price(value) == D(str(value))


@pytest.mark.parametrize("value", ["x", "", "NaN", "Infinity", "0", -1, 0.0, True, None, [1]])
def test_anything_else_is_not_a_price(value: object) -> None:
    with pytest.raises(ValueError):
        domain.positive_price(value)


def test_one_rule_for_quotes_every_price_positive_and_never_crossed() -> None:
    assert domain.checked_quote("1.50", "1.49", 1.51) == domain.Quote(
        D("1.50"), D("1.49"), D("1.51")
    )
    assert domain.checked_quote(2, 2, 2) == domain.Quote(D(2), D(2), D(2))  # a locked market
    with pytest.raises(ValueError, match="crossed"):
        domain.checked_quote("1", "2", "1")
    with pytest.raises(ValueError):
        domain.checked_quote("-1", "1", "1")


def test_no_shorting_one_rule_with_the_traders_message() -> None:
    assert domain.can_sell(10, 10) and not domain.can_sell(11, 10)
    assert domain.can_sell(4, 10, reserved=6) and not domain.can_sell(5, 10, reserved=6)
    check_sell("AAPL", 10, 10)
    with pytest.raises(Rejected, match=r"^You hold 10 AAPL; cannot sell 11$"):
        check_sell("AAPL", 11, 10)
    refused = assess(
        "sell",
        5,
        "AAPL",
        D(100),
        cash=D(0),
        margin_limit=D(0),
        margin_after=D(0),
        held=10,
        reserved=6,
    ).refusal
    assert refused is not None and refused.field == "quantity"
    assert refused.reason == "You hold 10 AAPL (6 already in open sell orders); cannot sell 5"


def test_a_buy_must_be_covered_by_cash() -> None:
    assert check_cash(10, D("9.99"), D("99.90")) == D("99.90")
    with pytest.raises(Rejected, match=r"^Insufficient cash: 1,000 × 9.99 = 9,990.00, available"):
        check_cash(1_000, D("9.99"), D("100"))


holdings_st = st.lists(
    st.builds(
        Holding,
        st.sampled_from(["AAPL", "MSFT", "XOM", "KO", "JPM"]),
        st.integers(1, 10_000),
        cent_prices,
        margin_rate=st.decimals(min_value=D("0.1"), max_value=D("1"), places=2),
        sector=st.sampled_from(["Technology", "Energy", "Staples", "Financials"]),
    ),
    max_size=12,
)


@given(holdings_st)
def test_sector_shares_partition_the_value(holdings: list[Holding]) -> None:
    shares = domain.sector_exposure(holdings)
    assert sum((s.value for s in shares), D(0)) == domain.total_value(holdings)
    assert len({s.sector for s in shares}) == len(shares)  # each sector once
    assert [s.value for s in shares] == sorted((s.value for s in shares), reverse=True)
    if shares:
        assert abs(sum(s.share_pct for s in shares) - 100) < D("1e-20")


@given(holdings_st, st.lists(cent_prices, min_size=12, max_size=12))
def test_margin_and_sector_values_follow_price_moves_exactly(
    holdings: list[Holding], lasts: list[Decimal]
) -> None:
    moved = [replace(h, last=last) for h, last in zip(holdings, lasts, strict=False)]
    used, values = domain.margin_used(holdings), domain.sector_values(holdings)
    for old, new in zip(holdings, moved, strict=True):
        move = domain.price_move(old.last, new.last, old.qty)
        used += domain.margin_move(move, old.margin_rate)
        values[old.sector] += move
    assert used == domain.margin_used(moved)
    assert values == domain.sector_values(moved)
    assert domain.sector_shares(values) == domain.sector_exposure(moved)


@given(holdings_st, st.decimals(min_value=D("1"), max_value=D("1e9"), places=2))
def test_margin_grows_with_every_holding_and_utilisation_with_it(
    holdings: list[Holding], limit: Decimal
) -> None:
    used = domain.margin_used(holdings)
    assert used >= 0
    for h in holdings:  # dropping any one holding never uses more margin
        rest = [x for x in holdings if x is not h]
        assert domain.margin_used(rest) <= used
        assert domain.utilisation_pct(domain.margin_used(rest), limit) <= domain.utilisation_pct(
            used, limit
        )


@given(st.lists(st.decimals(min_value=D("0"), max_value=D("150"), places=2), max_size=40))
def test_alerts_fire_only_upwards_and_never_twice_for_one_level(path: list[Decimal]) -> None:
    order = {None: 0, "warn": 1, "critical": 2}
    level: domain.AlertLevel | None = None
    for pct in path:
        new, fired = domain.next_alert_level(level, pct)
        if fired:  # an alert is a step up, to the level the utilisation is at
            assert order[new] > order[level] and new == domain.gauge_level(pct)
        else:  # otherwise the level holds or clears
            assert order[new] <= order[level]
        level = new
