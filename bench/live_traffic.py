"""The live benchmark's HTTP traffic during a level (:mod:`bench.bench_live`): market orders
through the gateway in the window, and sign-ins through the login form just after it."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid

from bench.live_report import (
    ORDER_RATE_HZ,
    ORDER_TIMEOUT_S,
    SIGNIN_RATE_HZ,
    SIGNIN_USERS,
    SignIn,
)
from bench.live_seed import Trader
from shared import wire
from shared.db.demo import demo_password

__all__ = ["order_task", "signin_task"]


async def order_task(
    port: int, traders: list[Trader], start: float, end: float
) -> list[tuple[str, float]]:
    """Market buys of 1 share at ORDER_RATE_HZ in all, round robin over ``traders``, each
    at a random moment of its slot: at exact multiples of 1/ORDER_RATE_HZ every order of a
    run fell at the same phase of the 250 ms tick, so a run measured either the busiest
    or the quietest moment of the tick, whichever the phase happened to be."""
    import httpx

    results: list[tuple[str, float]] = []
    rng = random.Random(3)

    async def one(client: httpx.AsyncClient, trader: Trader) -> None:
        form = {
            "symbol": rng.choice(trader.tickers),
            "side": "buy",
            "quantity": "1",
            "order_type": "market",
            "limit_price": "",
            "client_order_id": uuid.uuid4().hex,
        }
        headers = {"Cookie": trader.cookie, wire.HEADER_CSRF: trader.csrf, "HX-Request": "true"}
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(ORDER_TIMEOUT_S):  # in all, not per phase as httpx's
                r = await client.post(
                    wire.browser_event_url("order", "submit"), data=form, headers=headers
                )
            status = str(r.status_code)
        except (TimeoutError, httpx.TimeoutException):
            status = "timeout"
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        results.append((status, (time.perf_counter() - t0) * 1000))

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=ORDER_TIMEOUT_S, trust_env=False
    ) as client:
        pending, k = [], 0
        while (due := start + (k + rng.random()) / ORDER_RATE_HZ) < end:
            await asyncio.sleep(max(0.0, due - time.time()))
            pending.append(asyncio.create_task(one(client, traders[k % len(traders)])))
            k += 1
        late: set[asyncio.Task[None]] = set()
        if pending:
            _done, late = await asyncio.wait(pending, timeout=ORDER_TIMEOUT_S + 1)
        for task in late:
            task.cancel()
            results.append(("timeout", ORDER_TIMEOUT_S * 1000))
    return results


_FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def signin_task(port: int, start: float, end: float) -> list[SignIn]:
    """Sign-ins as a browser makes them, at SIGNIN_RATE_HZ over SIGNIN_USERS in turn, each at
    a random moment of its slot: the login form, ``POST /login``, then ``GET /``."""
    import httpx

    rng = random.Random(5)
    password = demo_password()

    async def one(username: str) -> SignIn:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=ORDER_TIMEOUT_S, trust_env=False
        ) as client:
            form = await client.get("/login")
            token = _FORM_TOKEN.search(form.text)
            if form.status_code != 200 or token is None:
                return SignIn(f"form {form.status_code}")
            data = {"username": username, "password": password, "csrf_token": token[1]}
            t0 = time.perf_counter()
            r = await client.post("/login", data=data)
            login_ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 303:
                return SignIn(f"login {r.status_code}", login_ms)
            t0 = time.perf_counter()
            page = await client.get("/")
            page_ms = (time.perf_counter() - t0) * 1000
            if page.status_code != 200:
                return SignIn(f"page {page.status_code}", login_ms, page_ms)
            return SignIn("ok", login_ms, page_ms, page.text.count("fragment-unavailable"))

    async def timed(username: str) -> SignIn:
        try:
            async with asyncio.timeout(3 * ORDER_TIMEOUT_S):
                return await one(username)
        except (TimeoutError, httpx.TimeoutException):
            return SignIn("timeout")
        except httpx.HTTPError as exc:
            return SignIn(type(exc).__name__)

    pending, k = [], 0
    while (due := start + (k + rng.random()) / SIGNIN_RATE_HZ) < end:
        await asyncio.sleep(max(0.0, due - time.time()))
        pending.append(asyncio.create_task(timed(SIGNIN_USERS[k % len(SIGNIN_USERS)])))
        k += 1
    return list(await asyncio.gather(*pending))
