"""The mount cache: hit, expiry, invalidation, copies in and out."""

from __future__ import annotations

from shared.components import MountCache
from shared.components.testing import TestEnvironment, adispatch_event, amount_component, trader
from tests.example_service.components import MOUNTS, Order, Portfolio
from tests.example_service.fakes import FakeClock


def _env(clock: FakeClock) -> TestEnvironment:
    return TestEnvironment(cache=MountCache(clock.monotonic))


async def test_second_mount_within_ttl_is_a_hit() -> None:
    clock, MOUNTS[:] = FakeClock(), []
    env = _env(clock)
    first = await amount_component(Portfolio, env=env)
    first.state["positions"].clear()  # callers get copies
    clock.advance(4.9)
    second = await amount_component(Portfolio, env=env)
    assert MOUNTS == [1]
    assert len(second.state["positions"]) == 2
    assert (env.cache.hits, env.cache.misses) == (1, 1)


async def test_entry_expires_after_ttl() -> None:
    clock, MOUNTS[:] = FakeClock(), []
    env = _env(clock)
    await amount_component(Portfolio, env=env)
    clock.advance(5)
    await amount_component(Portfolio, env=env)
    assert MOUNTS == [1, 1]


async def test_cache_is_per_account() -> None:
    clock, MOUNTS[:] = FakeClock(), []
    env = _env(clock)
    await amount_component(Portfolio, env=env)
    await amount_component(Portfolio, trader(2, 7), env=env)
    await amount_component(Portfolio, trader(3, 7), env=env)
    assert MOUNTS == [1, 7]


async def test_handler_invalidation_forces_a_fresh_mount() -> None:
    clock, MOUNTS[:] = FakeClock(), []
    env = _env(clock)
    await amount_component(Portfolio, env=env)
    await adispatch_event(Portfolio, "refresh", {}, env=env)  # mounts from cache, invalidates
    await amount_component(Portfolio, env=env)
    assert MOUNTS == [1, 1]


async def test_event_state_changes_do_not_leak_into_the_cache() -> None:
    env = _env(FakeClock())
    component = await amount_component(Portfolio, env=env)
    component.state["total_value"] = -1
    assert (await amount_component(Portfolio, env=env)).state["total_value"] == 3800


async def test_uncached_component_always_mounts() -> None:
    env = _env(FakeClock())
    await amount_component(Order, env=env)
    await amount_component(Order, env=env)
    assert env.cache.hits == 0


def test_invalidate_prefix() -> None:
    cache = MountCache()
    cache.set("p", 1, {"a": 1}, 10)
    cache.set("p", 2, {"a": 2}, 10)
    cache.set("q", 1, {"a": 3}, 10)
    cache.invalidate("p")
    assert cache.get("p", 1) is None and cache.get("p", 2) is None
    assert cache.get("q", 1) == {"a": 3}


def test_expired_entries_of_departed_accounts_are_pruned() -> None:
    from shared.components.cache import PRUNE_MIN

    clock = FakeClock()
    cache = MountCache(clock.monotonic)
    for account in range(PRUNE_MIN):
        cache.set("portfolio", account, {"n": account}, ttl=5)
    clock.advance(10)  # all expired; nobody reads them again
    cache.set("portfolio", 99_999, {"n": 0}, ttl=5)
    assert len(cache) == 1
