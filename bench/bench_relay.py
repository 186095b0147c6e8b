"""NATS → browser WebSocket relay throughput: the real gateway against a bare baseline relay.

``python -m bench.bench_relay [--sockets N] [--seconds S] [--quick]`` prints markdown tables.

Same run, same load, one target after the other: a nats-server; the server under test in a
uvicorn subprocess (the baseline of :mod:`bench.relay_support`, then ``gateway.app:create_app``
on an embedded PostgreSQL with benchmark users and sessions written directly); a client process
holding every socket (``websockets``); this process publishes ``ui.<user>.portfolio`` messages
(one row part each, its ``data-ts`` the publish time) to every user at a fixed rate. Nothing
leaves 127.0.0.1 and every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.relay_support import (
    Phase,
    SocketSpec,
    client_main,
    cpu_seconds,
    seed_sessions,
    slow_consumers,
    stop_group,
)
from shared import wire
from shared.devservers import (
    NatsServer,
    create_database,
    free_port,
    run_async,
    start_postgres,
    wait_for_port,
)

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-only-session-secret-0123456789abcdef"
# (label, messages per second per user, distinct part id per message); warm-up not reported
PHASES = (
    ("warm-up", 2.0, True),
    ("idle: sockets open, nothing published", 0.0, True),
    ("4/s per user (the 250 ms tick), distinct ids", 4.0, True),
    ("20/s per user, distinct ids", 20.0, True),
    ("40/s per user, distinct ids", 40.0, True),
    ("20/s per user, one id (AAPL)", 20.0, False),
)
ROW = (
    '<div id="{id}" role="row" class="row" data-symbol="AAPL" data-ts="{ts:.1f}">'
    '<div role="cell" class="ticker">AAPL</div><div role="cell" class="num qty">120</div>'
    '<div role="cell" class="num avg-cost">201.10</div>'
    '<div role="cell" class="num last-price flash-up">{last:.2f}</div>'
    '<div role="cell" class="num pnl pnl-pos">+3,452.40</div>'
    '<div role="cell" class="num day-chg pnl-neg">-118.80</div></div>'
)


@dataclass
class Target:
    name: str
    factory: str
    env: dict[str, str]
    users: list[int]
    specs: Any  # port -> list[SocketSpec]


async def _sleep_until(epoch_ms: float) -> None:
    await asyncio.sleep(max(0.0, epoch_ms / 1000 - time.time()))


async def _drive(
    nats_url: str, users: list[int], seconds: float, parent: Connection, pids: dict[str, int]
) -> list[dict[str, Any]]:
    """Publish phase after phase; the client says when each has drained."""
    import nats

    nc = await nats.connect(nats_url)
    subjects = [wire.ui_subject(u, "portfolio") for u in users]
    seq, results = 0, []
    for label, hz, distinct in PHASES:
        length = {"warm-up": min(seconds, 2.0), "idle": seconds / 2}.get(label[:4], seconds)
        phase = Phase(label, time.time() * 1000 + 300, time.time() * 1000 + 300 + length * 1000)
        parent.send(phase)
        await _sleep_until(phase.start)
        cpu0, sent, k = cpu_seconds(pids), 0, 0
        while hz and (due := phase.start + k * 1000 / hz) < phase.end:
            await _sleep_until(due)
            if time.time() * 1000 >= phase.end:
                break  # the publisher fell behind: what was sent is the offered load
            seq, k, ts = seq + 1, k + 1, time.time() * 1000
            part_id = f"portfolio-row-T{seq}" if distinct else "portfolio-row-AAPL"
            html = ROW.format(id=part_id, ts=ts, last=200 + seq % 100 / 7)
            message = {"component": "portfolio", "full": False, "ts": ts}
            data = json.dumps({**message, "parts": [{"id": part_id, "html": html}]}).encode()
            for subject in subjects:
                await nc.publish(subject, data)
            sent += len(subjects)
        await _sleep_until(phase.end)
        cpu1 = cpu_seconds(pids)
        cpu = {n: (cpu1[n] - cpu0[n]) / length for n in cpu0}
        cpu["other"] = max(0.0, cpu.pop("machine") - sum(cpu.values()))
        if not await asyncio.to_thread(parent.poll, 60):
            raise RuntimeError("the client did not report a phase")
        received, closed = parent.recv()
        results.append(
            {
                "name": label,
                "sent": sent,
                "cpu": cpu,
                "seconds": length,
                "closed": closed,
                **received,
            }
        )
    parent.send(None)
    await nc.close()
    return results


def _run_target(t: Target, nats: NatsServer, seconds: float, logs: Path) -> dict[str, Any]:
    port = free_port()
    log = open(logs / f"{t.name}.log", "wb")
    cmd = [sys.executable, "-m", "uvicorn", t.factory, "--factory", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    server = subprocess.Popen(
        cmd, env=t.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    client = ctx.Process(target=client_main, args=(child, t.specs(port)), daemon=True)
    try:
        wait_for_port(port, 30)
        client.start()
        if not parent.poll(180):
            raise RuntimeError(f"{t.name}: the client did not connect in time")
        _, opened, errors, connect_s = parent.recv()
        pids = {"server": server.pid, "client": client.pid or 0, "publisher": os.getpid()}
        pids["nats"] = nats.process.pid if nats.process else 0
        phases = run_async(_drive(nats.url, t.users, seconds, parent, pids))
        closed = phases[-1]["closed"]
        run = {"opened": opened, "errors": errors, "connect_s": connect_s, "closed": closed}
        return run | {"phases": phases, "slow": slow_consumers(logs / "nats.log")}
    finally:
        stop_group(server)
        client.join(10)
        if client.is_alive():
            client.terminate()
            client.join(5)
        log.close()
        run_log = (logs / f"{t.name}.log").read_text(errors="replace").splitlines()
        if problems := [x for x in run_log if "ERROR" in x or "WARNING" in x]:
            print(f"{t.name} logged {len(problems)} problems: {problems[:3]}", file=sys.stderr)


def _gateway(nats_url: str, users: int, tmp: Path) -> tuple[Target, Any]:
    from shared.db.migrate import upgrade

    pg = start_postgres(tmp / "pg", delete_on_exit=True)
    url = run_async(create_database(pg.get_uri(), "bench_relay"))
    upgrade(url)
    creds = run_async(seed_sessions(url, users, SECRET, 3600))
    env = {**os.environ, "DATABASE_URL": url, "NATS_URL": nats_url, "LOG_LEVEL": "WARNING"}
    env |= {"APP_ENV": "development", "GATEWAY_SESSION_SECRET": SECRET}

    def specs(port: int) -> list[SocketSpec]:
        base, origin = f"ws://127.0.0.1:{port}/ws?csrf=", f"http://127.0.0.1:{port}"
        return [SocketSpec(base + csrf, origin, {"Cookie": c}) for _uid, c, csrf in creds]

    users_ids = [uid for uid, _c, _csrf in creds]
    return Target("gateway", "gateway.app:create_app", env, users_ids, specs), pg


def _baseline(nats_url: str, users: int) -> Target:
    def specs(port: int) -> list[SocketSpec]:
        return [SocketSpec(f"ws://127.0.0.1:{port}/ws?user={u}") for u in range(1, users + 1)]

    env = {**os.environ, "NATS_URL": nats_url}
    factory = "bench.relay_support:baseline_app"
    return Target("baseline", factory, env, list(range(1, users + 1)), specs)


def _num(value: float, spec: str = ",.0f") -> str:
    return "–" if value != value else format(value, spec)  # NaN: nothing to measure


def _rows(name: str, run: dict[str, Any]) -> list[str]:
    lines = []
    for (label, _hz, _d), p in zip(PHASES[1:], run["phases"][1:], strict=True):
        s, cpu, parts = p["seconds"], p["cpu"], p["parts"]
        delivered = (parts + p["late_parts"]) / p["sent"] if p["sent"] else float("nan")
        per_part = cpu["server"] * s / parts * 1e6 if parts else float("nan")
        per_frame = parts / p["frames"] if p["frames"] else float("nan")
        lines.append(
            f"| {name} | {label} | {p['sent'] / s:,.0f} | {p['frames'] / s:,.0f} "
            f"| {parts / s:,.0f} | {_num(per_frame, '.2f')} | {_num(delivered, '.0%')} "
            f"| {p['drain_s']:.1f} | {_num(p['p50'], ',.1f')} | {_num(p['p95'], ',.1f')} "
            f"| {cpu['server']:.0%} | {_num(per_part)} | {cpu['client']:.0%} "
            f"| {cpu['nats']:.0%} | {cpu['publisher']:.0%} | {cpu['other']:.0%} |"
        )
    return lines


def _ratio(base: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    lines = [
        "| phase | parts/s gateway ÷ baseline | frames/s gateway ÷ baseline "
        "| latency p50 gateway ÷ baseline | server CPU per part gateway ÷ baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    pairs = zip(PHASES[2:], base["phases"][2:], gate["phases"][2:], strict=True)
    for (label, _hz, _d), b, g in pairs:
        b_cpu, g_cpu = (
            b["cpu"]["server"] / max(1, b["parts"]),
            g["cpu"]["server"] / max(1, g["parts"]),
        )
        lines.append(
            f"| {label} | {g['parts'] / max(1, b['parts']):.2f} "
            f"| {g['frames'] / max(1, b['frames']):.2f} | {g['p50'] / b['p50']:.2f} "
            f"| {g_cpu / b_cpu:.2f} |"
        )
    best = [max(r["phases"][2:], key=lambda p: p["parts"]) for r in (base, gate)]
    rates = [p["parts"] / p["seconds"] for p in best]
    saturated = [p["parts"] < 0.95 * p["sent"] for p in best]  # fell behind while publishing
    verdict = (
        f"gateway ÷ baseline **{rates[1] / rates[0]:.2f}** (DESIGN §7 budget: ≥ 0.5)"
        if any(saturated)
        else "neither was saturated, so this ratio is 1 by construction: compare CPU per part"
    )
    lines.append(
        f"\nMost parts/s delivered in any phase: baseline {rates[0]:,.0f} ({best[0]['name']}), "
        f"gateway {rates[1]:,.0f} ({best[1]['name']}): {verdict}."
    )
    return lines


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--quick", action="store_true", help="200 sockets, 5 s phases")
    args = parser.parse_args(argv)
    sockets, seconds = (200, 5.0) if args.quick else (args.sockets, args.seconds)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer(tmp / "nats").start(log_file=tmp / "nats.log")
        pg = None
        try:
            baseline = _run_target(_baseline(nats.url, sockets), nats, seconds, tmp)
            target, pg = _gateway(nats.url, sockets, tmp)
            gateway = _run_target(target, nats, seconds, tmp)
        finally:
            nats.stop()
            if pg is not None:
                pg._cleanup()
    head = (
        "| server | phase | offered msg/s | frames/s | parts/s | parts/frame "
        "| delivered | drain s | latency p50 ms | p95 ms | server CPU | server CPU µs/part "
        "| client CPU | nats CPU | publisher CPU | other CPU |\n|---|---|" + "---:|" * 14
    )
    runs = {"baseline": baseline, "gateway": gateway}
    row = len(ROW.format(id="portfolio-row-T123456", ts=time.time() * 1000, last=1.0))
    notes = "; ".join(
        f"{n}: {r['opened']:,} sockets open in {r['connect_s']:.1f} s, {r['closed']} closed "
        f"during the run, nats-server slow-consumer events so far {r['slow']}"
        + (f", connect errors {r['errors']}" if r["errors"] else "")
        for n, r in runs.items()
    )
    out = (
        "### NATS → WebSocket relay: gateway vs bare nats-py + Starlette baseline\n\n"
        f"{sockets:,} sockets; each phase publishes for {seconds:g} s (idle {seconds / 2:g} s) "
        "after a 2 s warm-up, then waits until no frame has arrived for 1 s (*drain*; at most "
        "20 s) before the next. Rates count frames received while publishing; *delivered* = "
        "parts received by the end of the drain ÷ messages published. Everything on 127.0.0.1, "
        f"1-min load average at start {load:.2f} on {os.cpu_count()} CPUs shared by server, "
        f"nats-server, client and publisher. Each message is one {row}-byte row part; latency "
        "= client receipt − publish time (`data-ts`) of every part of the phase. The gateway "
        "keeps the newest part per id, so with one id it delivers fewer parts by design; with "
        "distinct ids every part must arrive. CPU columns are % of one core while publishing; "
        "*other* is everything else on the machine: noise, and PostgreSQL for the gateway. "
        f"{notes}.\n\n"
        + head
        + "\n"
        + "\n".join(_rows("baseline", baseline) + _rows("gateway", gateway))
        + "\n\n"
        + "\n".join(_ratio(baseline, gateway))
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
