"""The async engine and session factory, built from settings (nothing connects at import)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, NullPool

from shared.settings import POOL_TIMEOUT_S, async_database_url

__all__ = [
    "POOL_TIMEOUT_S",
    "MeteredPool",
    "create_engine",
    "database_busy",
    "database_unavailable",
    "ping",
    "session_factory",
]


PING_AFTER_IDLE_S = 1.0
_RETURNED_AT = "metered_pool_returned_at"


class MeteredPool(AsyncAdaptedQueuePool):
    """The asyncio queue pool, counting the checkouts that had to wait for a connection
    (every one in use, no overflow left) and how long they waited; a Prometheus
    collector of that and of the connections in use (``db_pool_*``).

    With ``pre_ping``, a checkout pings only a connection that sat in the pool for
    ``ping_after_idle_s`` or longer: with asyncpg a ping is three round trips (BEGIN,
    ``;``, ROLLBACK), and under load, where a connection comes back within
    milliseconds, it tripled the round trips of a one-query transaction. A database
    that restarts takes longer than that to come back, so its dropped connections are
    still found by the ping; one used after a drop within that second fails its
    transaction, and SQLAlchemy then replaces every connection of the pool. The pool is
    LIFO (:func:`create_engine`): a few requests a second reuse the connection just
    returned, where a FIFO pool rotated through all of them, each idle past the threshold.
    """

    def __init__(
        self,
        creator: Any,
        *,
        max_overflow: int = 10,
        ping_after_idle_s: float = PING_AFTER_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(creator, max_overflow=max_overflow, **kwargs)
        self.max_connections = self.size() + max(max_overflow, 0)
        self.unbounded = max_overflow < 0
        self.waits = self.timeouts = 0
        self.wait_seconds = 0.0
        self.ping_after_idle_s = ping_after_idle_s
        self.clock = clock

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = self.clock()
        super()._do_return_conn(record)

    def _do_get(self) -> ConnectionPoolEntry:
        record = self._get()
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is not None and self.clock() - returned_at < self.ping_after_idle_s:
            record.fresh = True  # type: ignore[attr-defined]  # SQLAlchemy's "skip the ping"
        return record

    def _get(self) -> ConnectionPoolEntry:
        if self.unbounded or self.checkedin() > 0 or self.checkedout() < self.max_connections:
            return super()._do_get()
        self.waits += 1
        started = time.perf_counter()
        try:
            return super()._do_get()
        except sa_exc.TimeoutError:
            self.timeouts += 1
            raise
        finally:
            self.wait_seconds += time.perf_counter() - started

    def collect(self) -> Iterator[Metric]:
        """The pool's series (the Prometheus collector protocol)."""
        yield GaugeMetricFamily(
            "db_pool_in_use", "Database connections checked out.", value=self.checkedout()
        )
        yield GaugeMetricFamily(
            "db_pool_max_connections",
            "Most connections the pool opens (size plus overflow).",
            value=self.max_connections,
        )
        yield CounterMetricFamily(
            "db_pool_waits", "Checkouts that waited for a free connection.", value=self.waits
        )
        yield CounterMetricFamily(
            "db_pool_wait_seconds",
            "Time checkouts spent waiting for a free connection.",
            value=self.wait_seconds,
        )
        yield CounterMetricFamily(
            "db_pool_timeouts", "Checkouts that gave up waiting.", value=self.timeouts
        )


# SQLAlchemy logs a pool under its class's name, and keeps sqlalchemy.* at WARNING; so ours
logging.getLogger(f"{__name__}.{MeteredPool.__name__}").setLevel(logging.WARNING)


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    pool_timeout: float = POOL_TIMEOUT_S,
    null_pool: bool = False,
) -> AsyncEngine:
    """An engine on ``url``; its pool (a :class:`MeteredPool`, unless ``null_pool``) holds
    ``pool_size`` connections plus as many overflow ones, and a checkout waits at most
    ``pool_timeout`` seconds for one (then :func:`database_busy`)."""
    url = async_database_url(url)
    if null_pool:
        return _create_async_engine(url, poolclass=NullPool)
    return _create_async_engine(
        url,
        poolclass=MeteredPool,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        pool_use_lifo=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def database_busy(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a checkout that gave up waiting for a free connection (every one
    in use for :data:`POOL_TIMEOUT_S`): nothing was done, and a retry may pass."""
    for _ in range(8):  # the chain, as in database_unavailable
        if exc is None:
            return False
        if isinstance(exc, sa_exc.TimeoutError):
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None)
    return False


def database_unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` says PostgreSQL could not be reached (restarting, down, a dropped
    connection) rather than that the request was wrong."""
    for _ in range(8):  # the chain: HandlerError → SQLAlchemy → the driver's error
        if exc is None:
            return False
        if isinstance(exc, OSError | ConnectionError | sa_exc.InterfaceError):
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate.startswith(("08", "57")):  # connection exception, operator intervention
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None)
    return False
