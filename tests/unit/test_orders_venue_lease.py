"""The venue's lease, in one process: only the holder matches; a takeover matches once
against the latest quotes seen while another replica held it."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from services.orders.venue import Quote, Venue
from shared.leases import MemoryLeaseStore
from tests.support import wait_until

D = Decimal


class RecordingVenue(Venue):
    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.matched: list[tuple[dict[str, Quote], Any]] = []

    async def match(self, quotes: Mapping[str, Quote], ts: Any = None) -> list[int]:
        self.matched.append((dict(quotes), ts))
        return []


def tick(ts: float, **prices: tuple[str, str]) -> dict[str, Any]:
    return {
        "ts": ts,
        "prices": {t: {"last": b, "bid": b, "ask": a} for t, (b, a) in prices.items()},
    }


async def test_without_a_lease_every_tick_is_matched() -> None:
    venue = RecordingVenue()
    await venue.on_tick("prices.ticks", tick(1.0, KO=("60.00", "60.02")))
    assert venue.matching and venue.matched == [({"KO": (D("60.00"), D("60.02"))}, 1.0)]


async def test_only_the_holder_matches_and_a_takeover_catches_up_once() -> None:
    now = [0.0]
    store = MemoryLeaseStore(ttl=100.0, clock=lambda: now[0])
    holder, standby = RecordingVenue(), RecordingVenue()
    first = await holder.hold_lease(store, "a")
    second = await standby.hold_lease(store, "b")
    for v in (holder, standby):
        await v.on_tick("prices.ticks", tick(1.0, KO=("60.00", "60.02"), PEP=("150", "150.10")))
        await v.on_tick("prices.ticks", tick(2.0, KO=("59.00", "59.02")))
    assert len(holder.matched) == 2 and holder.skipped == 0
    assert standby.matched == [] and standby.skipped == 2

    await first.stop(release=False)  # the holder dies; its key lapses
    now[0] += 100.0
    await second.round()
    assert standby.matching
    await wait_until(lambda: standby.matched)  # the takeover's catch-up runs as a task
    assert standby.matched == [
        ({"KO": (D("59.00"), D("59.02")), "PEP": (D("150"), D("150.10"))}, 2.0)
    ]
    await standby.on_tick("prices.ticks", tick(3.0, KO=("58.00", "58.02")))
    assert standby.matched[-1] == ({"KO": (D("58.00"), D("58.02"))}, 3.0)
    await second.stop()
