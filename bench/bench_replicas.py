"""CPU per process with 1, 2 and 3 replicas of the component services at the same load.

``python -m bench replicas [--users 300] [--replicas 1,2,3] [--rounds 3] [--window S]
[--services portfolio,watchlist,risk,orders] [--max-other 0.25] [--retries 2] [--quick]``

One database and nats-server for the run, seeded as the live benchmark's
(:mod:`bench.live_stack`). Then, round after round, for each replica count k in turn (so
a slow drift of the shared machine spreads over every k): the launcher starts with
``<SERVICE>_REPLICAS=k`` for the component services (the gateway and the pricefeed stay
single, so the load generator's view is the same), the benchmark waits until every replica
owns its rendezvous share of the 64 live partitions, and one level of the live benchmark
runs (:func:`bench.bench_live.run_level`: N browser sockets, a warm-up, the measured window
with ~2 orders/s, every socket closed). CPU is read per OS process, summed per service;
the tables give medians over the rounds. Before each start the benchmark waits (up to
``--wait`` s) for the machine to be quiet; a run during which other work used more than
``--max-other`` cores is shown but not counted, and repeated (at most ``--retries`` times).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench.bench_live import run_level
from bench.live_report import Level
from bench.live_stack import Stack
from bench.replica_support import quiet_machine, settle, shares
from bench.replicas_report import Run, table
from shared.devservers import run_async

__all__ = ["main"]

COMPONENT_SERVICES = ("portfolio", "watchlist", "risk", "orders")
QUIET_CORES = 0.5  # machine busy below this before a start (ours stopped): quiet enough


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def _one(stack: Stack, run: Run, services: tuple[str, ...], warmup: float, wait: float) -> None:
    run.busy_before, run.waited_s = quiet_machine(QUIET_CORES, wait)
    run.load_before = os.getloadavg()[0]
    stack.set_replicas({service: run.k for service in services})
    stack.start()
    try:
        run.settle_s = settle(stack.ports, services)
        user_ids = [t.user_id for t in stack.traders[: run.level.n]]
        for service in services:
            run.shares.update(shares(stack.names(service), user_ids))
        run.idle = dict(stack.idle_cores)
        run_async(run_level(stack, run.level, warmup))
    finally:
        stack.stop_launcher()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m bench replicas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=300, help="traders connected (300)")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, e.g. 1,2,3")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each count (3)")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument(
        "--services", default=",".join(COMPONENT_SERVICES), help="the services replicated"
    )
    parser.add_argument("--wait", type=float, default=300.0, help="most s to wait for quiet")
    parser.add_argument("--max-other", type=float, default=0.25, help="noisy above (cores)")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a noisy run (2)")
    parser.add_argument(
        "--quick", action="store_true", help="50 traders, 1 and 2, 1 round, 8 s, all counted"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.rounds = min(args.users, 50), 1
        args.replicas = "1,2" if args.replicas == "1,2,3" else args.replicas
        args.window = 8.0 if args.window == 20.0 else args.window
        args.wait, args.max_other, args.retries = 0.0, float("inf"), 0  # a smoke run
    counts = _ints(args.replicas)
    services = tuple(s for s in args.services.split(",") if s)
    warmup = 3.0 if args.quick else 5.0
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp_name:
        stack = Stack(Path(tmp_name))
        try:
            stack.prepare(args.users)
            for r in range(args.rounds):
                for k in counts:
                    for _attempt in range(1 + args.retries):
                        run = Run(k, r + 1, Level(args.users, args.window))
                        run.max_other = args.max_other
                        runs.append(run)
                        print(f"replicas: round {r + 1}, k={k} …", file=sys.stderr, flush=True)
                        try:
                            _one(stack, run, services, warmup, args.wait)
                        except Exception as exc:
                            run.level.failed = f"{type(exc).__name__}: {str(exc)[:300]}"
                            print(f"replicas: k={k} failed: {exc}", file=sys.stderr)
                        if not run.noisy:
                            break
        finally:
            stack.stop_all()
    out = table(runs, stack, services, warmup)
    print(out)
    return out


if __name__ == "__main__":
    main()
