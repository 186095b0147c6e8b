"""What the page says about its numbers: waiting, live, delayed (by panel, or when busy)."""

from __future__ import annotations

from gateway.freshness import Freshness
from gateway.pace import Pace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall_ms(self) -> float:
        """The wall clock, as epoch ms: 22:13:20 UTC (1,700,000,000 s) at ``now`` 100."""
        return 1_700_000_000_000.0 + (self.now - 100.0) * 1000


def test_waiting_then_live_then_delayed_by_the_panel_that_went_quiet() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, stale_after_s=2.0, clock=clock, wall_ms=clock.wall_ms)
    assert 'data-state="waiting"' in fresh.element()
    fresh.tick_done("portfolio", 1_700_000_000_000.0)
    fresh.tick_done("risk_metrics", 1_700_000_000_000.0)
    assert 'data-state="live"' in fresh.element() and "prices live" in fresh.element()
    clock.now += 1.5
    fresh.tick_done("portfolio", 1_700_000_001_500.0)
    clock.now += 1.0  # the risk service has said nothing for 2.5 s
    element = fresh.element()
    assert 'data-state="delayed"' in element and "feed--delayed" in element
    assert "delayed (risk) — last update 22:13:20 UTC" in element
    assert fresh.delayed() == ["risk_metrics"]
    fresh.tick_done("risk_metrics", 1_700_000_002_500.0)  # back
    assert 'data-state="live"' in fresh.element()


def test_ticks_finished_in_time_but_seconds_old_are_delayed_not_live() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, stale_after_s=2.0, clock=clock, wall_ms=clock.wall_ms)
    for _ in range(8):  # every 250 ms a finished tick, each one from 9 s ago: a backlog
        clock.now += 0.25
        fresh.tick_done("portfolio", clock.wall_ms() - 9_000)
        fresh.tick_done("watchlist", clock.wall_ms() - 100)
    assert fresh.delayed() == ["portfolio"]
    element = fresh.element()
    assert 'data-state="delayed"' in element
    assert "delayed (portfolio) — last update 22:13:13 UTC" in element  # what it shows
    assert 'data-state="delayed"' in dict(fresh.parts())["freshness-portfolio"]
    fresh.tick_done("portfolio", clock.wall_ms() - 1_900)  # caught up to under 2 s
    assert 'data-state="live"' in fresh.element()


def test_a_gateway_that_slowed_its_frames_says_so() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, clock=clock, wall_ms=clock.wall_ms)
    fresh.tick_done("portfolio", None)
    for _ in range(5):
        pace.observe(0.2)
    assert "the server is busy" in fresh.element()
    assert fresh.element().startswith('<span id="feed-status" hx-swap-oob="true"')


def test_each_tick_driven_panel_says_when_its_numbers_are_old() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, stale_after_s=2.0, clock=clock, wall_ms=clock.wall_ms)
    fresh.tick_done("portfolio", 1_700_000_000_000.0)
    fresh.tick_done("watchlist", 1_700_000_000_000.0)
    parts = dict(fresh.parts())
    assert set(parts) == {"feed-status", "freshness-portfolio", "freshness-watchlist"}
    assert (
        "hidden" in parts["freshness-portfolio"]
        and 'data-state="live"' in parts["freshness-portfolio"]
    )
    clock.now += 3.0
    fresh.tick_done("portfolio", 1_700_000_003_000.0)  # the watchlist service went quiet
    parts = dict(fresh.parts())
    assert "hidden" in parts["freshness-portfolio"]
    assert "hidden" not in parts["freshness-watchlist"]
    assert "delayed — last update 22:13:20 UTC" in parts["freshness-watchlist"]


def test_without_nats_every_panel_and_the_header_say_delayed() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    up = True
    fresh = Freshness(pace, clock=clock, wall_ms=clock.wall_ms, connected=lambda: up)
    fresh.tick_done("portfolio", 1_700_000_000_000.0)
    fresh.tick_done("risk_metrics", 1_700_000_000_500.0)
    assert 'data-state="live"' in fresh.element()
    up = False  # the gateway lost NATS: nothing it shows can be current
    assert "no connection to the price feed — last update 22:13:20 UTC" in fresh.element()
    assert all('data-state="delayed"' in html for _id, html in fresh.parts())


def test_a_panel_whose_service_does_not_answer_says_so_even_without_ticks() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, clock=clock, wall_ms=clock.wall_ms)
    fresh.watched = {"order", "portfolio"}
    fresh.tick_done("portfolio", 1_700_000_000_000.0)
    assert all('data-state="live"' in html for _id, html in fresh.parts()[1:])
    fresh.unreachable = {"order"}
    parts = dict(fresh.parts())
    assert "delayed — service unreachable" in parts["freshness-order"]
    assert 'data-state="live"' in parts["freshness-portfolio"]
    assert "delayed (orders)" in parts["feed-status"]
