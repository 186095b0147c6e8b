"""Static checks of ``deploy/k8s/``: the manifests agree with the code and the image."""

from __future__ import annotations

import json

from shared.db.demo import DEMO_PASSWORD_DEFAULT
from shared.launcher import ServiceSpec
from shared.settings import DEV_PLACEHOLDER_SECRET
from tests.unit.deploy_k8s_support import (
    applied_docs,
    assert_hardened,
    container_env,
    deployment,
    env_values,
    k8s,
    k8s_docs,
    kustomization,
    only_container,
    pod_spec,
    probe_port,
    template_secret_keys,
)
from tests.unit.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    GATEWAY,
    K8S,
    MIGRATE_COMMAND,
    SECRET_LIKE,
    SECRET_TEMPLATE,
    SETTINGS,
    SPECS,
    URL_PASSWORD,
    by_process,
    env_names,
    gateway_service_urls,
    module_env_reads,
    secret_env,
    strings,
    uvicorn_command,
)


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
