"""The risk monitor: incremental margin, breach transitions with hysteresis, restarts."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.pricefeed.monitor import RiskMonitor
from shared.domain import Holding, margin_used

D = Decimal


def one_account(price: str, level: str | None = None) -> RiskMonitor:
    # 10 × price × 0.5 margin against a 1,000 limit: utilisation = price / 2 %.
    monitor = RiskMonitor({"AAA": D(price), "BBB": D(10)}, {"AAA": D("0.5"), "BBB": D("0.5")})
    monitor.load_account(1, D(1000), {"AAA": 10}, level)  # type: ignore[arg-type]
    return monitor


def levels_fired(monitor: RiskMonitor, prices: list[str]) -> list[str | None]:
    fired: list[str | None] = []
    for price in prices:
        breaches = monitor.on_prices({"AAA": D(price)})
        fired.append(breaches[0].level if breaches else None)
    return fired


def test_breach_transitions_warn_once_critical_hysteresis_recovery_warn_again() -> None:
    monitor = one_account("150")  # 75 %
    prices = [
        "150",  # 75.0  none
        "161",  # 80.5  → warn (fires)
        "162",  # 81.0  warn, no repeat
        "158.5",  # 79.25 still warn: clears only below 78
        "161",  # 80.5  no repeat
        "191",  # 95.5  → critical (fires)
        "187",  # 93.5  still critical: clears only below 93
        "192",  # 96.0  no repeat
        "170",  # 85.0  down to warn, silently
        "150",  # 75.0  cleared
        "161",  # 80.5  → warn again (fires)
    ]
    assert levels_fired(monitor, prices) == [
        None,
        "warn",
        None,
        None,
        None,
        "critical",
        None,
        None,
        None,
        None,
        "warn",
    ]
    assert monitor.level_of(1) == "warn"


def test_breach_carries_level_text_and_utilisation() -> None:
    monitor = one_account("150")
    [breach] = monitor.on_prices({"AAA": D("161.234")})
    assert breach.account_id == 1
    assert breach.utilisation_pct == D("80.61")  # 80.617 %, cut as the gauge cuts
    assert "80.61%" in breach.text and "warning" in breach.text
    payload = breach.payload(123.0)
    assert payload == {
        "level": "warn",
        "text": breach.text,
        "ts": 123.0,
        "utilisation_pct": "80.61",
    }


def test_straight_to_critical_fires_critical_only() -> None:
    monitor = one_account("150")
    assert levels_fired(monitor, ["196", "197"]) == ["critical", None]


def test_restart_with_stored_level_does_not_refire() -> None:
    monitor = RiskMonitor({"AAA": D(161)}, {"AAA": D("0.5")})
    assert monitor.load_account(1, D(1000), {"AAA": 10}, "warn", stored=True) is None
    assert monitor.level_of(1) == "warn"
    # …but a level that really rose since the stored alert does fire.
    monitor = RiskMonitor({"AAA": D(196)}, {"AAA": D("0.5")})
    breach = monitor.load_account(1, D(1000), {"AAA": 10}, "warn")
    assert breach is not None and breach.level == "critical"
    # With no stored alert, an account already over the threshold is a new breach.
    monitor = RiskMonitor({"AAA": D(161)}, {"AAA": D("0.5")})
    breach = monitor.load_account(1, D(1000), {"AAA": 10}, None)
    assert breach is not None and breach.level == "warn"


def test_a_stored_level_counts_only_as_far_as_the_utilisation_reaches_now() -> None:
    # warned at 81 %, cleared at 70 % (a level that clears is not stored), 79 % when the
    # pricefeed restarts: the stored "warn" must not hold back the next crossing
    monitor = RiskMonitor({"AAA": D(158)}, {"AAA": D("0.5")})
    assert monitor.load_account(1, D(1000), {"AAA": 10}, "warn", stored=True) is None
    assert monitor.level_of(1) is None
    assert levels_fired(monitor, ["170"]) == ["warn"]  # 85 %
    # this process's own level, held within the band, is kept (a reload)
    monitor = RiskMonitor({"AAA": D(158)}, {"AAA": D("0.5")})
    assert monitor.load_account(1, D(1000), {"AAA": 10}, "warn") is None
    assert levels_fired(monitor, ["170"]) == [None]
    # a stored critical at 90 %: warn holds, critical fires again past 95 %
    monitor = RiskMonitor({"AAA": D(180)}, {"AAA": D("0.5")})
    assert monitor.load_account(1, D(1000), {"AAA": 10}, "critical", stored=True) is None
    assert monitor.level_of(1) == "warn"


def test_an_alert_never_shows_the_next_threshold_it_did_not_reach() -> None:
    monitor = one_account("150")
    breach = monitor.on_prices({"AAA": D("189.992")})[0]  # 94.996 %: a warning
    assert breach.level == "warn" and "94.99%" in breach.text


def test_stored_level_below_hysteresis_band_clears() -> None:
    monitor = RiskMonitor({"AAA": D(100)}, {"AAA": D("0.5")})
    assert monitor.load_account(1, D(1000), {"AAA": 10}, "critical") is None
    assert monitor.level_of(1) is None


def test_a_tick_touches_only_accounts_holding_the_symbol() -> None:
    monitor = RiskMonitor({"AAA": D(10), "BBB": D(20)}, {"AAA": D("0.5"), "BBB": D("0.5")})
    monitor.load_account(1, D(1000), {"AAA": 1})
    monitor.load_account(2, D(1000), {"BBB": 1})
    monitor.load_account(3, D(0), {})
    monitor.take_dirty()
    monitor.on_prices({"BBB": D(30)})
    assert monitor.take_dirty() == {2: D(15)}
    assert monitor.holders("AAA") == {1}


def test_reloading_positions_moves_the_index() -> None:
    monitor = RiskMonitor({"AAA": D(10), "BBB": D(20)}, {"AAA": D("0.5"), "BBB": D("0.25")})
    monitor.load_account(1, D(1000), {"AAA": 4})
    monitor.load_account(1, D(1000), {"BBB": 8, "AAA": 0})
    assert monitor.holders("AAA") == set() and monitor.holders("BBB") == {1}
    assert monitor.margin_used(1) == D(40)


def test_zero_limit_means_zero_utilisation() -> None:
    monitor = RiskMonitor({"AAA": D(10)}, {"AAA": D("0.5")})
    assert monitor.load_account(1, D(0), {"AAA": 100}) is None
    assert monitor.on_prices({"AAA": D(1000)}) == []


TICKERS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
RATES = {"AAA": D("0.5"), "BBB": D("0.25"), "CCC": D(1), "DDD": D("0.3333"), "EEE": D("0.5")}
prices = st.decimals(min_value=D("0.0001"), max_value=D(100000), places=4)
positions = st.dictionaries(st.sampled_from(TICKERS), st.integers(0, 10_000), max_size=5)
tick = st.dictionaries(st.sampled_from(TICKERS), prices, min_size=1)
order_event = st.tuples(st.integers(1, 6), positions)
op = st.one_of(tick.map(lambda t: ("tick", t)), order_event.map(lambda e: ("order", e)))


@settings(max_examples=200, deadline=None)
@given(
    start=st.fixed_dictionaries({t: prices for t in TICKERS}),
    accounts=st.dictionaries(st.integers(1, 6), positions, min_size=1),
    ops=st.lists(op, max_size=40),
)
def test_incremental_margin_equals_full_recomputation(start, accounts, ops) -> None:
    monitor = RiskMonitor(start, RATES)
    last = dict(start)
    held = {a: {t: q for t, q in p.items() if q > 0} for a, p in accounts.items()}
    for account_id, pos in accounts.items():
        monitor.load_account(account_id, D(100_000), pos)
    for kind, value in ops:
        if kind == "tick":
            monitor.on_prices(value)
            last.update(value)
        else:
            account_id, pos = value
            monitor.load_account(account_id, D(100_000), pos, monitor.level_of(account_id))
            held[account_id] = {t: q for t, q in pos.items() if q > 0}
        for account_id, pos in held.items():
            expected = margin_used(
                Holding(t, q, last[t], margin_rate=RATES[t]) for t, q in pos.items()
            )
            assert monitor.margin_used(account_id) == expected
            assert monitor.recompute(account_id) == expected
        for ticker in TICKERS:
            assert monitor.holders(ticker) == {a for a, p in held.items() if ticker in p}
