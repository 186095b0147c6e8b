"""Static checks of the image: ``deploy/Dockerfile``, its ignore file, the healthcheck and the
preStop hook."""

from __future__ import annotations

import http.server
import json
import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.launcher import SERVICES
from tests.unit.deploy_k8s_support import k8s, run_as_user
from tests.unit.deploy_support import (
    DOCKERFILE,
    DOCKERIGNORE,
    FORWARDED_ALLOW_IPS,
    FORWARDED_FLAG,
    GATEWAY,
    ROOT,
    SECRET_LIKE,
    SETTINGS,
    args_of,
    final_stage,
    healthcheck_in_image,
    image_uid,
    load_script,
    prestop_in_image,
    secret_env,
    uvicorn_command,
)


def test_dockerfile_base_is_python_311_slim() -> None:
    for args in args_of("FROM"):
        image = args.split()[0]
        if image.startswith("--platform"):
            image = args.split()[1]
        assert image.split("@")[0] == "python:3.11-slim", args


def test_dockerfile_uv_matches_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (wanted,) = re.findall(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))

    def resolve(value: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), value)

    found = re.findall(r"uv==([^\s\"']+)|astral-sh/uv:([^\s\"']+)", text)
    pins = [resolve(version) for pair in found for version in pair if version]
    assert pins, "uv is not pinned"
    assert set(pins) == {wanted}, f"Dockerfile pins uv {pins}, Makefile {wanted}"


def test_dockerfile_installs_frozen_dependencies_without_dev() -> None:
    syncs = [a for a in args_of("RUN") if "uv sync" in a]
    assert syncs
    for args in syncs:
        assert "--frozen" in args or "--locked" in args
        assert "--no-dev" in args
        assert "--all-groups" not in args and "--group dev" not in args


def test_dockerfile_runs_as_non_root() -> None:
    assert image_uid() != 0
    for workload in [*k8s("Deployment").values(), *k8s("Job").values()]:
        assert run_as_user(workload) == image_uid(), workload["metadata"]["name"]


def test_dockerfile_healthcheck_and_default_command() -> None:
    (check,) = args_of("HEALTHCHECK", final_stage())
    assert healthcheck_in_image() in check and "/healthz" in check
    (cmd,) = args_of("CMD", final_stage())
    expected = uvicorn_command(GATEWAY)
    assert json.loads(cmd)[: len(expected)] == expected


def test_dockerfile_trusts_forwarded_headers_only_from_itself() -> None:
    # uvicorn reads FORWARDED_ALLOW_IPS when no --forwarded-allow-ips is given: the image says
    # "this container only", Kubernetes and compose set their own for the gateway.
    env: dict[str, str] = {}
    for args in args_of("ENV", final_stage()):
        env |= dict(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=(\S*)", args))
    assert env.get(FORWARDED_ALLOW_IPS) == "127.0.0.1"
    (cmd,) = args_of("CMD", final_stage())
    assert FORWARDED_FLAG not in json.loads(cmd)


def test_dockerfile_is_production_unless_told_otherwise() -> None:
    # development accepts placeholder secrets and plain-http cookies: never an image default
    env: dict[str, str] = {}
    for args in args_of("ENV", final_stage()):
        env |= dict(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=(\S*)", args))
    assert env.get("APP_ENV") == "production"


def test_dockerfile_bakes_in_no_secrets() -> None:
    secret_names = {n for cls in SETTINGS.values() for s in secret_env(cls).values() for n in s}
    for keyword in ("ENV", "ARG"):
        for args in args_of(keyword):
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + args) or [args]:
                assert not SECRET_LIKE.search(name), f"{keyword} {name}"
                assert name not in secret_names | {"DATABASE_URL"}, f"{keyword} {name}"
    for args in args_of("COPY"):
        assert ".env" not in args.split()


def test_dockerignore_lets_in_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list: exclude everything, then re-include"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for args in args_of("COPY"):
        if "--from=" in args:
            continue
        for source in [a for a in args.split() if not a.startswith("--")][:-1]:
            assert source.rstrip("/") in included, f"COPY {source} is excluded from the context"
    assert not any(".env" in p or p in {".git", ".venv", ".data", "tests"} for p in included)


def test_healthcheck_script_finds_the_uvicorn_port() -> None:
    module = load_script("healthcheck")
    for spec in SERVICES:
        argv = ["/app/.venv/bin/python", "/app/.venv/bin/uvicorn", *uvicorn_command(spec)[1:]]
        assert module.uvicorn_port(argv) == spec.default_port
    assert module.uvicorn_port(["uvicorn", "x:y", "--port=8004"]) == 8004
    assert module.uvicorn_port(["python", "-m", "shared.db.migrate"]) is None


# -- deploy/prestop.py ---------------------------------------------------------------------------


def test_prestop_script_is_in_the_image_beside_the_healthcheck() -> None:
    # prestop.py imports healthcheck.py from its own directory when it has to find the port.
    assert prestop_in_image().rsplit("/", 1)[0] == healthcheck_in_image().rsplit("/", 1)[0]


def test_prestop_arguments_and_url() -> None:
    prestop = load_script("prestop")
    assert prestop.release_url(8003) == "http://127.0.0.1:8003/ops/release"
    assert prestop.parse([]) == (True, None)
    assert prestop.parse(["8005"]) == (True, 8005)
    assert prestop.parse([prestop.NO_RELEASE]) == (False, None)
    for bad in (["eight"], ["8001", "8002"], ["--port=8001"]):
        with pytest.raises(SystemExit):
            prestop.parse(bad)


def test_prestop_sleep_comes_from_the_environment() -> None:
    prestop = load_script("prestop")
    assert prestop.sleep_seconds({}) == prestop.DEFAULT_SLEEP_S == 5
    assert prestop.sleep_seconds({"PRESTOP_SLEEP_S": "2.5"}) == 2.5
    assert prestop.sleep_seconds({"PRESTOP_SLEEP_S": "0"}) == 0
    for bad in ("", "soon", "-1", "nan", "inf"):
        assert prestop.sleep_seconds({"PRESTOP_SLEEP_S": bad}) == prestop.DEFAULT_SLEEP_S, bad


@contextmanager
def release_endpoint(status: int = 204) -> Iterator[tuple[int, list[tuple[str, str, str | None]]]]:
    """A local HTTP server recording ``(method, path, X-Ops-Release)`` of every request;
    yields its port."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(("POST", self.path, self.headers.get("X-Ops-Release")))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_prestop_sends_the_header_the_release_requires() -> None:
    from shared import wire

    assert load_script("prestop").RELEASE_HEADER == wire.HEADER_OPS_RELEASE


def test_prestop_releases_then_sleeps() -> None:
    prestop = load_script("prestop")
    slept: list[float] = []
    with release_endpoint() as (port, seen):
        assert prestop.main([str(port)], environ={}, sleep=slept.append) == 0
    assert seen == [("POST", "/ops/release", "1")]
    assert slept == [prestop.DEFAULT_SLEEP_S]


def test_prestop_gateway_only_sleeps() -> None:
    prestop = load_script("prestop")
    slept: list[float] = []
    with release_endpoint() as (_, seen):
        environ = {"PRESTOP_SLEEP_S": "3"}
        assert prestop.main([prestop.NO_RELEASE], environ=environ, sleep=slept.append) == 0
    assert seen == []
    assert slept == [3.0]


def test_prestop_ignores_a_failed_release(capsys: pytest.CaptureFixture[str]) -> None:
    prestop = load_script("prestop")
    with release_endpoint(status=404) as (port, seen):
        assert prestop.release(prestop.release_url(port)) is False
    assert seen == [("POST", "/ops/release", "1")]
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    slept: list[float] = []
    assert prestop.main([str(closed)], environ={}, sleep=slept.append) == 0
    assert slept == [prestop.DEFAULT_SLEEP_S]
    assert "ignored" in capsys.readouterr().err


def test_prestop_finds_the_uvicorn_port_without_an_argument(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prestop = load_script("prestop")
    healthcheck = load_script("healthcheck")
    with release_endpoint() as (port, seen):
        argv = ["/app/.venv/bin/python", "/app/.venv/bin/uvicorn", "x:y", "--port", str(port)]
        monkeypatch.setattr(healthcheck, "_command_lines", lambda: iter([argv]))
        monkeypatch.setitem(sys.modules, "healthcheck", healthcheck)
        assert prestop.main([], environ={"PRESTOP_SLEEP_S": "0"}, sleep=lambda _: None) == 0
    assert seen == [("POST", "/ops/release", "1")]
