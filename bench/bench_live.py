"""End to end under load: the whole stack, N traders' browser sockets, tick → socket latency.

``python -m bench live [--users 100,300,1000] [--window S] [--quick]`` (``--users`` may repeat).

One stack for the run: this process starts PostgreSQL and nats-server (``shared.devservers``),
migrates, loads the demo data, adds 500 symbols (565 in all, ~145 change per 250 ms tick) and
max(N) traders with books, watchlists and live web sessions, then starts ``python -m
shared.launcher`` on free ports and waits for its banner. For each N, ascending: load generator
processes (two from 500 sockets) open N browser-like sockets (``websockets`` negotiating
permessage-deflate, Origin, cookie, CSRF; bounded concurrency; htmx's reconnect rules), a
warm-up, a measured window with ~2 market orders/s posted through the gateway, then every
socket closes and the services' CPU is watched until they are quiet (if they are not within
15 s the stack is restarted before the next N). Everything is on 127.0.0.1; every process
started is stopped at the end, also on error.

Latency is measured from the HTML alone and the ``prices.ticks`` feed, so it holds whatever the
services send the gateway: see :mod:`bench.live_support` and the notes in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.live_support import GenConfig, Trader, loadgen_main, percentile, seed_market
from bench.relay_support import cpu_seconds, slow_consumers
from shared import wire
from shared.devservers import NatsServer, create_database, free_port, run_async, start_postgres
from shared.launcher import SERVICES

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-only-session-secret-0123456789abcdef"
STACK = ("gateway", "portfolio", "watchlist", "orders", "risk", "pricefeed", "postgres", "nats")
TICK_DRIVEN = ("portfolio", "watchlist", "risk")
ORDER_TRADERS = 20
ORDER_RATE_HZ = 2.0
ORDER_TIMEOUT_S = 10.0
GRACE_S = 3.0  # frames of window ticks still count this long after the window
POST_CLOSE_S = 5.0
QUIET_CAP_S = 15.0
QUIET_CORES = 0.10  # portfolio + watchlist + risk within this of their idle use: quiet
READY_TIMEOUT_S = 120.0


# -- the stack ------------------------------------------------------------------------------
@dataclass
class Stack:
    tmp: Path
    traders: list[Trader] = field(default_factory=list)
    symbols: int = 0
    pg: Any = None
    nats: NatsServer | None = None
    env: dict[str, str] = field(default_factory=dict)
    launcher: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    procs: dict[str, psutil.Process] = field(default_factory=dict)
    seen: list[psutil.Process] = field(default_factory=list)  # every child ever, for cleanup
    starts: int = 0
    idle: float = 0.0  # cores of portfolio + watchlist + risk with no socket open

    @property
    def gateway_port(self) -> int:
        return int(self.env["GATEWAY_PORT"])

    def prepare(self, traders: int) -> None:
        from shared.db.demo import load_demo_data
        from shared.db.engine import create_engine, session_factory
        from shared.db.migrate import upgrade

        self.pg = start_postgres(self.tmp / "pg", delete_on_exit=True)
        url = run_async(create_database(self.pg.get_uri(), "bench_live"))
        self.nats = NatsServer(self.tmp / "nats").start(log_file=self.tmp / "nats.log")
        upgrade(url)

        async def demo() -> None:
            engine = create_engine(url, null_pool=True)
            try:
                await load_demo_data(session_factory(engine))
            finally:
                await engine.dispose()

        run_async(demo())
        self.symbols, self.traders = run_async(seed_market(url, traders, SECRET))
        self.env = {
            **os.environ,
            "APP_ENV": "development",
            "DATABASE_URL": url,
            "NATS_URL": self.nats.url,
            "NATS_PORT": str(self.nats.port),
            "GATEWAY_SESSION_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        for spec in SERVICES:
            self.env[spec.port_env] = str(free_port())
        for spec in SERVICES:  # the launcher derives the gateway's service URLs from the ports
            self.env.pop(f"GATEWAY_{spec.name.upper()}_URL", None)

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.tmp / f"launcher-{self.starts}.log"
        log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "shared.launcher", "--data-dir", str(self.tmp / "data")]
        self.launcher = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "dashboard ready" not in self.log_path.read_text(errors="replace"):
            self._remember_children()
            if self.launcher.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the stack did not come up:\n{tail}")
            time.sleep(0.2)
        self.resolve()
        c0 = self.cpu({})
        time.sleep(3.0)
        self.idle = sum(_cores(c0, self.cpu({}), 3.0).get(name, 0.0) for name in TICK_DRIVEN)

    def _remember_children(self) -> list[psutil.Process]:
        if self.launcher is None:
            return []
        try:
            children = psutil.Process(self.launcher.pid).children(recursive=True)
        except psutil.Error:
            return []
        known = {(p.pid, p.create_time()) for p in self.seen if p.is_running()}
        for child in children:
            with contextlib.suppress(psutil.Error):
                if (child.pid, child.create_time()) not in known:
                    self.seen.append(child)
        return children

    def resolve(self) -> None:
        """Our processes by name (again after a service was restarted by the launcher)."""
        assert self.launcher and self.nats and self.nats.process
        procs = {
            "launcher": psutil.Process(self.launcher.pid),
            "postgres": psutil.Process(self.pg.get_pid()),
            "nats": psutil.Process(self.nats.process.pid),
        }
        for child in self._remember_children():
            with contextlib.suppress(psutil.Error):
                cmdline = " ".join(child.cmdline())
                for spec in SERVICES:
                    if spec.factory in cmdline:
                        procs[spec.name] = child
        self.procs = procs

    def cpu(self, extra: dict[str, int]) -> dict[str, float]:
        """CPU seconds so far per process (PostgreSQL: postmaster, live and exited backends)."""
        pids = {n: p.pid for n, p in self.procs.items() if n != "postgres"} | extra
        out = cpu_seconds(pids)
        try:
            pm = self.procs["postgres"]
            t = pm.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for child in pm.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    ct = child.cpu_times()
                    total += ct.user + ct.system
            out["postgres"] = total
        except psutil.Error:
            out["postgres"] = float("nan")
        return out

    def deaths(self) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path else ""
        return text.count(" DIED ")

    def stop_launcher(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.launcher.pid, signal.SIGTERM)  # it stops its children
            try:
                self.launcher.wait(25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.launcher.pid, signal.SIGKILL)
                self.launcher.wait()
        for proc in self.seen:  # anything the launcher left behind, by pid (and start time)
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
                    proc.wait(5)
        self.seen.clear()
        self.launcher = None

    def restart(self) -> None:
        self.stop_launcher()
        self.start()

    def stop_all(self) -> None:
        try:
            self.stop_launcher()
        finally:
            if self.nats is not None:
                self.nats.stop()
            if self.pg is not None:
                self.pg._cleanup()


# -- one load level -------------------------------------------------------------------------
@dataclass
class Level:
    n: int
    window_s: float
    result: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # cores over the window
    after_close: dict[str, float] = field(default_factory=dict)
    quiet_after_s: float | None = None
    orders: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str = ""


async def _recv(conns: list[Any], kind: str, within_s: float) -> list[Any]:
    out = []
    deadline = time.monotonic() + within_s
    for conn in conns:
        left = max(0.1, deadline - time.monotonic())
        if not await asyncio.to_thread(conn.poll, left):
            raise TimeoutError(f"a load generator did not report {kind!r} in {within_s:.0f} s")
        message = conn.recv()
        if message[0] == "error":
            raise RuntimeError(f"load generator failed:\n{message[1]}")
        if message[0] != kind:
            raise RuntimeError(f"expected {kind!r} from a load generator, got {message[0]!r}")
        out.append(message)
    return out


async def _order_task(
    port: int, traders: list[Trader], start: float, end: float
) -> list[tuple[str, float]]:
    """Market buys of 1 share at ORDER_RATE_HZ in all, round robin over ``traders``."""
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
        while (due := start + k / ORDER_RATE_HZ) < end:
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


def _cores(c0: dict[str, float], c1: dict[str, float], seconds: float) -> dict[str, float]:
    return {k: (c1[k] - c0[k]) / seconds for k in c0 if k in c1}


async def _run_level(stack: Stack, level: Level, warmup_s: float) -> None:
    n = level.n
    traders = stack.traders[:n]
    k = 2 if n >= 500 else 1
    port = stack.gateway_port
    ctx = mp.get_context("spawn")
    conns, gens = [], []
    deaths0, slow0 = stack.deaths(), slow_consumers(stack.tmp / "nats.log")
    connect_cap = 30.0 + n / 20
    for i in range(k):
        parent, child = ctx.Pipe()
        cfg = GenConfig(
            ws_url=f"ws://127.0.0.1:{port}/ws",
            origin=f"http://127.0.0.1:{port}",
            nats_url=stack.env["NATS_URL"],
            sockets=[(t.cookie, t.csrf) for t in traders[i::k]],
            concurrency=32,
            connect_cap_s=connect_cap,
            render_cap_s=20.0,
        )
        gen = ctx.Process(target=loadgen_main, args=(child, cfg), daemon=True)
        gen.start()
        conns.append(parent)
        gens.append(gen)
    try:
        t0 = time.monotonic()
        connected = await _recv(conns, "connected", connect_cap + 60)
        opened = sum(m[1] for m in connected)
        level.notes.append(f"{opened:,} of {n:,} sockets open after {time.monotonic() - t0:.1f} s")
        await _recv(conns, "rendered", 40)
        start = time.time() + warmup_s
        end = start + level.window_s
        for conn in conns:
            conn.send(("window", start * 1000, end * 1000, GRACE_S))
        extra = {f"loadgen{i}": g.pid or 0 for i, g in enumerate(gens)} | {"bench": os.getpid()}
        await asyncio.sleep(max(0.0, start - time.time()))
        stack.resolve()
        c0 = stack.cpu(extra)
        orders = asyncio.create_task(_order_task(port, traders[:ORDER_TRADERS], start, end))
        await asyncio.sleep(max(0.0, end - time.time()))
        c1 = stack.cpu(extra)
        cores = _cores(c0, c1, level.window_s)
        cores["loadgen"] = sum(v for key, v in cores.items() if key.startswith("loadgen"))
        for i in range(k):
            cores.pop(f"loadgen{i}", None)
        cores["stack"] = sum(cores.get(name, 0.0) for name in STACK)
        named = sum(v for key, v in cores.items() if key not in ("machine", "stack"))
        cores["other"] = max(0.0, cores["machine"] - named)
        level.cpu = cores
        results = await _recv(conns, "result", GRACE_S + 60)
        level.orders = await orders
        level.result = _merge([m[1] for m in results])
        for conn in conns:
            conn.send(("close",))
        await _recv(conns, "closed", 30)
        # are the tick-driven services still busy once nobody is connected?
        p0 = stack.cpu({})
        await asyncio.sleep(POST_CLOSE_S)
        p1 = stack.cpu({})
        level.after_close = _cores(p0, p1, POST_CLOSE_S)
        level.quiet_after_s = None
        busy = sum(level.after_close.get(name, 0.0) for name in TICK_DRIVEN)
        waited = POST_CLOSE_S
        if busy < stack.idle + QUIET_CORES:
            level.quiet_after_s = 0.0
        while level.quiet_after_s is None and waited < POST_CLOSE_S + QUIET_CAP_S:
            q0 = stack.cpu({})
            await asyncio.sleep(1.0)
            waited += 1.0
            q1 = stack.cpu({})
            busy = sum(_cores(q0, q1, 1.0).get(name, 0.0) for name in TICK_DRIVEN)
            if busy < stack.idle + QUIET_CORES:
                level.quiet_after_s = waited
        if stack.deaths() > deaths0:
            level.notes.append(f"{stack.deaths() - deaths0} service death(s), restarted")
        slow = slow_consumers(stack.tmp / "nats.log") - slow0
        if slow:
            level.notes.append(f"nats-server slow-consumer events {slow}")
    finally:
        for gen in gens:
            await asyncio.to_thread(gen.join, 10)
            if gen.is_alive():
                gen.terminate()
                await asyncio.to_thread(gen.join, 5)
            if gen.is_alive():
                gen.kill()


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": {}, "closes": Counter(), "errors": []}
    for key in ("frames", "payload", "wire"):
        out[key] = 0
    out["open_start"] = out["open_end"] = 0
    for p in parts:
        s0, s1 = p["snapshots"].get("start"), p["snapshots"].get("end")
        if s0 and s1:
            out["frames"] += s1[0] - s0[0]
            out["payload"] += s1[1] - s0[1]
            out["wire"] += s1[2] - s0[2]
            out["open_start"] += s0[3]
            out["open_end"] += s1[3]
        for panel, values in p["samples"].items():
            out["samples"].setdefault(panel, []).extend(values)
        out["closes"].update(p["closes"])
        out["errors"] += p["errors"]
        for key in ("connect_s", "rendered_s"):
            out.setdefault(key, []).extend(p[key])
        for key in ("expected", "unmatched", "reconnects", "handshake_errors"):
            out[key] = out.get(key, 0) + p[key]
        out["ticks"], out["changes"] = p["ticks"], p["changes"]
    return out


# -- output ---------------------------------------------------------------------------------
def _f(value: float, spec: str = ",.0f") -> str:
    return "–" if value != value else format(value, spec)


def _row(level: Level) -> str:
    if level.failed:
        return f"| {level.n:,} | failed: {level.failed} |" + " |" * 10
    r, w = level.result, level.window_s
    latency = [v for values in r["samples"].values() for v in values]
    rendered = [s for s in r["rendered_s"] if s is not None]
    not_rendered = len(r["rendered_s"]) - len(rendered)
    acks = [ms for status, ms in level.orders if status.startswith("2")]
    errors = Counter(status for status, _ in level.orders if not status.startswith("2"))
    err = f"{sum(errors.values())}/{len(level.orders)}"
    shown = len(latency) / r["expected"] if r["expected"] else float("nan")
    busy = sum(level.after_close.get(name, 0.0) for name in TICK_DRIVEN)
    if level.quiet_after_s is None:
        quiet = f"busy > {POST_CLOSE_S + QUIET_CAP_S:g} s"
    elif level.quiet_after_s == 0:
        quiet = f"quiet ≤ {POST_CLOSE_S:g} s"
    else:
        quiet = f"quiet after {level.quiet_after_s:.0f} s"
    stack_ms = level.cpu["stack"] * 1000 / level.n
    return (
        f"| {level.n:,} | {r['open_end']:,} | {len(rendered):,} ({not_rendered} not) "
        f"{_f(percentile(rendered, 0.5), '.1f')} / {_f(percentile(rendered, 0.99), '.1f')} "
        f"| {r['frames'] / w:,.0f} | {r['payload'] / w / 1e6:.2f} / {r['wire'] / w / 1e6:.2f} "
        f"| {_f(percentile(latency, 0.5))} / {_f(percentile(latency, 0.95))} "
        f"/ {_f(percentile(latency, 0.99))} / {_f(max(latency, default=float('nan')))} "
        f"| {len(latency):,} ({_f(shown, '.0%')}) "
        f"| {_f(percentile(acks, 0.5))} / {_f(percentile(acks, 0.99))} ({err}) "
        f"| {level.cpu['machine']:.2f} | {stack_ms:.2f} | {busy:.2f} ({quiet}) |"
    )


def _cpu_row(level: Level) -> str:
    if level.failed:
        return f"| {level.n:,} |" + " – |" * 13
    c = level.cpu
    names = (*STACK, "stack", "loadgen", "bench", "launcher", "other", "machine")
    return f"| {level.n:,} | " + " | ".join(_f(c.get(n, float("nan")), ".2f") for n in names) + " |"


def _detail(level: Level) -> str:
    if level.failed:
        return f"- N={level.n:,}: failed ({level.failed})."
    r = level.result
    per_panel = ", ".join(
        f"{panel} p50 {percentile(v, 0.5):,.0f} / p99 {percentile(v, 0.99):,.0f} ms ({len(v):,})"
        for panel, v in sorted(r["samples"].items())
    )
    errors = Counter(status for status, _ in level.orders if not status.startswith("2"))
    connect = r["connect_s"]
    other = level.cpu.get("other", 0.0)
    bits = [
        *level.notes,
        f"**noisy: other work on the machine used {other:.2f} core**"
        if other > 0.2
        else f"other work on the machine {other:.2f} core",
        f"handshake p50 {_f(percentile(connect, 0.5) * 1000)} / p99 "
        f"{_f(percentile(connect, 0.99) * 1000)} ms",
        f"open at window start {r['open_start']:,}, at end {r['open_end']:,}",
        f"failed handshakes {r['handshake_errors']}, reconnects {r['reconnects']}",
        f"closes by code {dict(r['closes']) or 'none'}",
        f"latency by component: {per_panel or 'none'}",
        f"prices not matched to a tick {r['unmatched']:,}",
    ]
    if errors:
        bits.append(f"order errors {dict(errors)}")
    if r["errors"]:
        bits.append(f"first handshake errors {r['errors'][:2]}")
    ac = level.after_close
    bits.append(
        "cores in the 5 s after close: "
        + ", ".join(f"{n} {ac.get(n, float('nan')):.2f}" for n in (*TICK_DRIVEN, "gateway"))
    )
    return f"- N={level.n:,}: " + "; ".join(bits) + "."


def _table(levels: list[Level], stack: Stack, window: float, warmup: float, load: float) -> str:
    head = (
        "| N | sockets open | fully rendered (never) p50 / p99 s | frames/s "
        "| payload / wire MB/s | tick→socket p50 / p95 / p99 / max ms | latency samples "
        "(of updates due) | order ack p50 / p99 ms (errors) | machine CPU cores "
        "| stack CPU ms per trader-s | pf+wl+risk cores 5 s after close |\n"
        "|---:|---:|---|---:|---|---|---|---|---:|---:|---|"
    )
    cpu_head = (
        "| N | gateway | portfolio | watchlist | orders | risk | pricefeed | postgres "
        "| nats-server | **stack** | load generator | bench driver | launcher | other "
        "| machine |\n|---:|" + "---:|" * 14
    )
    method = (
        f"The whole stack (`python -m shared.launcher`: gateway, five services; PostgreSQL and "
        f"nats-server started by the benchmark) with {stack.symbols} symbols and "
        f"{len(stack.traders):,} seeded traders (10–20 positions, 10–15 watchlist symbols, "
        "margin utilisation 40–70 %, one web session each); N of them connect, each with one "
        "WebSocket negotiating permessage-deflate like a browser (`websockets`, Origin, cookie, "
        "CSRF; 32 handshakes at a time per load generator; htmx's reconnect codes and backoff). "
        "*Fully rendered*: the portfolio, watchlist and risk roots have all arrived, timed from "
        f"the first handshake attempt. After a {warmup:g} s warm-up, a {window:g} s window: "
        "frames and bytes received (payload = decompressed frame bytes, wire = bytes read from "
        "the sockets), CPU of every process (psutil; PostgreSQL includes its backends) and of "
        f"the machine, as cores. Orders: {ORDER_TRADERS} of the connected traders post market "
        f"buys of 1 share through the gateway (`POST /c/order/submit`, CSRF header), "
        f"{ORDER_RATE_HZ:g}/s in all; ack = HTTP round trip of the 2xx answers; errors = "
        f"non-2xx or no answer in {ORDER_TIMEOUT_S:g} s. *Other* = machine CPU not used by any "
        "process named (other work on this shared machine). *Stack* = gateway + services + "
        "PostgreSQL + nats-server (not the launcher, load generator or driver); per "
        "trader-second = stack CPU ÷ (N × window).\n\n"
        "**Tick → socket latency**, independent of the service→gateway wire format: the load "
        "generator follows `prices.ticks` on NATS and records, per symbol, the `ts` of every "
        'tick that changed its `last`. In each frame, every `data-symbol="T"` followed (before '
        "the next) by a `last-price` element gives a shown price, attributed to the component "
        "whose id prefix (`portfolio-…`, `watchlist-…`) precedes it. Per socket and (component, "
        "symbol), a shown value counts once: only when it differs from the value that row last "
        "showed, and only if the newest tick that set the symbol to that value is newer than "
        "the last one counted there; latency = receipt − that tick's `ts`. So full renders "
        "and rows re-rendered for bid/ask/P&L repeat no old price, while a value first seen "
        "in a full render after a reconnect counts with its true age. Samples: ticks published "
        f"in the window, received by its end + {GRACE_S:g} s (a slower delivery is not "
        "sampled, so past the knee the percentiles are a floor; *of updates due* = samples ÷ "
        "last-price changes in the window of every (component, symbol) row each socket shows; "
        "newest-wins merging may legitimately skip a few). After the window every socket "
        f"closes and the CPU of portfolio, watchlist and risk is measured for {POST_CLOSE_S:g} "
        f"s, then each second until within {QUIET_CORES:g} core of their idle use "
        f"({stack.idle:.2f} core, measured after the stack started; at most {QUIET_CAP_S:g} s "
        "more; if still busy the stack is restarted before the next N). No baseline relay here: "
        "with the real services in the loop it would need its own session announcements and "
        f"the service wire format (see `relay.md`). 1-min load average at start {load:.2f}, "
        f"{os.cpu_count()} CPUs shared by everything; LOG_LEVEL=WARNING; stack started "
        f"{stack.starts} time(s)."
    )
    return (
        "### The whole stack under N traders\n\n"
        + method
        + "\n\n"
        + head
        + "\n"
        + "\n".join(_row(lv) for lv in levels)
        + "\n\n#### CPU by process during the window (cores)\n\n"
        + cpu_head
        + "\n"
        + "\n".join(_cpu_row(lv) for lv in levels)
        + "\n\n#### Details\n\n"
        + "\n".join(_detail(lv) for lv in levels)
    )


def _users(values: list[str] | None) -> list[int]:
    out: list[int] = []
    for value in values or []:
        out += [int(v) for v in value.split(",") if v.strip()]
    return sorted(set(out))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", action="append", help="N, repeatable or 100,300,1000")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds per N")
    parser.add_argument("--quick", action="store_true", help="50 traders, 8 s window")
    args = parser.parse_args(argv)
    users = _users(args.users) or ([50] if args.quick else [100, 300, 1000])
    window = 8.0 if args.quick and args.window == 20.0 else args.window
    warmup = 3.0 if args.quick else 5.0
    load = os.getloadavg()[0]
    levels: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        stack = Stack(Path(tmp_name))
        try:
            stack.prepare(max(users))
            stack.start()
            for n in users:
                level = Level(n, window)
                levels.append(level)
                print(f"live: N={n:,} …", file=sys.stderr, flush=True)
                try:
                    run_async(_run_level(stack, level, warmup))
                except Exception as exc:
                    level.failed = f"{type(exc).__name__}: {str(exc)[:300]}"
                    print(f"live: N={n:,} failed: {exc}", file=sys.stderr)
                if n != users[-1] and (level.failed or level.quiet_after_s is None):
                    stack.restart()
        finally:
            stack.stop_all()
    out = _table(levels, stack, window, warmup, load)
    print(out)
    return out


if __name__ == "__main__":
    main()
