"""Partition leases and leader leases over the in-memory store (the contract NATS KV keeps)."""

from __future__ import annotations

import pytest

from shared import wire
from shared.leases import LeaderLease, MemoryLeaseStore, PartitionLeases, rendezvous_owner
from tests.support import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def store(clock: ManualClock) -> MemoryLeaseStore:
    return MemoryLeaseStore(ttl=5.0, clock=clock)


def replicas(store: MemoryLeaseStore, clock: ManualClock, *names: str) -> list[PartitionLeases]:
    return [PartitionLeases(store, name, renew_every=1.0, clock=clock) for name in names]


async def settle(holders: list[PartitionLeases], rounds: int = 3) -> None:
    for _ in range(rounds):
        for holder in holders:
            await holder.round()


async def settled(
    store: MemoryLeaseStore, clock: ManualClock, *names: str
) -> list[PartitionLeases]:
    """Replicas ``names``, after the rounds that spread the partitions over them."""
    holders = replicas(store, clock, *names)
    await settle(holders)
    return holders


def owners(holders: list[PartitionLeases]) -> dict[int, str]:
    found: dict[int, str] = {}
    for holder in holders:
        for p in holder.owned:
            assert p not in found, f"partition {p} owned twice"
            found[p] = holder.replica
    return found


async def test_every_partition_has_exactly_one_owner_spread_over_the_members(
    clock: ManualClock, store: MemoryLeaseStore
) -> None:
    holders = await settled(store, clock, "a", "b", "c")
    found = owners(holders)
    assert sorted(found) == list(range(wire.LIVE_PARTITIONS))
    shares = [len(h.owned) for h in holders]
    assert min(shares) >= 10, shares  # 64 over 3: about 21 each
    for p, owner in found.items():
        assert owner == rendezvous_owner(p, ["a", "b", "c"])


async def test_a_member_joining_moves_about_a_quarter_only_to_itself(
    clock: ManualClock, store: MemoryLeaseStore
) -> None:
    holders = await settled(store, clock, "a", "b", "c")
    before = owners(holders)
    holders += replicas(store, clock, "d")
    await settle(holders)
    after = owners(holders)
    assert sorted(after) == list(range(wire.LIVE_PARTITIONS))
    moved = {p for p in after if after[p] != before[p]}
    assert all(after[p] == "d" for p in moved)
    assert 8 <= len(moved) <= 24, len(moved)


async def test_epochs_grow_with_every_change_of_owner_and_callbacks_say_what_moved(
    clock: ManualClock, store: MemoryLeaseStore
) -> None:
    gained: dict[str, set[int]] = {"a": set(), "b": set()}
    lost: dict[str, set[int]] = {"a": set(), "b": set()}
    holders = []
    for name in ("a", "b"):

        async def on_gained(ps: set[int], name: str = name) -> None:
            gained[name] |= ps

        async def on_lost(ps: set[int], name: str = name) -> None:
            lost[name] |= ps

        holders.append(
            PartitionLeases(
                store, name, renew_every=1.0, clock=clock, on_gained=on_gained, on_lost=on_lost
            )
        )
    a, b = holders
    await settle([a])
    assert a.owned == frozenset(range(wire.LIVE_PARTITIONS))
    epochs = {p: a.epoch(p) for p in range(wire.LIVE_PARTITIONS)}
    await settle(holders)
    assert b.owned and lost["a"] == set(b.owned) == gained["b"]
    for p in b.owned:
        assert b.epoch(p) > epochs[p]


async def test_a_silent_owner_stops_acting_before_its_lease_can_be_taken(
    clock: ManualClock, store: MemoryLeaseStore
) -> None:
    a, b = await settled(store, clock, "a", "b")
    a_share = set(a.owned)
    assert a_share
    # a stops renewing (killed, or cut off from NATS); b keeps going
    clock.now += 4.0  # ttl - margin passed: a no longer trusts its leases...
    assert a.owned == frozenset()
    await b.round()
    assert not a_share & b.owned  # ...and nobody else could take them yet
    clock.now += 1.5  # past the TTL: a's membership and leases are gone
    await b.round()
    await b.round()
    assert b.owned == frozenset(range(wire.LIVE_PARTITIONS))
    for p in a_share:
        assert b.epoch(p) > 0


async def test_a_member_list_missing_this_replica_does_not_hand_its_partitions_over(
    clock: ManualClock, store: MemoryLeaseStore
) -> None:
    (a,) = await settled(store, clock, "a")
    assert a.owned == frozenset(range(wire.LIVE_PARTITIONS))
    lost: list[set[int]] = []

    async def on_lost(partitions: set[int]) -> None:
        lost.append(partitions)

    a.on_lost = on_lost
    listed = store.keys

    async def early(pattern: str) -> list[str]:  # a KV watch that ended too soon
        return []

    store.keys = early  # type: ignore[method-assign]
    await a.round()
    store.keys = listed  # type: ignore[method-assign]
    assert a.owned == frozenset(range(wire.LIVE_PARTITIONS)) and lost == []


async def test_draining_gives_everything_back_at_once(
    clock: ManualClock, store: MemoryLeaseStore
) -> None:
    a, b = await settled(store, clock, "a", "b")
    await a.drain()
    assert a.owned == frozenset() and await store.keys("m.*") == ["m.b"]
    await settle([b], rounds=1)
    assert b.owned == frozenset(range(wire.LIVE_PARTITIONS))


async def test_one_leader_at_a_time_and_a_new_epoch_when_it_changes(clock: ManualClock) -> None:
    store = MemoryLeaseStore(ttl=3.0, clock=clock)
    events: list[tuple[str, object]] = []

    def leader(name: str) -> LeaderLease:
        async def gained(epoch: int) -> None:
            events.append((name, epoch))

        async def lost() -> None:
            events.append((name, "lost"))

        return LeaderLease(
            store, "venue", name, renew_every=0.75, clock=clock, on_gained=gained, on_lost=lost
        )

    a, b = leader("a"), leader("b")
    await a.round()
    await b.round()
    assert a.is_leader and not b.is_leader
    first = a.epoch
    clock.now += 3.5  # a went silent
    assert not a.is_leader
    await b.round()
    assert b.is_leader and b.epoch > first
    await a.round()  # a comes back: its renewal fails, it knows it lost
    assert not a.is_leader and ("a", "lost") in events
    assert events[0] == ("a", first) and ("b", b.epoch) in events


async def test_a_cold_replica_yields_the_role_to_a_warm_one_but_not_to_nobody(
    clock: ManualClock,
) -> None:
    store = MemoryLeaseStore(ttl=3.0, clock=clock)
    cold_wait = 1.5  # a just-started replica: it has not caught up with the leader

    def replica(name: str, patience: float) -> LeaderLease:
        return LeaderLease(
            store, "leader", name, renew_every=0.75, clock=clock, patience=lambda: patience
        )

    leader, warm, cold = replica("leader", 0), replica("warm", 0), replica("cold", cold_wait)
    await leader.round()
    await cold.round()  # it sees the role held
    clock.now += 3.5  # the leader dies; its key expires
    await cold.round()
    assert not cold.is_leader  # the role is free, but not for long enough
    await warm.round()
    assert warm.is_leader  # the warm standby takes it in its first round
    clock.now += cold_wait
    await cold.round()
    assert not cold.is_leader and warm.is_leader

    # nobody warm left: a cold replica takes the role once it stayed free long enough
    clock.now += 3.5
    await cold.round()
    assert not cold.is_leader
    clock.now += cold_wait
    await cold.round()
    assert cold.is_leader

    # at a clean start (the role free the first time it looks) nobody is warmer: at once
    alone = LeaderLease(
        MemoryLeaseStore(ttl=3.0, clock=clock), "leader", "alone", clock=clock, patience=lambda: 9
    )
    await alone.round()
    assert alone.is_leader
