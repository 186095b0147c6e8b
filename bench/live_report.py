"""What one load level of the live benchmark measured, and the tables it is written as."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.live_stack import STACK, TICK_DRIVEN
from bench.live_support import percentile
from bench.live_targets import targets, within_goal

if TYPE_CHECKING:
    from bench.live_stack import Stack

__all__ = [
    "GRACE_S",
    "ORDER_RATE_HZ",
    "ORDER_TIMEOUT_S",
    "ORDER_TRADERS",
    "POST_CLOSE_S",
    "QUIET_CAP_S",
    "QUIET_CORES",
    "RELAY_USERS",
    "SIGNIN_RATE_HZ",
    "SIGNIN_S",
    "SIGNIN_USERS",
    "Level",
    "SignIn",
    "order_split",
    "signins",
    "table",
]

ORDER_TRADERS = 20
ORDER_RATE_HZ = 2.0
ORDER_TIMEOUT_S = 10.0
SIGNIN_RATE_HZ = 0.5  # sign-ins through /login, each then loading the page
SIGNIN_S = 10.0  # ... for this long after the window (+ GRACE_S), the sockets still open
SIGNIN_USERS = ("alice", "bob", "viewer")  # the demo users: no seeded trader is logged out
GRACE_S = 3.0  # frames of window ticks still count this long after the window
POST_CLOSE_S = 5.0
QUIET_CAP_S = 15.0
QUIET_CORES = 0.10  # portfolio + watchlist + risk within this of their idle use: quiet
RELAY_USERS = 20  # connected traders who also hold a socket to the bare relay (default)


@dataclass(frozen=True)
class SignIn:
    """One sign-in during the window: the form, ``POST /login``, then ``GET /``."""

    status: str  # "ok", else the step that failed and its answer ("login 503")
    login_ms: float = float("nan")  # POST /login → its redirect
    page_ms: float = float("nan")  # GET / → the composed page
    placeholders: int = 0  # fragments the page showed as "unavailable, retrying…"


@dataclass
class Level:
    n: int
    window_s: float
    result: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # cores over the window, per service
    per_process: dict[str, float] = field(default_factory=dict)  # the same, per replica
    after_close: dict[str, float] = field(default_factory=dict)
    quiet_after_s: float | None = None
    orders: list[tuple[str, float]] = field(default_factory=list)
    signins: list[SignIn] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: str = ""
    open_s: float | None = None  # from the first handshake until every socket was open
    rendered_all_s: float | None = None  # ... until every socket was fully rendered
    gateway_rss_mb: tuple[float, float] | None = None  # idle once started, at the window's end
    connect_cpu: dict[str, float] = field(default_factory=dict)  # CPU-s until all rendered
    calibration_ms: float | None = None  # live_support.calibrate() just before the level
    relay_users: int = 0  # of the N, this many (none placing orders) also hold a relay socket


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
        return f"| {level.n:,} |" + " – |" * 15
    c = level.cpu
    names = (*STACK, "stack", "loadgen", "relay", "bench", "launcher", "other", "machine")
    return f"| {level.n:,} | " + " | ".join(_f(c.get(n, float("nan")), ".2f") for n in names) + " |"


def _p50_p99(values: list[float], due: int | None = None) -> str:
    """``p50 / p99 (samples)``, with the share of the updates due when known."""
    share = f", {_f(len(values) / due, '.0%')}" if due else ""
    return (
        f"{_f(percentile(values, 0.5))} / {_f(percentile(values, 0.99))} ({len(values):,}{share})"
    )


def _relay_row(level: Level) -> str:
    """The bare relay beside the gateway: the same traders' latency through each, and what
    each spent per socket."""
    if level.failed or not level.result.get("relay", {}).get("sockets"):
        return f"| {level.n:,} |" + " – |" * 10
    r, w = level.result, level.window_s
    relay = r["relay"]
    base, gate = relay["pnl"], relay["paired_pnl"]
    ratio = percentile(gate, 0.99) / percentile(base, 0.99) if base and gate else float("nan")
    relay_ms = level.cpu.get("relay", float("nan")) * 1000 / max(1, relay["open_end"])
    gateway_ms = level.cpu.get("gateway", float("nan")) * 1000 / max(1, r["open_end"])
    return (
        f"| {level.n:,} | {relay['open_end']:,} | {relay['frames'] / w:,.0f} "
        f"| {_p50_p99(relay['latency'], relay['expected'])} | {_p50_p99(relay['paired'])} "
        f"| {_p50_p99(base, relay['expected_pnl'])} | {_p50_p99(gate)} "
        f"| {_f(ratio, '.2f')} | {_f(level.cpu.get('relay', float('nan')), '.2f')} "
        f"| {_f(relay_ms, '.2f')} | {_f(gateway_ms, '.2f')} |"
    )


def relay_table(levels: list[Level]) -> str:
    relayed = max((lv.relay_users for lv in levels), default=0)
    if not any(lv.result.get("relay", {}).get("sockets") for lv in levels):
        return ""
    return (
        "#### The bare relay in the same run (the gateway's baseline)\n\n"
        f"{relayed} of the N traders (`--relay-users`; not those placing orders) also hold "
        "a socket to a bare relay (`bench/live_relay.py`: one `ui.>` subscription, each "
        "message to its users' sockets as one frame as it comes; no checks, no buffer, no "
        "tick wait, no pace; the gateway's compression), fed by the same services' "
        "messages. Latency as above, on the relay's sockets and on the same traders' gateway "
        "sockets: of the last prices (a portfolio row's and a watchlist row's, shared parts "
        "the services send first) and of the P&L cells of the portfolio's rows (each "
        "trader's own parts, sent after the shared ones: a row's P&L is (last − average "
        "cost) × quantity, exact in cents, so the cell names the last price it was computed "
        "from, timed as a shown last price is). The gateway sends each socket one frame per "
        "tick, once every component is done with the socket's partition, so its last prices "
        "come with their P&L; the relay sends each as it comes. Per socket-second: the "
        "process's cores ÷ its open sockets (the relay also decodes every shared message "
        "whatever its number of sockets, so with fewer sockets this is an upper bound).\n\n"
        "| N | relay sockets | relay frames/s | last price: relay p50 / p99 ms (samples, of "
        "due) | last price: gateway p50 / p99 ms (samples) | P&L: relay p50 / p99 ms "
        "(samples, of due) | P&L: gateway p50 / p99 ms (samples) | P&L p99 gateway ÷ relay "
        "| relay cores | relay ms CPU per socket-s | gateway ms CPU per socket-s |\n"
        "|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|\n"
        + "\n".join(_relay_row(lv) for lv in levels)
        + "\n\n"
    )


def connect_cpu(level: Level) -> str:
    """CPU spent from the first handshake until every socket was fully rendered (the
    live updates of those already connected included), per trader."""
    used = level.connect_cpu
    stack = sum(used.get(name, 0.0) for name in STACK)
    named = ", ".join(
        f"{name} {used[name] * 1000 / level.n:.1f}"
        for name in (*STACK, "loadgen")
        if used.get(name, 0.0) * 1000 / level.n >= 0.05
    )
    return (
        f"CPU while connecting: stack {stack:.1f} s = {stack * 1000 / level.n:.1f} ms per "
        f"trader ({named}; machine {used.get('machine', 0.0):.1f} s)"
    )


def signins(done: list[SignIn]) -> str:
    """The sign-ins of a window: how many worked, their times, the page's placeholders."""
    ok = [one for one in done if one.status == "ok"]
    failed = Counter(one.status for one in done if one.status != "ok")
    login = [one.login_ms for one in ok]
    page = [one.page_ms for one in ok]
    return (
        f"sign-ins {len(ok)} of {len(done)} ok"
        + (f" ({dict(failed)})" if failed else "")
        + f": login p50 {_f(percentile(login, 0.5))} / p99 {_f(percentile(login, 0.99))} ms, "
        f"then the page p50 {_f(percentile(page, 0.5))} / p99 {_f(percentile(page, 0.99))} ms "
        f"with {sum(one.placeholders for one in ok)} of {4 * len(ok)} fragments as placeholders"
    )


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
        "the load generator parsed frames p50 "
        f"{_f(percentile(r.get('parse_lag', []), 0.5))} / p99 "
        f"{_f(percentile(r.get('parse_lag', []), 0.99))} ms after reading them (not counted)",
        f"prices not matched to a tick {r['unmatched']:,}",
    ]
    if errors:
        bits.append(f"order errors {dict(errors)}")
    if level.signins:
        bits.append(signins(level.signins))
    if r["errors"]:
        bits.append(f"first handshake errors {r['errors'][:2]}")
    if level.connect_cpu:
        bits.append(connect_cpu(level))
    if level.calibration_ms is not None:
        bits.append(
            f"machine speed: a fixed Python workload took {level.calibration_ms:.0f} ms of CPU "
            "just before (lower is faster; compare runs by it)"
        )
    if level.gateway_rss_mb is not None:
        before, during = level.gateway_rss_mb
        per_socket = (during - before) * 1000 / level.n
        bits.append(
            f"gateway memory {_f(during)} MB at the window's end ({_f(before)} once started "
            f"with no socket: {_f(per_socket)} KB per socket; Python keeps what it freed, "
            "so after a larger N this is an upper bound)"
        )
    ac = level.after_close
    bits.append(
        "cores in the 5 s after close: "
        + ", ".join(f"{n} {ac.get(n, float('nan')):.2f}" for n in (*TICK_DRIVEN, "gateway"))
    )
    return f"- N={level.n:,}: " + "; ".join(bits) + "."


def table(levels: list[Level], stack: Stack, window: float, warmup: float, load: float) -> str:
    head = (
        "| N | sockets open | fully rendered (never) p50 / p99 s | frames/s "
        "| payload / wire MB/s | tick→socket p50 / p95 / p99 / max ms | latency samples "
        "(of updates due) | order ack p50 / p99 ms (errors) | machine CPU cores "
        "| stack CPU ms per trader-s | pf+wl+risk cores 5 s after close |\n"
        "|---:|---:|---|---:|---|---|---|---|---:|---:|---|"
    )
    cpu_head = (
        "| N | gateway | portfolio | watchlist | orders | risk | pricefeed | postgres "
        "| nats-server | **stack** | load generator | bare relay | bench driver | launcher "
        "| other | machine |\n|---:|" + "---:|" * 15
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
        f"{ORDER_RATE_HZ:g}/s in all, each at a random moment of its 1/{ORDER_RATE_HZ:g} s "
        "slot (not in step with the ticks); ack = HTTP round trip of the 2xx answers; errors = "
        f"non-2xx or no answer in {ORDER_TIMEOUT_S:g} s; the details split an order's mean "
        "HTTP time between the gateway and the orders service (each one's `/metrics`, arrival "
        "to the start of the answer). Sign-ins (in the details): the traders connect with "
        "seeded web sessions, so "
        f"{SIGNIN_RATE_HZ:g}/s of the demo users ({', '.join(SIGNIN_USERS)}) sign in as a "
        f"browser does for {SIGNIN_S:g} s from {GRACE_S:g} s after the window, every socket "
        "still open (the form, `POST /login` with its token, then `GET /`, the page composed "
        "from the four services' fragments), timed per step, with the fragments the page had "
        "to show as placeholders; after the window, because a login's argon2 costs ~0.25 s of "
        "CPU (0.13 core at this rate), which is not the live path's. *Other* = machine CPU not "
        "used by any process named (other work on this shared machine). *Stack* = gateway + "
        "services + "
        "PostgreSQL + nats-server (not the launcher, load generator or driver); per "
        "trader-second = stack CPU ÷ (N × window).\n\n"
        "**Tick → socket latency**, independent of the service→gateway wire format: the load "
        "generator follows `prices.ticks` on NATS and records, per symbol, the `ts` of every "
        'tick that changed its `last`. In each frame, every `data-symbol="T"` followed (before '
        "the next) by a `last-price` element gives a shown price, attributed to the component "
        "whose id prefix (`portfolio-…`, `watchlist-…`) precedes it. Per socket and (component, "
        "symbol), a shown value counts once: only when it differs from the value that row last "
        "showed, and only if the newest tick that set the symbol to that value is newer than "
        "the last one counted there; latency = receipt − that tick's `ts`, receipt being when "
        "the socket read that completed the frame returned (a load generator parses 500 "
        "sockets' frames on one core, which no browser does: how long after reading it got "
        "to them is in the details, not in the latency). So full renders "
        "and rows re-rendered for bid/ask/P&L repeat no old price, while a value first seen "
        "in a full render after a reconnect counts with its true age. Samples: ticks published "
        f"in the window, received by its end + {GRACE_S:g} s (a slower delivery is not "
        "sampled, so past the knee the percentiles are a floor; *of updates due* = samples ÷ "
        "last-price changes in the window of every (component, symbol) row each socket shows; "
        "newest-wins merging may legitimately skip a few). After the window every socket "
        f"closes and the CPU of portfolio, watchlist and risk is measured for {POST_CLOSE_S:g} "
        f"s, then each second until within {QUIET_CORES:g} core of their idle use "
        f"({stack.idle:.2f} core, measured after the stack started; at most {QUIET_CAP_S:g} s "
        "more; if still busy the stack is restarted before the next N). The bare relay's "
        f"baseline in the same run is its own table below. 1-min load average at start {load:.2f}, "
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
        + "\n\n"
        + within_goal(levels)
        + targets(levels)
        + relay_table(levels)
        + "#### CPU by process during the window (cores)\n\n"
        + cpu_head
        + "\n"
        + "\n".join(_cpu_row(lv) for lv in levels)
        + "\n\n#### Details\n\n"
        + "\n".join(_detail(lv) for lv in levels)
    )


def order_split(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> str | None:
    """Where an order's time went: the mean HTTP time (arrival to the start of the answer)
    of the gateway and of the orders service over the window, from their ``/metrics``
    counts and sums before and after it (``Stack.http_seconds``)."""
    means: dict[str, float] = {}
    for name in ("gateway", "orders"):
        if name in before and name in after:
            count = after[name][0] - before[name][0]
            if count > 0:
                means[name] = 1000 * (after[name][1] - before[name][1]) / count
    if len(means) < 2:
        return None
    gateway, orders = means["gateway"], means["orders"]
    return (
        f"an order's HTTP time, mean: the gateway {gateway:,.0f} ms, of which the orders "
        f"service {orders:,.0f} ms (the gateway's share and the hop: {gateway - orders:,.0f} ms)"
    )
