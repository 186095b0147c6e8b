"""Takeover after SIGKILL: how long a trader's panel waits for its new producer.

``python -m bench takeover [--users 50] [--kills 10] [--feed-kills 6] [--lease-ttl S]
[--quick]``

The live benchmark's stack and seeding (:mod:`bench.live_stack`) with two replicas each of
portfolio, watchlist and risk (and of the pricefeed, when its leader/standby code is in the
tree), the shipped ``LEASE_TTL_S`` unless ``--lease-ttl`` is given. N traders hold a
browser-like socket each through the gateway (:mod:`bench.takeover_support`). Then, kill
after kill, a service in turn (portfolio, watchlist, risk; the first replica, then the
second): SIGKILL the replica that owns a known set of those traders (rendezvous hashing over
``<service>-1``, ``<service>-2``), and per affected socket time the kill → the first frame
carrying that component's root part (the full render the new owner sends). Before the next
kill the launcher has restarted the replica, every replica owns its share of the live
partitions again (``component_live_partitions``), and no full render has reached any socket
for a few seconds. The pricefeed: SIGKILL the leader (``pricefeed_leader`` = 1), time the
kill → the next ``prices.ticks`` message under a new lease epoch (its ``seq`` must continue
upward), and wait until both replicas are up and exactly one leads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.live_stack import Stack
from bench.replica_support import metric, owner, quiet_machine, settle, shares
from bench.takeover_report import FeedKill, Kill, Takeovers, table, warnings
from bench.takeover_support import COMPONENT_OF, Sockets, TickWatch
from shared.devservers import run_async
from shared.leases import DEFAULT_TTL_S

__all__ = ["main"]

SERVICES = tuple(COMPONENT_OF)  # portfolio, watchlist, risk
RENDER_CAP_S = 60.0  # an affected socket without a full render by then counts as missing
QUIET_S = 3.0  # no full render anywhere this long before a kill
BACK_CAP_S = 90.0
GAINED = "component_live_partitions_gained_total"
FEED_TAKEOVERS = "pricefeed_takeovers_total"


@dataclass(frozen=True)
class Options:
    users: int
    kills: int
    feed_kills: int
    stops: int
    feed: bool  # the pricefeed runs leader + standby


def _feed_has_standby() -> bool:
    return importlib.util.find_spec("services.pricefeed.leadership") is not None


def _feed_ttl() -> str:
    from services.pricefeed.settings import PricefeedSettings

    field = PricefeedSettings.model_fields.get("lease_ttl_s")
    return f"{field.default:g}" if field is not None else "?"


async def _ready(client: httpx.AsyncClient, port: int, since: float) -> float:
    """Seconds from ``since`` until ``port`` answers ``/readyz`` with 200."""
    while time.time() - since < BACK_CAP_S:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                return time.time() - since
        await asyncio.sleep(0.1)
    raise TimeoutError(f":{port} not ready {BACK_CAP_S:.0f} s after the kill")


async def _quiet(sockets: Sockets) -> None:
    for _ in range(150):  # at most 30 s
        if time.time() - sockets.last_root() >= QUIET_S:
            return
        await asyncio.sleep(0.2)


def _signal(stack: Stack, name: str, sig: signal.Signals) -> float:
    stack.resolve()
    os.kill(stack.procs[name].pid, sig)
    return time.time()


def _metrics(ports: dict[str, int], names: list[str], name: str) -> dict[str, float | None]:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        return {n: metric(client, ports[n], name) for n in names}


async def _kill_one(stack: Stack, sockets: Sockets, kill: Kill) -> None:
    """SIGKILL (the launcher restarts it) or SIGSTOP (frozen until the survivor took over,
    then SIGCONT) the replica ``kill.replica``; time its users' full renders."""
    component = COMPONENT_OF[kill.service]
    names = stack.names(kill.service)
    affected = [s for s in sockets.socks if owner(s.trader.user_id, names) == kill.replica]
    others = [s for s in sockets.socks if s not in affected]
    kill.affected = len(affected)
    survivor = next(n for n in names if n != kill.replica)
    kill.share = shares(names)[kill.replica][0]
    await _quiet(sockets)
    gained0 = {n: v or 0.0 for n, v in _metrics(stack.ports, names, GAINED).items()}
    if kill.how == "SIGKILL":
        gained0[kill.replica] = 0.0  # a new process counts from zero
    t0 = kill.at = _signal(stack, kill.replica, signal.Signals[kill.how])
    if kill.how == "SIGKILL":
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            kill.ready_s = await _ready(client, stack.ports[kill.replica], t0)
    for _ in range(int(RENDER_CAP_S * 10)):  # at most RENDER_CAP_S
        if time.time() - t0 > RENDER_CAP_S:
            break
        if all(s.first_root_after(component, t0) for s in affected):
            break
        await asyncio.sleep(0.1)
    done = [s.first_root_after(component, t0) for s in affected]
    kill.render_s = [t - t0 for t in done if t is not None]
    kill.missing = sum(t is None for t in done)
    end = max((t for t in done if t is not None), default=time.time())
    kill.others_rendered = sum(
        any(t0 < r <= end for r in s.roots.get(component, ())) for s in others
    )
    kill.survivor_gained = int(
        (_metrics(stack.ports, [survivor], GAINED)[survivor] or 0) - gained0[survivor]
    )
    if kill.how == "SIGSTOP":
        _signal(stack, kill.replica, signal.SIGCONT)
    await asyncio.to_thread(settle, stack.ports, SERVICES, BACK_CAP_S)
    kill.settled_s = time.time() - t0
    after = _metrics(stack.ports, names, GAINED)
    kill.survivor_total = int((after[survivor] or 0) - gained0[survivor])
    kill.killed_total = int((after[kill.replica] or 0) - gained0[kill.replica])
    stack.resolve()


async def _kill_leader(stack: Stack, ticks: TickWatch, kill: FeedKill) -> None:
    names = stack.names("pricefeed")
    leading = _metrics(stack.ports, names, "pricefeed_leader")
    leaders = [n for n, v in leading.items() if v == 1]
    if len(leaders) != 1:
        raise RuntimeError(f"expected one pricefeed leader, found {leading}")
    kill.replica = leaders[0]
    survivor = next(n for n in names if n != kill.replica)
    taken0 = _metrics(stack.ports, [survivor], FEED_TAKEOVERS)[survivor] or 0.0
    t0 = kill.at = _signal(stack, kill.replica, signal.SIGKILL)
    kill.before = ticks.last_before(t0)
    epoch = kill.before.epoch if kill.before is not None and kill.before.epoch else -1
    kill.after = await ticks.first_after(t0, BACK_CAP_S, epoch)
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        kill.ready_s = await _ready(client, stack.ports[kill.replica], t0)
    kill.survivor_took = (_metrics(stack.ports, [survivor], FEED_TAKEOVERS)[survivor] or 0) > taken0
    for _ in range(int(BACK_CAP_S * 5)):  # both up, exactly one leading
        leading = _metrics(stack.ports, names, "pricefeed_leader")
        if sorted(leading.values(), key=str) == [0, 1]:
            kill.leader_after = next(n for n, v in leading.items() if v == 1)
            kill.settled_s = time.time() - t0
            break
        await asyncio.sleep(0.2)
    stack.resolve()


async def _measure(stack: Stack, opts: Options, out: Takeovers) -> None:
    ticks = TickWatch()
    await ticks.start(stack.env["NATS_URL"])
    sockets = Sockets(stack.gateway_port, stack.traders[: opts.users])
    try:
        await sockets.open(60.0)
        plan = [("SIGKILL", i) for i in range(opts.kills)]
        plan += [("SIGSTOP", i) for i in range(opts.stops)]
        for n, (how, i) in enumerate(plan, start=1):
            service = SERVICES[i % len(SERVICES)]
            kill = Kill(n, service, f"{service}-{(i // len(SERVICES)) % 2 + 1}", how)
            out.kills.append(kill)
            print(f"takeover: {how} {kill.n}, {kill.replica} …", file=sys.stderr, flush=True)
            try:
                await _kill_one(stack, sockets, kill)
            except Exception as exc:
                kill.failed = f"{type(exc).__name__}: {str(exc)[:200]}"
                print(f"takeover: {kill.failed}", file=sys.stderr)
        for i in range(opts.feed_kills if opts.feed else 0):
            fk = FeedKill(i + 1)
            out.feed.append(fk)
            print(f"takeover: pricefeed leader kill {fk.n} …", file=sys.stderr, flush=True)
            try:
                await _kill_leader(stack, ticks, fk)
            except Exception as exc:
                fk.failed = f"{type(exc).__name__}: {str(exc)[:200]}"
                print(f"takeover: {fk.failed}", file=sys.stderr)
            await asyncio.sleep(2.0)
    finally:
        out.reconnects = sum(s.reconnects for s in sockets.socks)
        out.errors = sockets.errors[:3]
        await sockets.close()
        await ticks.stop()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench takeover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=50, help="trader sockets (50)")
    parser.add_argument("--kills", type=int, default=10, help="component replica kills (10)")
    parser.add_argument("--stops", type=int, default=3, help="SIGSTOP instead (3)")
    parser.add_argument("--feed-kills", type=int, default=6, help="pricefeed leader kills (6)")
    parser.add_argument("--lease-ttl", type=float, help="LEASE_TTL_S (default: the shipped 5)")
    parser.add_argument("--wait", type=float, default=300.0, help="most s to wait for quiet")
    parser.add_argument("--quick", action="store_true", help="20 sockets, 3 kills, 1 stop, 2 feed")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.kills, args.stops, args.feed_kills = min(args.users, 20), 3, 1, 2
        args.wait = 0.0
    opts = Options(args.users, args.kills, args.feed_kills, args.stops, _feed_has_standby())
    ttl = f"{args.lease_ttl:g}" if args.lease_ttl is not None else f"{DEFAULT_TTL_S:g} (default)"
    out = Takeovers(opts.users, ttl, opts.feed, _feed_ttl() if opts.feed else "")
    out.busy_before, _waited = quiet_machine(0.5, args.wait)
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp_name:
        stack = Stack(Path(tmp_name))
        try:
            stack.prepare(opts.users)
            for key in ("LEASE_TTL_S", "PRICEFEED_LEASE_TTL_S", "REPLICAS"):
                stack.env.pop(key, None)
            if args.lease_ttl is not None:
                stack.env["LEASE_TTL_S"] = str(args.lease_ttl)
            counts = dict.fromkeys(SERVICES, 2) | ({"pricefeed": 2} if opts.feed else {})
            stack.set_replicas(counts)
            stack.start()
            settle(stack.ports, SERVICES)
            run_async(_measure(stack, opts, out))
            out.deaths = stack.deaths()
            if stack.log_path is not None:
                out.warnings = warnings(stack.log_path.read_text(errors="replace"))
        finally:
            stack.stop_all()
    text = table(out)
    print(text)
    return text


if __name__ == "__main__":
    main()
