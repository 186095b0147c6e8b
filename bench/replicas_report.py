"""What the replicas benchmark measured (:mod:`bench.bench_replicas`), and its tables."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.live_report import Level
from bench.live_support import percentile
from bench.replica_support import service_of

if TYPE_CHECKING:
    from bench.live_stack import Stack

__all__ = ["Run", "table"]


@dataclass
class Run:
    k: int  # processes of each replicated service
    round: int
    level: Level
    shares: dict[str, tuple[int, int]] = field(default_factory=dict)  # partitions, users
    idle: dict[str, float] = field(default_factory=dict)  # cores per process, no socket open
    settle_s: float = float("nan")
    busy_before: float = float("nan")  # machine cores busy before the start (ours stopped)
    waited_s: float = 0.0
    load_before: float = float("nan")
    max_other: float = float("inf")  # more CPU of other work in the window: noisy

    @property
    def measured(self) -> bool:
        return not self.level.failed and bool(self.level.result)

    @property
    def noisy(self) -> bool:
        return self.measured and self.level.cpu.get("other", 0.0) > self.max_other

    @property
    def ok(self) -> bool:
        """Counted in the medians: measured, and the machine was not busy with other work."""
        return self.measured and not self.noisy

    def latency(self, q: float) -> float:
        values = [v for vs in self.level.result["samples"].values() for v in vs]
        return percentile(values, q)


def _med(values: Iterable[float]) -> float:
    real = [v for v in values if v == v]
    return statistics.median(real) if real else float("nan")


def _f(value: float, spec: str = ".2f") -> str:
    return "–" if value != value else format(value, spec)


def _by_k(runs: list[Run]) -> dict[int, list[Run]]:
    out: dict[int, list[Run]] = {}
    for run in runs:
        out.setdefault(run.k, []).append(run)
    return out


def _summary(runs: list[Run], services: tuple[str, ...]) -> str:
    names = (*services, "gateway", "pricefeed")
    head = (
        "| replicas | runs | tick → socket p50 / p99 ms | "
        + " | ".join(names)
        + " | replicated services | stack | machine |\n|---:|---:|---|"
        + "---:|" * (len(names) + 3)
    )
    rows = []
    for k, group in sorted(_by_k(runs).items()):
        ok = [r for r in group if r.ok]
        if not ok:
            rows.append(f"| {k} | 0 of {len(group)} |" + " – |" * (len(names) + 4))
            continue
        cpu = {n: _med(r.level.cpu.get(n, float("nan")) for r in ok) for n in names}
        replicated = _med(sum(r.level.cpu.get(n, 0.0) for n in services) for r in ok)
        rows.append(
            f"| {k} | {len(ok)} of {len(group)} "
            f"| {_f(_med(r.latency(0.5) for r in ok), '.0f')} / "
            f"{_f(_med(r.latency(0.99) for r in ok), '.0f')} | "
            + " | ".join(_f(cpu[n], ".3f") for n in names)
            + f" | **{_f(replicated, '.3f')}** | {_f(_med(r.level.cpu['stack'] for r in ok))} "
            f"| {_f(_med(r.level.cpu['machine'] for r in ok))} |"
        )
    return head + "\n" + "\n".join(rows)


def _cell(group: list[Run], service: str, values: str) -> str:
    """``**total**: each (users) / …`` for one service at one k, medians over ``group``."""
    labels = sorted({n for r in group for n in r.shares if service_of(n) == service})
    if not labels:
        return "–"
    source = (lambda r: r.level.per_process) if values == "window" else (lambda r: r.idle)
    each = {n: _med(source(r).get(n, float("nan")) for r in group) for n in labels}
    total = _med(sum(source(r).get(n, 0.0) for n in labels) for r in group)
    if labels == [service]:
        return f"**{_f(total, '.3f')}**"
    parts = " / ".join(f"{_f(each[n], '.3f')} ({group[0].shares[n][1]})" for n in labels)
    return f"**{_f(total, '.3f')}**: {parts}"


def _per_replica(runs: list[Run], services: tuple[str, ...], values: str) -> str:
    groups = {k: [r for r in g if r.ok] for k, g in sorted(_by_k(runs).items())}
    head = (
        "| service | "
        + " | ".join(f"{k} replica{'s' if k > 1 else ''}" for k in groups)
        + " |\n|---|"
        + "---|" * len(groups)
    )
    rows = [
        f"| {service} | " + " | ".join(_cell(g, service, values) for g in groups.values()) + " |"
        for service in services
    ]
    return head + "\n" + "\n".join(rows)


def _ratios(runs: list[Run], services: tuple[str, ...]) -> str:
    groups = {k: [r for r in g if r.ok] for k, g in sorted(_by_k(runs).items())}
    if 1 not in groups or not groups[1] or len(groups) < 2:
        return ""
    others = [k for k in groups if k != 1 and groups[k]]
    head = (
        "| service | "
        + " | ".join(f"total {k} ÷ 1" for k in others)
        + " | "
        + " | ".join(f"each of {k} ÷ 1 (1/{k} = {1 / k:.2f})" for k in others)
        + " |\n|---|"
        + "---:|" * (2 * len(others))
    )

    def total(k: int, names: tuple[str, ...]) -> float:
        return _med(sum(r.level.cpu.get(n, 0.0) for n in names) for r in groups[k])

    rows = []
    for label, names in [*((s, (s,)) for s in services), ("all replicated", services)]:
        base = total(1, names)
        t = [total(k, names) / base if base else float("nan") for k in others]
        e = [total(k, names) / k / base if base else float("nan") for k in others]
        rows.append(
            f"| {label} | "
            + " | ".join(_f(v) for v in t)
            + " | "
            + " | ".join(_f(v) for v in e)
            + " |"
        )
    return head + "\n" + "\n".join(rows)


def _runs(runs: list[Run], services: tuple[str, ...]) -> str:
    names = (*services, "gateway", "pricefeed")
    head = (
        "| round | replicas | tick → socket p50 / p99 ms | "
        + " | ".join(names)
        + " | stack | machine | other | busy before start (waited) | partitions settled "
        "| notes |\n|---:|---:|---|" + "---:|" * (len(names) + 5) + "---|"
    )
    rows = []
    for r in runs:
        before = f"{_f(r.busy_before)} ({r.waited_s:.0f} s)"
        if not r.measured:
            rows.append(
                f"| {r.round} | {r.k} | failed: {r.level.failed} |"
                + " |" * (len(names) + 3)
                + f" {before} | {_f(r.settle_s, '.1f')} s | |"
            )
            continue
        c = r.level.cpu
        notes = [n for n in r.level.notes if "sockets open" not in n]
        if r.noisy:
            notes.insert(0, f"**not counted: other work above {r.max_other:g} core, repeated**")
        rows.append(
            f"| {r.round} | {r.k} | {_f(r.latency(0.5), '.0f')} / {_f(r.latency(0.99), '.0f')} | "
            + " | ".join(_f(c.get(n, float("nan"))) for n in names)
            + f" | {_f(c['stack'])} | {_f(c['machine'])} | {_f(c.get('other', float('nan')))} "
            f"| {before} | {_f(r.settle_s, '.1f')} s | {'; '.join(notes)} |"
        )
    return head + "\n" + "\n".join(rows)


def table(runs: list[Run], stack: Stack, services: tuple[str, ...], warmup: float) -> str:
    n = runs[0].level.n if runs else 0
    window = runs[0].level.window_s if runs else 0.0
    rounds = max((r.round for r in runs), default=0)
    method = (
        f"{n:,} traders connected through one gateway ({stack.symbols} symbols, the live "
        "benchmark's seeding, load generator and ~2 market orders/s), with 1, 2 or 3 OS "
        f"processes of each of {', '.join(services)} (`<SERVICE>_REPLICAS=k`; the gateway and "
        "the pricefeed stay single). Each run starts the launcher, waits until every replica "
        "owns its rendezvous share of the 64 live partitions (the `component_live_partitions` "
        f"gauge), then {warmup:g} s of warm-up and a {window:g} s window; CPU is every OS "
        "process's (psutil), as cores, and a service's is the sum of its replicas'. "
        f"{rounds} round(s), each running every replica count in turn; **medians over the "
        "rounds**. Tick → socket latency as in `live.md` (from the tick's `ts` to the frame "
        f"showing the price). {os.cpu_count()} CPUs shared by the load generator, the stack "
        "and other engineers' work: the machine is noisy, so compare medians, not single runs."
    )
    parts = [
        "### CPU per service and per replica at the same load",
        method,
        "#### Summary (cores, medians)",
        _summary(runs, services),
        "#### Per replica during the window (cores, medians; in brackets the users of the "
        f"{n:,} it owns)",
        _per_replica(runs, services, "window"),
        "#### Ratios to one replica (medians)",
        _ratios(runs, services) or "(needs runs with 1 replica and another count)",
        "#### Per replica with no socket open (cores over 3 s after the start, medians)",
        "The fixed cost of a replica: it follows every tick and keeps its price book and "
        "membership whatever it owns.",
        _per_replica(runs, services, "idle"),
        "#### Every run",
        _runs(runs, services),
    ]
    return "\n\n".join(parts)
