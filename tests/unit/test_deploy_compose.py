"""Static checks of ``deploy/compose.yaml``: it agrees with the code and the image."""

from __future__ import annotations

import shlex
from functools import cache
from typing import Any

from shared.launcher import SERVICES, ServiceSpec
from tests.unit.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    GATEWAY,
    INTERPOLATION,
    MIGRATE_COMMAND,
    REQUIRED,
    ROOT,
    SECRET_LIKE,
    SETTINGS,
    URL_PASSWORD,
    by_process,
    env_names,
    gateway_service_urls,
    healthcheck_in_image,
    load,
    module_env_reads,
    secret_env,
    strings,
    uvicorn_command,
)

# -- compose -------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return load(COMPOSE.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (opts or {}).get("condition", "service_started") for name, opts in deps.items()}


def one_shot(command: str) -> tuple[str, dict[str, Any]]:
    """The compose service whose command runs ``python -m <command>``."""
    found = [
        (name, svc)
        for name, svc in compose_services().items()
        if f"python -m {command}" in " ".join(compose_command(svc))
    ]
    assert len(found) == 1, f"expected one compose service running {command}, found {found}"
    return found[0]


@by_process
def test_compose_runs_the_factory_on_its_port(spec: ServiceSpec) -> None:
    service = compose_services()[spec.name]
    assert compose_command(service)[:7] == uvicorn_command(spec)


@by_process
def test_compose_healthcheck_is_readyz_on_its_port(spec: ServiceSpec) -> None:
    check = compose_services()[spec.name].get("healthcheck") or {}
    assert not check.get("disable")
    test = check.get("test")
    assert isinstance(test, list) and test[0] == "CMD", "exec-form healthcheck expected"
    assert test[1:] == ["python", healthcheck_in_image(), "/readyz", str(spec.default_port)]


@by_process
def test_compose_env_names_are_settings_fields(spec: ServiceSpec) -> None:
    accepted = env_names(SETTINGS[spec.name])
    unknown = set(compose_env(compose_services()[spec.name])) - set(accepted)
    assert not unknown, f"{spec.name} is given variables its settings do not read: {unknown}"


@by_process
def test_compose_provides_every_secret(spec: ServiceSpec) -> None:
    env = compose_env(compose_services()[spec.name])
    for field, names in secret_env(SETTINGS[spec.name]).items():
        given = names & set(env)
        assert given, f"{spec.name}: secret {field} ({names}) is not set"
        for name in given:
            assert REQUIRED.match(env[name]), f"{spec.name}: {name} must be ${{VAR:?…}}"


@by_process
def test_compose_runs_in_production(spec: ServiceSpec) -> None:
    env = compose_env(compose_services()[spec.name])
    assert env.get("APP_ENV") == "production"


def test_compose_secrets_are_required_interpolations() -> None:
    """Every secret comes from ``${VAR:?msg}``: no default, no literal value in the file."""
    for name, service in compose_services().items():
        command = " ".join(compose_command(service))
        for key, value in compose_env(service).items():
            if SECRET_LIKE.search(key) and value:
                assert INTERPOLATION.fullmatch(value), f"{name}: {key} has a literal value"
        for value in strings(service):
            if match := URL_PASSWORD.search(value):
                assert REQUIRED.match(match.group(1)), f"{name}: password in a URL: {value}"
            for var, op, rest in INTERPOLATION.findall(value):
                if not SECRET_LIKE.search(var):
                    continue
                if op == ":?":
                    assert rest.strip(), f"{name}: ${{{var}:?…}} needs a message"
                    continue
                # Profile-gated one-shots cannot use :? (compose interpolates every service,
                # active or not); then the command must refuse to run without it.
                guarded = op == ":-" and not rest and f"$${{{var}:?" in command
                assert guarded, f"{name}: ${{{var}{op}{rest}}} is not ${{{var}:?…}}"


def test_compose_only_the_gateway_publishes_a_port() -> None:
    for name, service in compose_services().items():
        if name != GATEWAY.name:
            assert not service.get("ports"), f"{name} publishes a port"
    ports = compose_services()[GATEWAY.name].get("ports")
    assert ports, "the gateway publishes no port"
    for port in ports:
        target = port["target"] if isinstance(port, dict) else str(port).split(":")[-1]
        assert int(str(target).split("/")[0]) == GATEWAY.default_port


def test_compose_points_the_gateway_at_the_services() -> None:
    env = compose_env(compose_services()[GATEWAY.name])
    for name, spec in gateway_service_urls().items():
        assert spec.name in compose_services()
        assert env.get(name) == f"http://{spec.name}:{spec.default_port}", name
    assert "GATEWAY_ALLOWED_ORIGINS" in env


def test_compose_start_order() -> None:
    services = compose_services()
    migrate, _ = one_shot("shared.db.migrate")
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert condition in allowed, f"{name} → {dep}: {condition}"
            if condition == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{dep} has no healthcheck"
    assert depends_on(services[migrate]).get("postgres") == "service_healthy"
    for spec in SERVICES:
        deps = depends_on(services[spec.name])
        assert deps.get("postgres") == "service_healthy", spec.name
        assert deps.get("nats") == "service_healthy", spec.name
        assert deps.get(migrate) == "service_completed_successfully", spec.name
    gateway_deps = depends_on(services[GATEWAY.name])
    for spec in gateway_service_urls().values():
        assert gateway_deps.get(spec.name) == "service_healthy", spec.name


def test_compose_backends() -> None:
    postgres = compose_services()["postgres"]
    nats = compose_services()["nats"]
    assert str(postgres["image"]).startswith("postgres:")
    assert postgres.get("volumes"), "PostgreSQL data must live in a volume"
    assert "pg_isready" in " ".join(strings(postgres["healthcheck"]["test"]))
    assert REQUIRED.match(compose_env(postgres)["POSTGRES_PASSWORD"])
    assert str(nats["image"]).startswith("nats:")
    assert "-js" in compose_command(nats), "NATS must run with JetStream (-js)"
    assert nats.get("healthcheck", {}).get("test")
    for spec in SERVICES:
        env = compose_env(compose_services()[spec.name])
        assert env["NATS_URL"].startswith("nats://nats:")
        assert "@postgres:" in env["DATABASE_URL"]


def test_compose_migrate_and_demo_data() -> None:
    name, migrate = one_shot("shared.db.migrate")
    assert compose_command(migrate) == MIGRATE_COMMAND
    assert str(migrate.get("restart", "no")) == "no"
    assert set(compose_env(migrate)) <= module_env_reads("shared.db.migrate")
    assert not migrate.get("profiles"), f"{name} must run on every `up`"
    name, demo = one_shot("shared.db.demo")
    assert demo.get("profiles"), f"{name} must be opt-in (a profile)"
    assert set(compose_env(demo)) <= module_env_reads("shared.db.demo")
    assert "DEMO_PASSWORD" in compose_env(demo)


def test_compose_builds_one_image_from_the_repo_root() -> None:
    app_services = [
        svc
        for svc in compose_services().values()
        if compose_command(svc)[:1] == ["uvicorn"]
        or "python -m shared." in " ".join(compose_command(svc))
    ]
    assert len(app_services) >= len(SERVICES) + 1
    for service in app_services:
        build = service["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    assert len({svc["image"] for svc in app_services}) == 1
