"""Login, logout, session rotation and throttling against the real users table."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import select, update

from gateway.app import create_app
from gateway.sessions import SESSION_COOKIE
from gateway.settings import GatewaySettings
from gateway.testing import csrf_of_page, login
from shared.db.engine import create_engine, session_factory
from shared.db.models import User, WebSession
from shared.devservers import free_port
from tests.conftest import TEST_PASSWORD
from tests.support import running

pytestmark = pytest.mark.service


@pytest.fixture
def settings(service_env: None) -> GatewaySettings:
    dead = f"http://127.0.0.1:{free_port()}"  # no services: the page shows placeholders
    return GatewaySettings(portfolio_url=dead, watchlist_url=dead, orders_url=dead, risk_url=dead)


@pytest.fixture
async def client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings), base_url="http://gateway") as c:
        yield c


def with_session(client: httpx.AsyncClient, cookie: str) -> None:
    """``client`` sends this session cookie from now on (a kept, copied or stolen one)."""
    client.cookies.set(SESSION_COOKIE, cookie, domain="gateway.local")


async def rows(database_url: str, query: object) -> list[object]:
    engine = create_engine(database_url, null_pool=True)
    try:
        async with session_factory(engine)() as s:
            return list((await s.execute(query)).scalars())  # type: ignore[call-overload]
    finally:
        await engine.dispose()


async def test_unauthenticated_page_redirects_to_the_login_form(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    form = await client.get("/login")
    assert form.status_code == 200
    assert 'name="csrf_token"' in form.text and "<script" not in form.text
    assert form.headers["cache-control"] == "no-store"
    assert "login_csrf" in form.headers["set-cookie"].lower()


async def test_login_sets_a_hardened_cookie_and_stamps_last_login(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    r = await login(client, "alice", TEST_PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}="))
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "secure" not in lowered
    page = await client.get("/")
    assert page.status_code == 200 and "Alice Archer" in page.text
    [user] = await rows(settings.database_url, select(User).where(User.username == "alice"))
    assert user.last_login_at is not None  # type: ignore[attr-defined]


async def test_cookie_is_secure_over_https(settings: GatewaySettings) -> None:
    async with running(create_app(settings), base_url="https://gateway") as c:
        r = await login(c, "bob", TEST_PASSWORD)
        assert r.status_code == 303
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("session="))
        assert "secure" in cookie.lower()
        assert "strict-transport-security" in r.headers


async def test_bad_password_and_unknown_user_are_refused_alike(client: httpx.AsyncClient) -> None:
    for username in ("alice", "mallory"):
        r = await login(client, username, "wrong-password")
        assert r.status_code == 401
        assert "Invalid username or password." in r.text
        assert SESSION_COOKIE not in client.cookies
    assert (await client.get("/")).status_code == 303


async def test_login_without_the_form_token_is_refused(client: httpx.AsyncClient) -> None:
    await client.get("/login")
    data = {"username": "alice", "password": TEST_PASSWORD, "csrf_token": "forged"}
    assert (await client.post("/login", data=data)).status_code == 403
    fresh = httpx.AsyncClient(transport=client._transport, base_url="http://gateway")
    async with fresh:  # a token without its cookie (another browser's) does not work either
        form = await client.get("/login")
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        data["csrf_token"] = token
        assert (await fresh.post("/login", data=data)).status_code == 403
    assert SESSION_COOKIE not in client.cookies


async def test_a_sign_in_that_is_not_a_small_form_is_refused_unread(
    client: httpx.AsyncClient,
) -> None:
    form = (await client.get("/login")).text
    token = form.split('name="csrf_token" value="')[1].split('"')[0]
    good = {"username": "alice", "password": TEST_PASSWORD, "csrf_token": token}
    refused = [
        # a file part (Starlette's parser would write all of it to disk first)
        await client.post("/login", data=good, files={"f": ("f", b"x" * 1_000_000)}),
        await client.post("/login", data={**good, "username": "a" * 10_000}),  # 10 KB
        await client.post("/login", data={**good, **{f"x{i}": "1" for i in range(20)}}),
        await client.post("/login", content=b"x" * 100_000, headers={"content-type": "text/plain"}),
    ]
    for r in refused:
        assert r.status_code == 400
        assert "not the sign-in form" in r.text and 'name="csrf_token"' in r.text
    assert SESSION_COOKIE not in client.cookies
    good["csrf_token"] = refused[-1].text.split('name="csrf_token" value="')[1].split('"')[0]
    assert (await client.post("/login", data=good)).status_code == 303  # its fresh form
    token = csrf_of_page((await client.get("/")).text)
    r = await client.post("/logout", data={"csrf_token": token, "pad": "x" * 10_000})
    assert r.status_code == 403  # a token in an oversized body is not read
    r = await client.post(
        "/logout", content=b"x" * 10_000, headers={"X-CSRF-Token": token}
    )  # the header is enough
    assert r.status_code == 303 and SESSION_COOKIE not in client.cookies


async def test_repeated_failures_are_throttled_even_for_the_right_password(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(5):
        assert (await login(client, "bob", "nope")).status_code == 401
    r = await login(client, "bob", TEST_PASSWORD)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 300
    assert SESSION_COOKIE not in client.cookies


async def test_each_login_gets_a_new_session_and_revokes_the_old_one(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    form = (await client.get("/login")).text
    token = form.split('name="csrf_token" value="')[1].split('"')[0]
    data = {"username": "alice", "password": TEST_PASSWORD, "csrf_token": token}
    assert (await client.post("/login", data=data)).status_code == 303
    first = client.cookies[SESSION_COOKIE]
    assert (await client.get("/login")).status_code == 303  # logged in: no form
    assert (await client.post("/login", data=data)).status_code == 303  # e.g. a stale tab
    second = client.cookies[SESSION_COOKIE]
    assert first != second
    sessions = await rows(settings.database_url, select(WebSession).order_by(WebSession.created_at))
    assert len(sessions) == 2
    assert sessions[0].revoked_at is not None and sessions[1].revoked_at is None  # type: ignore[attr-defined]
    client.cookies.clear()
    with_session(client, first)
    assert (await client.get("/")).status_code == 303


async def test_logout_needs_the_csrf_token_then_revokes_the_session(
    client: httpx.AsyncClient,
) -> None:
    await login(client, "alice", TEST_PASSWORD)
    cookie = client.cookies[SESSION_COOKIE]
    token = csrf_of_page((await client.get("/")).text)
    assert (await client.post("/logout", data={"csrf_token": "wrong"})).status_code == 403
    assert (await client.get("/")).status_code == 200
    r = await client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert SESSION_COOKIE not in client.cookies
    with_session(client, cookie)  # a kept copy is dead too
    assert (await client.get("/")).status_code == 303


async def test_cookie_is_secure_outside_development_even_behind_plain_http(
    monkeypatch: pytest.MonkeyPatch, service_env: None
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("IDENTITY_SECRET", "i" * 40)
    monkeypatch.setenv("GATEWAY_SESSION_SECRET", "s" * 40)
    dead = f"http://127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        portfolio_url=dead, watchlist_url=dead, orders_url=dead, risk_url=dead
    )
    async with running(create_app(settings), base_url="http://gateway") as c:
        r = await c.get("/login")
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("login_csrf="))
        assert "secure" in cookie.lower()
        # a browser sends that cookie back over https only: login over plain http fails closed
        assert (await login(c, "bob", TEST_PASSWORD)).status_code == 403


async def test_login_form_never_adopts_a_planted_csrf_nonce(client: httpx.AsyncClient) -> None:
    from gateway.csrf import LOGIN_CSRF_COOKIE

    planted = "p" * 43
    client.cookies.set(LOGIN_CSRF_COOKIE, planted)
    r = await client.get("/login")
    issued = next(
        h for h in r.headers.get_list("set-cookie") if h.startswith(f"{LOGIN_CSRF_COOKIE}=")
    )
    assert planted not in issued


async def test_dead_sessions_are_deleted_at_the_next_login(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    bob_id = (await rows(settings.database_url, select(User.id).where(User.username == "bob")))[0]
    engine = create_engine(settings.database_url, null_pool=True)
    async with session_factory(engine).begin() as s:
        s.add(WebSession(id="expired", user_id=bob_id, expires_at=now - timedelta(hours=1)))
        s.add(WebSession(id="revoked", user_id=bob_id, expires_at=now + timedelta(hours=1),
                         revoked_at=now - timedelta(hours=1)))  # fmt: skip
        s.add(WebSession(id="live", user_id=bob_id, expires_at=now + timedelta(hours=1)))
    await engine.dispose()
    assert (await login(client, "bob", TEST_PASSWORD)).status_code == 303
    left = await rows(settings.database_url, select(WebSession.id))
    assert "expired" not in left and "revoked" not in left
    assert "live" in left and len(left) == 2


async def test_a_burst_of_parallel_guesses_gets_no_more_checks_than_the_limit(
    settings: GatewaySettings,
) -> None:
    # two gateways on one database: the limit holds across them, not per process
    async with (
        running(create_app(settings), base_url="http://gateway") as one,
        running(create_app(settings), base_url="http://gateway") as two,
    ):
        guesses = [login(one if i % 2 else two, "bob", f"guess-{i}") for i in range(40)]
        answers = await asyncio.gather(*guesses)
        codes = [r.status_code for r in answers]
        assert codes.count(401) <= settings.login_max_failures  # checked at most the limit
        assert codes.count(429) == 40 - codes.count(401)
        throttled = [r for r in answers if r.status_code == 429]
        assert all(1 <= int(r.headers["retry-after"]) <= 300 for r in throttled)
        # the right password right after the burst is refused too, on either gateway
        assert (await login(two, "bob", TEST_PASSWORD)).status_code == 429
        assert (await login(one, "bob", TEST_PASSWORD)).status_code == 429


async def test_a_successful_sign_in_gives_its_slot_back(client: httpx.AsyncClient) -> None:
    for _ in range(4):
        assert (await login(client, "alice", "nope")).status_code == 401
    for _ in range(3):  # successes do not use up the allowance of failures
        client.cookies.clear()
        assert (await login(client, "alice", TEST_PASSWORD)).status_code == 303
    client.cookies.clear()
    assert (await login(client, "alice", "nope")).status_code == 401  # the fifth failure
    assert (await login(client, "alice", TEST_PASSWORD)).status_code == 429


@pytest.mark.parametrize(
    "form",
    [
        {"username": "ali\x00ce", "password": "x"},
        {"username": "alice", "password": "pa\x00ss"},
        {"username": "a" * 10_000, "password": "x"},
    ],
)
async def test_a_malformed_login_is_a_4xx_never_a_5xx(
    client: httpx.AsyncClient, form: dict[str, str]
) -> None:
    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    r = await client.post("/login", data={**form, "csrf_token": token.group(1)})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])


@asynccontextmanager
async def two_replicas(
    settings: GatewaySettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two gateways on the same database and NATS, each believing a session for 60 s."""
    settings = settings.model_copy(update={"session_cache_s": 60.0})
    async with (
        running(create_app(settings), base_url="http://gateway") as a,
        running(create_app(settings), base_url="http://gateway") as b,
    ):
        yield a, b


async def refused_soon(client: httpx.AsyncClient) -> None:
    """The client's session is refused within 5 s (long before a 60 s cache lapses)."""
    for _ in range(100):
        if (await client.get("/")).status_code == 303:
            return
        await asyncio.sleep(0.05)
    assert (await client.get("/")).status_code == 303


async def test_a_logout_on_another_replica_is_refused_here_at_once(
    settings: GatewaySettings,
) -> None:
    async with two_replicas(settings) as (a, b):
        await login(a, "alice", TEST_PASSWORD)
        with_session(b, a.cookies[SESSION_COOKIE])
        assert (await b.get("/")).status_code == 200  # b found it valid: believed for 60 s
        token = csrf_of_page((await a.get("/")).text)
        assert (await a.post("/logout", data={"csrf_token": token})).status_code == 303
        await refused_soon(b)  # the logout reaches b over NATS


async def revoke_by_hand(settings: GatewaySettings) -> None:
    """Revoke every session in the table, with no announcement."""
    engine = create_engine(settings.database_url, null_pool=True)
    async with session_factory(engine)() as s, s.begin():
        await s.execute(update(WebSession).values(revoked_at=WebSession.created_at))
    await engine.dispose()


async def test_a_session_ended_without_an_announcement_lapses_with_the_cache(
    settings: GatewaySettings,
) -> None:
    settings = settings.model_copy(update={"session_cache_s": 2.0})
    async with running(create_app(settings), base_url="http://gateway") as client:
        await login(client, "alice", TEST_PASSWORD)
        assert (await client.get("/")).status_code == 200
        await revoke_by_hand(settings)
        assert (await client.get("/")).status_code == 200  # still believed, for 2 s at most
        await asyncio.sleep(2.1)
        assert (await client.get("/")).status_code == 303


async def test_the_replica_that_logs_a_session_in_believes_it_without_a_lookup(
    settings: GatewaySettings,
) -> None:
    async with two_replicas(settings) as (a, b):
        await login(a, "alice", TEST_PASSWORD)
        await revoke_by_hand(settings)  # before any request looked the session up
        page = await a.get("/")
        assert page.status_code == 200 and "Alice Archer" in page.text  # believed from login
        with_session(b, a.cookies[SESSION_COOKIE])
        assert (await b.get("/")).status_code == 303  # b looks it up: revoked


async def test_a_replaced_session_ends_on_every_replica_at_once(
    settings: GatewaySettings,
) -> None:
    async with two_replicas(settings) as (a, b):
        form = (await a.get("/login")).text
        token = form.split('name="csrf_token" value="')[1].split('"')[0]
        data = {"username": "alice", "password": TEST_PASSWORD, "csrf_token": token}
        assert (await a.post("/login", data=data)).status_code == 303
        old = a.cookies[SESSION_COOKIE]
        with_session(b, old)  # e.g. a stolen copy
        assert (await b.get("/")).status_code == 200  # believed on b for 60 s
        assert (await a.post("/login", data=data)).status_code == 303  # a stale tab's form
        assert a.cookies[SESSION_COOKIE] != old
        await refused_soon(b)


async def test_with_every_database_connection_in_use_a_login_is_503_busy_not_500(
    settings: GatewaySettings,
) -> None:
    busy = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_s": 0.2})
    app = create_app(busy)
    async with running(app, base_url="http://gateway") as client:
        engine = app.state.engine
        held = [await engine.connect(), await engine.connect()]  # the pool's one and overflow
        try:
            r = await login(client, "alice", TEST_PASSWORD)
        finally:
            for connection in held:
                await connection.close()
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1" and "busy" in r.text
        assert SESSION_COOKIE not in r.cookies
        r = await login(client, "alice", TEST_PASSWORD)
        assert r.status_code == 303 and SESSION_COOKIE in r.cookies
