"""Settings of the gateway (env prefix ``GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_PLACEHOLDER_SECRET, ServiceSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    port: int = 8000
    session_secret: SecretStr = SecretStr(DEV_PLACEHOLDER_SECRET)
    session_max_age_s: int = 12 * 3600
    # a session found valid is not looked up again for this long; the heartbeat re-checks
    # the sessions of this replica's sockets every HEARTBEAT_INTERVAL_S (gateway/sessions.py
    # SessionCache: logouts reach every replica's cache over NATS at once; a session ended
    # without that, e.g. while NATS is down, is honoured here this much longer); 0 = off
    session_cache_s: float = Field(default=15.0, ge=0, le=60)
    fragment_timeout_ms: int = 500
    # Origins allowed to open /ws; empty means the gateway's own origin (the request's Host).
    allowed_origins: list[str] = []
    portfolio_url: str = "http://127.0.0.1:8001"
    watchlist_url: str = "http://127.0.0.1:8002"
    orders_url: str = "http://127.0.0.1:8003"
    risk_url: str = "http://127.0.0.1:8004"

    # Event proxy
    event_timeout_ms: int = 5000
    max_event_body_bytes: int = 64 * 1024
    # Failed logins: this many per username or per client address in the window → 429
    login_max_failures: int = 5
    login_window_s: int = 300
    # Browser WebSocket (the heartbeat interval is HEARTBEAT_INTERVAL_S, shared with services)
    ws_send_timeout_s: float = 5.0
    ws_buffer_max_parts: int = 5000
    # Frames per socket: a tick's parts go out once every component is done with the tick
    # (at most ws_tick_wait_ms after they arrive); other parts (full renders, events) after
    # ws_gather_ms; never two frames closer than ws_frame_interval_ms (newest parts win)
    ws_tick_wait_ms: int = 150
    ws_gather_ms: int = 10
    ws_frame_interval_ms: int = 100
    # while this process's event loop runs late (overload), at most one frame per socket
    # per ws_slow_frame_interval_ms: later frames, never a growing backlog
    ws_slow_frame_interval_ms: int = 500
    # while it reads the services' messages more than 0.5 s after they were sent (smoothed)
    # it asks them to update their pages no more often (gateway.pace); after ws_pace_hold_s
    # of reading under 0.25 s late it tries half that interval, back to every tick
    ws_pace_hold_s: float = 5.0
    # at most ws_announce_window sockets announced to the services and waiting for their
    # full renders at once; one waits at most ws_announce_timeout_s (gateway/admission.py)
    ws_announce_window: int = Field(default=64, ge=1)
    ws_announce_timeout_s: float = Field(default=5.0, gt=0)
    # permessage-deflate (browsers always offer it; GATEWAY_WS_DEFLATE=false in the launcher
    # declines it): by default each message compressed on its own with zlib-ng (~4.6x less
    # CPU than a zlib compressor kept per socket with hundreds of sockets, for ~1.7x the
    # bytes; gateway/wsprotocol.py). Level, the LZ77 window (server_max_window_bits) and
    # memLevel; context_takeover=true keeps a zlib compressor per socket (fewest bytes).
    ws_deflate_level: int = Field(default=1, ge=0, le=9)
    ws_deflate_window_bits: int = Field(default=14, ge=9, le=15)
    ws_deflate_mem_level: int = Field(default=5, ge=1, le=9)
    ws_deflate_context_takeover: bool = False
    # a component that has not finished a tick for this long: its panel is "delayed"
    feed_stale_after_s: float = 2.0
