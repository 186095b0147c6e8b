"""What the takeover benchmark measured (:mod:`bench.bench_takeover`), and its tables."""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.live_support import percentile
from bench.takeover_support import Tick

__all__ = ["FeedKill", "Kill", "Takeovers", "table", "warnings"]

_NUMBERS = re.compile(r"\d+")


@dataclass
class Kill:
    """One SIGKILL of a component service's replica."""

    n: int
    service: str
    replica: str
    how: str = "SIGKILL"  # or SIGSTOP: frozen, not restarted; SIGCONT once taken over
    at: float = 0.0
    affected: int = 0  # sockets whose user the killed replica owned
    render_s: list[float] = field(default_factory=list)  # kill → full render, per socket
    missing: int = 0  # affected sockets without one within the cap
    others_rendered: int = 0  # unaffected sockets that got a full render meanwhile
    share: int = 0  # live partitions the killed replica owned
    survivor_gained: int = 0  # partitions the survivor took by the last affected full render
    survivor_total: int = 0  # … and until every share settled
    killed_total: int = 0  # partitions the killed replica (restarted or resumed) took
    ready_s: float = float("nan")  # kill → the restarted replica's /readyz
    settled_s: float = float("nan")  # kill → every replica owns its share again
    failed: str = ""


@dataclass
class FeedKill:
    """One SIGKILL of the pricefeed's leader."""

    n: int
    replica: str = ""
    at: float = 0.0
    before: Tick | None = None  # the last tick received before the kill
    after: Tick | None = None  # the first one after it from the new leader (a new epoch)
    ready_s: float = float("nan")
    survivor_took: bool = False  # the standby took the lease (else the restarted one did)
    leader_after: str = ""
    settled_s: float = float("nan")  # kill → both up, exactly one leading
    failed: str = ""

    @property
    def next_tick_s(self) -> float:
        return self.after.received - self.at if self.after else float("nan")


@dataclass
class Takeovers:
    users: int
    ttl: str
    feed_enabled: bool
    feed_ttl: str = ""
    kills: list[Kill] = field(default_factory=list)
    feed: list[FeedKill] = field(default_factory=list)
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    busy_before: float = float("nan")
    deaths: int = 0
    warnings: list[tuple[str, int]] = field(default_factory=list)


def warnings(launcher_log: str) -> list[tuple[str, int]]:
    """The services' WARNING / ERROR lines in the launcher's output, alike ones counted
    together (numbers blanked), most frequent first."""
    found: Counter[str] = Counter()
    for line in launcher_log.splitlines():
        if "WARNING" in line or "ERROR" in line or "Traceback" in line:
            label, _sep, text = line.partition(" | ")
            found[f"{label.strip().rstrip('0123456789-')}: {_NUMBERS.sub('N', text)[:160]}"] += 1
    return found.most_common(8)


def _f(value: float, spec: str = ".1f") -> str:
    return "–" if value != value else format(value, spec)


def _med(values: Iterable[float]) -> float:
    real = [v for v in values if v == v]
    return statistics.median(real) if real else float("nan")


def _summary(kills: list[Kill]) -> str:
    head = (
        "| replica | kills | sockets affected per kill | kill → full render, median of the "
        "kills' medians | worst socket of any kill | every affected socket p50 / p90 "
        "| missing |\n|---|---:|---|---:|---:|---|---:|"
    )
    groups: dict[str, list[Kill]] = {}
    for k in kills:
        groups.setdefault(f"{k.service}, {k.how}", []).append(k)
        groups.setdefault(f"**all, {k.how}**", []).append(k)
    rows = []
    for label, group in sorted(groups.items(), key=lambda g: ("**" in g[0], g[0])):
        ok = [k for k in group if not k.failed and k.render_s]
        pooled = [v for k in ok for v in k.render_s]
        rows.append(
            f"| {label} | {len(ok)} of {len(group)} "
            f"| {', '.join(str(k.affected) for k in group)} "
            f"| {_f(_med(statistics.median(k.render_s) for k in ok))} s "
            f"| {_f(max(pooled, default=float('nan')))} s "
            f"| {_f(percentile(pooled, 0.5))} / {_f(percentile(pooled, 0.9))} s "
            f"| {sum(k.missing for k in group)} |"
        )
    return head + "\n" + "\n".join(rows)


def _taker(k: Kill) -> str:
    """Partitions taken by the survivor (by the last full render, and in all) and by the
    killed one once back, against the killed one's share."""
    return f"{k.survivor_gained} / {k.survivor_total} · {k.killed_total} (share {k.share})"


def _kills(kills: list[Kill]) -> str:
    head = (
        "| # | signal | replica | sockets affected | kill → full render first / median / "
        "worst | missing | other sockets re-rendered | killed replica ready again "
        "| partitions taken: survivor by the renders / in all · killed one once back "
        "| all shares settled |\n|---:|---|---|---:|---|---:|---:|---:|---|---:|"
    )
    rows = []
    for k in kills:
        if k.failed:
            rows.append(
                f"| {k.n} | {k.how} | {k.replica} | {k.affected} | failed: {k.failed} |" + " |" * 5
            )
            continue
        r = k.render_s
        rows.append(
            f"| {k.n} | {k.how} | {k.replica} | {k.affected} "
            f"| {_f(min(r, default=float('nan')))} / {_f(_med(r))} / "
            f"{_f(max(r, default=float('nan')))} s | {k.missing} | {k.others_rendered} "
            f"| {_f(k.ready_s)} s | {_taker(k)} | {_f(k.settled_s)} s |"
        )
    return head + "\n" + "\n".join(rows)


def _feed(feed: list[FeedKill]) -> str:
    head = (
        "| # | leader killed | kill → next tick | ticks' gap | seq before → after "
        "| epoch before → after | killed replica ready again | lease taken by | leader once "
        "settled | settled |\n|---:|---|---:|---:|---|---|---:|---|---|---:|"
    )
    rows = []
    for k in feed:
        if k.failed:
            rows.append(f"| {k.n} | {k.replica or '?'} | failed: {k.failed} |" + " |" * 7)
            continue
        b, a = k.before, k.after
        gap = a.received - b.received if a and b else float("nan")
        seq = f"{b.seq if b else '?'} → {a.seq if a else '?'}"
        if a and b and a.seq <= b.seq:
            seq += " **(not increasing)**"
        epoch = f"{b.epoch if b else '?'} → {a.epoch if a else '?'}"
        taker = "the standby" if k.survivor_took else "the restarted replica"
        rows.append(
            f"| {k.n} | {k.replica} | {_f(k.next_tick_s, '.2f')} s | {_f(gap, '.2f')} s | {seq} "
            f"| {epoch} | {_f(k.ready_s)} s | {taker} | {k.leader_after or '?'} "
            f"| {_f(k.settled_s)} s |"
        )
    ok = [k for k in feed if not k.failed]
    regressions = sum(1 for k in ok if k.after and k.before and k.after.seq <= k.before.seq)
    summary = (
        f"Kill → next tick over {len(ok)} leader kills: median "
        f"{_f(_med(k.next_tick_s for k in ok), '.2f')} s, worst "
        f"{_f(max((k.next_tick_s for k in ok), default=float('nan')), '.2f')} s; `seq` did "
        f"not increase across {regressions} of them."
    )
    return summary + "\n\n" + head + "\n" + "\n".join(rows)


def table(t: Takeovers) -> str:
    method = (
        f"The live benchmark's stack and seeding; two replicas each of portfolio, watchlist "
        f"and risk{' and of the pricefeed (leader + standby)' if t.feed_enabled else ''}; "
        f"orders and the gateway single. `LEASE_TTL_S` {t.ttl} (renewed every quarter of "
        f"it). {t.users} traders each hold one browser-like socket through the gateway. A kill "
        "is a SIGKILL of the replica that owns a known set of those traders (rendezvous "
        "hashing of their live partitions over `<service>-1`, `<service>-2`); *kill → full "
        "render* is, per affected socket, the time from the kill to the first frame carrying "
        "the component's root part (`portfolio-root`, `watchlist-root`, `risk-root`). The "
        "launcher restarts the killed replica under the same `REPLICA_ID` (its supervisor "
        "looks every 0.5 s); a dead replica's partition leases lapse one TTL after their last "
        "renewal, and whichever replica then wants them (the survivor if the restarted one "
        "has not rejoined yet, else the restarted one) takes them, asks the gateways to "
        "re-announce those sockets and sends full renders. *Other sockets re-rendered*: "
        "unaffected sockets that got a full render of that component between the kill and the "
        "last affected one's (0 expected). *SIGSTOP* freezes the owner instead (a hung "
        "process, not restarted): its membership lapses too, so the survivor takes over; "
        "once every affected socket has its full render it gets SIGCONT, finds its leases "
        "gone and rejoins. Before each kill: every replica owns its share "
        "again and no full render reached any socket for 3 s. Ticks are watched on NATS by "
        f"the benchmark. {os.cpu_count()} CPUs shared with other work; machine busy "
        f"{_f(t.busy_before, '.2f')} cores before the start. Sockets' reconnects "
        f"{t.reconnects}; service deaths in the launcher log {t.deaths} (the kills included)."
    )
    parts = [
        "### Kill → full render after a component replica dies",
        method,
        _summary(t.kills),
        "#### Every kill",
        _kills(t.kills),
        "### Pricefeed leader failover",
    ]
    if t.feed_enabled:
        parts.append(
            "The pricefeed runs as leader + hot standby (`PRICEFEED_LEASE_TTL_S` "
            f"{t.feed_ttl} s, the default). A kill is a SIGKILL of the leader (the replica "
            "whose `pricefeed_leader` gauge is 1); *kill → next tick*: until the benchmark "
            "receives the next `prices.ticks` message under a new lease epoch (a tick the "
            "dead leader had published just before the kill does not count); *ticks' gap*: "
            "from the last tick before the kill to that one (normally 0.25 s). The launcher "
            "restarts the killed replica; *lease taken by*: whether the standby's "
            "`pricefeed_takeovers` counter moved (else the restarted replica took the lease); "
            "*settled*: both up and exactly one leading."
        )
        parts.append(_feed(t.feed))
    else:
        parts.append("Skipped: the pricefeed has no leader/standby code in this tree.")
    if t.errors:
        parts.append(f"First socket errors: {t.errors}")
    parts.append("### Warnings in the services' logs (launcher output, numbers blanked)")
    parts.append(
        "\n".join(f"- {n} × `{text}`" for text, n in t.warnings) if t.warnings else "None."
    )
    return "\n\n".join(parts)
