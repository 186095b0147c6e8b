"""Static checks of the image: ``deploy/Dockerfile``, its ignore file and the healthcheck."""

from __future__ import annotations

import importlib.util
import json
import re

from shared.launcher import SERVICES
from tests.unit.deploy_k8s_support import k8s, run_as_user
from tests.unit.deploy_support import (
    DEPLOY,
    DOCKERFILE,
    DOCKERIGNORE,
    GATEWAY,
    ROOT,
    SECRET_LIKE,
    SETTINGS,
    args_of,
    final_stage,
    healthcheck_in_image,
    image_uid,
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
    assert json.loads(cmd)[:7] == uvicorn_command(GATEWAY)


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
    loader = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert loader and loader.loader
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    for spec in SERVICES:
        argv = ["/app/.venv/bin/python", "/app/.venv/bin/uvicorn", *uvicorn_command(spec)[1:]]
        assert module.uvicorn_port(argv) == spec.default_port
    assert module.uvicorn_port(["uvicorn", "x:y", "--port=8004"]) == 8004
    assert module.uvicorn_port(["python", "-m", "shared.db.migrate"]) is None
