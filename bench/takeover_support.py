"""What the takeover benchmark watches (:mod:`bench.bench_takeover`): the traders' browser
sockets (when each component's full render arrived) and the ``prices.ticks`` feed (when
each tick arrived, its ``seq`` and ``epoch``). Both run in the benchmark's event loop, so
their receipt times and the moment of a kill are read from one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from bench.live_seed import Trader
from shared import wire

__all__ = ["COMPONENT_OF", "Socket", "Sockets", "Tick", "TickWatch"]

# The live component of each replicated service whose full render (its root part) the
# page receives after a takeover.
COMPONENT_OF = {"portfolio": "portfolio", "watchlist": "watchlist", "risk": "risk_metrics"}
_ROOT_MARKS = {c: f'id="{wire.element_id(c, "root")}"'.encode() for c in COMPONENT_OF.values()}
RECONNECT_CODES = frozenset({1006, 1011, 1012, 1013})  # as htmx-ext-ws (bench.live_support)


@dataclass(eq=False)
class Socket:
    trader: Trader
    roots: dict[str, list[float]] = field(default_factory=dict)  # component → receipt times
    frames: int = 0
    reconnects: int = 0
    ws: Any = None

    def first_root_after(self, component: str, t: float) -> float | None:
        return next((r for r in self.roots.get(component, ()) if r > t), None)

    @property
    def rendered(self) -> bool:
        return all(self.roots.get(c) for c in COMPONENT_OF.values())


class Sockets:
    """One browser-like socket per trader through the gateway, read until :meth:`close`."""

    def __init__(self, port: int, traders: list[Trader]) -> None:
        self.url, self.origin = f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"
        self.socks = [Socket(t) for t in traders]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._gate = asyncio.Semaphore(16)
        self.errors: list[str] = []

    async def open(self, within_s: float) -> None:
        """Connect every socket and wait for all three full renders on each."""
        self._tasks = [asyncio.create_task(self._run(s)) for s in self.socks]
        deadline = time.monotonic() + within_s
        while not all(s.rendered for s in self.socks):
            if time.monotonic() > deadline:
                missing = sum(not s.rendered for s in self.socks)
                raise TimeoutError(f"{missing} sockets not rendered in {within_s:.0f} s")
            await asyncio.sleep(0.1)

    async def _run(self, s: Socket) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        while not self._stopping:
            async with self._gate:
                try:
                    s.ws = await connect(
                        f"{self.url}?csrf={s.trader.csrf}",
                        origin=self.origin,  # type: ignore[arg-type]
                        additional_headers={"Cookie": s.trader.cookie},
                        proxy=None,
                        open_timeout=30,
                        ping_interval=None,
                        close_timeout=2,
                        max_size=None,
                    )
                except Exception as exc:
                    self.errors.append(repr(exc)[:160])
                    await asyncio.sleep(1.0)
                    continue
            code = 1006
            try:
                while True:
                    frame = await s.ws.recv(decode=False)
                    now = time.time()
                    s.frames += 1
                    for component, mark in _ROOT_MARKS.items():
                        if mark in frame:
                            s.roots.setdefault(component, []).append(now)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
            if self._stopping or code not in RECONNECT_CODES:
                return
            s.reconnects += 1
            await asyncio.sleep(0.5)

    def last_root(self) -> float:
        """When the newest full render of any component reached any socket."""
        return max((t for s in self.socks for ts in s.roots.values() for t in ts), default=0.0)

    async def close(self) -> None:
        self._stopping = True
        await asyncio.gather(
            *(asyncio.wait_for(s.ws.close(), 3) for s in self.socks if s.ws is not None),
            return_exceptions=True,
        )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class Tick:
    received: float  # time.time()
    seq: int
    epoch: int


class TickWatch:
    """Every ``prices.ticks`` message as it arrives."""

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self._nc: Any = None
        self._arrived = asyncio.Event()

    async def start(self, nats_url: str) -> None:
        import nats

        self._nc = await nats.connect(nats_url, connect_timeout=5)

        async def on_tick(msg: Any) -> None:
            data = json.loads(msg.data)
            seq, epoch = data.get("seq"), data.get("epoch")
            self.ticks.append(Tick(time.time(), seq if isinstance(seq, int) else -1, epoch or 0))
            self._arrived.set()

        await self._nc.subscribe(wire.PRICES_TICKS, cb=on_tick)
        await self._nc.flush()

    def last_before(self, t: float) -> Tick | None:
        return next((k for k in reversed(self.ticks) if k.received <= t), None)

    async def first_after(self, t: float, within_s: float, epoch: int = -1) -> Tick | None:
        """The first tick received after ``t`` under another ``epoch`` than the given one
        (not one the dead leader published just before), waiting at most ``within_s``."""

        def look() -> Tick | None:
            return next((k for k in self.ticks if k.received > t and k.epoch != epoch), None)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while (found := look()) is None:
                    self._arrived.clear()  # nothing arrives between the look and the wait
                    await self._arrived.wait()
                return found
        return None

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
