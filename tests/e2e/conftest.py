"""The whole stack, started the way `make run` starts it, and a real headless Chromium.

The stack runs on free ports against a fresh database (migrated and loaded with the demo
data by the launcher) and the run's nats-server. Chromium is Debian's package driven by
Playwright through ``executable_path``; in CI a missing browser is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from shared import devservers
from shared.launcher import SERVICES
from tests.conftest import TEST_PASSWORD

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[str]
    lines: list[str]

    def port(self, service: str) -> int:
        spec = next(s for s in SERVICES if s.name == service)
        return int(self.env[spec.port_env])


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"Chromium not found at {path}: `apt-get install chromium` (.ci/run does)")
    return path


def launch(env: dict[str, str], data_dir: Path, timeout: float = 120) -> Stack:
    """``make run``'s launcher with ``env``, once it says the dashboard is ready."""
    for spec in SERVICES:
        env.setdefault(spec.port_env, str(devservers.free_port()))
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.launcher", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not any("dashboard ready" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
            # the first error explains it; the last lines are mostly everything stopping
            first = next((i for i, line in enumerate(lines) if "ERROR" in line), len(lines))
            pytest.fail(
                "the stack did not come up:\n"
                + "".join(lines[first : first + 40])
                + "--- its last lines:\n"
                + "".join(lines[-80:])
            )
        time.sleep(0.1)
    return Stack(f"http://127.0.0.1:{env['GATEWAY_PORT']}", env, process, lines)


def shut_down(stack: Stack, timeout_s: float = 30.0) -> None:
    """Stop the launcher as Ctrl-C does (it gives its services 10 s, then kills them). One
    that has not exited after ``timeout_s`` is asked where its threads are (SIGUSR1), killed
    with every process it started, and the test fails with its last lines: what it was
    waiting for."""
    stack.process.send_signal(signal.SIGINT)
    try:
        stack.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        started = psutil.Process(stack.process.pid).children(recursive=True)
        stack.process.send_signal(signal.SIGUSR1)  # the launcher's threads, into its lines
        with contextlib.suppress(subprocess.TimeoutExpired):
            stack.process.wait(1.0)
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()
        stack.process.kill()  # (nothing if the dump was its end)
        stack.process.wait(10)
        pytest.fail(
            f"the stack did not stop within {timeout_s:g} s of SIGINT; its last lines:\n"
            + "".join(stack.lines[-80:])
        )
    finally:
        if stack.process.stdout is not None:
            stack.process.stdout.close()


@pytest.fixture(scope="session")
def stack(
    pg_server_uri: str, db_templates: dict[str, str], tmp_path_factory: Any
) -> Iterator[Stack]:
    """The stack on a nats-server of its own: the leases of service tests' replicas, dead
    seconds ago, must not own partitions (and change their epochs) under these pages."""
    name = f"e2e_{os.getpid()}"
    url = devservers.run_async(devservers.create_database(pg_server_uri, name))
    nats = devservers.NatsServer(Path(tmp_path_factory.mktemp("stack-nats"))).start()
    env = {k: v for k, v in os.environ.items()}
    env.update(DATABASE_URL=url, NATS_URL=nats.url, DEMO_PASSWORD=TEST_PASSWORD)
    running = launch(env, tmp_path_factory.mktemp("stack"))
    yield running
    shut_down(running)
    # what the services rendered in every test reached the pages: the gateway refused nothing
    refused = [line for line in running.lines if "dropping a " in line or " refused (" in line]
    assert not refused, "the gateway refused a service's HTML:\n" + "".join(refused[:10])
    nats.stop()
    devservers.run_async(devservers.drop_database(pg_server_uri, name))


def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (for a package-scoped ``browser`` fixture)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def page_factory(browser: Any, base_url: str, timeout_ms: int = 10_000) -> Iterator[Any]:
    """``make()`` → a page in a fresh browser context (its own cookies) on ``base_url``.

    Each page's console and failed requests are recorded, for :func:`dump_pages`."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(timeout_ms)
        journal: list[str] = []
        page.on("console", lambda m: journal.append(f"console {m.type}: {m.text}"))
        page.on(
            "response",
            lambda r: (
                journal.append(f"{r.status} {r.request.method} {r.url}")
                if r.request.method != "GET" or r.status >= 400
                else None
            ),
        )
        page.on("requestfailed", lambda r: journal.append(f"failed {r.method} {r.url}"))
        page.on("websocket", lambda ws: journal.append(f"websocket {ws.url}"))
        _journals[page] = journal
        return page

    yield make
    for context in contexts:
        context.close()


_journals: dict[Any, list[str]] = {}


def dump_pages(name: str, stack: Stack | None) -> None:
    """After a failed test: each open page's DOM and journal, and the stack's last log
    lines, under test-artifacts/ (what CI keeps to diagnose a failure)."""
    lines: list[str] = []
    for index, (page, journal) in enumerate(list(_journals.items())):
        try:
            html = page.content()
        except Exception as exc:  # the page may be closed already
            html = f"(page unavailable: {exc})"
        artifact(f"{name}-page{index}.html").write_text(html)
        lines += [f"--- page {index} ({page.url if not page.is_closed() else 'closed'})", *journal]
    if stack is not None:
        lines += ["--- stack log (last 300 lines)", *(x.rstrip() for x in stack.lines[-300:])]
    artifact(f"{name}.log").write_text("\n".join(lines) + "\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    report = yield
    if report.when == "call" and report.failed and _journals:
        stack = item.funcargs.get("stack") or item.funcargs.get("fault_stack")
        stack = getattr(stack, "stack", stack)  # a fault stack holds its Stack
        dump_pages(item.name, stack if isinstance(stack, Stack) else None)
    if report.when == "teardown":
        _journals.clear()
    return report


@pytest.fixture(scope="package")  # closed before anything else needs the event loop
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture
def new_page(browser: Any, stack: Stack) -> Iterator[Any]:
    """``new_page()`` → a page in a fresh browser context (its own cookies)."""
    yield from page_factory(browser, stack.base_url)


def login(page: Any, username: str, password: str = TEST_PASSWORD) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    page.wait_for_selector("body[data-conn-state=live]")


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
