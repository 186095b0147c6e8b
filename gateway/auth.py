"""Login and logout: argon2id passwords, a new web session per login, throttled failures
(shared by every gateway, counted before the password check: :mod:`gateway.throttle`)."""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from gateway.csrf import tokens_match
from gateway.forms import small_form
from gateway.sessions import (
    create_session,
    current_user,
    public_id,
    revoke_session,
    session_user,
)
from gateway.state import gw
from gateway.throttle import Throttled
from shared import wire
from shared.db.models import Account, User

__all__ = ["router", "secure"]

log = logging.getLogger(__name__)
router = APIRouter()
_hasher = PasswordHasher()
MAX_USERNAME = 150  # usernames are short; a longer one is no one's
_MAX_FIELD = 256


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("not-a-password")


def _verify(password_hash: str | None, password: str) -> bool:
    """Verify against the stored hash, or a dummy one so unknown names cost the same time."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def secure(request: Request) -> bool:
    """Cookies are ``Secure`` over https, and always outside development (where a TLS
    terminator in front may forward plain http)."""
    return request.url.scheme == "https" or gw(request).settings.environment != "development"


def _login_page(
    request: Request, status: int = 200, error: str = "", username: str = ""
) -> Response:
    g = gw(request)
    nonce, token = g.login_csrf.issue(request)
    response = g.templates.TemplateResponse(
        request,
        "login.html",
        {"error": error, "username": username, "csrf_token": token},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )
    g.login_csrf.set_cookie(response, nonce, secure=secure(request))
    return response


@router.get("/login", include_in_schema=False)
async def login_form(request: Request) -> Response:
    if await current_user(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request)


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    g = gw(request)
    form = await small_form(request)
    if form is None:  # not the sign-in form (another type of body, or kilobytes of it)
        g.metrics.logins.labels("refused").inc()
        return _login_page(request, 400, "That was not the sign-in form; please sign in here.")
    username = form.get("username", "").strip()[:_MAX_FIELD]
    password = form.get("password", "")[:_MAX_FIELD]
    if not g.login_csrf.verify(request, form.get("csrf_token", "")):
        g.metrics.logins.labels("csrf").inc()
        return _login_page(request, 403, "Your form expired; please sign in again.", username)

    if len(username) > MAX_USERNAME or not username.isprintable():
        # no such user can exist (nor be stored as a throttle key): the same answer as any
        # wrong password, and nothing touches the database
        g.metrics.logins.labels("failed").inc()
        return _login_page(request, 401, "Invalid username or password.", "")

    address = request.client.host if request.client else "-"
    slots = await g.throttle(request.app.state.db).attempt(username, address)
    if isinstance(slots, Throttled):
        g.metrics.logins.labels("throttled").inc()
        wait = slots.retry_after
        response = _login_page(
            request, 429, f"Too many failed sign-ins; try again in {wait} s.", username
        )
        response.headers[wire.HEADER_RETRY_AFTER] = str(wait)
        return response

    async with request.app.state.db() as db:
        query = (
            select(User, Account.id)
            .outerjoin(Account, Account.user_id == User.id)
            .where(User.username == username)
        )
        found = (await db.execute(query)).one_or_none()
    user, account_id = found if found is not None else (None, None)
    ok = await asyncio.to_thread(_verify, user.password_hash if user else None, password)
    if user is None or not ok:  # the slots stay taken: a failure counts
        g.metrics.logins.labels("failed").inc()
        log.info("failed login for %r", username)
        return _login_page(request, 401, "Invalid username or password.", username)

    await g.throttle(request.app.state.db).succeeded(slots)
    replaces = g.cookie.session_id(request)
    session_id, expires_at = await create_session(
        request.app.state.db, user.id, g.settings.session_max_age_s, replaces=replaces
    )
    if account_id is not None:  # (without an account no session is valid)
        # believed at once: the page and its socket, right after, need not look it up
        who = session_user(
            session_id, user.id, user.username, user.display_name, user.can_trade, account_id
        )
        g.sessions.put(who, expires_at, drops=g.sessions.drops)
    if replaces is not None:  # a planted or stolen copy of the old cookie dies everywhere
        await _ended(request, replaces, "session ended")
    g.metrics.logins.labels("ok").inc()
    response = RedirectResponse("/", status_code=303)
    g.cookie.set(response, session_id, secure=secure(request))
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """Revoke the session and close its sockets, here and (over NATS) on every replica."""
    g = gw(request)
    user = await current_user(request)
    response = RedirectResponse("/login", status_code=303)
    g.cookie.clear(response, secure=secure(request))
    if user is None:
        return response
    form = await small_form(request) or {}
    given = request.headers.get(wire.HEADER_CSRF) or form.get("csrf_token", "")
    if not tokens_match(g.csrf_token(user.session_id), given):
        return Response("CSRF token missing or invalid", status_code=403)
    await revoke_session(request.app.state.db, user.session_id)
    await _ended(request, user.session_id, "logged out")
    return response


async def _ended(request: Request, session_id: str, reason: str) -> None:
    """A session revoked in the table: forget it and close its sockets here, and announce
    it to every replica (their session caches and sockets) and to the services."""
    gw(request).session_ended(session_id, reason)
    try:
        bus = request.app.state.bus
        await bus.publish(wire.GATEWAY_SESSION_REVOKED, {"web_session_id": session_id})
        # services refuse identity tokens of this session signed before its end
        await bus.publish(wire.SESSION_REVOKED, {"public_id": public_id(session_id)})
    except Exception:  # the sockets also re-check their session at every heartbeat
        log.exception("could not announce the end of a session to other gateway replicas")
