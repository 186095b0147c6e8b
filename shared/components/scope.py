"""A unit of work: a lazily opened session committed or rolled back by the framework."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["Callback", "NoDatabase", "UnitOfWork"]

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[Any] | Any]


class NoDatabase(RuntimeError):
    """A component asked for ``self.session`` but its context has no database."""


class UnitOfWork:
    """Opens one session on first use; :meth:`commit` / :meth:`rollback` end it.

    Callbacks registered with :meth:`on_commit` run after a successful commit (e.g.
    publishing ``orders.events``), those registered with :meth:`on_rollback` after a
    rollback (e.g. giving back an in-memory rate-limit hit).
    """

    def __init__(self, factory: async_sessionmaker[AsyncSession] | None) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None
        self._on_commit: list[Callback] = []
        self._on_rollback: list[Callback] = []

    @property
    def has_database(self) -> bool:
        return self._factory is not None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            if self._factory is None:
                raise NoDatabase("this component's context has no database")
            self._session = self._factory()
        return self._session

    def session_or_none(self) -> AsyncSession | None:
        return self.session if self._factory is not None else None

    def on_commit(self, callback: Callback) -> None:
        self._on_commit.append(callback)

    def on_rollback(self, callback: Callback) -> None:
        self._on_rollback.append(callback)

    async def commit(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.commit()
            except BaseException:
                await session.rollback()
                await session.close()
                await self._run(self._on_rollback)
                raise
            await session.close()
        self._on_rollback.clear()
        await self._run(self._on_commit)

    async def rollback(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.rollback()
            finally:
                await session.close()
        self._on_commit.clear()
        await self._run(self._on_rollback)

    @staticmethod
    async def _run(callbacks: list[Callback]) -> None:
        pending, callbacks[:] = list(callbacks), []
        for callback in pending:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("callback after transaction failed")
