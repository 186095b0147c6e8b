"""A small TCP balancer for ``make run`` with replicas: one address, several processes.

It listens where the single process would (so the gateway, the browser and the other
services keep their addresses) and hands each new connection to the next replica in
turn; a replica that refuses the connection (dead, restarting) is skipped. Connections
are spliced byte for byte, so HTTP keep-alive and WebSockets pass through unchanged.
In Kubernetes a Service does this job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading

__all__ = ["Balancer"]

CONNECT_TIMEOUT_S = 2.0
CHUNK = 65536


class Balancer:
    def __init__(self, port: int, backends: list[int], host: str = "127.0.0.1") -> None:
        self.port, self.backends, self.host = port, backends, host
        self._next = itertools.cycle(range(len(backends)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"balancer-{port}")
        self._error: BaseException | None = None

    def start(self) -> Balancer:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[next(self._next)]
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(self.host, port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                continue
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
