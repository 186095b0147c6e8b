"""Static checks of ``deploy/``: the Dockerfile, compose and Kubernetes agree with the code.

No Docker engine runs here, so these read the files. Processes, factories and ports come from
``shared.launcher.SERVICES``; the environment variables a process may be given come from its
pydantic-settings class (env prefix + field name, or the field's validation alias).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath, SecretBytes, SecretStr
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.orders.settings import OrdersSettings
from services.portfolio.settings import PortfolioSettings
from services.pricefeed.settings import PricefeedSettings
from services.risk.settings import RiskSettings
from services.watchlist.settings import WatchlistSettings
from shared.db.demo import DEMO_PASSWORD_DEFAULT
from shared.launcher import SERVICES, ServiceSpec
from shared.settings import DEV_PLACEHOLDER_SECRET, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
SECRET_TEMPLATE = K8S / "secret.template.yaml"

SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "portfolio": PortfolioSettings,
    "watchlist": WatchlistSettings,
    "orders": OrdersSettings,
    "risk": RiskSettings,
    "pricefeed": PricefeedSettings,
}
SPECS = {spec.name: spec for spec in SERVICES}
GATEWAY = SPECS["gateway"]

MIGRATE_COMMAND = ["python", "-m", "shared.db.migrate", "upgrade"]
# Names that hold credentials whatever reads them.
SECRET_LIKE = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE_KEY")
# ${VAR}, ${VAR:-x}, ${VAR:?msg}, … but not compose's escaped $${VAR} (a literal for the shell).
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
REQUIRED = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")
URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s]+)@")


class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=StrictLoader))


by_process = pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])


# -- what the code reads -----------------------------------------------------------------------


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Every environment variable ``cls`` reads (upper-cased) → the field it fills."""
    assert not cls.model_config.get("case_sensitive"), "names below are compared upper-cased"
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            candidates: list[Any] = [prefix + field]  # pydantic-settings: prefix + field name
        elif isinstance(alias, AliasChoices):
            candidates = list(alias.choices)
        else:
            candidates = [alias]
        for candidate in candidates:
            name = candidate.path[0] if isinstance(candidate, AliasPath) else candidate
            names[str(name).upper()] = field
    return names


def _is_secret(annotation: Any) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def secret_env(cls: type[BaseSettings]) -> dict[str, set[str]]:
    """Each secret field of ``cls`` → the environment variables that can set it."""
    names = env_names(cls)
    return {
        field: {env for env, f in names.items() if f == field}
        for field, info in cls.model_fields.items()
        if _is_secret(info.annotation)
    }


def module_env_reads(module: str) -> set[str]:
    """Variables a module reads straight from ``os.environ`` (the one-shot jobs do)."""
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    pattern = r"os\.(?:environ\[|environ\.get\(|getenv\()\s*[\"'](\w+)[\"']"
    return set(re.findall(pattern, source))


def uvicorn_command(spec: ServiceSpec) -> list[str]:
    return [
        "uvicorn",
        spec.factory,
        "--factory",
        "--host",
        "0.0.0.0",
        "--port",
        str(spec.default_port),
    ]


def gateway_service_urls() -> dict[str, ServiceSpec]:
    """``GATEWAY_<X>_URL`` → the process it must point at (the gateway's own ``*_url`` fields)."""
    urls = {}
    for env, field in env_names(GatewaySettings).items():
        if field.endswith("_url") and field not in ServiceSettings.model_fields:
            target = field.removesuffix("_url")
            assert target in SPECS, f"GatewaySettings.{field} names no process in SERVICES"
            urls[env] = SPECS[target]
    assert urls, "GatewaySettings has no service URL fields"
    return urls


def test_every_process_has_its_settings_class() -> None:
    assert set(SETTINGS) == set(SPECS)
    for name, cls in SETTINGS.items():
        port_env = SPECS[name].port_env
        assert env_names(cls).get(port_env) == "port", f"{name}: {port_env} is not its port"


# -- YAML ----------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_deploy_has_yaml() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in yaml_files()}
    assert {"compose.yaml", "k8s/kustomization.yaml"} <= names


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yaml_parses(path: Path) -> None:
    docs = load_all(path.read_text())
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) and d for d in docs), f"{path}: a document is not a mapping"


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


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


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


@cache
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path.read_text())
        if doc
    ]


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d.get("kind") == kind}


def kustomization() -> dict[str, Any]:
    return load((K8S / "kustomization.yaml").read_text())


def applied_docs() -> list[dict[str, Any]]:
    """The documents ``kubectl apply -k`` applies (not the Secret template)."""
    resources = set(kustomization()["resources"])
    return [d for file, d in k8s_docs() if file in resources]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return containers[0]


def deployment(spec: ServiceSpec) -> dict[str, Any]:
    deployments = k8s("Deployment")
    assert spec.name in deployments, f"no Deployment {spec.name}"
    return deployments[spec.name]


def template_secret_keys() -> dict[str, set[str]]:
    secrets = {}
    for doc in load_all(SECRET_TEMPLATE.read_text()):
        if doc and doc.get("kind") == "Secret":
            keys = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
            secrets[doc["metadata"]["name"]] = keys
    return secrets


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """Variable → where it comes from: ``value``, ``configMap`` or ``secret``."""
    env: dict[str, str] = {}
    configmaps = k8s("ConfigMap")
    secrets = template_secret_keys()
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if ref := source.get("configMapRef"):
            assert ref["name"] in configmaps, f"envFrom: no ConfigMap {ref['name']}"
            env |= {prefix + k: "configMap" for k in configmaps[ref["name"]].get("data") or {}}
        elif ref := source.get("secretRef"):
            assert ref["name"] in secrets, f"envFrom: {ref['name']} not in {SECRET_TEMPLATE.name}"
            env |= {prefix + k: "secret" for k in secrets[ref["name"]]}
    for item in container.get("env") or []:
        value_from = item.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            env[item["name"]] = "secret"
        elif "configMapKeyRef" in value_from:
            env[item["name"]] = "configMap"
        else:
            env[item["name"]] = "value"
    return env


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """Literal and ConfigMap values of a container's variables."""
    values: dict[str, str] = {}
    configmaps = k8s("ConfigMap")
    for source in container.get("envFrom") or []:
        if ref := source.get("configMapRef"):
            data = configmaps[ref["name"]].get("data") or {}
            values |= {source.get("prefix", "") + k: str(v) for k, v in data.items()}
    for item in container.get("env") or []:
        if "value" in item:
            values[item["name"]] = str(item["value"])
    return values


def run_as_user(workload: dict[str, Any]) -> int | None:
    pod = pod_spec(workload).get("securityContext") or {}
    box = only_container(workload).get("securityContext") or {}
    return box.get("runAsUser", pod.get("runAsUser"))


def assert_hardened(workload: dict[str, Any]) -> None:
    name = workload["metadata"]["name"]
    pod = pod_spec(workload)
    pod_ctx = pod.get("securityContext") or {}
    container = only_container(workload)
    ctx = container.get("securityContext") or {}
    assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, name
    assert run_as_user(workload) == image_uid(), f"{name}: runAsUser differs from the image's USER"
    assert ctx.get("readOnlyRootFilesystem") is True, name
    assert ctx.get("allowPrivilegeEscalation") is False, name
    assert "ALL" in (ctx.get("capabilities") or {}).get("drop", []), name
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(kind) or {}), f"{name}: {kind}"
    # Service links would inject e.g. PORTFOLIO_PORT=tcp://10.0.0.1:8001, which
    # PortfolioSettings reads as its port (an int) and refuses.
    assert pod.get("enableServiceLinks") is False, f"{name}: enableServiceLinks must be false"


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        return int(named[port])
    return int(port)


def test_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", SECRET_TEMPLATE.name}
    assert set(listed) == on_disk
    assert SECRET_TEMPLATE.name not in listed, "the Secret template must not be applied"


def test_k8s_documents_are_named_and_namespaced() -> None:
    namespaces = k8s("Namespace")
    assert len(namespaces) == 1
    (namespace,) = namespaces
    assert kustomization().get("namespace") == namespace
    for file, doc in k8s_docs():
        assert doc.get("apiVersion") and doc.get("kind"), file
        assert doc["metadata"].get("name"), file
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{file}: {doc['kind']}"


@by_process
def test_k8s_deployment_runs_the_factory_on_its_port(spec: ServiceSpec) -> None:
    container = only_container(deployment(spec))
    assert [str(c) for c in container["command"]][:7] == uvicorn_command(spec)
    assert [p["containerPort"] for p in container["ports"]] == [spec.default_port]


@by_process
def test_k8s_probes_hit_the_process_port(spec: ServiceSpec) -> None:
    container = only_container(deployment(spec))
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    for probe in (readiness, liveness, container.get("startupProbe")):
        if probe:
            assert probe_port(container, probe) == spec.default_port


@by_process
def test_k8s_deployment_is_hardened(spec: ServiceSpec) -> None:
    assert_hardened(deployment(spec))


@by_process
def test_k8s_service_selects_the_deployment(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    services = k8s("Service")
    assert spec.name in services, f"no Service {spec.name} (the gateway's URLs use that name)"
    service = services[spec.name]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == spec.default_port
    assert port.get("targetPort", port["port"]) in (spec.default_port, "http")


@by_process
def test_k8s_env_names_are_settings_fields(spec: ServiceSpec) -> None:
    accepted = env_names(SETTINGS[spec.name])
    unknown = set(container_env(only_container(deployment(spec)))) - set(accepted)
    assert not unknown, f"{spec.name} is given variables its settings do not read: {unknown}"


@by_process
def test_k8s_secrets_come_from_secrets(spec: ServiceSpec) -> None:
    env = container_env(only_container(deployment(spec)))
    for field, names in secret_env(SETTINGS[spec.name]).items():
        assert names & set(env), f"{spec.name}: secret {field} ({names}) is not set"
    # DATABASE_URL carries the database password, so it is a secret here too.
    for name in {n for names in secret_env(SETTINGS[spec.name]).values() for n in names} | {
        "DATABASE_URL"
    }:
        if name in env:
            assert env[name] == "secret", f"{spec.name}: {name} from a {env[name]}, not a Secret"
    assert env_values(only_container(deployment(spec))).get("APP_ENV") == "production"


def test_k8s_secret_refs_are_in_the_template() -> None:
    template = template_secret_keys()
    workloads = [*k8s("Deployment").values(), *k8s("Job").values()]
    for workload in workloads:
        for item in only_container(workload).get("env") or []:
            if ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                assert ref["key"] in template.get(ref["name"], set()), f"{ref} not in template"


def test_k8s_manifests_hold_no_secret_values() -> None:
    for file, doc in k8s_docs():
        if doc.get("kind") == "Secret":
            for key, value in {**(doc.get("data") or {}), **(doc.get("stringData") or {})}.items():
                assert not value, f"{file}: Secret {doc['metadata']['name']} has a value for {key}"
        if doc.get("kind") == "ConfigMap":
            for key in doc.get("data") or {}:
                assert not SECRET_LIKE.search(key) and key != "DATABASE_URL", f"{file}: {key}"
        for value in strings(doc):
            assert not URL_PASSWORD.search(value), f"{file}: credentials in {value!r}"
    for workload in [*k8s("Deployment").values(), *k8s("Job").values()]:
        for item in only_container(workload).get("env") or []:
            if "value" in item:
                assert not SECRET_LIKE.search(item["name"]), item["name"]
    for path in [*K8S.glob("*.yaml"), COMPOSE, DOCKERFILE]:
        text = path.read_text()
        assert DEV_PLACEHOLDER_SECRET not in text, path
        assert DEMO_PASSWORD_DEFAULT not in text, path


def test_k8s_migration_job() -> None:
    jobs = [j for j in k8s("Job").values() if only_container(j)["command"] == MIGRATE_COMMAND]
    assert len(jobs) == 1, "one Job running the migrations"
    (job,) = jobs
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert_hardened(job)
    env = container_env(only_container(job))
    assert set(env) <= module_env_reads("shared.db.migrate")
    assert env.get("DATABASE_URL") == "secret"


def test_k8s_ingress_serves_the_gateway_and_its_websocket() -> None:
    (ingress,) = k8s("Ingress").values()
    gateway_env = env_values(only_container(deployment(GATEWAY)))
    origins = json.loads(gateway_env["GATEWAY_ALLOWED_ORIGINS"])
    gateway_service = k8s("Service")[GATEWAY.name]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == GATEWAY.name
            port = backend["port"]
            assert port.get("number") == GATEWAY.default_port or port.get("name") in {
                p.get("name") for p in gateway_service["spec"]["ports"]
            }
        if origins:  # [] means "the Host the request came to", which also works
            assert f"https://{rule['host']}" in origins, "GATEWAY_ALLOWED_ORIGINS lacks the host"
    annotations = ingress["metadata"].get("annotations") or {}
    timeouts = [int(v) for k, v in annotations.items() if k.endswith("proxy-read-timeout")]
    assert timeouts and min(timeouts) > 60, "an idle WebSocket needs a long proxy read timeout"


def test_k8s_gateway_has_a_disruption_budget() -> None:
    workload = deployment(GATEWAY)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    budgets = [
        b
        for b in k8s("PodDisruptionBudget").values()
        if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1
    min_available = budgets[0]["spec"].get("minAvailable", 0)
    assert isinstance(min_available, int), "use a count"
    assert workload["spec"]["replicas"] > min_available, "the budget would block every drain"


def test_k8s_runs_one_pricefeed() -> None:
    workload = deployment(SPECS["pricefeed"])
    assert workload["spec"]["replicas"] == 1
    assert workload["spec"]["strategy"]["type"] == "Recreate", "a rollout must not run two"


def test_k8s_points_the_gateway_at_the_services() -> None:
    env = env_values(only_container(deployment(GATEWAY)))
    services = k8s("Service")
    for name, spec in gateway_service_urls().items():
        assert spec.name in services
        assert env.get(name) == f"http://{spec.name}:{spec.default_port}", name


def test_k8s_uses_one_image() -> None:
    workloads = [*k8s("Deployment").values(), *k8s("Job").values()]
    images = {only_container(w)["image"] for w in workloads}
    assert len(images) == 1
    assert {i["name"] for i in kustomization().get("images", [])} >= images


def test_k8s_applies_nothing_unexpected() -> None:
    kinds = {d["kind"] for d in applied_docs()}
    assert "Secret" not in kinds, "Secrets are created out of band"
    expected = {"Namespace", "ConfigMap", "Deployment", "Service", "Job", "Ingress"}
    assert expected | {"PodDisruptionBudget"} >= kinds >= expected


# -- Dockerfile ----------------------------------------------------------------------------------


@cache
def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def args_of(keyword: str, steps: list[tuple[str, str]] | None = None) -> list[str]:
    return [a for k, a in (steps or instructions()) if k == keyword]


def image_uid() -> int:
    users = args_of("USER", final_stage())
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "USER must be numeric so Kubernetes can verify runAsNonRoot"
    return int(user)


def healthcheck_in_image() -> str:
    """Where the image puts ``deploy/healthcheck.py``."""
    for args in args_of("COPY", final_stage()):
        parts = args.split()
        if "deploy/healthcheck.py" in parts:
            dest = parts[-1]
            workdir = args_of("WORKDIR", final_stage())[-1]
            return dest if dest.startswith("/") else str(Path(workdir) / dest)
    raise AssertionError("the image does not contain deploy/healthcheck.py")


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
