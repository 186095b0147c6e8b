"""Helpers the service and end-to-end tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from shared import wire
from shared.bus import MessageBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, User
from shared.identity import PERM_TRADE, Identity, sign_identity
from shared.settings import DEV_PLACEHOLDER_SECRET

__all__ = ["collect", "identity_headers", "identity_of", "running", "session_payload", "wait_until"]


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


async def collect(bus: MessageBus, subject: str) -> list[tuple[str, dict[str, Any]]]:
    """Everything published on ``subject`` from now on, in arrival order."""
    received: list[tuple[str, dict[str, Any]]] = []

    async def on_msg(subj: str, payload: dict[str, Any]) -> None:
        received.append((subj, payload))

    await bus.subscribe(subject, on_msg)
    flush = getattr(bus, "flush", None)
    if flush is not None:
        await flush()
    return received


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


async def collect_ui(
    bus: MessageBus, user_id: int, component: str
) -> list[tuple[str, dict[str, Any]]]:
    """Every update of ``component`` for ``user_id`` from now on, one entry per update
    (they are published batched per partition), each with its message's component and ts."""
    received: list[tuple[str, dict[str, Any]]] = []

    async def on_msg(subj: str, payload: dict[str, Any]) -> None:
        for update in payload.get("updates", ()):
            if update.get("user") == user_id:
                received.append(
                    (subj, {"component": payload["component"], "ts": payload.get("ts"), **update})
                )

    await bus.subscribe(wire.ui_subject(user_id, component), on_msg)
    flush = getattr(bus, "flush", None)
    if flush is not None:
        await flush()
    return received
