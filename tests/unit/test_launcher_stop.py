"""The launcher's stop: a process that ignores SIGTERM is asked for its tasks (SIGUSR1,
which every service answers with :func:`shared.process.dump_tasks`), then killed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from shared.db.demo import wants_demo_data
from shared.launcher import Child, ServiceSpec

# stands in for a service stuck at shutdown: ignores SIGTERM, answers SIGUSR1 as one does
_STUCK = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "def dump(*_):\n"
    "    open(sys.argv[1], 'w').write('--- 1 asyncio tasks (SIGUSR1)')\n"
    "signal.signal(signal.SIGUSR1, dump)\n"
    "print('up', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_service_that_does_not_stop_writes_its_tasks_and_is_killed(tmp_path: Path) -> None:
    dumped = tmp_path / "tasks.txt"
    child = Child(ServiceSpec("stuck", "unused:app", "STUCK_PORT", 1), 1, {})
    child.process = subprocess.Popen(
        [sys.executable, "-c", _STUCK, str(dumped)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert child.process.stdout is not None
    assert child.process.stdout.readline() == b"up\n"
    child.stop()
    started = time.monotonic()
    child.wait_stopped(deadline=time.monotonic() + 0.3)
    assert child.process.returncode is not None  # killed
    assert time.monotonic() - started < 5
    assert dumped.read_text() == "--- 1 asyncio tasks (SIGUSR1)"
    child.process.stdout.close()


def test_demo_users_go_only_where_a_published_password_can_do_no_harm() -> None:
    assert wants_demo_data({}, own_database=True)  # `make run`'s own PostgreSQL
    assert wants_demo_data({"APP_ENV": "production"}, own_database=True)
    assert wants_demo_data({"DATABASE_URL": "postgresql://db/x"}, own_database=False)  # dev
    given = {"DATABASE_URL": "postgresql://db/x", "APP_ENV": "production"}
    assert not wants_demo_data(given, own_database=False)
