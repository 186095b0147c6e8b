"""CSRF tokens: one per web session (page, event proxy, socket, logout), one per login form.

The session token is an HMAC of the session id, so it needs no storage and changes at every
login. The login form, which has no session yet, uses a signed double-submit token: a random
nonce in an HttpOnly cookie and the same nonce, signed and timestamped, in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection
from starlette.responses import Response

__all__ = ["LOGIN_CSRF_COOKIE", "LoginCsrf", "session_token", "tokens_match"]

LOGIN_CSRF_COOKIE = "login_csrf"
LOGIN_CSRF_MAX_AGE_S = 3600
_SALT = "login-csrf"


def session_token(secret: str, session_id: str) -> str:
    mac = hmac.new(secret.encode(), b"csrf:" + session_id.encode(), hashlib.sha256)
    return mac.hexdigest()


def tokens_match(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


class LoginCsrf:
    """The login form's double-submit token."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)

    def issue(self, conn: HTTPConnection) -> tuple[str, str]:
        """``(nonce, form token)``, always a new nonce: one planted in the browser by
        someone else (cookie tossing) is never adopted."""
        nonce = secrets.token_urlsafe(32)
        return nonce, str(self._serializer.dumps(nonce))

    @staticmethod
    def set_cookie(response: Response, nonce: str, *, secure: bool) -> None:
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            nonce,
            max_age=LOGIN_CSRF_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    def verify(self, conn: HTTPConnection, form_token: str | None) -> bool:
        nonce = conn.cookies.get(LOGIN_CSRF_COOKIE)
        if not nonce or not form_token:
            return False
        try:
            signed = self._serializer.loads(form_token, max_age=LOGIN_CSRF_MAX_AGE_S)
        except BadSignature:
            return False
        return isinstance(signed, str) and tokens_match(nonce, signed)
