"""Sign-in throttling, shared by every gateway: PostgreSQL, counted before the password check.

Each attempt takes a slot for its username and for its client address in the rolling window
(the ``rate_limit_hits`` table under an advisory lock, like the order rate limit) *before*
the password is verified, so a burst of parallel guesses cannot race past the limit and N
gateways do not give N times the guesses. A successful sign-in gives its slots back: only
failures (and attempts still being checked) count.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.components.errors import RateLimited
from shared.components.ratelimit import PostgresRateLimiter, Rate, RateLimitStatus

__all__ = ["LoginThrottle", "Throttled"]


@dataclass(frozen=True, slots=True)
class Throttled:
    retry_after: int


class LoginThrottle:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], max_failures: int, window_s: int
    ) -> None:
        self._limiter = PostgresRateLimiter(db)
        self._rate = Rate(max_failures, window_s)

    async def attempt(self, username: str, address: str) -> list[RateLimitStatus] | Throttled:
        """Take a slot per key, or say how long to wait (taking none)."""
        taken: list[RateLimitStatus] = []
        for key in (f"login:user:{username.lower()}", f"login:addr:{address}"):
            try:
                taken.append(await self._limiter.hit(key, self._rate))
            except RateLimited as exc:
                await self.succeeded(taken)
                return Throttled(exc.retry_after)
        return taken

    async def succeeded(self, slots: list[RateLimitStatus]) -> None:
        """Give back the slots of an attempt that was not a failed guess."""
        for status in slots:
            await self._limiter.release(status, in_session=False)
