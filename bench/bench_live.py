"""End to end under load: the whole stack, N traders' browser sockets, tick → socket latency.

``python -m bench live [--users 100,300,1000] [--window S] [--quick]`` (``--users`` may repeat).

One stack for the run: this process starts PostgreSQL and nats-server (``shared.devservers``),
migrates, loads the demo data, adds 500 symbols (565 in all, ~145 change per 250 ms tick) and
max(N) traders with books, watchlists and live web sessions, then starts ``python -m
shared.launcher`` on free ports and waits for its banner. For each N, ascending: load generator
processes (two from 500 sockets) open N browser-like sockets (``websockets`` negotiating
permessage-deflate, Origin, cookie, CSRF; bounded concurrency; htmx's reconnect rules), a
warm-up, a measured window with ~2 market orders/s posted through the gateway, sign-ins
through the login form just after it, then every socket closes and the services' CPU is
watched until they are quiet (if they are not within 15 s the stack is restarted before the
next N). A bare relay (:mod:`bench.live_relay`) runs beside the stack on the same services'
messages, and ``--relay-users`` of the traders also hold a socket to it: the gateway's
baseline. Everything is on 127.0.0.1; every process started is stopped at the end, also on
error.

Latency is measured from the HTML alone and the ``prices.ticks`` feed, so it holds whatever the
services send the gateway: see :mod:`bench.live_support` and the notes in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.live_report import (
    GRACE_S,
    ORDER_TRADERS,
    POST_CLOSE_S,
    QUIET_CAP_S,
    QUIET_CORES,
    RELAY_USERS,
    SIGNIN_S,
    Level,
    order_split,
    table,
)
from bench.live_stack import STACK, TICK_DRIVEN, Stack, cores, fold
from bench.live_support import GenConfig, Relayed, calibrate, loadgen_main
from bench.live_targets import TARGETS, next_probe
from bench.live_traffic import order_task, signin_task
from bench.relay_support import slow_consumers
from shared.devservers import run_async

__all__ = ["main", "run_level"]


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


async def run_level(stack: Stack, level: Level, warmup_s: float) -> None:
    """One load level on a running stack: connect, warm up, measure, close, wait for quiet."""
    n = level.n
    level.calibration_ms = calibrate()
    traders = stack.traders[:n]
    k = 2 if n >= 500 else 1
    port = stack.gateway_port
    ctx = mp.get_context("spawn")
    conns, gens = [], []
    deaths0, slow0 = stack.deaths(), slow_consumers(stack.tmp / "nats.log")
    connect_cap = 30.0 + n / 20
    # the relayed traders place no orders: their books stay as seeded (their P&L is timed)
    relayed = {
        t.user_id: Relayed(t.user_id, {ticker: (q, avg) for ticker, q, avg in t.book})
        for t in traders[ORDER_TRADERS : ORDER_TRADERS + level.relay_users]
        if stack.relay
    }
    for i in range(k):
        parent, child = ctx.Pipe()
        cfg = GenConfig(
            ws_url=f"ws://127.0.0.1:{port}/ws",
            origin=f"http://127.0.0.1:{port}",
            nats_url=stack.env["NATS_URL"],
            sockets=[(t.cookie, t.csrf, relayed.get(t.user_id)) for t in traders[i::k]],
            relay_url=f"ws://127.0.0.1:{stack.relay_port}/ws" if relayed else "",
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
        gen_pids = {f"loadgen{i}": g.pid or 0 for i, g in enumerate(gens)}
        stack.resolve()
        cc0 = stack.cpu(gen_pids)
        connected = await _recv(conns, "connected", connect_cap + 60)
        opened = sum(m[1] for m in connected)
        level.open_s = time.monotonic() - t0
        level.notes.append(f"{opened:,} of {n:,} sockets open after {level.open_s:.1f} s")
        rendered = await _recv(conns, "rendered", 40)
        if sum(m[1] for m in rendered) == n:
            level.rendered_all_s = time.monotonic() - t0
        spent = fold(cores(cc0, stack.cpu(gen_pids), 1.0))  # CPU-seconds, not cores
        spent["loadgen"] = sum(v for key, v in spent.items() if key.startswith("loadgen"))
        level.connect_cpu = spent
        start = time.time() + warmup_s
        end = start + level.window_s
        for conn in conns:
            conn.send(("window", start * 1000, end * 1000, GRACE_S))
        extra = gen_pids | {"bench": os.getpid()}
        await asyncio.sleep(max(0.0, start - time.time()))
        stack.resolve()
        c0 = stack.cpu(extra)
        http0 = await asyncio.to_thread(stack.http_seconds)
        orders = asyncio.create_task(order_task(port, traders[:ORDER_TRADERS], start, end))
        # after the window, the sockets still open: a login's argon2 takes ~0.25 s of CPU
        signed_in = end + GRACE_S
        signins = asyncio.create_task(signin_task(port, signed_in, signed_in + SIGNIN_S))
        await asyncio.sleep(max(0.0, end - time.time()))
        c1 = stack.cpu(extra)
        split = order_split(http0, await asyncio.to_thread(stack.http_seconds))
        if split is not None:
            level.notes.append(split)
        level.gateway_rss_mb = (stack.gateway_idle_mb, stack.rss_mb("gateway"))
        per_process = cores(c0, c1, level.window_s)
        level.per_process = per_process
        used = fold(per_process)
        used["loadgen"] = sum(v for key, v in used.items() if key.startswith("loadgen"))
        for i in range(k):
            used.pop(f"loadgen{i}", None)
        used["stack"] = sum(used.get(name, 0.0) for name in STACK)
        named = sum(v for key, v in used.items() if key not in ("machine", "stack"))
        used["other"] = max(0.0, used["machine"] - named)
        level.cpu = used
        results = await _recv(conns, "result", GRACE_S + 60)
        level.orders = await orders
        level.signins = await signins
        level.result = _merge([m[1] for m in results])
        for conn in conns:
            conn.send(("close",))
        await _recv(conns, "closed", 30)
        # are the tick-driven services still busy once nobody is connected?
        p0 = stack.cpu({})
        await asyncio.sleep(POST_CLOSE_S)
        p1 = stack.cpu({})
        level.after_close = fold(cores(p0, p1, POST_CLOSE_S))
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
            busy = sum(fold(cores(q0, q1, 1.0)).get(name, 0.0) for name in TICK_DRIVEN)
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
    counted = ("frames", "payload", "wire", "open_start", "open_end")
    for key in counted:
        out[key] = 0
    relay: dict[str, Any] = {key: [] for key in ("latency", "paired", "pnl", "paired_pnl")}
    relay |= dict.fromkeys(("sockets", "expected", "expected_pnl"), 0)
    relay |= dict.fromkeys(counted, 0)
    for p in parts:
        s0, s1 = p["snapshots"].get("start"), p["snapshots"].get("end")
        if s0 and s1:
            for into, at in ((out, 0), (relay, 4)):
                into["frames"] += s1[at] - s0[at]
                into["payload"] += s1[at + 1] - s0[at + 1]
                into["wire"] += s1[at + 2] - s0[at + 2]
                into["open_start"] += s0[at + 3]
                into["open_end"] += s1[at + 3]
        for key, value in p["relay"].items():
            relay[key] += value  # lists are joined, counts added
        for panel, values in p["samples"].items():
            out["samples"].setdefault(panel, []).extend(values)
        out["closes"].update(p["closes"])
        out.setdefault("parse_lag", []).extend(p.get("parse_lag", ()))
        out["errors"] += p["errors"]
        for key in ("connect_s", "rendered_s"):
            out.setdefault(key, []).extend(p[key])
        for key in ("expected", "unmatched", "reconnects", "handshake_errors"):
            out[key] = out.get(key, 0) + p[key]
        out["ticks"], out["changes"] = p["ticks"], p["changes"]
    out["relay"] = relay
    return out


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
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="RUNS",
        help="then up to RUNS more N, looking for the largest N whose tick → socket p99 "
        f"stays within {TARGETS[0].goal:g} ms (default 2; 0 with --quick)",
    )
    parser.add_argument(
        "--relay-users",
        type=int,
        default=RELAY_USERS,
        metavar="K",
        help=f"K traders (none placing orders) also get a socket to the bare relay, their "
        f"P&L timed through both (default {RELAY_USERS}; 0: no relay)",
    )
    args = parser.parse_args(argv)
    users = _users(args.users) or ([50] if args.quick else [100, 300, 1000])
    probes = args.limit if args.limit is not None else (0 if args.quick else 2)
    most = 2 * max(users) if probes else max(users)  # the traders seeded
    window = 8.0 if args.quick and args.window == 20.0 else args.window
    warmup = 3.0 if args.quick else 5.0
    load = os.getloadavg()[0]
    levels: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        stack = Stack(Path(tmp_name), with_relay=args.relay_users > 0)
        try:
            stack.prepare(most)
            stack.start()
            queue = list(users)
            while queue:
                n = queue.pop(0)
                level = Level(n, window, relay_users=max(0, args.relay_users))
                levels.append(level)
                print(f"live: N={n:,} …", file=sys.stderr, flush=True)
                try:
                    run_async(run_level(stack, level, warmup))
                except Exception as exc:
                    level.failed = f"{type(exc).__name__}: {str(exc)[:300]}"
                    print(f"live: N={n:,} failed: {exc}", file=sys.stderr)
                if not queue and probes > 0:
                    probe = next_probe(levels, most)
                    if probe is not None and probe not in {lv.n for lv in levels}:
                        queue.append(probe)
                        probes -= 1
                if queue and (level.failed or level.quiet_after_s is None):
                    stack.restart()
        finally:
            stack.stop_all()
    levels.sort(key=lambda lv: lv.n)
    out = table(levels, stack, window, warmup, load)
    print(out)
    return out


if __name__ == "__main__":
    main()
