"""The end-to-end stack's shutdown: a launcher that does not stop fails the run with its
last lines, and leaves nothing running (it and what it started are killed)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from tests.e2e.conftest import Stack, shut_down

# stands in for a launcher stuck at shutdown: ignores Ctrl-C, and has started a process
_STUCK = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
    " start_new_session=True)\n"
    "print('waiting for something', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_launcher_that_does_not_stop_is_killed_and_says_where_it_was() -> None:
    process = subprocess.Popen([sys.executable, "-c", _STUCK], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = [process.stdout.readline()]
    deadline = time.monotonic() + 10
    while not psutil.Process(process.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    [child] = psutil.Process(process.pid).children()
    with pytest.raises(pytest.fail.Exception, match=r"did not stop within 0\.5 s") as failed:
        shut_down(Stack("http://127.0.0.1:1", {}, process, lines), timeout_s=0.5)
    assert "waiting for something" in str(failed.value)
    assert process.returncode is not None
    child.wait(5)  # killed too, though in a session of its own
