"""Pieces of the relay benchmark: the bare baseline relay, the socket client, benchmark users.

The baseline is the minimal nats-py → Starlette WebSocket relay of DESIGN.md §7 for the
services' batched wire format: one ``ui.>`` subscription, each user's parts of a message to
that user's sockets (``/ws?user=N``) as one text frame (see :func:`baseline_app`). The client
runs in its own process and holds every socket with the ``websockets`` library.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "Phase",
    "SocketSpec",
    "baseline_app",
    "client_main",
    "cpu_seconds",
    "seed_sessions",
    "slow_consumers",
    "stop_group",
]


# -- the baseline relay (served by uvicorn in a subprocess: ``--factory``) ----------------
def baseline_app() -> Any:
    """The bare relay of :mod:`bench.live_relay`, which for this benchmark's messages (per-user
    updates, and tick markers with no shared parts) is the minimal relay of the services'
    wire format and nothing more: one ``ui.>`` subscription, each user's parts of a message
    to that user's sockets (``/ws?user=N``) as one text frame, one socket after the other.
    Deliberately left out, all of which the gateway does: checking a part is one element of
    its component's id prefix, ``hx-swap-oob``, waiting for a tick to be complete, a
    per-socket buffer (newest part per id) and frame pacing, send timeouts (a stalled socket
    stalls the fan-out), authentication, session announcements and metrics."""
    from bench.live_relay import relay_app

    return relay_app()


# -- benchmark users for the real gateway: rows written directly, cookies minted -----------
async def seed_sessions(
    url: str, users: int, secret: str, max_age_s: int
) -> list[tuple[int, str, str]]:
    """``users`` users with an account and a live web session: ``(user_id, cookie, csrf)``."""
    import secrets

    from sqlalchemy import insert
    from starlette.responses import Response

    from gateway.csrf import session_token
    from gateway.sessions import SessionCookie
    from shared.db.engine import create_engine
    from shared.db.models import Account, User, WebSession

    engine = create_engine(url, null_pool=True)
    rows = [
        {"username": f"bench{i}", "display_name": "", "password_hash": "!", "can_trade": True}
        for i in range(users)
    ]
    expires = datetime.now(UTC) + timedelta(seconds=max_age_s)
    sids = [secrets.token_urlsafe(32) for _ in range(users)]
    async with engine.begin() as db:
        ids = list((await db.execute(insert(User).returning(User.id), rows)).scalars())
        await db.execute(insert(Account), [{"user_id": uid} for uid in ids])
        sessions = [
            {"id": s, "user_id": u, "expires_at": expires} for u, s in zip(ids, sids, strict=True)
        ]
        await db.execute(insert(WebSession), sessions)
    await engine.dispose()
    cookie, out = SessionCookie(secret, max_age_s), []
    for uid, sid in zip(ids, sids, strict=True):
        response = Response()
        cookie.set(response, sid, secure=False)
        out.append(
            (uid, response.headers["set-cookie"].split(";", 1)[0], session_token(secret, sid))
        )
    return out


# -- process helpers ------------------------------------------------------------------------
def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each of our processes, and by the whole machine."""
    out = {}
    for name, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
        except psutil.Error:
            out[name] = float("nan")
    machine = psutil.cpu_times()
    out["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return out


def stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def slow_consumers(nats_log: Path) -> int:
    """Slow-consumer events nats-server logged so far (it drops that client's messages)."""
    if not nats_log.exists():
        return 0
    return nats_log.read_text(errors="replace").lower().count("slow consumer")


# -- the client process ---------------------------------------------------------------------
@dataclass(frozen=True)
class SocketSpec:
    url: str
    origin: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """Publishing runs ``[start, end)`` (epoch ms); later frames count as late, until quiet."""

    name: str
    start: float
    end: float


@dataclass
class _Counts:
    frames: int = 0
    parts: int = 0
    late_frames: int = 0
    late_parts: int = 0
    bare: int = 0  # frames holding none of the benchmark's parts (a server's own elements)
    latency: list[float] = field(default_factory=list)

    def summary(self, drain_s: float) -> dict[str, Any]:
        lat = self.latency
        return {
            "frames": self.frames,
            "parts": self.parts,
            "late_frames": self.late_frames,
            "late_parts": self.late_parts,
            "bare": self.bare,
            "p50": _p(lat, 0.5),
            "p95": _p(lat, 0.95),
            "max": max(lat, default=float("nan")),
            "drain_s": drain_s,
        }


_TS = re.compile(r'data-ts="([0-9.]+)"')


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _client(
    conn: Connection, specs: list[SocketSpec], concurrency: int, quiet_s: float
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    gate, sockets, errors = asyncio.Semaphore(concurrency), [], []

    async def open_one(spec: SocketSpec) -> None:
        async with gate:
            try:
                sockets.append(
                    await connect(
                        spec.url,
                        origin=spec.origin,
                        additional_headers=spec.headers,  # type: ignore[arg-type]
                        compression=None,
                        max_size=None,
                        proxy=None,
                        open_timeout=60,
                        ping_interval=None,
                    )
                )
            except Exception as exc:
                errors.append(repr(exc)[:200])

    started = time.monotonic()
    await asyncio.gather(*(open_one(s) for s in specs))
    conn.send(("ready", len(sockets), errors[:3], time.monotonic() - started))
    phase, counts, closed, last_rx = None, _Counts(), 0, 0.0

    async def read(ws: Any) -> None:
        nonlocal closed, last_rx
        try:
            async for frame in ws:
                now = time.time() * 1000
                last_rx = now
                if phase is None or now < phase.start:
                    continue
                parts = frame.count('role="row"')
                if not parts:
                    counts.bare += now < phase.end
                    continue
                if now < phase.end:
                    counts.frames += 1
                    counts.parts += parts
                else:
                    counts.late_frames += 1
                    counts.late_parts += parts
                counts.latency.extend(now - float(ts) for ts in _TS.findall(frame))
        except ConnectionClosed:
            closed += 1

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    # One phase at a time: the next is sent once this one has drained (``quiet_s`` silent).
    while await loop.run_in_executor(None, conn.poll, 300):
        message = conn.recv()
        if message is None:
            break
        phase, counts = message, _Counts()
        await asyncio.sleep(max(0.0, phase.end / 1000 - time.time()))
        for _ in range(400):  # at most 20 s of draining
            if time.time() * 1000 - last_rx >= quiet_s * 1000:
                break
            await asyncio.sleep(0.05)
        conn.send((counts.summary(max(0.0, last_rx - phase.end) / 1000), closed))
    for task in readers:
        task.cancel()
    await asyncio.gather(
        *(asyncio.wait_for(ws.close(), 2) for ws in sockets), return_exceptions=True
    )


def client_main(
    conn: Connection, specs: list[SocketSpec], concurrency: int = 64, quiet_s: float = 1.0
) -> None:
    """Entry point of the client process (``multiprocessing``, spawn)."""
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(_client(conn, specs, concurrency, quiet_s))
