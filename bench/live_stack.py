"""The whole stack for the live benchmark: PostgreSQL, nats-server, the market and traders,
the launcher on free ports; started, restarted and stopped as a unit (:mod:`bench.bench_live`).

Processes are named as in :mod:`bench.replica_support`: ``portfolio`` alone, or
``portfolio-1`` … with replicas (:meth:`Stack.set_replicas`); :func:`fold` sums a service's
replicas.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.live_relay import FACTORY as RELAY_FACTORY
from bench.live_relay import WS_PROTOCOL
from bench.live_seed import Trader, seed_market
from bench.relay_support import cpu_seconds
from bench.replica_support import replica_ports, service_of
from shared.devservers import NatsServer, create_database, free_port, run_async, start_postgres
from shared.launcher import SERVICES

__all__ = ["STACK", "TICK_DRIVEN", "Stack", "cores", "fold"]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-only-session-secret-0123456789abcdef"
STACK = ("gateway", "portfolio", "watchlist", "orders", "risk", "pricefeed", "postgres", "nats")
TICK_DRIVEN = ("portfolio", "watchlist", "risk")
READY_TIMEOUT_S = 120.0
HTTP_SECONDS = re.compile(r"^http_request_seconds_(count|sum) (\S+)$", re.M)


# -- the stack ------------------------------------------------------------------------------
@dataclass
class Stack:
    tmp: Path
    traders: list[Trader] = field(default_factory=list)
    symbols: int = 0
    pg: Any = None
    nats: NatsServer | None = None
    env: dict[str, str] = field(default_factory=dict)
    launcher: subprocess.Popen[bytes] | None = None
    with_relay: bool = False  # run the bare relay (:mod:`bench.live_relay`) beside the stack
    relay: subprocess.Popen[bytes] | None = None
    relay_port: int = 0
    log_path: Path | None = None
    procs: dict[str, psutil.Process] = field(default_factory=dict)  # by process name
    ports: dict[str, int] = field(default_factory=dict)  # process name → HTTP port
    seen: list[psutil.Process] = field(default_factory=list)  # every child ever, for cleanup
    starts: int = 0
    idle: float = 0.0  # cores of portfolio + watchlist + risk with no socket open
    idle_cores: dict[str, float] = field(default_factory=dict)  # per process, no socket open
    gateway_idle_mb: float = float("nan")  # the gateway's RSS once started, no socket open

    def http_seconds(self) -> dict[str, tuple[float, float]]:
        """Per process (the gateway, orders): HTTP requests answered so far and their total
        time from arrival to the start of the answer (``/metrics``; health checks and
        scrapes not counted), or nothing for one that does not answer."""
        found: dict[str, tuple[float, float]] = {}
        for name, port in (("gateway", self.gateway_port), ("orders", self.port("orders"))):
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            values = dict(HTTP_SECONDS.findall(text))
            if "count" in values and "sum" in values:
                found[name] = (float(values["count"]), float(values["sum"]))
        return found

    def port(self, service: str) -> int:
        return int(self.env[f"{service.upper()}_PORT"])

    @property
    def gateway_port(self) -> int:
        return int(self.env["GATEWAY_PORT"])

    def prepare(self, traders: int) -> None:
        from shared.db.demo import load_demo_data
        from shared.db.engine import create_engine, session_factory
        from shared.db.migrate import upgrade

        self.pg = start_postgres(self.tmp / "pg", delete_on_exit=True)
        url = run_async(create_database(self.pg.get_uri(), "bench_live"))
        self.nats = NatsServer(self.tmp / "nats").start(log_file=self.tmp / "nats.log")
        upgrade(url)

        async def demo() -> None:
            engine = create_engine(url, null_pool=True)
            try:
                await load_demo_data(session_factory(engine))
            finally:
                await engine.dispose()

        run_async(demo())
        self.symbols, self.traders = run_async(seed_market(url, traders, SECRET))
        self.env = {
            **os.environ,
            "APP_ENV": "development",
            "DATABASE_URL": url,
            "NATS_URL": self.nats.url,
            "NATS_PORT": str(self.nats.port),
            "GATEWAY_SESSION_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        for spec in SERVICES:
            self.env[spec.port_env] = str(free_port())
        for spec in SERVICES:  # the launcher derives the gateway's service URLs from the ports
            self.env.pop(f"GATEWAY_{spec.name.upper()}_URL", None)

    def set_replicas(self, counts: dict[str, int]) -> None:
        """Processes per service for the next :meth:`start` (``<SERVICE>_REPLICAS``)."""
        for key in [k for k in self.env if k.endswith("REPLICAS")]:
            del self.env[key]
        for service, count in counts.items():
            self.env[f"{service.upper()}_REPLICAS"] = str(count)

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.tmp / f"launcher-{self.starts}.log"
        log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "shared.launcher", "--data-dir", str(self.tmp / "data")]
        self.launcher = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "dashboard ready" not in self.log_path.read_text(errors="replace"):
            self._remember_children()
            if self.launcher.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the stack did not come up:\n{tail}")
            time.sleep(0.2)
        self.ports = replica_ports(self.log_path.read_text(errors="replace"), self.env)
        if self.with_relay:
            self._start_relay()
        self.resolve()
        c0 = self.cpu({})
        time.sleep(3.0)
        self.idle_cores = cores(c0, self.cpu({}), 3.0)
        idle = fold(self.idle_cores)
        self.idle = sum(idle.get(name, 0.0) for name in TICK_DRIVEN)
        self.gateway_idle_mb = self.rss_mb("gateway")

    def _start_relay(self) -> None:
        self.relay_port = free_port()
        log = open(self.tmp / f"relay-{self.starts}.log", "wb")
        cmd = [sys.executable, "-m", "uvicorn", RELAY_FACTORY, "--factory", "--host"]
        cmd += ["127.0.0.1", "--port", str(self.relay_port), "--ws", WS_PROTOCOL]
        cmd += ["--no-access-log", "--log-level", "warning"]
        self.relay = subprocess.Popen(
            cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{self.relay_port}/", timeout=1)
                return  # answering (404: it has no HTTP route)
            if self.relay.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare relay did not start")
            time.sleep(0.2)

    def _remember_children(self) -> list[psutil.Process]:
        if self.launcher is None:
            return []
        try:
            children = psutil.Process(self.launcher.pid).children(recursive=True)
        except psutil.Error:
            return []
        known = {(p.pid, p.create_time()) for p in self.seen if p.is_running()}
        for child in children:
            with contextlib.suppress(psutil.Error):
                if (child.pid, child.create_time()) not in known:
                    self.seen.append(child)
        return children

    def resolve(self) -> None:
        """Our processes by name (again after a service was restarted by the launcher)."""
        assert self.launcher and self.nats and self.nats.process
        procs = {
            "launcher": psutil.Process(self.launcher.pid),
            "postgres": psutil.Process(self.pg.get_pid()),
            "nats": psutil.Process(self.nats.process.pid),
        }
        if self.relay is not None:
            procs["relay"] = psutil.Process(self.relay.pid)
        by_port = {str(port): name for name, port in self.ports.items()}
        for child in self._remember_children():
            with contextlib.suppress(psutil.Error):
                cmdline = child.cmdline()
                if not any(spec.factory in cmdline for spec in SERVICES):
                    continue
                port = cmdline[cmdline.index("--port") + 1] if "--port" in cmdline else ""
                if port in by_port:
                    procs[by_port[port]] = child
        self.procs = procs

    def names(self, service: str) -> list[str]:
        """The processes of ``service``: ``[service]`` or its replicas' names."""
        return sorted(name for name in self.ports if service_of(name) == service)

    def cpu(self, extra: dict[str, int]) -> dict[str, float]:
        """CPU seconds so far per process (PostgreSQL: postmaster, live and exited backends)."""
        pids = {n: p.pid for n, p in self.procs.items() if n != "postgres"} | extra
        out = cpu_seconds(pids)
        try:
            pm = self.procs["postgres"]
            t = pm.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for child in pm.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    ct = child.cpu_times()
                    total += ct.user + ct.system
            out["postgres"] = total
        except psutil.Error:
            out["postgres"] = float("nan")
        return out

    def rss_mb(self, name: str) -> float:
        """Resident memory of process ``name`` in MB (NaN if it is gone)."""
        try:
            self.resolve()
            return float(self.procs[name].memory_info().rss) / 1e6
        except (psutil.Error, KeyError):
            return float("nan")

    def deaths(self) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path else ""
        return text.count(" DIED ")

    def stop_launcher(self) -> None:
        if self.relay is not None:
            self.relay.terminate()
            try:
                self.relay.wait(10)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait()
            self.relay = None
        if self.launcher is not None and self.launcher.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.launcher.pid, signal.SIGTERM)  # it stops its children
            try:
                self.launcher.wait(25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.launcher.pid, signal.SIGKILL)
                self.launcher.wait()
        for proc in self.seen:  # anything the launcher left behind, by pid (and start time)
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
                    proc.wait(5)
        self.seen.clear()
        self.launcher = None

    def restart(self) -> None:
        self.stop_launcher()
        self.start()

    def stop_all(self) -> None:
        try:
            self.stop_launcher()
        finally:
            if self.nats is not None:
                self.nats.stop()
            if self.pg is not None:
                self.pg._cleanup()


def cores(c0: dict[str, float], c1: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU cores used between two :func:`cpu_seconds` readings ``seconds`` apart."""
    return {k: (c1[k] - c0[k]) / seconds for k in c0 if k in c1}


def fold(used: dict[str, float]) -> dict[str, float]:
    """Per process → per service: a service's replicas (``portfolio-2``) summed."""
    out: dict[str, float] = {}
    for name, value in used.items():
        out[service_of(name)] = out.get(service_of(name), 0.0) + value
    return out
