"""Failed-login throttling: per key, sliding window, reset on success."""

from __future__ import annotations

from gateway.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_after_max_failures_until_the_window_passes() -> None:
    clock = Clock()
    t = FailureThrottle(5, 300, clock=clock)
    keys = ["user:alice", "addr:1.2.3.4"]
    for _ in range(4):
        t.fail(keys)
        clock.now += 1
    assert t.retry_after(keys) is None
    t.fail(keys)
    assert t.retry_after(keys) == 296  # the oldest of the five leaves the window then
    assert t.retry_after(["user:bob"]) is None
    assert t.retry_after(["user:bob", "addr:1.2.3.4"]) == 296  # same address
    clock.now += 296
    assert t.retry_after(keys) is None


def test_reset_clears_one_key() -> None:
    t = FailureThrottle(2, 60, clock=Clock())
    t.fail(["user:a", "addr:x"])
    t.fail(["user:a", "addr:x"])
    t.reset("user:a")
    assert t.retry_after(["user:a"]) is None
    assert t.retry_after(["addr:x"]) is not None


def test_memory_is_bounded() -> None:
    t = FailureThrottle(2, 60, max_keys=3, clock=Clock())
    for i in range(10):
        t.fail([f"user:{i}"])
    assert len(t._failures) == 3
