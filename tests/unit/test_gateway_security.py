"""Security headers, the WebSocket Origin policy, CSRF tokens and the gateway's settings."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.csrf import session_token, tokens_match
from gateway.security import SECURITY_HEADERS, SecurityHeadersMiddleware, origin_allowed
from gateway.settings import GatewaySettings


async def test_every_response_gets_the_security_headers() -> None:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = SecurityHeadersMiddleware(Starlette(routes=[Route("/", hello)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in ("/", "/missing"):
            r = await c.get(path)
            for name, value in SECURITY_HEADERS.items():
                assert r.headers[name] == value
            assert "strict-transport-security" not in r.headers
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp


def headers(**h: str) -> Headers:
    return Headers({k.replace("_", "-"): v for k, v in h.items()})


def test_origin_defaults_to_the_gateways_own_origin() -> None:
    assert origin_allowed(headers(host="dash:8000", origin="http://dash:8000"), [])
    assert origin_allowed(headers(host="dash:8000", origin="https://dash:8000"), [])
    assert not origin_allowed(headers(host="dash:8000", origin="http://evil:8000"), [])
    assert not origin_allowed(headers(host="dash:8000"), [])
    assert not origin_allowed(headers(host="dash:8000", origin="null"), [])


def test_origin_allowlist_replaces_the_default() -> None:
    allowed = ["https://trade.example.com"]
    assert origin_allowed(headers(host="x", origin="https://trade.example.com"), allowed)
    assert not origin_allowed(headers(host="x", origin="http://x"), allowed)


def test_session_csrf_token_is_per_session_and_secret() -> None:
    token = session_token("secret", "session-1")
    assert tokens_match(token, session_token("secret", "session-1"))
    assert not tokens_match(token, session_token("secret", "session-2"))
    assert not tokens_match(token, session_token("other", "session-1"))
    assert not tokens_match(token, None) and not tokens_match(token, "")


def test_placeholder_session_secret_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("IDENTITY_SECRET", "from-the-vault-" + "x" * 32)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal/trading")
    monkeypatch.setenv("NATS_URL", "nats://nats.internal:4222")
    monkeypatch.delenv("GATEWAY_SESSION_SECRET", raising=False)
    with pytest.raises(ValidationError, match="session_secret"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_SESSION_SECRET", "also-from-the-vault-" + "y" * 32)
    assert GatewaySettings().session_secret.get_secret_value().startswith("also-from-the-vault")
