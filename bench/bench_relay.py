"""NATS → browser WebSocket relay throughput: the real gateway against a bare baseline relay.

``python -m bench.bench_relay [--sockets N] [--seconds S] [--quick]`` prints markdown tables.

Same run, same load, one target after the other: a nats-server; the server under test in a
uvicorn subprocess (the baseline of :mod:`bench.relay_support`, then ``gateway.app:create_app``
on an embedded PostgreSQL with benchmark users and sessions written directly); a client process
holding every socket (``websockets``); this process publishes as the component services do: at
a fixed rate per user, one ``ui.<partition>.portfolio`` message per live partition with an
update for each of its users (one row part each, its ``data-ts`` the publish time), and, for
tick-driven phases, the ``tick`` in each and a ``ui.shared.portfolio`` "done with this tick"
marker after them. Nothing leaves 127.0.0.1 and every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
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
COMPONENT = "portfolio"


@dataclass(frozen=True)
class Load:
    label: str
    hz: float  # updates per second per user (one part each)
    distinct: bool  # a new part id per update (every part must arrive) or always the same
    tick: bool = True  # tick-driven (``tick`` + marker) or urgent (no tick: event results)


# the warm-up is not reported
LOADS = (
    Load("warm-up", 2.0, True),
    Load("idle: sockets open, nothing published", 0.0, True),
    Load("4/s per user (the 250 ms tick), distinct ids", 4.0, True),
    Load("4/s per user, no tick (urgent, like event results)", 4.0, True, tick=False),
    Load("20/s per user, distinct ids", 20.0, True),
    Load("40/s per user, distinct ids", 40.0, True),
    Load("20/s per user, one id (AAPL)", 20.0, False),
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
    partitions: dict[str, list[int]] = {}
    for user in users:
        partitions.setdefault(wire.ui_subject(user, COMPONENT), []).append(user)
    shared_subject = wire.ui_shared_subject(COMPONENT)
    src, seq, tick, results = secrets.token_hex(6), 0, 0, []
    for load in LOADS:
        label = load.label
        length = {"warm-up": min(seconds, 2.0), "idle": seconds / 2}.get(label[:4], seconds)
        phase = Phase(label, time.time() * 1000 + 300, time.time() * 1000 + 300 + length * 1000)
        parent.send(phase)
        await _sleep_until(phase.start)
        cpu0, sent, messages, k = cpu_seconds(pids), 0, 0, 0
        while load.hz and (due := phase.start + k * 1000 / load.hz) < phase.end:
            await _sleep_until(due)
            if time.time() * 1000 >= phase.end:
                break  # the publisher fell behind: what was sent is the offered load
            tick, k, ts = tick + 1, k + 1, time.time() * 1000
            part_id = f"portfolio-row-T{tick}" if load.distinct else "portfolio-row-AAPL"
            part = {"id": part_id, "html": ROW.format(id=part_id, ts=ts, last=200 + tick % 100 / 7)}
            head: dict[str, Any] = {"component": COMPONENT, "ts": ts, "src": src}
            if load.tick:
                head["tick"] = tick
            for subject, members in partitions.items():
                seq += 1
                updates = [wire.ui_update(u, [part], full=False) for u in members]
                data = json.dumps({**head, "seq": seq, "updates": updates}).encode()
                await nc.publish(subject, data)
            sent, messages = sent + len(users), messages + len(partitions)
            if load.tick:  # this component is done with the tick
                seq += 1
                marker = {**head, "seq": seq, "topics": {}}
                await nc.publish(shared_subject, json.dumps(marker).encode())
                messages += 1
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
                "messages": messages,
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
        partitions = len({wire.partition_of(u) for u in t.users})
        slow = slow_consumers(logs / "nats.log")
        return run | {"phases": phases, "slow": slow, "partitions": partitions}
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
    for load, p in zip(LOADS[1:], run["phases"][1:], strict=True):
        s, cpu, parts = p["seconds"], p["cpu"], p["parts"]
        delivered = (parts + p["late_parts"]) / p["sent"] if p["sent"] else float("nan")
        per_part = cpu["server"] * s / parts * 1e6 if parts else float("nan")
        per_frame = parts / p["frames"] if p["frames"] else float("nan")
        lines.append(
            f"| {name} | {load.label} | {p['sent'] / s:,.0f} | {p['messages'] / s:,.0f} "
            f"| {p['frames'] / s:,.0f} | {p['bare'] / s:,.0f} | {parts / s:,.0f} "
            f"| {_num(per_frame, '.2f')} "
            f"| {_num(delivered, '.0%')} | {p['drain_s']:.1f} | {_num(p['p50'], ',.1f')} "
            f"| {_num(p['p95'], ',.1f')} | {cpu['server']:.0%} | {_num(per_part)} "
            f"| {cpu['client']:.0%} | {cpu['nats']:.0%} | {cpu['publisher']:.0%} "
            f"| {cpu['other']:.0%} |"
        )
    return lines


def _ratio(base: dict[str, Any], gate: dict[str, Any]) -> list[str]:
    lines = [
        "| phase | parts/s gateway ÷ baseline | frames/s gateway ÷ baseline "
        "| latency p50 gateway ÷ baseline | server CPU per part gateway ÷ baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    pairs = list(zip(LOADS[2:], base["phases"][2:], gate["phases"][2:], strict=True))
    for load, b, g in pairs:
        b_cpu = b["cpu"]["server"] / max(1, b["parts"])
        g_cpu = g["cpu"]["server"] / max(1, g["parts"])
        lines.append(
            f"| {load.label} | {g['parts'] / max(1, b['parts']):.2f} "
            f"| {g['frames'] / max(1, b['frames']):.2f} | {_num(g['p50'] / b['p50'], '.2f')} "
            f"| {_num(g_cpu / b_cpu if b_cpu else float('nan'), '.2f')} |"
        )
    # one id: the gateway keeps only the newest part by design, so it is not a capacity figure
    distinct = [(b, g) for load, b, g in pairs if load.distinct]
    best = [max((pair[i] for pair in distinct), key=lambda p: p["parts"]) for i in (0, 1)]
    rates = [p["parts"] / p["seconds"] for p in best]
    saturated = [p["parts"] < 0.95 * p["sent"] for p in best]  # fell behind while publishing
    verdict = (
        f"gateway ÷ baseline **{rates[1] / rates[0]:.2f}** (DESIGN §7 budget: ≥ 0.5)"
        if any(saturated)
        else "neither was saturated, so this ratio is 1 by construction: compare CPU per part"
    )
    lines.append(
        f"\nMost parts/s delivered in a distinct-id phase: baseline {rates[0]:,.0f} "
        f"({best[0]['name']}), gateway {rates[1]:,.0f} ({best[1]['name']}): {verdict}."
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
        "| server | phase | offered parts/s | NATS msgs/s | frames/s | other frames/s | parts/s "
        "| parts/frame "
        "| delivered | drain s | latency p50 ms | p95 ms | server CPU | server CPU µs/part "
        "| client CPU | nats CPU | publisher CPU | other CPU |\n|---|---|" + "---:|" * 16
    )
    runs = {"baseline": baseline, "gateway": gateway}
    row = len(ROW.format(id="portfolio-row-T123456", ts=time.time() * 1000, last=1.0))
    notes = "; ".join(
        f"{n}: {r['opened']:,} sockets open in {r['connect_s']:.1f} s, {r['closed']} closed "
        f"during the run, nats-server slow-consumer events so far {r['slow']}"
        + (f", connect errors {r['errors']}" if r["errors"] else "")
        for n, r in runs.items()
    )
    per_message = sockets / baseline["partitions"]
    out = (
        "### NATS → WebSocket relay: gateway vs bare nats-py + Starlette baseline\n\n"
        f"{sockets:,} sockets, one per user; each phase publishes for {seconds:g} s (idle "
        f"{seconds / 2:g} s) after a 2 s warm-up, then waits until no frame has arrived for 1 s "
        "(*drain*; at most 20 s) before the next. Published as the component services do: "
        "at each step, one `ui.<partition>.portfolio` message per partition holding one "
        f"update per user of that partition ({per_message:.1f} users per message on average, "
        f"{wire.LIVE_PARTITIONS} partitions), each update one {row}-byte row part; in "
        "tick-driven phases every message carries the step as `tick` and a "
        "`ui.shared.portfolio` marker (no parts) follows, saying the component is done with "
        "it; *no tick* phases send no marker (the gateway sends such parts after its 10 ms "
        "gather). *NATS msgs/s* counts both. Rates count frames received while publishing; "
        "*delivered* = parts received by the end of the drain ÷ parts published. Latency = "
        "client receipt − publish time (`data-ts`) of every part of the phase. The baseline "
        "(`bench.relay_support.baseline_app`) is the least a relay of this format does: one "
        "`ui.>` subscription, each user's parts of a message to that user's sockets as one "
        "text frame; no checks, no per-socket buffer, no pacing, no tick wait, shared "
        "messages ignored. The gateway sends a socket at most one frame per 100 ms "
        "(`GATEWAY_WS_FRAME_INTERVAL_MS`; 500 ms while its event loop runs late), holding the "
        "newest part per id: above 10 updates/s per user its frames carry several parts, and "
        "with one id it delivers fewer parts by design; with distinct ids every part must "
        "arrive. Everything on 127.0.0.1, 1-min load average at start "
        f"{load:.2f} on {os.cpu_count()} CPUs shared by server, nats-server, client and "
        "publisher. CPU columns are % of one core while publishing; *other* is everything "
        "else on the machine: noise, and PostgreSQL for the gateway. "
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
