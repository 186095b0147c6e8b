"""A captured X-Identity is good for seconds, and not at all after its session logged out."""

from __future__ import annotations

import time
from dataclasses import replace

import itsdangerous.timed
import pytest

from services.watchlist.app import create_app
from services.watchlist.settings import WatchlistSettings
from shared import wire
from shared.bus import NatsBus
from shared.identity import IDENTITY_MAX_AGE_S, Identity
from tests.support import identity_headers, running, wait_until

pytestmark = pytest.mark.service


@pytest.fixture
def settings(service_env: None) -> WatchlistSettings:
    return WatchlistSettings()


async def test_a_token_of_a_logged_out_session_is_refused_and_others_are_not(
    settings: WatchlistSettings, alice: Identity, bus: NatsBus
) -> None:
    ended, other = replace(alice, session_id="pub-ended"), replace(alice, session_id="pub-other")
    async with running(create_app(settings)) as client:

        async def status(who: Identity) -> int:
            r = await client.get("/components/watchlist", headers=identity_headers(who))
            return r.status_code

        assert await status(ended) == 200
        token = identity_headers(ended)  # captured before the logout
        await bus.publish(wire.SESSION_REVOKED, {"public_id": "pub-ended"})

        async def refused() -> bool:
            r = await client.get("/components/watchlist", headers=token)
            return r.status_code == 401 and r.text == "session ended"

        await wait_until(refused)
        assert await status(ended) == 401  # nor a freshly signed one for that session
        assert await status(other) == 200


async def test_a_token_older_than_its_lifetime_is_refused(
    settings: WatchlistSettings, alice: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now - IDENTITY_MAX_AGE_S - 2)
    old = identity_headers(alice)
    monkeypatch.undo()
    async with running(create_app(settings)) as client:
        r = await client.get("/components/watchlist", headers=old)
        assert (r.status_code, r.text) == (401, "identity expired")
        r = await client.get("/components/watchlist", headers=identity_headers(alice))
        assert r.status_code == 200
