"""What the live benchmark's load generator reads in a frame, and the latency rule.

A frame is read from its HTML alone (``data-symbol`` … ``last-price``; a traced trader's
P&L cells), against the ticks seen on ``prices.ticks``, so the measure does not depend on
the wire format between the services and the gateway (:mod:`bench.live_support` holds the
sockets; :mod:`bench.bench_live` has the notes on the rule).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

__all__ = ["PNL", "ROOTS", "Relayed", "Sock", "Ticks", "Timing", "scan"]

CENT = Decimal("0.01")
# The three components that push their root on connect (the order component's live render is
# its order lists only: ``live_root = False``).
ROOTS = (
    b'data-component="portfolio"',
    b'data-component="watchlist"',
    b'data-component="risk_metrics"',
)
# What a frame says, found by three patterns that each start with a literal of several
# bytes (the engine skips to it; one alternation of the three tried a branch at every "i",
# "d" and "l": ~2x the time per frame, a third of the load generator's CPU): the component
# an element belongs to (DESIGN §3.3: every live id starts with its component's prefix),
# the symbol of a row, and the row's last price.
_ELEMENT = re.compile(rb'id="(portfolio|watchlist|risk|order)-')
_SYMBOL = re.compile(rb'data-symbol="([^"]+)"')
_LAST = re.compile(rb"last-price[^>]*>([^<]*)<")
_POSITION = itemgetter(0)
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_PLAIN_PRICE = re.compile(rb"\d+\.\d\d")
# a portfolio row's P&L cell (read on the relayed traders' sockets only): its symbol, its text
_PNL = re.compile(rb'id="portfolio-pl-([^"]+)"[^>]*><div role="cell" class="num pnl[^"]*">([^<]*)<')
PNL = b"pnl"  # the P&L cells' key in a socket's shown values


@dataclass(frozen=True)
class Relayed:
    """A trader who also holds a socket to the bare relay, with their book (ticker →
    quantity, average cost), by which the P&L cells of both their sockets are timed: a row's
    P&L is (last − average cost) × quantity, exact in cents, so it names the last price it
    was computed from."""

    user_id: int
    book: dict[str, tuple[int, str]]


def _norm(raw: bytes) -> bytes | None:
    """A displayed or published price as ``b"1234.50"`` (commas gone, two decimals)."""
    value = raw.replace(b",", b"").strip()
    if _PLAIN_PRICE.fullmatch(value):
        return value
    try:
        return str(Decimal(value.decode()).quantize(CENT, ROUND_HALF_UP)).encode()
    except (InvalidOperation, UnicodeDecodeError, ValueError):
        return None


def scan(frame: bytes) -> list[tuple[bytes | None, bytes | None, bytes | None]]:
    """In frame order, one of ``(component prefix, None, None)`` for an element id (an
    ``id`` attribute, not ``data-id``), ``(None, symbol, None)`` for a ``data-symbol`` and
    ``(None, None, text)`` for a ``last-price`` element's text."""
    found: list[tuple[int, bytes | None, bytes | None, bytes | None]] = [
        (m.start(), m[1], None, None)
        for m in _ELEMENT.finditer(frame)
        if m.start() == 0 or frame[m.start() - 1] not in _NAME_BYTES
    ]
    found += [(m.start(), None, m[1], None) for m in _SYMBOL.finditer(frame)]
    found += [(m.start(), None, None, m[1]) for m in _LAST.finditer(frame)]
    found.sort(key=_POSITION)
    return [event[1:] for event in found]


def _book(relayed: Relayed | None) -> dict[bytes, tuple[Decimal, Decimal]]:
    if relayed is None:
        return {}
    return {t.encode(): (Decimal(q), Decimal(a)) for t, (q, a) in relayed.book.items()}


class Ticks:
    """Every change of each symbol's ``last`` seen on ``prices.ticks``: (ts ms, value)."""

    def __init__(self) -> None:
        self.history: dict[bytes, list[tuple[float, bytes]]] = defaultdict(list)
        self.current: dict[bytes, bytes] = {}
        self.ticks = 0
        self.changes = 0

    def on_tick(self, data: dict[str, Any]) -> None:
        ts = float(data["ts"])
        self.ticks += 1
        for ticker, quote in (data.get("prices") or {}).items():
            value = _norm(str(quote.get("last", "")).encode())
            key = ticker.encode()
            if value is not None and self.current.get(key) != value:
                self.current[key] = value
                self.history[key].append((ts, value))
                self.changes += 1

    def set_at(self, symbol: bytes, value: bytes, now_ms: float) -> float | None:
        """ts of the newest tick (published before ``now_ms``) that set ``symbol`` to ``value``."""
        for ts, v in reversed(self.history.get(symbol, ())):
            if v == value and ts <= now_ms:
                return ts
        return None

    def changes_between(self, start: float, end: float) -> dict[bytes, int]:
        return {
            s: n for s, h in self.history.items() if (n := sum(start <= ts < end for ts, _ in h))
        }


@dataclass(eq=False)
class Sock:
    cookie: str
    csrf: str
    relayed: Relayed | None = None  # the trader also has a socket to the bare relay
    relay: bool = False  # this is that socket
    book: dict[bytes, tuple[Decimal, Decimal]] = field(init=False)  # the relayed's
    started_ms: float | None = None
    connect_s: float | None = None
    rendered_s: float | None = None
    attempted: bool = False
    roots: list[bool] = field(default_factory=lambda: [False] * len(ROOTS))
    ws: Any = None
    # per (component prefix, symbol): last value shown, ts of the last tick counted
    shown: dict[tuple[bytes, bytes], bytes] = field(default_factory=dict)
    counted: dict[tuple[bytes, bytes], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.book = _book(self.relayed)


class Timing:
    """Frames in, latency samples out: per component for every socket, and for the traced
    traders' last prices and P&L cells through the relay and through the gateway."""

    def __init__(self) -> None:
        self.ticks = Ticks()
        self.window: tuple[float, float, float] | None = None  # start ms, end ms, last rx ms
        self.samples: dict[str, list[float]] = defaultdict(list)
        # latency on the relayed traders' sockets: last prices and P&L cells, through the
        # relay and through the gateway
        self.pairs: dict[str, list[float]] = {
            "relay": [],
            "gateway": [],
            "relay-pnl": [],
            "gateway-pnl": [],
        }
        self.frames = self.payload = 0
        self.relay_frames = self.relay_payload = 0
        self.unmatched = 0

    def on_frame(self, s: Sock, frame: bytes, now_ms: float) -> None:
        if s.relay:
            self.relay_frames += 1
            self.relay_payload += len(frame)
        else:
            self.frames += 1
            self.payload += len(frame)
        if s.rendered_s is None and s.started_ms is not None:
            for i, root in enumerate(ROOTS):
                if not s.roots[i] and root in frame:
                    s.roots[i] = True
            if all(s.roots):
                s.rendered_s = (now_ms - s.started_ms) / 1000
        panel, row_panel, symbol = b"", b"", None
        for prefix, sym, price in scan(frame):
            if prefix is not None:
                panel = prefix
            elif sym is not None:
                symbol, row_panel = sym, panel
            elif symbol is not None:
                self.on_price(s, row_panel, symbol, price, now_ms)
                symbol = None
        if s.book:
            for symbol, text in _PNL.findall(frame):
                self.on_pnl(s, symbol, text, now_ms)

    def on_price(self, s: Sock, panel: bytes, symbol: bytes, raw: bytes, now_ms: float) -> None:
        latency = self._latency(s, (panel, symbol), _norm(raw), now_ms)
        if latency is None:
            return
        if s.relay:
            self.pairs["relay"].append(latency)
            return
        self.samples[panel.decode() or "?"].append(latency)
        if s.relayed is not None:
            self.pairs["gateway"].append(latency)

    def on_pnl(self, s: Sock, symbol: bytes, text: bytes, now_ms: float) -> None:
        """A P&L cell of a relayed trader: the last price it was computed from, timed as
        a shown last price is."""
        held = s.book.get(symbol)
        if held is None:
            return
        qty, avg = held
        try:
            pnl = Decimal(text.replace(b",", b"").decode())
        except (InvalidOperation, UnicodeDecodeError, ValueError):
            return
        value = str((avg + pnl / qty).quantize(CENT, ROUND_HALF_UP)).encode()
        latency = self._latency(s, (PNL, symbol), value, now_ms)
        if latency is not None:
            self.pairs["relay-pnl" if s.relay else "gateway-pnl"].append(latency)

    def _latency(
        self, s: Sock, key: tuple[bytes, bytes], value: bytes | None, now_ms: float
    ) -> float | None:
        """The latency rule (see bench_live's notes): a value counts once per socket and
        row, the first time it is shown after the tick that set it; ``None`` when it does
        not count, or not in the window."""
        if value is None:
            return None
        if s.shown.get(key) == value:
            return None  # shown already: a full render or a row re-rendered for bid/ask/P&L
        s.shown[key] = value
        ts = self.ticks.set_at(key[1], value, now_ms)
        if ts is None:
            self.unmatched += 1  # a price from before this process followed the feed
            return None
        if ts <= s.counted.get(key, -math.inf):
            return None  # an older value come back late: counted when it was new
        s.counted[key] = ts
        w = self.window
        if w is not None and w[0] <= ts < w[1] and now_ms <= w[2]:
            return now_ms - ts
        return None

    def due(self, socks: list[Sock], *, pnl: bool) -> int:
        """Last-price changes in the window of every row the sockets show (of their P&L
        cells with ``pnl``): the updates a sample could have been taken of."""
        start, end, _ = self.window or (0.0, 0.0, 0.0)
        per_symbol = self.ticks.changes_between(start, end)
        return sum(
            per_symbol.get(sym, 0) for s in socks for (p, sym) in s.shown if (p == PNL) == pnl
        )
