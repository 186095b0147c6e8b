"""Issue 11's targets against a run of the live benchmark (:mod:`bench.live_report`'s
levels): met or missed by how much at 1,000 traders, the largest N whose tick → socket p99
stayed within 250 ms, and the next N to run when looking for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.live_support import percentile

if TYPE_CHECKING:
    from bench.live_report import Level

__all__ = ["TARGETS", "TARGET_N", "Target", "measured", "next_probe", "targets", "within_goal"]

TARGET_N = 1_000  # issue 11's targets are for 1,000 connected traders


@dataclass(frozen=True)
class Target:
    what: str
    goal: float
    unit: str
    at_most: bool  # the goal is a ceiling (else a floor)


TARGETS = (
    Target("tick → socket p99", 250, "ms", True),
    Target("machine CPU", 1.5, "cores", True),
    Target("price updates shown (of those due)", 99, "%", False),
    Target("stack CPU per trader-second", 0.6, "ms", True),
    Target("order ack p99", 100, "ms", True),
    Target("every socket open and fully rendered", 10, "s", True),
)


def measured(level: Level) -> dict[str, float]:
    """The figures of ``level`` that :data:`TARGETS` name (NaN when not measured)."""
    r = level.result
    latency = [v for values in r["samples"].values() for v in values]
    acks = [ms for status, ms in level.orders if status.startswith("2")]
    nan = float("nan")
    return {
        "tick → socket p99": percentile(latency, 0.99),
        "machine CPU": level.cpu["machine"],
        "price updates shown (of those due)": 100 * len(latency) / r["expected"]
        if r["expected"]
        else nan,
        "stack CPU per trader-second": level.cpu["stack"] * 1000 / level.n,
        "order ack p99": percentile(acks, 0.99),
        "every socket open and fully rendered": level.rendered_all_s or nan,
    }


def targets(levels: list[Level]) -> str:
    """Issue 11's targets against the run at :data:`TARGET_N` traders: met, or missed by how
    much (empty without such a run)."""
    level = next((lv for lv in levels if lv.n == TARGET_N and not lv.failed), None)
    if level is None:
        return ""
    values = measured(level)
    rows = []
    for t in TARGETS:
        value = values[t.what]
        if value != value:
            verdict = "not measured"
        elif (value <= t.goal) if t.at_most else (value >= t.goal):
            verdict = "met"
        else:
            ratio = value / t.goal if t.at_most else t.goal / max(value, 1e-9)
            verdict = f"missed by {ratio:.1f}×"
        sign = "≤" if t.at_most else "≥"
        rows.append(
            f"| {t.what} | {sign} {t.goal:g} {t.unit} | {value:,.2f} {t.unit} | {verdict} |"
        )
    return (
        f"#### Targets at {TARGET_N:,} traders (issue 11)\n\n"
        "| target | goal | measured | |\n|---|---|---:|---|\n" + "\n".join(rows) + "\n\n"
    )


def _p99s(levels: list[Level]) -> dict[int, float]:
    """Each level's tick → socket p99 (ms), for the levels that have samples."""
    return {
        lv.n: percentile([v for values in lv.result["samples"].values() for v in values], 0.99)
        for lv in levels
        if not lv.failed and any(lv.result.get("samples", {}).values())
    }


def next_probe(
    levels: list[Level], most: int, goal_ms: float = TARGETS[0].goal, step: int = 50
) -> int | None:
    """The next N to run when looking for the largest N whose tick → socket p99 stays within
    ``goal_ms``: halfway between the largest N within it and the next one up that is not
    (1.5× the largest when none above is over, at most ``most``), in multiples of ``step``;
    ``None`` once they are within a tenth of each other (or ``step``), or none is within."""
    p99 = _p99s(levels)
    for lv in levels:  # a level that failed or showed nothing is over the goal
        p99.setdefault(lv.n, float("inf"))
    within = [n for n, ms in p99.items() if ms <= goal_ms]
    if not within:
        return None
    low = max(within)
    over = [n for n, ms in p99.items() if n > low and ms > goal_ms]
    high = min(over) if over else None
    if high is None:
        probe = min(most, int(low * 1.5) // step * step)
        return probe if probe > low else None
    if high - low <= max(step, low // 10):
        return None
    probe = (low + high) // 2 // step * step
    return probe if low < probe < high else None


def within_goal(levels: list[Level], goal_ms: float = TARGETS[0].goal) -> str:
    """The largest N of the run whose tick → socket p99 stayed within ``goal_ms``, and the
    next one up, which did not (issue 11 asks for a table at that N)."""
    p99 = _p99s(levels)
    within = [n for n, ms in sorted(p99.items()) if ms <= goal_ms]
    if not within:
        return f"No N of this run kept the tick → socket p99 within {goal_ms:g} ms.\n\n"
    n = within[-1]
    line = f"The largest N of this run with a tick → socket p99 within {goal_ms:g} ms: {n:,}"
    above = [(m, ms) for m, ms in sorted(p99.items()) if m > n]
    if above:
        m, ms = above[0]
        line += f" ({p99[n]:,.0f} ms); the next, {m:,}: {ms:,.0f} ms"
    else:
        line += f" ({p99[n]:,.0f} ms), the largest run"
    return line + ".\n\n"
