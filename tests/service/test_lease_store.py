"""The JetStream KV lease store against a real nats-server: what a stop leaves behind."""

from __future__ import annotations

import asyncio

import nats
import pytest

from shared.leases import NatsLeaseStore
from tests.support import wait_until

pytestmark = pytest.mark.service


async def test_a_key_listing_cancelled_while_its_watch_opens_leaves_no_subscription(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    try:
        store = await NatsLeaseStore.open(nc, "test-listing-cancelled", ttl=5.0)
        await store.put("member.a", b"a")
        before = len(nc._subs)
        listing = asyncio.ensure_future(store.keys("member.*"))
        # every turn of the loop: stop at the first one after it subscribed, inside watch()
        while len(nc._subs) == before:  # noqa: ASYNC110
            await asyncio.sleep(0)
        listing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listing
        await wait_until(lambda: len(nc._subs) == before)
        assert await store.keys("member.*") == ["member.a"]  # and listing still works
        assert len(nc._subs) == before
    finally:
        await nc.close()
