"""The gateway's cache of sessions found valid: how long an entry is believed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.sessions import SessionCache, SessionUser
from shared.identity import Identity
from tests.support import ManualClock


def user(session_id: str) -> SessionUser:
    return SessionUser(session_id, Identity(1, 1, "alice", frozenset(), "pub"), "Alice")


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_valid_session_is_believed_for_the_ttl_then_looked_up_again() -> None:
    clock = ManualClock()
    cache = SessionCache(5.0, clock=clock)
    cache.put(user("a"), later(3600), drops=cache.drops)
    clock.now += 4.9
    assert cache.get("a") == user("a")
    clock.now += 0.2
    assert cache.get("a") is None and len(cache) == 0


def test_an_entry_never_outlives_its_session() -> None:
    clock = ManualClock()
    cache = SessionCache(5.0, clock=clock)
    cache.put(user("a"), later(1.0), drops=cache.drops)  # the session itself ends in a second
    clock.now += 1.5
    assert cache.get("a") is None
    cache.put(user("b"), later(-1.0), drops=cache.drops)  # ended already (read just before)
    assert cache.get("b") is None


def test_a_dropped_session_is_looked_up_again_and_ttl_zero_keeps_nothing() -> None:
    cache = SessionCache(5.0, clock=ManualClock())
    cache.put(user("a"), later(3600), drops=cache.drops)
    cache.drop("a")
    cache.drop("never-seen")
    assert cache.get("a") is None
    off = SessionCache(0.0, clock=ManualClock())
    off.put(user("a"), later(3600), drops=off.drops)
    assert off.get("a") is None and len(off) == 0


def test_past_its_size_the_oldest_entries_go_first() -> None:
    cache = SessionCache(5.0, max_entries=2, clock=ManualClock())
    for sid in ("a", "b", "a", "c"):  # "a" refreshed: "b" is now the oldest
        cache.put(user(sid), later(3600), drops=cache.drops)
    assert len(cache) == 2
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


def test_a_lookup_under_way_when_a_session_is_dropped_keeps_nothing() -> None:
    cache = SessionCache(5.0, clock=ManualClock())
    begun = cache.drops  # a lookup reads the table...
    cache.drop("a")  # ...while a logout elsewhere ends the session (or any other)
    cache.put(user("a"), later(3600), drops=begun)  # what it read may be from before
    assert cache.get("a") is None
    cache.put(user("a"), later(3600), drops=cache.drops)  # a lookup begun after it
    assert cache.get("a") is not None
