"""The gateway's session lookups against the real sessions table: batched, one query for
the lookups begun together (a reconnect storm), each answer still its own session's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.sessions import SessionCache, SessionLookups, create_session, revoke_session
from shared.db.engine import create_engine, session_factory
from shared.db.models import User
from shared.devservers import free_port

pytestmark = pytest.mark.service


@pytest.fixture
async def db(demo_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(demo_database_url)
    yield session_factory(engine)
    await engine.dispose()


async def _sessions(db: async_sessionmaker[AsyncSession], usernames: list[str]) -> list[str]:
    async with db() as s:
        ids = {u.username: u.id for u in (await s.scalars(select(User))).all()}
    return [(await create_session(db, ids[name], 3600))[0] for name in usernames]


async def test_lookups_begun_together_share_one_query(
    db: async_sessionmaker[AsyncSession],
) -> None:
    names = ["alice", "bob", "alice", "viewer"] * 5
    sids = await _sessions(db, names)
    await revoke_session(db, sids[1])
    lookups = SessionLookups(SessionCache(0))  # no cache: every lookup asks the table
    users = await asyncio.gather(
        *(lookups.user(db, sid) for sid in [*sids, sids[0], "no-such-session"])
    )
    assert lookups.queries == 1
    assert users[1] is None and users[-1] is None  # revoked; unknown
    for sid, name, user in zip(sids, names, users, strict=False):
        if user is not None:
            assert (user.session_id, user.identity.username) == (sid, name)
    assert users[-2] == users[0]  # the same session twice in one batch
    assert sum(u is not None for u in users) == len(sids)  # all but the revoked, + sids[0]

    # a lookup begun later is the next batch
    assert (await lookups.user(db, sids[2])) is not None and lookups.queries == 2


async def test_a_lookup_found_is_cached_and_a_closed_tab_does_not_fail_the_others(
    db: async_sessionmaker[AsyncSession],
) -> None:
    alice, bob = await _sessions(db, ["alice", "bob"])
    lookups = SessionLookups(SessionCache(60))
    gone = asyncio.ensure_future(lookups.user(db, alice))
    staying = asyncio.ensure_future(lookups.user(db, alice))
    other = asyncio.ensure_future(lookups.user(db, bob))
    await asyncio.sleep(0)
    gone.cancel()  # its tab closed while the batch was under way
    assert (await staying) is not None and (await other) is not None
    assert gone.cancelled() and lookups.queries == 1
    assert lookups.cache.get(alice) is not None  # believed: the next request asks nobody
    assert await lookups.user(db, alice) is not None and lookups.queries == 1


async def test_every_lookup_of_a_failed_batch_hears_the_database_error() -> None:
    engine = create_engine(f"postgresql+asyncpg://x:y@127.0.0.1:{free_port()}/none")
    try:
        lookups = SessionLookups(SessionCache(60))
        results = await asyncio.gather(
            *(lookups.user(session_factory(engine), f"s{i}") for i in range(3)),
            return_exceptions=True,
        )
    finally:
        await engine.dispose()
    assert lookups.queries == 1
    assert all(isinstance(r, DBAPIError | OSError) for r in results), results
    assert len(lookups.cache) == 0
