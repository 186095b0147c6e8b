"""The deploy smoke test: every command line the image, Kubernetes and compose run, really run.

No container runtime is expected here, so this runs what the containers would: each command line
taken from ``deploy/Dockerfile`` (its ``CMD``), ``deploy/k8s/*.yaml`` (every container and init
container) and ``deploy/compose.yaml`` (every service's command and CMD health check), verbatim
but for its ``--port`` (a free one), with the image's ``ENV`` (its ``/app`` paths mapped to this
checkout) and what a test stack needs: ``APP_ENV=production``, a test database, the test
nats-server and real-looking secrets. A server must answer ``/healthz`` and stop on SIGTERM; a
one-shot must exit 0. A command line that no longer starts fails here.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import devservers
from shared.launcher import SERVICES
from tests.unit.deploy_support import (
    COMPOSE,
    DEPLOY,
    K8S,
    ROOT,
    args_of,
    final_stage,
    healthcheck_in_image,
    load,
    load_all,
    prestop_in_image,
)

pytestmark = pytest.mark.service

# nine processes start at once on two cores: each imports FastAPI, SQLAlchemy, … (~3 s of
# CPU, ~7 s when the shared machine runs slow); a deadline for readiness, not a speed test
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
SECRET = "smoke-test-secret-" + "x" * 32


@dataclass
class Command:
    argv: tuple[str, ...]
    sources: list[str] = field(default_factory=list)
    healthchecks: list[tuple[str, ...]] = field(default_factory=list)  # compose's CMD checks

    @property
    def server(self) -> bool:
        return "uvicorn" in self.argv[0]

    def __str__(self) -> str:
        return f"{shlex.join(self.argv)}  (from {', '.join(self.sources)})"


def _add(found: dict[tuple[str, ...], Command], argv: list[Any], source: str) -> Command:
    key = tuple(str(a) for a in argv)
    command = found.setdefault(key, Command(key))
    command.sources.append(source)
    return command


def deploy_commands() -> list[Command]:
    """Every distinct command line the deploy files run, with where each comes from."""
    found: dict[tuple[str, ...], Command] = {}
    entrypoint = [json.loads(a) for a in args_of("ENTRYPOINT", final_stage())]
    (cmd,) = [json.loads(a) for a in args_of("CMD", final_stage())][-1:]
    _add(found, [*(entrypoint[-1] if entrypoint else []), *cmd], "Dockerfile CMD")
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("Deployment", "Job"):
                continue
            pod = doc["spec"]["template"]["spec"]
            for box in [*(pod.get("initContainers") or []), *pod["containers"]]:
                argv = [*(box.get("command") or []), *(box.get("args") or [])]
                if argv:
                    _add(found, argv, f"k8s {doc['metadata']['name']}/{box['name']}")
    for name, service in load(COMPOSE.read_text())["services"].items():
        command = service.get("command")
        if command is None or "build" not in service:  # PostgreSQL's and NATS's own images
            continue
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        argv = [a.replace("$$", "$") for a in argv]  # compose's escape for a literal $
        entry = service.get("entrypoint") or []
        entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
        added = _add(found, [*entry, *argv], f"compose {name}")
        test = (service.get("healthcheck") or {}).get("test") or []
        if test and test[0] == "CMD":
            added.healthchecks.append(tuple(str(a) for a in test[1:]))
    return list(found.values())


def image_env(stack: dict[str, str]) -> dict[str, str]:
    """The image's ENV, its paths mapped to this checkout, then the test stack's variables."""
    venv = Path(sys.prefix)
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ.get("PATH", "")}
    for args in args_of("ENV", final_stage()):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            value = value.replace("$PATH", env["PATH"]).replace("${PATH}", env["PATH"])
            env[key] = map_image_path(value.replace("/app/.venv", str(venv)))
    return env | stack


def map_image_path(value: str) -> str:
    scripts = {
        healthcheck_in_image(): DEPLOY / "healthcheck.py",
        prestop_in_image(): DEPLOY / "prestop.py",
    }
    for in_image, here in scripts.items():
        value = value.replace(in_image, str(here))
    return value.replace("/app", str(ROOT))


def with_port(argv: tuple[str, ...], port: int) -> list[str]:
    args = [map_image_path(a) for a in argv]
    assert "--port" in args, f"{shlex.join(argv)}: no --port"
    args[args.index("--port") + 1] = str(port)
    return args


def test_the_smoke_test_finds_every_process() -> None:
    commands = deploy_commands()
    servers = [c for c in commands if c.server]
    for spec in SERVICES:
        running = [c for c in servers if spec.factory in c.argv]
        sources = {s.split()[0] for c in running for s in c.sources}
        assert {"k8s", "compose"} <= sources, f"{spec.name}: only in {sources}"
    assert any("Dockerfile CMD" in c.sources for c in servers), "the image's default command"
    one_shots = {s for c in commands if not c.server for s in c.sources}
    assert any(s.startswith("k8s migrate") for s in one_shots), one_shots
    assert sum("wait-for-schema" in s for s in one_shots) == len(SERVICES), one_shots
    assert {"compose migrate", "compose demo-data"} <= one_shots, one_shots


@dataclass
class Started:
    command: Command
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def output(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def start(command: Command, argv: list[str], env: dict[str, str], log: Path) -> Started:
    out = log.open("wb")
    try:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        out.close()
    return Started(command, proc, log)


def answered(started: Started, path: str, deadline: float) -> str | None:
    """None once ``path`` answers 200; otherwise what went wrong."""
    url = f"http://127.0.0.1:{started.port}{path}"
    last = ""
    while time.monotonic() < deadline:
        if started.proc.poll() is not None:
            return f"exited {started.proc.returncode} before answering {path}"
        try:
            status = httpx.get(url, timeout=1.0).status_code
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if status == 200:
                return None
            last = f"HTTP {status}"
        time.sleep(0.1)  # polling the condition above
    return f"{path} not answered in {START_TIMEOUT_S:g} s ({last})"


@pytest.fixture
def stack_env(demo_database_url: str, nats_url: str) -> dict[str, str]:
    return image_env(
        {
            "APP_ENV": "production",
            "DATABASE_URL": demo_database_url,
            "NATS_URL": nats_url,
            "IDENTITY_SECRET": SECRET,
            "GATEWAY_SESSION_SECRET": SECRET + "-session",
            "DEMO_PASSWORD": "smoke-test-demo-password",
            "LOG_LEVEL": "WARNING",
        }
    )


@pytest.fixture
def processes() -> Iterator[list[Started]]:
    started: list[Started] = []
    yield started
    for each in started:  # whatever a failed assertion left running
        if each.proc.poll() is None:
            os.killpg(each.proc.pid, signal.SIGKILL)
            each.proc.wait()


def test_every_deploy_command_line_starts(
    stack_env: dict[str, str], tmp_path: Path, processes: list[Started]
) -> None:
    problems: list[str] = []
    for i, command in enumerate(deploy_commands()):
        log = tmp_path / f"{i}.log"
        if command.server:
            port = devservers.free_port()
            started = start(command, with_port(command.argv, port), stack_env, log)
            started.port = port
        else:
            started = start(command, [map_image_path(a) for a in command.argv], stack_env, log)
        processes.append(started)

    deadline = time.monotonic() + START_TIMEOUT_S
    for each in processes:
        if not each.command.server:
            try:
                code = each.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                problems.append(f"{each.command}: exit {code}\n{each.output()}")
            continue
        if problem := answered(each, "/healthz", deadline):
            problems.append(f"{each.command}: {problem}\n{each.output()}")
            continue
        for check in each.command.healthchecks:  # compose's, against this process's port
            original_port = each.command.argv[each.command.argv.index("--port") + 1]
            argv = [map_image_path(a) for a in check]
            argv = [str(each.port) if a == original_port else a for a in argv]
            result = subprocess.run(argv, cwd=ROOT, env=stack_env, capture_output=True, timeout=10)
            if result.returncode != 0:
                problems.append(f"{each.command}: health check {check} failed: {result.stderr!r}")

    for each in processes:
        if each.command.server and each.proc.poll() is None:
            each.proc.send_signal(signal.SIGTERM)
    for each in processes:
        if not each.command.server:
            continue
        try:
            each.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            each.proc.send_signal(signal.SIGUSR1)  # its tasks' stacks, into its log
            time.sleep(2)
            each.proc.kill()
            problems.append(
                f"{each.command}: still running {STOP_TIMEOUT_S:g} s after SIGTERM; its log:\n"
                + each.output(20_000)
            )
    assert not problems, "\n\n".join(problems)
