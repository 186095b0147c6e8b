"""PostgreSQL dies (immediate shutdown) while traders submit orders: every order answered
2xx is stored exactly once, every other answer is a clear 503, and retrying with the same
client order id completes the set exactly.

Two traders send 50 orders each (the orders service allows 60 a minute per trader) over a
few seconds; the launcher restarts its PostgreSQL on the same data directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from shared import devservers, wire
from shared.db.engine import create_engine, session_factory
from shared.db.models import Order
from tests.conftest import TEST_PASSWORD
from tests.faults.conftest import FaultStack

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PER_TRADER = 50
_LOGIN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PAGE_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def logged_in(base_url: str, username: str) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(base_url=base_url, timeout=15)
    page = await client.get("/login")
    token = _LOGIN_CSRF.search(page.text)
    assert token, page.text[:300]
    form = {"username": username, "password": TEST_PASSWORD, "csrf_token": token.group(1)}
    r = await client.post("/login", data=form)
    assert r.status_code == 303, r.text[:300]
    page = await client.get("/")
    csrf = _PAGE_CSRF.search(page.text)
    assert csrf, page.text[:300]
    return client, csrf.group(1)


async def submit(client: httpx.AsyncClient, csrf: str, client_order_id: str) -> httpx.Response:
    form = {"symbol": "PFE", "side": "buy", "quantity": "1", "order_type": "market",
            "client_order_id": client_order_id}  # fmt: skip
    try:
        return await client.post("/c/order/submit", data=form, headers={wire.HEADER_CSRF: csrf})
    except httpx.HTTPError as exc:  # the socket to the gateway itself failed: say so
        return httpx.Response(599, text=f"transport: {exc}")


async def stored(database_url: str, ids: list[str]) -> Counter[str]:
    """How many orders each client order id has, once the database answers again."""
    deadline = time.monotonic() + 60
    while True:
        engine = create_engine(database_url, null_pool=True)
        try:
            async with session_factory(engine)() as s:
                rows = await s.execute(
                    select(Order.client_order_id, func.count())
                    .where(Order.client_order_id.in_(ids))
                    .group_by(Order.client_order_id)
                )
                return Counter({cid: n for cid, n in rows.all()})
        except (OSError, DBAPIError):
            assert time.monotonic() < deadline, "the database did not come back"
            await asyncio.sleep(0.5)
        finally:
            await engine.dispose()


def postmaster_pid(data_dir: str) -> int:
    with open(os.path.join(data_dir, "postmaster.pid")) as f:
        return int(f.readline())


def test_postgres_dies_during_submits_and_retries_complete_the_set_exactly(
    fault_stack: FaultStack,
) -> None:
    async def scenario() -> dict[str, Any]:
        traders = [await logged_in(fault_stack.base_url, u) for u in ("alice", "bob")]
        ids = {t: [uuid.uuid4().hex for _ in range(PER_TRADER)] for t in range(len(traders))}
        first: dict[str, httpx.Response] = {}

        async def send(t: int) -> None:
            client, csrf = traders[t]
            for cid in ids[t]:
                first[cid] = await submit(client, csrf, cid)
                await asyncio.sleep(0.03)

        async def crash() -> None:
            await asyncio.sleep(1.0)
            os.kill(postmaster_pid(fault_stack.pg_data), signal.SIGQUIT)  # immediate shutdown

        await asyncio.gather(*(send(t) for t in ids), crash())
        statuses = Counter(r.status_code for r in first.values())
        unclear = {cid: (r.status_code, r.text[:120]) for cid, r in first.items()
                   if r.status_code not in (200, 503)}  # fmt: skip
        all_ids = [cid for t in ids for cid in ids[t]]
        after_burst = await stored(fault_stack.database_url, all_ids)
        # every order answered 2xx is stored exactly once
        ok = [cid for cid, r in first.items() if r.status_code == 200]
        assert all(after_burst[cid] == 1 for cid in ok)
        # the rest is retried with the same client order id until it answers 200
        retried: dict[str, int] = {}
        deadline = time.monotonic() + 60
        for t, (client, csrf) in enumerate(traders):
            for cid in ids[t]:
                if first[cid].status_code == 200:
                    continue
                while (r := await submit(client, csrf, cid)).status_code != 200:
                    assert r.status_code in (503, 504), (r.status_code, r.text[:200])
                    assert time.monotonic() < deadline, "the database did not come back"
                    await asyncio.sleep(0.5)
                retried[cid] = r.status_code
        final = await stored(fault_stack.database_url, all_ids)
        for client, _csrf in traders:
            await client.aclose()
        return {"statuses": statuses, "unclear": unclear, "final": final, "ids": all_ids,
                "failed_first": [cid for cid, r in first.items() if r.status_code != 200],
                "texts": {r.text for r in first.values() if r.status_code == 503}}  # fmt: skip

    result = devservers.run_async(scenario())
    print("first answers:", dict(result["statuses"]))  # shown with -s
    assert result["unclear"] == {}, result["unclear"]
    assert result["failed_first"], f"the crash hit no submit: {result['statuses']}"
    assert all(result["final"][cid] == 1 for cid in result["ids"]), result["final"]
    assert sum(result["final"].values()) == 2 * PER_TRADER
    for text in result["texts"]:  # each 503 says what happened and what to do
        assert "retry" in text.lower() and "nothing was" in text.lower(), text
