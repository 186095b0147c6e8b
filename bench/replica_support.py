"""Replicas in the benchmarks' stack: where each one listens, which users it owns, and
waiting until every live partition has its owner (:mod:`bench.bench_replicas`,
:mod:`bench.bench_takeover`).

A replica is named by its ``REPLICA_ID`` (``portfolio-2``); a process that runs alone is
named by its service (``portfolio``). The launcher prints ``[launcher] 2 portfolio
replicas on :p1, :p2 behind :base``; the i-th port is ``<service>-i``.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterable

import httpx
import psutil

from shared import wire
from shared.launcher import SERVICES
from shared.leases import rendezvous_owner

__all__ = [
    "metric",
    "owner",
    "quiet_machine",
    "replica_ports",
    "service_of",
    "settle",
    "shares",
]

REPLICA_LINE = re.compile(r"\[launcher\] \d+ (\w+) replicas on ((?::\d+(?:, )?)+) behind")
PARTITIONS_GAUGE = "component_live_partitions"


def service_of(label: str) -> str:
    """``portfolio-2`` → ``portfolio`` (a replica's name → its service's)."""
    return label.split("-", 1)[0]


def replica_ports(launcher_log: str, env: dict[str, str]) -> dict[str, int]:
    """Every process's name → its HTTP port, read from the launcher's output."""
    ports = {spec.name: int(env[spec.port_env]) for spec in SERVICES}
    for match in REPLICA_LINE.finditer(launcher_log):
        service = match.group(1)
        ports.pop(service, None)  # the balancer's port, not a process's
        for i, port in enumerate(re.findall(r":(\d+)", match.group(2)), start=1):
            ports[f"{service}-{i}"] = int(port)
    return ports


def owner(user_id: int, labels: Iterable[str]) -> str:
    """The replica among ``labels`` that owns ``user_id``'s live partition once settled."""
    found = rendezvous_owner(wire.partition_of(user_id), sorted(labels))
    assert found is not None
    return found


def shares(labels: list[str], user_ids: Iterable[int] = ()) -> dict[str, tuple[int, int]]:
    """Per replica: (live partitions, users among ``user_ids``) it owns once settled."""
    partitions = Counter(rendezvous_owner(p, labels) for p in range(wire.LIVE_PARTITIONS))
    users = Counter(owner(uid, labels) for uid in user_ids)
    return {label: (partitions[label], users[label]) for label in labels}


def metric(client: httpx.Client, port: int, name: str) -> float | None:
    """One unlabelled sample of ``name`` on a process's ``/metrics`` (``None``: no answer)."""
    try:
        text = client.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def quiet_machine(limit_cores: float, max_wait_s: float) -> tuple[float, float]:
    """Wait (at most ``max_wait_s``) until the machine is busy with less than
    ``limit_cores`` over 3 s (other engineers' test suites share it); (busy cores last
    seen, seconds waited beyond the first look)."""
    t0 = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=3.0) / 100 * (psutil.cpu_count() or 1)
        waited = time.monotonic() - t0 - 3.0
        if busy < limit_cores or waited >= max_wait_s:
            return busy, max(0.0, waited)
        print(f"machine busy ({busy:.2f} cores); waiting", file=sys.stderr, flush=True)
        time.sleep(10.0)


def settle(ports: dict[str, int], services: Iterable[str], timeout_s: float = 60.0) -> float:
    """Wait until every replica of ``services`` owns exactly its rendezvous share of the
    live partitions (the ``component_live_partitions`` gauge); the seconds it took."""
    t0 = time.monotonic()
    wanted: dict[str, int] = {}
    for service in services:
        labels = sorted(label for label in ports if service_of(label) == service)
        if labels == [service]:
            wanted[service] = wire.LIVE_PARTITIONS
        else:
            wanted.update({label: n for label, (n, _u) in shares(labels).items()})
    seen: dict[str, float | None] = {}
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            seen = {label: metric(client, ports[label], PARTITIONS_GAUGE) for label in wanted}
            if all(seen[label] == n for label, n in wanted.items()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"partitions not settled in {timeout_s:.0f} s: {seen}")
            time.sleep(0.2)
