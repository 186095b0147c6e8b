"""The risk monitor's fast path (integer margins, alert bands) against the Decimal formulas.

``Reference`` is the monitor as it was before margins became integers: every margin is the
full :func:`shared.domain.margin_used` formula and every touched account is evaluated with
:func:`shared.domain.next_alert_level`, in account id order. Over random prices (with more
places as they come, so the monitor rescales), positions, margin rates, limits, stored
levels and standby notes, the monitor must give the same margins, levels, breaches and
dirty margins.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from services.pricefeed.monitor import Breach, RiskMonitor, alert_rank, breach_text
from shared.domain import (
    CRITICAL_PCT,
    DEFAULT_MARGIN_RATE,
    HYSTERESIS_PCT,
    WARN_PCT,
    AlertLevel,
    Holding,
    alert_band,
    least_used_reaching,
    margin_used,
    next_alert_level,
    scaled,
    utilisation_pct,
)

D = Decimal
TICKERS = ["AAA", "BBB", "CCC", "DDD"]
IDLE = "ZZZ"  # held by bystander accounts, never ticked: a tick then touches few accounts
LEVELS: list[AlertLevel | None] = [None, "warn", "critical"]


class Reference:
    """Margins from the full formula; each touched account evaluated, in id order."""

    def __init__(self, last: dict[str, Decimal], rates: dict[str, Decimal]) -> None:
        self.last, self.rates = dict(last), rates
        self.accounts: dict[int, tuple[Decimal, dict[str, int]]] = {}
        self.levels: dict[int, AlertLevel | None] = {}
        self.dirty: set[int] = set()

    def rate(self, ticker: str) -> Decimal:
        return self.rates.get(ticker, DEFAULT_MARGIN_RATE)

    def used(self, account_id: int) -> Decimal:
        _, qty = self.accounts[account_id]
        return margin_used(
            Holding(t, q, self.last[t], margin_rate=self.rate(t)) for t, q in qty.items()
        )

    def evaluate(self, account_id: int) -> Breach | None:
        utilisation = utilisation_pct(self.used(account_id), self.accounts[account_id][0])
        level, fire = next_alert_level(self.levels[account_id], utilisation)
        self.levels[account_id] = level
        if not fire or level is None:
            return None
        shown = utilisation.quantize(D("0.01"), ROUND_DOWN)
        return Breach(account_id, level, shown, breach_text(level, shown))

    def load(
        self, account_id: int, limit: Decimal, positions: dict[str, int], level: Any
    ) -> Breach | None:
        qty = {t: q for t, q in positions.items() if q > 0 and t in self.last}
        self.accounts[account_id] = (limit, qty)
        self.levels[account_id] = level
        self.dirty.add(account_id)
        return self.evaluate(account_id)

    def note(self, account_id: int, level: AlertLevel) -> None:
        if account_id in self.levels and alert_rank(level) > alert_rank(self.levels[account_id]):
            self.levels[account_id] = level

    def tick(self, prices: dict[str, Decimal]) -> list[Breach]:
        moved = set()
        for ticker, price in prices.items():
            if ticker in self.last:
                old, self.last[ticker] = self.last[ticker], price
                if old * self.rate(ticker) != price * self.rate(ticker):
                    moved.add(ticker)
        touched = sorted(a for a, (_, qty) in self.accounts.items() if moved & qty.keys())
        self.dirty.update(touched)
        return [b for b in map(self.evaluate, touched) if b is not None]

    def take_dirty(self) -> dict[int, Decimal]:
        dirty, self.dirty = self.dirty, set()
        return {a: self.used(a) for a in dirty}


RATES = {"AAA": D("0.5"), "BBB": D("0.3333"), "CCC": D(1), "DDD": D("0.125"), IDLE: D("0.5")}
prices = st.decimals(min_value=D("0.000001"), max_value=D(500), places=6).filter(bool)
cents = st.decimals(min_value=D("0.01"), max_value=D(500), places=2)
qtys = st.integers(0, 200)
limits = st.one_of(
    st.decimals(min_value=D("0.01"), max_value=D(40_000), places=2),
    st.sampled_from([D(0), D(-1000), D("7"), D("3333.33")]),
)
positions = st.dictionaries(st.sampled_from(TICKERS), qtys, max_size=4)
ids = st.integers(1, 8)
op = st.one_of(
    st.tuples(st.just("tick"), st.dictionaries(st.sampled_from(TICKERS), prices, min_size=1)),
    st.tuples(st.just("cents"), st.dictionaries(st.sampled_from(TICKERS), cents, min_size=1)),
    st.tuples(st.just("load"), st.tuples(ids, limits, positions, st.sampled_from(LEVELS))),
    st.tuples(st.just("note"), st.tuples(ids, st.sampled_from(["warn", "critical"]))),
    st.tuples(st.just("take"), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.fixed_dictionaries({t: cents for t in [*TICKERS, IDLE]}),
    accounts=st.dictionaries(ids, st.tuples(limits, positions, st.sampled_from(LEVELS))),
    bystanders=st.integers(0, 40),
    ops=st.lists(op, max_size=30),
)
def test_fast_path_equals_the_decimal_formulas(start, accounts, bystanders, ops) -> None:
    monitor, reference = RiskMonitor(start, RATES), Reference(start, RATES)
    for account_id in range(100, 100 + bystanders):
        args = (D(1000), {IDLE: 3}, None)
        assert monitor.load_account(account_id, *args) == reference.load(account_id, *args)
    for account_id, args in accounts.items():
        assert monitor.load_account(account_id, *args) == reference.load(account_id, *args)
    for kind, value in ops:
        if kind in ("tick", "cents"):
            breaches = monitor.on_prices(value)
            assert breaches == reference.tick(value)
            event(f"breaches fired by a tick: {('none', 'one', 'several')[min(len(breaches), 2)]}")
        elif kind == "load":
            account_id, *args = value
            assert monitor.load_account(account_id, *args) == reference.load(account_id, *args)
        elif kind == "note":
            monitor.note_alerted(*value)
            reference.note(*value)
        else:
            assert monitor.take_dirty() == reference.take_dirty()
        for account_id in reference.accounts:
            assert monitor.margin_used(account_id) == reference.used(account_id)
            assert monitor.level_of(account_id) == reference.levels[account_id]
    assert monitor.take_dirty() == reference.take_dirty()


def test_margins_beyond_64_bits_stay_exact() -> None:
    start = {"AAA": D("10.25"), "BBB": D(3)}
    monitor, reference = RiskMonitor(start, RATES), Reference(start, RATES)
    for account_id, qty in ((1, 10**6), (2, 10**9)):
        args = (D(10) ** 25, {"AAA": qty, "BBB": 5}, None)
        assert monitor.load_account(account_id, *args) == reference.load(account_id, *args)
    for price in ("1e13", "123456789012.3456", "0.0001", "98765432109876.5"):
        assert monitor.on_prices({"AAA": D(price)}) == reference.tick({"AAA": D(price)})
        for account_id in (1, 2):
            assert monitor.margin_used(account_id) == reference.used(account_id)
    expected = D("98765432109876.5") * D("0.5") * 10**9 + 5 * D(3) * D("0.3333")
    assert monitor.margin_used(2) == expected


def test_breaches_come_in_account_id_order_with_the_formula_text() -> None:
    start = {"AAA": D(100)}
    monitor = RiskMonitor(start, RATES)
    for account_id in (5, 3, 9, 1):  # 10 × 100 × 0.5 = 500 of 1,000: 50 %
        monitor.load_account(account_id, D(1000), {"AAA": 10})
    breaches = monitor.on_prices({"AAA": D("161.23")})  # 80.615 %
    assert [b.account_id for b in breaches] == [1, 3, 5, 9]
    assert {b.text for b in breaches} == {
        "Margin utilisation 80.61% crossed the warning level (80%)"
    }


levels = st.sampled_from(LEVELS)
pcts = st.decimals(min_value=D(-10), max_value=D(200), places=6)


@given(level=levels, utilisation=pcts)
def test_alert_band_is_where_the_level_holds(level, utilisation) -> None:
    low, high = alert_band(level)
    inside = (low is None or utilisation >= low) and (high is None or utilisation < high)
    assert (next_alert_level(level, utilisation) == (level, False)) == inside


THRESHOLDS = [WARN_PCT, CRITICAL_PCT, WARN_PCT - HYSTERESIS_PCT, CRITICAL_PCT - HYSTERESIS_PCT]
awkward_limits = st.one_of(
    st.decimals(min_value=D("0.0001"), max_value=D(10) ** 12, places=4).filter(bool),
    st.integers(1, 10**27).map(D),  # 28-digit quotients: the division rounds
    st.sampled_from([D(3), D(7), D("0.0003"), D("3333333333333333333333333.3")]),
)


@settings(max_examples=300)
@given(
    pct=st.sampled_from(THRESHOLDS),
    limit=awkward_limits,
    scale=st.integers(0, 8),
    offset=st.integers(-3, 3),
    other=st.integers(-(10**30), 10**30),
)
def test_least_used_reaching_is_the_exact_threshold(pct, limit, scale, offset, other) -> None:
    least = least_used_reaching(pct, limit, scale)
    for n in (least + offset, other):
        assert (utilisation_pct(scaled(n, scale), limit) >= pct) == (n >= least)
