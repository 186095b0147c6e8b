"""Static checks of ``deploy/compose.yaml``: it agrees with the code and the image."""

from __future__ import annotations

import shlex
from functools import cache
from typing import Any

from shared import natsauth
from shared.launcher import SERVICES, ServiceSpec
from tests.unit.deploy_nats_support import NATS_AUTH, password_variable
from tests.unit.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    FORWARDED_ALLOW_IPS,
    FORWARDED_FLAG,
    GATEWAY,
    INTERPOLATION,
    LEADER_STANDBY,
    LEASE_TTL_FIELD,
    LEASED,
    MIGRATE_COMMAND,
    MIN_REPLICAS,
    REPLICA_ID,
    REQUIRED,
    ROOT,
    SECRET_LIKE,
    SETTINGS,
    URL_PASSWORD,
    assert_takeover_fits,
    by,
    by_process,
    env_names,
    field_env,
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


def replicas(service: dict[str, Any]) -> int:
    """How many containers compose starts for a service (``deploy.replicas``, or ``scale``)."""
    deploy = service.get("deploy") or {}
    return int(deploy.get("replicas", service.get("scale", 1)))


def interpolated(value: str) -> str:
    """``value`` with every ``${VAR:-default}`` replaced by its default (as with VAR unset)."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


def host_ports(service: dict[str, Any]) -> int:
    """How many host ports a service publishes (a range ``8000-8001`` counts two)."""
    count = 0
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = interpolated(str(port.get("published", "")))
        else:  # [HOST_IP:]PUBLISHED:TARGET[/PROTOCOL] or just TARGET (an ephemeral host port)
            parts = interpolated(str(port)).split(":")
            published = parts[-2] if len(parts) > 1 else ""
        if not published:
            return 10**6  # ephemeral host ports: one per container, never a conflict
        first, _, last = published.partition("-")
        count += int(last or first) - int(first) + 1
    return count


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
    expected = uvicorn_command(spec)
    assert compose_command(service)[: len(expected)] == expected


@by_process
def test_compose_healthcheck_is_readyz_on_its_port(spec: ServiceSpec) -> None:
    check = compose_services()[spec.name].get("healthcheck") or {}
    assert not check.get("disable")
    test = check.get("test")
    assert isinstance(test, list) and test[0] == "CMD", "exec-form healthcheck expected"
    assert test[1:] == ["python", healthcheck_in_image(), "/readyz", str(spec.default_port)]


@by_process
def test_compose_env_names_are_settings_fields(spec: ServiceSpec) -> None:
    accepted = {*env_names(SETTINGS[spec.name]), FORWARDED_ALLOW_IPS}  # the last: uvicorn's
    unknown = set(compose_env(compose_services()[spec.name])) - accepted
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


@by_process
def test_compose_replicas(spec: ServiceSpec) -> None:
    service = compose_services()[spec.name]
    count = replicas(service)
    assert "container_name" not in service, f"{spec.name}: a fixed name allows one container"
    if service.get("ports"):
        # Two containers cannot publish one host port; the gateway keeps one replica unless
        # it publishes a range (deploy/README.md, "Replicas and rollouts").
        assert count <= host_ports(service), f"{spec.name}: {count} replicas, fewer host ports"
    else:
        assert count >= MIN_REPLICAS, f"{spec.name}: {count} replica(s)"


def test_compose_one_shots_run_once() -> None:
    for command in ("shared.db.migrate", "shared.db.demo"):
        name, service = one_shot(command)
        assert replicas(service) == 1, f"{name} must run once, not once per replica"


def env_as_seen(name: str) -> dict[str, str]:
    """A compose service's variables with the defaults of their ``${VAR:-default}``."""
    return {k: interpolated(v) for k, v in compose_env(compose_services()[name]).items()}


@by_process
def test_compose_leaves_replica_id_unset(spec: ServiceSpec) -> None:
    # Compose has no per-replica value: one REPLICA_ID would make both replicas one holder.
    # Unset, every process names itself after its hostname (the container id) and pid.
    env = compose_env(compose_services()[spec.name])
    assert REPLICA_ID not in env, f"{spec.name}: {REPLICA_ID} would be the same in every replica"


@by(LEASED)
def test_compose_sets_the_lease_ttl(spec: ServiceSpec) -> None:
    env = env_as_seen(spec.name)
    names = field_env(SETTINGS[spec.name], LEASE_TTL_FIELD)
    given = [env[name] for name in names if name in env]
    assert given, f"{spec.name}: none of {names} is set"
    assert all(float(value) > 0 for value in given), f"{spec.name}: {given}"


def test_compose_pricefeed_takeover_fits_the_feed_silence_limit() -> None:
    assert_takeover_fits(env_as_seen(LEADER_STANDBY.name), env_as_seen("orders"))


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


# -- NATS identities (deploy/nats/auth.conf; test_deploy_nats.py checks it against the code) -----


def required_variable(value: str) -> str:
    """The variable of a ``${VAR:?message}`` value (anything else fails)."""
    match = INTERPOLATION.fullmatch(value)
    assert match and REQUIRED.match(value), f"{value!r} is not ${{VAR:?…}}"
    return match.group(1)


@by_process
def test_compose_gives_each_process_its_own_nats_identity(spec: ServiceSpec) -> None:
    env = compose_env(compose_services()[spec.name])
    identity = natsauth.identity_of(spec.name)
    assert env.get("NATS_USER") == identity, spec.name
    assert required_variable(env["NATS_PASSWORD"]) == password_variable(identity), spec.name


def test_compose_nats_enforces_the_identities() -> None:
    nats = compose_services()["nats"]
    command = compose_command(nats)
    flags = [i for i, arg in enumerate(command) if arg in ("-c", "--config")]
    assert len(flags) == 1, "nats-server must load the identities' configuration"
    config = command[flags[0] + 1]
    mounts = {}
    for volume in nats.get("volumes") or []:
        source, target, *_ = str(volume).split(":")
        mounts[target] = source
    assert config in mounts, f"{config} is not mounted into the nats container"
    assert (COMPOSE.parent / mounts[config]).resolve() == NATS_AUTH
    env = compose_env(nats)
    for identity in natsauth.IDENTITIES:
        name = password_variable(identity)
        assert required_variable(env.get(name, "")) == name, f"nats: {name}"


# -- forwarded headers ----------------------------------------------------------------------------


def test_compose_gateway_trusts_no_forwarded_headers() -> None:
    # Browsers reach the published port directly: X-Forwarded-* from them would be their own
    # choice of client address. Empty = nobody's (a TLS proxy in front sets its address).
    for name, service in compose_services().items():
        assert FORWARDED_FLAG not in compose_command(service), name
    assert env_as_seen(GATEWAY.name).get(FORWARDED_ALLOW_IPS, None) == ""
