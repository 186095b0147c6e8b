"""Rate limits: parsing, and the limiter contract every implementation must meet.

``RateLimiterContract`` runs here against the in-memory limiter and in
``tests/service/test_components_ratelimit.py`` against PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.components import InMemoryRateLimiter, RateLimited, RateLimiter, parse_rate
from shared.components.ratelimit import Rate
from shared.components.testing import ComponentTestCase, dispatch_event, trader
from tests.example_service.components import Order
from tests.example_service.fakes import FakeClock

MakeLimiter = Callable[[FakeClock], RateLimiter]


@pytest.mark.parametrize(
    ("spec", "rate"),
    [
        ("60/minute", Rate(60, 60)),
        ("5/second", Rate(5, 1)),
        ("100/hour", Rate(100, 3600)),
        ("10/30s", Rate(10, 30)),
        (" 2 / day ", Rate(2, 86400)),
    ],
)
def test_parse_rate(spec: str, rate: Rate) -> None:
    assert parse_rate(spec) == rate


@pytest.mark.parametrize("spec", ["", "60", "0/minute", "x/minute", "5/fortnight", "-1/s"])
def test_parse_rate_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="bad rate limit"):
        parse_rate(spec)


class RateLimiterContract:
    """Subclasses provide a ``make_limiter`` fixture."""

    async def test_accepts_up_to_the_limit(self, make_limiter: MakeLimiter) -> None:
        clock = FakeClock()
        limiter = make_limiter(clock)
        statuses = [await limiter.hit("k", Rate(3, 60)) for _ in range(3)]
        assert [s.remaining for s in statuses] == [2, 1, 0]
        with pytest.raises(RateLimited) as info:
            await limiter.hit("k", Rate(3, 60))
        assert (info.value.limit, info.value.window, info.value.retry_after) == (3, 60, 60)

    async def test_rolling_window_edge(self, make_limiter: MakeLimiter) -> None:
        clock = FakeClock()
        limiter = make_limiter(clock)
        rate = Rate(2, 60)
        await limiter.hit("k", rate)  # t=0
        clock.advance(20)
        await limiter.hit("k", rate)  # t=20
        clock.advance(39.5)  # t=59.5: the first hit is still inside the window
        with pytest.raises(RateLimited) as info:
            await limiter.hit("k", rate)
        assert info.value.retry_after == 1  # ceil(0.5), never 0
        clock.advance(0.5)  # t=60: the first hit leaves the window
        await limiter.hit("k", rate)
        with pytest.raises(RateLimited) as info:
            await limiter.hit("k", rate)
        assert info.value.retry_after == 20  # the t=20 hit expires at t=80

    async def test_retry_after_is_never_longer_than_the_window(
        self, make_limiter: MakeLimiter
    ) -> None:
        # two requests at once: the one that read the clock first can get the key's lock
        # second, and find a hit newer than its own "now" (as a clock a little behind)
        clock = FakeClock()
        limiter = make_limiter(clock)
        clock.advance(2)
        await limiter.hit("k", Rate(1, 60))
        clock.advance(-0.5)
        with pytest.raises(RateLimited) as info:
            await limiter.hit("k", Rate(1, 60))
        assert info.value.retry_after == 60

    async def test_keys_are_independent(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(FakeClock())
        await limiter.hit("a", Rate(1, 60))
        await limiter.hit("b", Rate(1, 60))
        with pytest.raises(RateLimited):
            await limiter.hit("a", Rate(1, 60))

    async def test_release_gives_the_hit_back(self, make_limiter: MakeLimiter) -> None:
        limiter = make_limiter(FakeClock())
        status = await limiter.hit("k", Rate(1, 60))
        await limiter.release(status, in_session=False)
        await limiter.hit("k", Rate(1, 60))


class TestInMemoryRateLimiter(RateLimiterContract):
    @pytest.fixture
    def make_limiter(self) -> MakeLimiter:
        return lambda clock: InMemoryRateLimiter(clock)


class TestComponentRateLimit(ComponentTestCase):
    VALID = {"symbol": "AAPL", "side": "buy", "quantity": 1}

    def test_fourth_order_in_a_minute_is_refused(self) -> None:
        for _ in range(3):
            dispatch_event(Order, "submit", self.VALID)
        with pytest.raises(RateLimited) as info:
            dispatch_event(Order, "submit", self.VALID)
        assert info.value.key == "1:order:submit"

    def test_budget_is_per_user(self) -> None:
        for _ in range(3):
            dispatch_event(Order, "submit", self.VALID)
        dispatch_event(Order, "submit", self.VALID, trader(2, 2))

    def test_rejected_requests_do_not_spend_the_budget(self) -> None:
        for _ in range(5):
            dispatch_event(Order, "submit", {**self.VALID, "quantity": 0})
        for _ in range(3):
            assert dispatch_event(Order, "submit", self.VALID).state["status"] == "submitted"
