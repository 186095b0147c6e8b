"""Many browser sockets against the fault stack without the login form: traders and web
sessions written straight into its database (as ``bench/live_seed.py`` does, but only with
the demo symbols, so the market the other fault tests see stays the same), sockets that
read like a page, one that never reads, and the processes' figures (RSS, ``/metrics``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.http11 import Response
from websockets.uri import parse_uri

__all__ = [
    "ROOTS",
    "StalledSocket",
    "Tab",
    "Trader",
    "gaps",
    "holds_connection",
    "metric",
    "percentile",
    "process_on_port",
    "seed_traders",
]

# The full render of each component that pushes its root on connect (the order component's
# live render is its order lists: ``live_root = False``).
ROOTS = (b'id="portfolio-root"', b'id="watchlist-root"', b'id="risk-root"')
# a part of a service (not the gateway's own freshness status): a tick or a render arrived
_SERVICE_PART = re.compile(rb'id="(?:portfolio|watchlist|risk|order)-')
CENT = Decimal("0.01")
SESSION_MAX_AGE_S = 3600


@dataclass(frozen=True)
class Trader:
    user_id: int
    cookie: str  # "session=…"
    csrf: str


def _book(
    rng: random.Random, symbols: list[Any], holdings: tuple[int, int]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """One trader's account values (margin half used), positions and watched symbols."""
    positions, used = [], Decimal(0)
    for sid, last, rate in rng.sample(symbols, min(len(symbols), rng.randint(*holdings))):
        quantity = max(1, int(rng.uniform(2_000, 30_000) / float(last)))
        used += quantity * last * rate
        positions.append(
            {
                "symbol_id": sid,
                "quantity": quantity,
                "avg_cost": (last * Decimal(rng.uniform(0.85, 1.15))).quantize(CENT),
                "realised_pnl": Decimal(0),
            }
        )
    used = used.quantize(CENT)
    account = {
        "cash": Decimal(rng.randint(50_000, 300_000)),
        "margin_limit": (used * 2).quantize(Decimal(1), rounding=ROUND_CEILING),
        "margin_used": used,
    }
    watched = rng.sample(symbols, min(len(symbols), rng.randint(*holdings)))
    return account, positions, [sid for sid, _last, _rate in watched]


async def seed_traders(
    url: str, secret: str, count: int, *, holdings: tuple[int, int] = (4, 10), seed: int = 11
) -> list[Trader]:
    """``count`` traders with cash, a margin limit, ``holdings`` positions and watched
    symbols among the demo symbols, and a live web session each (cookie, CSRF token)."""
    from sqlalchemy import insert, select
    from starlette.responses import Response as StarletteResponse

    from gateway.csrf import session_token
    from gateway.sessions import SessionCookie
    from shared.db.engine import create_engine
    from shared.db.models import Account, Position, Symbol, User, WatchlistItem, WebSession

    rng = random.Random(seed)
    tag = secrets.token_hex(3)
    expires = datetime.now(UTC) + timedelta(seconds=SESSION_MAX_AGE_S)
    sids = [secrets.token_urlsafe(32) for _ in range(count)]
    engine = create_engine(url, null_pool=True)
    try:
        async with engine.begin() as db:
            symbols = list(
                (await db.execute(select(Symbol.id, Symbol.last, Symbol.margin_rate))).all()
            )
            users = [
                {"username": f"sock-{tag}-{i}", "display_name": f"Socket {i}",
                 "password_hash": "!", "can_trade": True}
                for i in range(count)
            ]  # fmt: skip
            ids = list((await db.execute(insert(User).returning(User.id), users)).scalars())
            books = {uid: _book(rng, symbols, holdings) for uid in ids}
            accounts = [{"user_id": uid, **book[0]} for uid, book in books.items()]
            inserted = await db.execute(
                insert(Account).returning(Account.user_id, Account.id), accounts
            )
            account_of = {uid: aid for uid, aid in inserted.all()}
            await db.execute(
                insert(Position),
                [{"account_id": account_of[uid], **p} for uid, b in books.items() for p in b[1]],
            )
            await db.execute(
                insert(WatchlistItem),
                [
                    {"user_id": uid, "symbol_id": sid, "rank": rank}
                    for uid, book in books.items()
                    for rank, sid in enumerate(book[2])
                ],
            )
            await db.execute(
                insert(WebSession),
                [
                    {"id": sid, "user_id": uid, "expires_at": expires}
                    for uid, sid in zip(ids, sids, strict=True)
                ],
            )
    finally:
        await engine.dispose()
    cookie, traders = SessionCookie(secret, SESSION_MAX_AGE_S), []
    for uid, sid in zip(ids, sids, strict=True):
        response = StarletteResponse()
        cookie.set(response, sid, secure=False)
        value = response.headers["set-cookie"].split(";", 1)[0]
        traders.append(Trader(uid, value, session_token(secret, sid)))
    return traders


def ws_url(base_url: str, trader: Trader) -> str:
    return f"{base_url.replace('http', 'ws', 1)}/ws?csrf={trader.csrf}"


@dataclass(eq=False)
class Tab:
    """One page's socket that reads every frame: when its full renders arrived, and when
    each frame carrying service parts arrived (monotonic seconds)."""

    trader: Trader
    ws: ClientConnection | None = None
    opened_at: float = 0.0
    rendered_at: float | None = None
    roots: set[bytes] = field(default_factory=set)
    arrivals: list[float] = field(default_factory=list)
    close_code: int | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def render_s(self) -> float | None:
        return None if self.rendered_at is None else self.rendered_at - self.opened_at

    async def open(self, base_url: str) -> None:
        """Connect (a fresh page: its roots not seen yet) and read in the background."""
        self.opened_at, self.rendered_at, self.close_code = time.monotonic(), None, None
        self.roots = set()
        self.ws = await connect(
            ws_url(base_url, self.trader),
            origin=base_url,  # type: ignore[arg-type]
            additional_headers={"Cookie": self.trader.cookie},
            compression=None,
            max_size=None,
            open_timeout=60,
            ping_interval=None,  # the server pings; the client answers
            close_timeout=5,
            proxy=None,
        )
        self.reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            while True:
                frame = await ws.recv(decode=False)
                now = time.monotonic()
                if _SERVICE_PART.search(frame):
                    self.arrivals.append(now)
                if self.rendered_at is None:
                    self.roots.update(r for r in ROOTS if r in frame)
                    if len(self.roots) == len(ROOTS):
                        self.rendered_at = now
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else 1006

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader
        self.ws = self.reader = None


def gaps(arrivals: list[float], start: float, end: float) -> list[float]:
    """Inter-arrival times of the frames in ``[start, end]``, counting the edges as
    arrivals (a socket that went silent shows one long gap, not none)."""
    inside = [start, *(t for t in arrivals if start <= t <= end), end]
    return [b - a for a, b in itertools.pairwise(inside)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class StalledSocket:
    """A page's socket that never reads: a tiny receive buffer and no ``recv`` until
    :meth:`drain`, so the gateway's writes back up as far as TCP lets them."""

    def __init__(
        self, base_url: str, trader: Trader, *, rcvbuf: int = 4096, mss: int = 1460
    ) -> None:
        uri = parse_uri(ws_url(base_url, trader))
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # before connect: the window scale and the segment size are agreed in the
            # handshake. An Ethernet-sized segment, not loopback's 64 KiB: the kernel sizes
            # the gateway's send buffer from it (~4 MiB on loopback, a minute of frames)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            self.sock.settimeout(10)
            self.sock.connect((uri.host, uri.port))
            self._handshake(base_url, trader)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, base_url: str, trader: Trader) -> None:
        request = self.protocol.connect()
        request.headers["Origin"] = base_url
        request.headers["Cookie"] = trader.cookie
        self.protocol.send_request(request)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        while not self.protocol.handshake_exc and not any(
            isinstance(e, Response) for e in self.protocol.events_received()
        ):
            # the response arrives in its own segment; frames after it are left unread
            data = self.sock.recv(1024)
            if not data:
                raise ConnectionError("the gateway closed the handshake")
            self.protocol.receive_data(data)
        if self.protocol.handshake_exc is not None:
            raise self.protocol.handshake_exc

    @property
    def port(self) -> int:
        """This end's port, as the gateway sees it."""
        return int(self.sock.getsockname()[1])

    def drain(self, timeout: float = 30.0) -> tuple[int, bool, Close | None]:
        """Read everything the gateway wrote until it ends the connection (bounded by
        ``timeout``): the bytes read, whether it ended, and its close frame if one came."""
        read, deadline = 0, time.monotonic() + timeout
        self.sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return read, True, self.protocol.close_rcvd
            if not data:
                return read, True, self.protocol.close_rcvd
            read += len(data)
            self.protocol.receive_data(data)
            self.protocol.events_received()
            with contextlib.suppress(OSError):  # pongs, the close echo: the peer may be gone
                self.sock.sendall(b"".join(self.protocol.data_to_send()))
        return read, False, self.protocol.close_rcvd

    def close(self) -> None:
        self.sock.close()


def holds_connection(process: psutil.Process, peer_port: int) -> bool:
    """Whether ``process`` still has a TCP connection to ``127.0.0.1:peer_port``."""
    return any(c.raddr and c.raddr.port == peer_port for c in process.net_connections("tcp"))


def process_on_port(launcher_pid: int, port: int) -> psutil.Process:
    """The launcher's child serving on ``port`` (uvicorn ``--port N``)."""
    for proc in psutil.Process(launcher_pid).children(recursive=True):
        if ("--port", str(port)) in itertools.pairwise(proc.cmdline()):
            return proc
    raise AssertionError(f"no process of the launcher on :{port}")


async def metric(client: httpx.AsyncClient, port: int, name: str) -> float:
    """The value of one unlabelled (or labelled, ``name{…}``) sample of a ``/metrics``."""
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " ") or (name.endswith("}") and line.startswith(name)):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
