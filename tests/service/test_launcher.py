"""`make run`'s launcher: every process comes up ready, a dead one is restarted, and
stopping leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from shared import devservers
from shared.launcher import SERVICES
from tests.service.processes_support import wait_ready

pytestmark = pytest.mark.service

READY_LINE = "dashboard ready: http://127.0.0.1:"


class Launcher:
    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.launcher", "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 90, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines[after:]):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in launcher output:\n{''.join(self.lines)}")
            time.sleep(0.1)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        finally:
            self.reader.join(5)
            assert self.proc.stdout
            self.proc.stdout.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    for spec in SERVICES:
        env[spec.port_env] = str(devservers.free_port())
    env.update(extra)
    return env


def _gone(pids: list[int]) -> list[int]:
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
        ]
        time.sleep(0.1)
    return alive


@contextmanager
def launched(env: dict[str, str], data_dir: Path) -> Iterator[Launcher]:
    """The launcher, once it says the dashboard is ready; stopped (cleanly) at the end."""
    launcher = Launcher(env, data_dir)
    try:
        launcher.wait_for(READY_LINE)
        yield launcher
    except BaseException:
        launcher.stop()  # the failure is the test's answer, not the exit code
        raise
    assert launcher.stop() == 0


@pytest.fixture
def own_servers_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    yield _env(NATS_PORT=str(devservers.free_port())), tmp_path / "data"


def test_launcher_brings_everything_up_and_stops_cleanly(
    own_servers_env: tuple[dict[str, str], Path],
) -> None:
    env, data_dir = own_servers_env
    with launched(env, data_dir) as launcher:
        for spec in SERVICES:
            r = httpx.get(f"http://127.0.0.1:{env[spec.port_env]}/readyz", timeout=5)
            assert r.status_code == 200, (spec.name, r.text)
        output = "".join(launcher.lines)
        assert "demo data loaded" in output
        assert "alice" in output and "password:" in output
        launcher.proc.send_signal(signal.SIGUSR1)  # where its threads are; it keeps running
        launcher.wait_for("most recent call first", timeout=10)
        pids = [p.pid for p in launcher.descendants()]
        names = {p.name() for p in launcher.descendants()}
        assert "nats-server" in names
        assert len(pids) >= len(SERVICES) + 1
    assert _gone(pids) == []
    assert not any(
        str(data_dir) in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    ), "a postgres or nats process of this run is still alive"

    with launched(env, data_dir) as again:
        assert "existing data kept" in "".join(again.lines)


def test_launcher_restarts_a_dead_service(
    pg_server_uri: str, db_templates: dict[str, str], nats_url: str, tmp_path: Path
) -> None:
    name = f"launch_{os.getpid()}"
    url = devservers.run_async(devservers.create_database(pg_server_uri, name, "tpl_empty"))
    env = _env(DATABASE_URL=url, NATS_URL=nats_url)
    try:
        with launched(env, tmp_path / "data") as launcher:
            port = env["PORTFOLIO_PORT"]
            victim = next(p for p in launcher.descendants() if port in " ".join(p.cmdline()))
            mark = len(launcher.lines)
            victim.kill()
            launcher.wait_for("portfolio DIED", timeout=15, after=mark)
            launcher.wait_for("restarting portfolio", timeout=15, after=mark)
            wait_ready(port)
    finally:
        devservers.run_async(devservers.drop_database(pg_server_uri, name))


def test_launcher_restarts_its_nats_server_and_postgres_on_their_data(
    own_servers_env: tuple[dict[str, str], Path],
) -> None:
    env, data_dir = own_servers_env
    with launched(env, data_dir) as launcher:
        port = env["ORDERS_PORT"]  # needs both: its /readyz checks the database and NATS
        nats = next(p for p in launcher.descendants() if p.name() == "nats-server")
        mark = len(launcher.lines)
        nats.kill()
        launcher.wait_for("nats-server DIED; restarting it", timeout=10, after=mark)
        launcher.wait_for("nats-server is back", timeout=20, after=mark)
        wait_ready(port)

        pid_file = data_dir / "postgres" / "postmaster.pid"
        postmaster = psutil.Process(int(pid_file.read_text().splitlines()[0]))
        mark = len(launcher.lines)
        postmaster.kill()
        launcher.wait_for("PostgreSQL DIED; restarting it", timeout=10, after=mark)
        launcher.wait_for("PostgreSQL is back", timeout=30, after=mark)
        wait_ready(port)
        wait_ready(env["GATEWAY_PORT"])
