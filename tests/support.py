"""Helpers and stand-ins the tests share."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import inspect, select, text
from sqlalchemy import update as sql_update

from gateway import markup
from services.pricefeed.domain import Quote
from shared import wire
from shared.bus import MessageBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, Position, User
from shared.identity import PERM_TRADE, Identity, sign_identity
from shared.settings import DEV_PLACEHOLDER_SECRET

__all__ = [
    "ManualClock",
    "ManualProvider",
    "Received",
    "StubSessions",
    "close_positions",
    "collect",
    "collect_ui",
    "identity_headers",
    "identity_of",
    "running",
    "session_payload",
    "table_names",
    "wait_until",
]

MARKER = "_test_marker"


async def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    app: FastAPI, base_url: str = "http://service"
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and talk to it in process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


class ManualClock:
    """A monotonic clock that moves only when a test sets ``now`` (time as a signal)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ManualProvider:
    """A pricefeed quote provider whose quotes the test sets: each fetch hands over what is
    ``pending``."""

    name = "manual"

    def __init__(self) -> None:
        self.pending: Mapping[str, Quote] = {}

    async def fetch(self) -> Mapping[str, Quote]:
        pending, self.pending = self.pending, {}
        return pending

    async def aclose(self) -> None:
        pass


class StubSessions:
    """A session factory whose sessions and transactions do nothing, and fail while ``down``
    is set (for code whose store functions a test has replaced)."""

    def __init__(self) -> None:
        self.down = False

    def __call__(self) -> Any:
        outer = self

        class Session:
            async def __aenter__(self) -> Session:
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            @asynccontextmanager
            async def _begin(self) -> Any:
                if outer.down:
                    raise ConnectionError("database down")
                yield

            def begin(self) -> Any:
                return self._begin()

        return Session()


class Received(list[tuple[str, dict[str, Any]]]):
    """Messages from one subscription, in arrival order (a list), that can be caught up.

    :meth:`settled` publishes a marker on the subscribed subject and waits until the
    subscription has handled it: NATS delivers one subscription's messages in order, so
    every message its connection had received before then has been handled too. Use it
    after an event that proves the message under test would already have been sent (a
    later message from the same service, say), to check that it was not.
    """

    def __init__(self, bus: MessageBus, subject: str) -> None:
        super().__init__()
        self._bus, self._subject = bus, subject
        self._markers: dict[str, asyncio.Event] = {}

    def _marked(self, payload: dict[str, Any]) -> bool:
        token = payload.get(MARKER)
        if token is None:
            return False
        event = self._markers.get(str(token))
        if event is not None:
            event.set()
        return True

    async def settled(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        token = secrets.token_hex(8)
        event = self._markers[token] = asyncio.Event()
        subject = ".".join(MARKER if t in ("*", ">") else t for t in self._subject.split("."))
        await self._bus.publish(subject, {MARKER: token})
        try:
            await asyncio.wait_for(event.wait(), timeout)
        finally:
            del self._markers[token]


async def _subscribed(bus: MessageBus, received: Received, handler: Any) -> Received:
    await bus.subscribe(received._subject, handler)
    flush = getattr(bus, "flush", None)
    if flush is not None:
        await flush()
    return received


async def collect(bus: MessageBus, subject: str) -> Received:
    """Everything published on ``subject`` from now on, in arrival order."""
    received = Received(bus, subject)

    async def on_msg(subj: str, payload: dict[str, Any]) -> None:
        if not received._marked(payload):
            received.append((subj, payload))

    return await _subscribed(bus, received, on_msg)


async def identity_of(database_url: str, username: str, session_id: str = "s1") -> Identity:
    engine = create_engine(database_url, null_pool=True)
    try:
        async with session_factory(engine)() as s:
            user = await s.scalar(select(User).where(User.username == username))
            assert user is not None, username
            account_id = await s.scalar(select(Account.id).where(Account.user_id == user.id))
    finally:
        await engine.dispose()
    perms = frozenset({PERM_TRADE}) if user.can_trade else frozenset()
    return Identity(user.id, int(account_id or 0), user.username, perms, session_id)


async def table_names(database_url: str) -> set[str]:
    """The tables in the database, but Alembic's own."""
    engine = create_engine(database_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


def identity_headers(identity: Identity, secret: str = DEV_PLACEHOLDER_SECRET) -> dict[str, str]:
    return {"X-Identity": sign_identity(identity, secret)}


def session_payload(identity: Identity) -> dict[str, Any]:
    return wire.session_announcement(
        identity.session_id,
        identity.user_id,
        identity.account_id,
        identity.username,
        identity.permissions,
    )


REFUSED: list[tuple[str, str, str]] = []
"""Parts a service published that the gateway would drop: (component, id, why). A test that
collected any fails (tests/service/conftest.py): what a service renders must reach a page."""


def _check_parts(component: str, parts: Iterable[dict[str, Any]]) -> None:
    for part in parts:
        reason = markup.check(component, str(part.get("id")), str(part.get("html")))
        if reason is not None:
            REFUSED.append((component, str(part.get("id")), reason))


async def collect_ui(bus: MessageBus, user_id: int, component: str) -> Received:
    """Every update of ``component`` for ``user_id`` from now on, one entry per update
    (they are published batched per partition), each with its message's component and ts."""
    received = Received(bus, wire.ui_subject(user_id, component))

    async def on_msg(subj: str, payload: dict[str, Any]) -> None:
        if received._marked(payload):
            return
        for update in payload.get("updates", ()):
            if update.get("user") == user_id:
                _check_parts(payload["component"], update.get("parts") or ())
                received.append(
                    (subj, {"component": payload["component"], "ts": payload.get("ts"), **update})
                )

    return await _subscribed(bus, received, on_msg)


async def terminate_backend(database_url: str, pid: int) -> None:
    """Drop one PostgreSQL connection from the server's side (as a restart drops all)."""
    other = create_engine(database_url, null_pool=True)
    try:
        async with other.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


async def close_positions(database_url: str, account_id: int, figure: Any) -> Any:
    """Close every position of ``account_id`` (quantity 0) and return the account's
    ``figure`` (a column of accounts)."""
    engine = create_engine(database_url, null_pool=True)
    try:
        async with session_factory(engine)() as s, s.begin():
            await s.execute(
                sql_update(Position).where(Position.account_id == account_id).values(quantity=0)
            )
            return await s.scalar(select(figure).where(Account.id == account_id))
    finally:
        await engine.dispose()
