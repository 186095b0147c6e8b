"""Static checks of ``deploy/k8s/``: the manifests agree with the code and the image."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from shared import natsauth
from shared.db.demo import DEMO_PASSWORD_DEFAULT
from shared.launcher import ServiceSpec
from shared.settings import DEV_PLACEHOLDER_SECRET
from tests.unit.deploy_k8s_support import (
    applied_docs,
    container_env,
    deployment,
    env_item,
    env_values,
    k8s,
    k8s_docs,
    kustomization,
    namespace,
    only_container,
    pod_spec,
    probe_port,
    run_as_user,
    template_secret_keys,
)
from tests.unit.deploy_nats_support import NATS_SECRET, password_variable
from tests.unit.deploy_support import (
    COMPOSE,
    DOCKERFILE,
    FORWARDED_ALLOW_IPS,
    GATEWAY,
    K8S,
    MIGRATE_COMMAND,
    SECRET_LIKE,
    SECRET_TEMPLATE,
    SETTINGS,
    URL_PASSWORD,
    by_process,
    cpu_cores,
    env_names,
    gateway_service_urls,
    image_uid,
    kustomize,
    load_script,
    module_env_reads,
    secret_env,
    strings,
    uvicorn_command,
)

# The init container every Deployment runs before its process: it waits until the schema is at
# this release's head (python -m shared.db.migrate wait-head), failing after a timeout.
WAIT_HEAD_COMMAND = ["python", "-m", "shared.db.migrate", "wait-head", "--timeout"]
# A DNS-1123 label and subdomain: what Kubernetes accepts as a hostname and as a Job's name.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def containers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = pod_spec(workload)
    return [*(pod.get("initContainers") or []), *pod["containers"]]


def assert_hardened(workload: dict[str, Any], *, cpu_limit: bool) -> None:
    """Every container, init containers too, as the restricted Pod Security Standard and the
    image want; ``cpu_limit`` is whether the process itself has a CPU limit (the
    latency-sensitive processes must not: CFS throttling shows up as tick latency)."""
    name = workload["metadata"]["name"]
    pod = pod_spec(workload)
    pod_ctx = pod.get("securityContext") or {}
    assert run_as_user(workload) == image_uid(), f"{name}: runAsUser differs from the image's USER"
    # Service links would inject e.g. PORTFOLIO_PORT=tcp://10.0.0.1:8001, which
    # PortfolioSettings reads as its port (an int) and refuses.
    assert pod.get("enableServiceLinks") is False, f"{name}: enableServiceLinks must be false"
    for container in containers_of(workload):
        where = f"{name}/{container['name']}"
        ctx = container.get("securityContext") or {}
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, where
        assert ctx.get("runAsUser", pod_ctx.get("runAsUser")) == image_uid(), where
        assert ctx.get("readOnlyRootFilesystem") is True, where
        assert ctx.get("allowPrivilegeEscalation") is False, where
        assert "ALL" in (ctx.get("capabilities") or {}).get("drop", []), where
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        assert {"cpu", "memory"} <= set(requests), f"{where}: requests"
        assert "memory" in limits, f"{where}: no memory limit"
        process = container in pod["containers"]
        if process and not cpu_limit:
            assert "cpu" not in limits, f"{where}: a CPU limit throttles the hot path"
        else:
            assert "cpu" in limits, f"{where}: no CPU limit"


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
    expected = uvicorn_command(spec)
    assert [str(c) for c in container["command"]][: len(expected)] == expected
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
    # Every process here is latency-sensitive: CPU requests, no CPU limits.
    assert_hardened(deployment(spec), cpu_limit=False)


@by_process
def test_k8s_process_has_a_cpu_request_and_no_cpu_limit(spec: ServiceSpec) -> None:
    resources = only_container(deployment(spec)).get("resources") or {}
    assert cpu_cores(resources["requests"]["cpu"]) > 0, spec.name
    assert "cpu" not in (resources.get("limits") or {}), f"{spec.name}: CPU limit"


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
    # ... or the preStop hook's own (it runs in the same container, with the same env).
    accepted = {
        *env_names(SETTINGS[spec.name]),
        load_script("prestop").SLEEP_ENV,
        FORWARDED_ALLOW_IPS,  # uvicorn's own
    }
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
    assert_hardened(job, cpu_limit=True)
    env = container_env(only_container(job))
    assert set(env) <= module_env_reads("shared.db.migrate")
    assert env.get("DATABASE_URL") == "secret"
    # Its pod's name carries the release (dots included): its hostname is set to a DNS label.
    assert DNS_LABEL.match(pod_spec(job).get("hostname", "")), "the Job's pod needs a hostname"


def migration_job() -> dict[str, Any]:
    (job,) = [j for j in k8s("Job").values() if only_container(j)["command"] == MIGRATE_COMMAND]
    return job


def test_k8s_migration_job_is_named_per_release() -> None:
    # A Job's pod template is immutable: a new release must be a new Job, so kustomize writes
    # the image tag into its name (the replacement below), and GitOps tools can run it.
    job = migration_job()
    name = job["metadata"]["name"]
    stem, _, placeholder = name.rpartition("-")
    assert stem and placeholder, f"{name}: '<stem>-<placeholder for the tag>'"
    replacements = [
        r
        for r in kustomization().get("replacements") or []
        if r["source"].get("kind") == "Job" and r["source"].get("name") == name
    ]
    assert len(replacements) == 1, "no kustomize replacement names the Job after the release"
    (replacement,) = replacements
    container = only_container(job)["name"]
    assert replacement["source"]["fieldPath"] == (
        f"spec.template.spec.containers.[name={container}].image"
    )
    assert replacement["source"]["options"] == {"delimiter": ":", "index": 1}, "the tag"
    (target,) = replacement["targets"]
    assert target["select"] == {"kind": "Job", "name": name}
    assert target["fieldPaths"] == ["metadata.name"]
    assert target["options"] == {"delimiter": "-", "index": stem.count("-") + 1}


def test_k8s_migration_job_runs_before_the_pods_under_gitops() -> None:
    annotations = migration_job()["metadata"].get("annotations") or {}
    # Argo CD: a PreSync hook runs (and must succeed) before the Deployments change.
    assert annotations.get("argocd.argoproj.io/hook") == "PreSync"
    assert annotations.get("argocd.argoproj.io/hook-delete-policy") == "BeforeHookCreation"
    # Flux: recreate rather than fail on an immutable field.
    assert annotations.get("kustomize.toolkit.fluxcd.io/force") == "Enabled"


@by_process
def test_k8s_pods_wait_for_the_schema_before_starting(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    inits = pod_spec(workload).get("initContainers") or []
    assert len(inits) == 1, f"{spec.name}: one init container waiting for the schema"
    (init,) = inits
    command = [str(c) for c in init["command"]]
    assert command[:-1] == WAIT_HEAD_COMMAND, f"{spec.name}: {command}"
    assert 0 < float(command[-1]) <= 600, f"{spec.name}: a timeout, so a stuck wait is visible"
    assert init["image"] == only_container(workload)["image"], "the same release's migrations"
    env = container_env(init)
    assert set(env) <= module_env_reads("shared.db.migrate"), f"{spec.name}: {set(env)}"
    assert env.get("DATABASE_URL") == "secret"
    assert not init.get("envFrom"), f"{spec.name}: the init container needs DATABASE_URL only"


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


# -- replicas and rollouts (DESIGN.md §8, deploy/README.md "Replicas and rollouts") ---------------


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
    expected = {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "Job",
        "Ingress",
        "HTTPRoute",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    assert kinds == expected


# -- NATS identities (deploy/nats/auth.conf; test_deploy_nats.py checks the server's side) -------


@by_process
def test_k8s_gives_each_process_its_own_nats_identity(spec: ServiceSpec) -> None:
    container = only_container(deployment(spec))
    identity = natsauth.identity_of(spec.name)
    assert env_values(container).get("NATS_USER") == identity, spec.name
    item = env_item(container, "NATS_PASSWORD") or {}
    ref = (item.get("valueFrom") or {}).get("secretKeyRef")
    # its own key only: a Secret mounted whole (envFrom) would hand it every identity's password
    assert ref == {"name": NATS_SECRET, "key": password_variable(identity)}, spec.name
    assert not any("secretRef" in source for source in container.get("envFrom") or [])


def test_k8s_nats_secret_template_has_every_identity() -> None:
    wanted = {password_variable(identity) for identity in natsauth.IDENTITIES}
    assert template_secret_keys().get(NATS_SECRET) == wanted


# -- NetworkPolicies (deploy/README.md, "Network policies") --------------------------------------

# The ingress controller's namespace (ingress-nginx's default; ingress.yaml is written for it),
# and the Gateway API proxies' (a placeholder: httproute.yaml, networkpolicy.yaml).


@cache
def rendered() -> list[dict[str, Any]]:
    return kustomize(K8S)


def test_k8s_kustomize_renders_every_applied_document() -> None:
    docs = rendered()
    assert sorted(d["kind"] for d in docs) == sorted(d["kind"] for d in applied_docs())
    for doc in docs:
        assert doc["metadata"].get("namespace", namespace()) == namespace(), doc["kind"]
    image = {i["name"]: i for i in kustomization()["images"]}["trading-dashboard"]
    wanted = f"{image['newName']}:{image['newTag']}"
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            for container in containers_of(doc):
                assert container["image"] == wanted, doc["metadata"]["name"]


def test_k8s_kustomize_names_the_migration_job_after_the_image_tag() -> None:
    (job,) = [d for d in rendered() if d["kind"] == "Job"]
    tag = {i["name"]: i for i in kustomization()["images"]}["trading-dashboard"]["newTag"]
    name = job["metadata"]["name"]
    stem = migration_job()["metadata"]["name"].rpartition("-")[0]
    assert name == f"{stem}-{tag}", name
    # A Job's name is a DNS subdomain; its pods' job-name label holds at most 63 characters.
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 63, name
