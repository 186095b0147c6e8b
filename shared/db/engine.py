"""The async engine and session factory, built from settings (nothing connects at import)."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool

from shared.settings import async_database_url

__all__ = ["create_engine", "database_unavailable", "ping", "session_factory"]


def create_engine(url: str, *, pool_size: int = 5, null_pool: bool = False) -> AsyncEngine:
    url = async_database_url(url)
    if null_pool:
        return _create_async_engine(url, poolclass=NullPool)
    return _create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


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
