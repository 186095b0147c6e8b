"""Rolling-window rate limits: ``"60/minute"``, stored in PostgreSQL for every process.

Both limiters accept at most ``limit`` hits in any window of ``window`` seconds per key.
When a caller passes its own ``session`` the hit joins that transaction, so a request
that fails later (422, 500) rolls its hit back: nothing is written on a non-2xx.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import BigInteger, DateTime, Integer, String, Table, bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.components.errors import RateLimited
from shared.db.models import RateLimitHit

__all__ = [
    "Clock",
    "InMemoryRateLimiter",
    "PostgresRateLimiter",
    "Rate",
    "RateLimitStatus",
    "RateLimiter",
    "parse_rate",
    "utc_now",
]

Clock = Callable[[], datetime]

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


_TABLE = cast(Table, RateLimitHit.__table__)
# The key's lock, its old hits forgotten, the rest counted and this one added if that
# leaves room: one round trip (the function's statements each see what the one before
# committed; migration 0006).
_HIT = (
    text("SELECT held, oldest, hit_id FROM rate_limit_hit(:key, :now, :cut, :limit)")
    .bindparams(
        bindparam("key", type_=String()),
        bindparam("now", type_=DateTime(timezone=True)),
        bindparam("cut", type_=DateTime(timezone=True)),
        bindparam("limit", type_=Integer()),
    )
    .columns(held=Integer(), oldest=DateTime(timezone=True), hit_id=BigInteger())
)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window: int  # seconds

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.window)


def parse_rate(spec: str) -> Rate:
    """``"60/minute"`` → ``Rate(60, 60)``; also ``"5/second"``, ``"100/hour"``, ``"10/30s"``."""
    match = _RATE.match(spec.lower())
    if not match or match.group(3) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError(f"bad rate limit {spec!r}; expected e.g. '60/minute'")
    count = int(match.group(2) or 1)
    return Rate(int(match.group(1)), count * _UNITS[match.group(3)])


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """An accepted hit: what is left in the window and when the oldest hit expires."""

    key: str
    limit: int
    window: int
    remaining: int
    reset: int
    hit_id: object = None


def _retry_after(oldest: datetime, window: timedelta, now: datetime) -> int:
    # never past the window: with hits at once, one that read the clock before another
    # can take the key's lock after it, and find a hit newer than its own "now"
    waited = math.ceil((oldest + window - now).total_seconds())
    return min(max(1, waited), math.ceil(window.total_seconds()))


class RateLimiter(Protocol):
    async def hit(
        self, key: str, rate: Rate, session: AsyncSession | None = None
    ) -> RateLimitStatus: ...

    async def release(self, status: RateLimitStatus, *, in_session: bool) -> None: ...


class InMemoryRateLimiter:
    """One process's limiter with the same interface, for unit tests."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._hits: defaultdict[str, deque[datetime]] = defaultdict(deque)

    async def hit(
        self, key: str, rate: Rate, session: AsyncSession | None = None
    ) -> RateLimitStatus:
        now, hits = self._clock(), self._hits[key]
        while hits and hits[0] <= now - rate.delta:
            hits.popleft()
        if len(hits) >= rate.limit:
            raise RateLimited(_retry_after(hits[0], rate.delta, now), rate.limit, rate.window, key)
        hits.append(now)
        reset = _retry_after(hits[0], rate.delta, now)
        return RateLimitStatus(key, rate.limit, rate.window, rate.limit - len(hits), reset, now)

    async def release(self, status: RateLimitStatus, *, in_session: bool) -> None:
        hits = self._hits.get(status.key)
        if hits is not None and status.hit_id in hits:
            hits.remove(status.hit_id)  # type: ignore[arg-type]


class PostgresRateLimiter:
    """The ``rate_limit_hits`` table, one advisory-locked transaction per hit.

    ``db`` is used only when :meth:`hit` is called without a session.
    """

    def __init__(
        self, db: async_sessionmaker[AsyncSession] | None = None, clock: Clock = utc_now
    ) -> None:
        self._db = db
        self._clock = clock

    async def hit(
        self, key: str, rate: Rate, session: AsyncSession | None = None
    ) -> RateLimitStatus:
        if session is not None:
            return await self._hit(session, key, rate)
        if self._db is None:
            raise RuntimeError("PostgresRateLimiter needs a session or a sessionmaker")
        async with self._db() as own, own.begin():
            return await self._hit(own, key, rate)

    async def _hit(self, session: AsyncSession, key: str, rate: Rate) -> RateLimitStatus:
        now = self._clock()
        params = {"key": key, "now": now, "cut": now - rate.delta, "limit": rate.limit}
        count, oldest, hit_id = (await session.execute(_HIT, params)).one()
        if hit_id is None:
            raise RateLimited(_retry_after(oldest, rate.delta, now), rate.limit, rate.window, key)
        reset = _retry_after(oldest or now, rate.delta, now)
        return RateLimitStatus(key, rate.limit, rate.window, rate.limit - count - 1, reset, hit_id)

    async def release(self, status: RateLimitStatus, *, in_session: bool) -> None:
        if in_session or self._db is None:
            return  # the caller's rollback took the hit back
        table = _TABLE
        async with self._db() as own, own.begin():
            await own.execute(delete(table).where(table.c.id == status.hit_id))
