"""What the page says about its numbers: waiting, live, delayed (by panel, or when busy)."""

from __future__ import annotations

from gateway.freshness import Freshness
from gateway.pace import Pace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waiting_then_live_then_delayed_by_the_panel_that_went_quiet() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, stale_after_s=2.0, clock=clock)
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


def test_a_gateway_that_slowed_its_frames_says_so() -> None:
    clock, pace = Clock(), Pace(0.1, 0.5)
    fresh = Freshness(pace, clock=clock)
    fresh.tick_done("portfolio", None)
    for _ in range(5):
        pace.observe(0.2)
    assert "the server is busy" in fresh.element()
    assert fresh.element().startswith('<span id="feed-status" hx-swap-oob="true"')
