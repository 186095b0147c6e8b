"""Processes a service test starts, kills and restarts itself: service replicas under
uvicorn (each its own OS process, as in a pod) and nats-servers of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared import devservers
from shared.devservers import NatsServer

__all__ = ["STARTUP_S", "Uvicorn", "kill_nats", "sample", "start_uvicorn", "wait_ready"]


def start_uvicorn(
    factory: str, env: dict[str, str], log: Path | None = None
) -> tuple[int, subprocess.Popen[bytes]]:
    """``factory`` (``module:function``) under uvicorn on a free port: the port and the
    process. Its output goes to ``log``; without one, its stdout is dropped."""
    port = devservers.free_port()
    command = [sys.executable, "-m", "uvicorn", factory, "--factory",
               "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    if log is None:
        return port, subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    with open(log, "wb") as out:
        return port, subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@dataclass
class Uvicorn:
    """One service replica the test started with :func:`start_uvicorn`."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """No goodbye: its leases and memberships are left to lapse."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM (a SIGKILL if it is still there 15 s later); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def sample(metrics: str, name: str, of: str) -> float:
    """The value of the unlabelled series ``name`` in ``of``'s ``/metrics`` text."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics of {of}")


STARTUP_S = 90  # a process starts in ~2 s; on a machine loaded 5× over, far longer


def wait_ready(
    port: int | str, timeout: float = STARTUP_S, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``/readyz`` on ``port`` until it answers 200 (``process``, if given, must not
    exit meanwhile): a deadline for starting, not a measure of it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process is None or process.poll() is None, f"the service on :{port} exited"
        assert time.monotonic() < deadline, f"the service on :{port} did not become ready"
        time.sleep(0.1)


def kill_nats(server: NatsServer) -> None:
    """SIGKILL ``server``: no goodbye to its clients (``server.start()`` brings it back)."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()
