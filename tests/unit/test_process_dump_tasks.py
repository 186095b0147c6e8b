"""``kill -USR1`` on a service: every asyncio task and where it waits, on stderr."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from shared.bus import InMemoryBus
from shared.process import Connections, create_process_app, dump_tasks
from shared.settings import ServiceSettings


async def test_every_task_and_where_it_waits(capsys: pytest.CaptureFixture[str]) -> None:
    never = asyncio.Event()

    async def waiting_for_something_that_never_comes() -> None:
        await never.wait()

    task = asyncio.create_task(waiting_for_something_that_never_comes())
    await asyncio.sleep(0)
    dump_tasks()
    task.cancel()
    err = capsys.readouterr().err
    assert "asyncio tasks (SIGUSR1)" in err
    assert "waiting_for_something_that_never_comes" in err and "never.wait()" in err


async def test_a_running_process_dumps_them_on_sigusr1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_process_app(
        "probe",
        ServiceSettings(),
        [],
        connections=Connections(bus=InMemoryBus(), database=False),
    )
    async with app.router.lifespan_context(app):
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)  # the loop runs the handler
    assert "asyncio tasks (SIGUSR1)" in capsys.readouterr().err
