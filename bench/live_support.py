"""The load generator of the end-to-end benchmark (:mod:`bench.bench_live`).

:func:`loadgen_main` runs in its own process. It holds browser-like WebSockets to the gateway
(permessage-deflate, Origin, cookie, CSRF), follows ``prices.ticks`` on NATS, and measures
tick → socket latency from the HTML alone (``data-symbol`` … ``last-price``), so it does not
depend on the wire format between the services and the gateway.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection

from bench.live_frames import Relayed, Sock, Timing

__all__ = ["GenConfig", "Relayed", "loadgen_main", "percentile"]

# htmx-ext-ws reconnects after these close codes only (gateway/static/app.js), with "full
# jitter" backoff: uniform in [0, min(10 s, 0.5 s × 2^n)). A failed handshake is a 1006.
RECONNECT_CODES = frozenset({1006, 1011, 1012, 1013})


def calibrate(rounds: int = 5) -> float:
    """CPU milliseconds of a fixed pure-Python workload (Decimal arithmetic, dicts, JSON),
    the median of ``rounds``: how fast this shared machine runs this hour. The same
    revision measured 1.3× slower CPU per trader an hour apart; compare runs by this."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        total, seen = Decimal(0), {}
        for i in range(100_000):
            total += Decimal(i) * Decimal("1.0001")
            seen[i % 1000] = str(i)
        json.dumps(seen)
        times.append((time.process_time() - started) * 1000)
    return sorted(times)[rounds // 2]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the load generator process --------------------------------------------------------------
@dataclass(frozen=True)
class GenConfig:
    ws_url: str  # ws://127.0.0.1:<port>/ws
    origin: str
    nats_url: str
    # (cookie header, csrf token, the trader if they also get a socket to the bare relay)
    sockets: list[tuple[str, str, Relayed | None]]
    relay_url: str = ""  # ws://127.0.0.1:<port>/ws of :mod:`bench.live_relay`, if it runs
    concurrency: int = 32
    connect_cap_s: float = 60.0
    render_cap_s: float = 20.0


_WIRE = [0]  # bytes read from every socket of this process (compressed, as on the wire)
_RELAY_WIRE = [0]  # ... from its sockets to the bare relay


class _CountingConnection(ClientConnection):
    """Counts the bytes read, and notes when they were read: a frame's receipt is when the
    read that completed it returned, not when this process (500 sockets' parsing on one
    core, as no browser has) got round to it."""

    read_ms: float = 0.0
    counter = _WIRE

    def data_received(self, data: bytes) -> None:
        self.counter[0] += len(data)
        self.read_ms = time.time() * 1000
        super().data_received(data)


class _RelayConnection(_CountingConnection):
    counter = _RELAY_WIRE


class _Gen(Timing):
    def __init__(self, cfg: GenConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.socks = [Sock(c, t, r) for c, t, r in cfg.sockets]
        self.relays = [
            Sock("", "", s.relayed, relay=True)
            for s in self.socks
            if s.relayed is not None and cfg.relay_url
        ]
        self.relay_open = 0
        self.stopping = False
        self.open = 0
        self.reconnects = 0
        self.handshake_errors = 0
        self.closes: Counter[int] = Counter()
        self.parse_lag: list[float] = []  # ms from a frame's read to its parsing, in the window
        self.errors: list[str] = []
        self.snapshots: dict[str, tuple[int, ...]] = {}
        self.gate = asyncio.Semaphore(cfg.concurrency)

    # -- sockets -----------------------------------------------------------------------
    async def run_socket(self, s: Sock) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        retry = 0
        while not self.stopping:
            ws = None
            async with self.gate:
                if self.stopping:
                    return
                t0 = time.time()
                if s.started_ms is None:
                    s.started_ms = t0 * 1000
                try:
                    ws = await connect(
                        f"{self.cfg.ws_url}?csrf={s.csrf}",
                        origin=self.cfg.origin,  # type: ignore[arg-type]
                        additional_headers={"Cookie": s.cookie},
                        proxy=None,
                        open_timeout=30,
                        ping_interval=None,  # the server pings; the client answers
                        close_timeout=2,
                        max_size=None,
                        create_connection=_CountingConnection,
                    )
                except Exception as exc:
                    self.handshake_errors += 1
                    if len(self.errors) < 5:
                        self.errors.append(repr(exc)[:160])
            s.attempted = True
            if ws is None:
                retry += 1
                await asyncio.sleep(random.uniform(0, min(10.0, 0.5 * 2**retry)))
                continue
            if s.connect_s is None:
                s.connect_s = time.time() - t0
            retry, s.ws, code = 0, ws, 1006
            self.open += 1
            try:
                while True:
                    frame = await ws.recv(decode=False)
                    read_ms = ws.read_ms
                    w = self.window
                    if w is not None and w[0] <= read_ms < w[1]:
                        self.parse_lag.append(time.time() * 1000 - read_ms)
                    self.on_frame(s, frame, read_ms)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
            finally:
                self.open -= 1
                s.ws = None
            if self.stopping:
                return
            self.closes[code] += 1
            if code not in RECONNECT_CODES:
                return  # e.g. 1008: the page would say "offline — reload"
            self.reconnects += 1
            retry += 1
            await asyncio.sleep(random.uniform(0, min(10.0, 0.5 * 2**retry)))

    async def run_relay(self, s: Sock) -> None:
        """A socket to the bare relay for ``s.relayed``: no authentication, no
        reconnect (a relay socket that closes is simply gone from the figures)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        try:
            ws = await connect(
                f"{self.cfg.relay_url}?user={s.relayed.user_id if s.relayed else 0}",
                proxy=None,
                open_timeout=30,
                ping_interval=None,
                close_timeout=2,
                max_size=None,
                create_connection=_RelayConnection,
            )
        except Exception as exc:
            if len(self.errors) < 5:
                self.errors.append(f"relay: {exc!r}"[:160])
            return
        finally:
            s.attempted = True
        s.ws = ws
        self.relay_open += 1
        try:
            while True:
                frame = await ws.recv(decode=False)
                self.on_frame(s, frame, ws.read_ms)
        except ConnectionClosed:
            pass
        finally:
            self.relay_open -= 1
            s.ws = None

    async def wait_for(self, done: Any, cap_s: float) -> None:
        for _ in range(int(cap_s * 10)):  # bounded: at most cap_s
            if done():
                return
            await asyncio.sleep(0.1)

    def snapshot(self, name: str) -> None:
        self.snapshots[name] = (
            self.frames,
            self.payload,
            _WIRE[0],
            self.open,
            self.relay_frames,
            self.relay_payload,
            _RELAY_WIRE[0],
            self.relay_open,
        )

    async def snapshot_at(self, name: str, epoch_ms: float) -> None:
        await asyncio.sleep(max(0.0, epoch_ms / 1000 - time.time()))
        self.snapshot(name)

    def result(self) -> dict[str, Any]:
        return {
            "relay": {
                "sockets": len(self.relays),
                "latency": self.pairs["relay"],
                "paired": self.pairs["gateway"],
                "pnl": self.pairs["relay-pnl"],
                "paired_pnl": self.pairs["gateway-pnl"],
                "expected": self.due(self.relays, pnl=False),
                "expected_pnl": self.due(self.relays, pnl=True),
            },
            "snapshots": self.snapshots,
            "samples": dict(self.samples),
            "connect_s": [s.connect_s for s in self.socks if s.connect_s is not None],
            "rendered_s": [s.rendered_s for s in self.socks],
            "expected": self.due(self.socks, pnl=False),
            "unmatched": self.unmatched,
            "reconnects": self.reconnects,
            "handshake_errors": self.handshake_errors,
            "closes": dict(self.closes),
            "parse_lag": self.parse_lag,
            "errors": self.errors,
            "ticks": self.ticks.ticks,
            "changes": self.ticks.changes,
        }


async def _loadgen(conn: Connection, cfg: GenConfig) -> None:
    import nats

    gen = _Gen(cfg)
    nc = await nats.connect(cfg.nats_url, max_reconnect_attempts=3, connect_timeout=5)

    async def on_tick(msg: Any) -> None:
        gen.ticks.on_tick(json.loads(msg.data))

    await nc.subscribe("prices.ticks", cb=on_tick)  # DESIGN §3.2; the wire module's literal
    loop = asyncio.get_running_loop()

    async def recv(within_s: float) -> Any:
        if not await loop.run_in_executor(None, conn.poll, within_s):
            raise TimeoutError("the benchmark driver went silent")
        return conn.recv()

    # the relay's sockets first: the gateway's connecting makes the services send the full
    # renders that tell the relay which shared topics each page shows
    tasks = [asyncio.create_task(gen.run_relay(s)) for s in gen.relays]
    await gen.wait_for(lambda: all(s.attempted for s in gen.relays), 30.0)
    tasks += [asyncio.create_task(gen.run_socket(s)) for s in gen.socks]
    await gen.wait_for(lambda: all(s.attempted for s in gen.socks), cfg.connect_cap_s)
    conn.send(("connected", gen.open, gen.handshake_errors))
    await gen.wait_for(
        lambda: all(s.rendered_s is not None for s in gen.socks if s.ws is not None),
        cfg.render_cap_s,
    )
    conn.send(("rendered", sum(s.rendered_s is not None for s in gen.socks)))
    _, start, end, grace_s = await recv(300)
    gen.window = (start, end, end + grace_s * 1000)
    await asyncio.gather(gen.snapshot_at("start", start), gen.snapshot_at("end", end))
    await asyncio.sleep(max(0.0, end / 1000 + grace_s - time.time()))
    conn.send(("result", gen.result()))
    await recv(300)  # ("close",)
    gen.stopping = True
    await asyncio.gather(
        *(asyncio.wait_for(s.ws.close(), 3) for s in gen.socks + gen.relays if s.ws is not None),
        return_exceptions=True,
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("closed", time.time()))
    await nc.close()


def loadgen_main(conn: Connection, cfg: GenConfig) -> None:
    """Entry point of a load generator process (``multiprocessing``, spawn)."""
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    try:
        run(_loadgen(conn, cfg))
    except BaseException:
        conn.send(("error", traceback.format_exc()[-2000:]))
        raise
