"""What the gateway's routes share, kept on ``app.state.gw``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from gateway.admission import Admissions
from gateway.buffer import now_ms
from gateway.csrf import LoginCsrf, session_token
from gateway.fanout import Fanout
from gateway.freshness import Freshness
from gateway.hub import CLOSE_POLICY, SocketHub
from gateway.metrics import GatewayMetrics
from gateway.pace import Pace
from gateway.security import CachedStaticFiles
from gateway.sessions import SessionCache, SessionCookie, SessionLookups
from gateway.settings import GatewaySettings
from gateway.throttle import LoginThrottle

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "Gateway", "gw"]

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"


@dataclass
class Gateway:
    settings: GatewaySettings
    metrics: GatewayMetrics
    static: CachedStaticFiles
    cookie: SessionCookie = field(init=False)
    sessions: SessionCache = field(init=False)
    lookups: SessionLookups = field(init=False)
    login_csrf: LoginCsrf = field(init=False)
    _throttle: LoginThrottle | None = field(default=None, init=False)
    hub: SocketHub = field(default_factory=SocketHub)
    fanout: Fanout = field(init=False)
    admissions: Admissions = field(init=False)
    pace: Pace = field(init=False)
    freshness: Freshness = field(init=False)
    templates: Jinja2Templates = field(init=False)
    http: httpx.AsyncClient | None = None  # opened in the lifespan

    def __post_init__(self) -> None:
        s = self.settings
        secret = s.session_secret.get_secret_value()
        self.cookie = SessionCookie(secret, s.session_max_age_s)
        self.sessions = SessionCache(s.session_cache_s)
        self.lookups = SessionLookups(self.sessions)
        self.login_csrf = LoginCsrf(secret)
        self.fanout = Fanout(self.metrics, tick_wait_s=s.ws_tick_wait_ms / 1000)
        self.pace = pace = Pace(s.ws_frame_interval_ms / 1000, s.ws_slow_frame_interval_ms / 1000)
        self.metrics.frame_interval.set_function(lambda: pace.frame_s)
        self.metrics.loop_lag.set_function(lambda: pace.lag_s)
        self.metrics.tick_age.set_function(lambda: pace.age_s)
        self.metrics.read_delay.set_function(lambda: pace.read_s)
        self.freshness = Freshness(pace, stale_after_s=s.feed_stale_after_s)
        self.fanout.on_tick_done = self._tick_done
        self.admissions = admissions = Admissions(
            window=s.ws_announce_window,
            timeout_s=s.ws_announce_timeout_s,
            metrics=self.metrics,
            excused=lambda: self.freshness.unreachable,
        )
        self.fanout.on_rendered = admissions.rendered
        self.metrics.announce_queued.set_function(lambda: admissions.queued)
        self.metrics.announce_outstanding.set_function(lambda: admissions.outstanding)
        self.templates = Jinja2Templates(directory=TEMPLATES_DIR)
        self.templates.env.globals["static_url"] = self.static.url

    def _tick_done(self, component: str, ts_ms: float | None, sent_ms: float | None) -> None:
        """A component is done with a tick: the page's freshness, how far behind the feed
        this gateway reads (its frames slow down past half a second), and how late it
        reads what the services send."""
        self.freshness.tick_done(component, ts_ms)
        now = now_ms()
        if ts_ms is not None:
            self.pace.observe_age((now - ts_ms) / 1000)
        if sent_ms is not None:
            self.pace.observe_read((now - sent_ms) / 1000)

    def session_ended(self, web_session_id: str, reason: str) -> None:
        """A web session ended (here or, announced over NATS, on another replica): it is
        believed no more and its sockets here close."""
        self.sessions.drop(web_session_id)
        self.hub.close_session(web_session_id, CLOSE_POLICY, reason)

    def throttle(self, db: async_sessionmaker[AsyncSession]) -> LoginThrottle:
        """The sign-in throttle (on the app's database, opened in the lifespan)."""
        if self._throttle is None:
            s = self.settings
            self._throttle = LoginThrottle(db, s.login_max_failures, s.login_window_s)
        return self._throttle

    @property
    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("the gateway's HTTP client is opened in the lifespan")
        return self.http

    def csrf_token(self, session_id: str) -> str:
        return session_token(self.settings.session_secret.get_secret_value(), session_id)

    def identity_secret(self) -> str:
        return self.settings.identity_secret.get_secret_value()

    def service_url(self, component: str) -> str | None:
        s = self.settings
        return {
            "portfolio": s.portfolio_url,
            "watchlist": s.watchlist_url,
            "order": s.orders_url,
            "risk_metrics": s.risk_url,
        }.get(component)


def gw(conn: HTTPConnection) -> Gateway:
    gateway: Gateway = conn.app.state.gw
    return gateway
