"""Static checks of ``deploy/k8s/``: the manifests agree with the code and the image."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from gateway import auth, compose, proxy, ws
from shared import natsauth
from shared.db.demo import DEMO_PASSWORD_DEFAULT
from shared.launcher import SERVICES, ServiceSpec
from shared.settings import DEV_PLACEHOLDER_SECRET
from tests.unit.deploy_k8s_support import (
    Peer,
    allowed,
    applied_docs,
    autoscalers_of,
    budgets_of,
    container_env,
    deployment,
    env_item,
    env_values,
    ingress_paths,
    isolating,
    k8s,
    k8s_docs,
    kustomization,
    namespace,
    only_container,
    pod_labels,
    pod_spec,
    policy_types,
    probe_port,
    routed,
    run_as_user,
    selects,
    selects_only,
    template_secret_keys,
)
from tests.unit.deploy_nats_support import NATS_SECRET, password_variable
from tests.unit.deploy_support import (
    AUTOSCALED,
    COMPOSE,
    DOCKERFILE,
    FORWARDED_ALLOW_IPS,
    FORWARDED_FLAG,
    GATEWAY,
    K8S,
    LEADER_STANDBY,
    LEASE_TTL_FIELD,
    LEASED,
    MIGRATE_COMMAND,
    MIN_REPLICAS,
    REPLICA_ID,
    SECRET_LIKE,
    SECRET_TEMPLATE,
    SETTINGS,
    SPECS,
    URL_PASSWORD,
    assert_takeover_fits,
    by,
    by_process,
    cpu_cores,
    env_names,
    field_env,
    gateway_service_urls,
    image_uid,
    kustomize,
    load_script,
    module_env_reads,
    prestop_in_image,
    secret_env,
    strings,
    trusted_proxies,
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


@by_process
def test_k8s_runs_two_replicas_at_least(spec: ServiceSpec) -> None:
    replicas = deployment(spec)["spec"].get("replicas", 1)
    assert replicas >= MIN_REPLICAS, f"{spec.name}: {replicas} replica(s)"


@by_process
def test_k8s_rollout_never_goes_below_the_replica_count(spec: ServiceSpec) -> None:
    strategy = deployment(spec)["spec"].get("strategy") or {}
    assert strategy.get("type", "RollingUpdate") == "RollingUpdate", f"{spec.name}: no Recreate"
    rolling = strategy.get("rollingUpdate") or {}
    # Kubernetes' default maxUnavailable is 25 %, which rounds down to 0 for two replicas but
    # not for the autoscaler's larger counts: say it.
    assert rolling.get("maxUnavailable") == 0, f"{spec.name}: maxUnavailable must be 0"
    surge = rolling.get("maxSurge")
    assert surge not in (None, 0, "0", "0%"), f"{spec.name}: needs a surge pod to roll"


@by_process
def test_k8s_disruption_budget_per_deployment(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    budgets = budgets_of(workload)
    assert len(budgets) == 1, f"{spec.name}: {len(budgets)} PodDisruptionBudgets select its pods"
    (budget,) = budgets
    assert budget["apiVersion"] == "policy/v1"
    assert selects_only(budget["spec"]["selector"], workload), "it selects other pods too"
    min_available = budget["spec"].get("minAvailable")
    assert isinstance(min_available, int) and min_available >= 1, "minAvailable: a count >= 1"
    floor = min(
        [workload["spec"].get("replicas", 1)]
        + [hpa["spec"].get("minReplicas", 1) for hpa in autoscalers_of(workload)]
    )
    assert floor > min_available, f"{spec.name}: the budget would block every drain"


@by_process
def test_k8s_pods_spread_over_nodes_and_zones(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    constraints = pod_spec(workload).get("topologySpreadConstraints") or []
    by_key = {c["topologyKey"]: c for c in constraints}
    for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
        assert key in by_key, f"{spec.name}: no topology spread over {key}"
        constraint = by_key[key]
        assert constraint["maxSkew"] == 1, f"{spec.name}: {key}"
        # DoNotSchedule would leave a replica pending on a one-node or one-zone cluster.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", f"{spec.name}: {key}"
        assert selects_only(constraint["labelSelector"], workload), f"{spec.name}: {key}"


@by(AUTOSCALED)
def test_k8s_autoscaler_on_cpu(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    autoscalers = autoscalers_of(workload)
    assert len(autoscalers) == 1, f"{spec.name}: {len(autoscalers)} HorizontalPodAutoscalers"
    (hpa,) = autoscalers
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["apiVersion"] == workload["apiVersion"]
    low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    assert MIN_REPLICAS <= low < high, f"{spec.name}: {low}..{high}"
    cpu = [
        m["resource"]["target"]
        for m in hpa["spec"].get("metrics") or []
        if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu, f"{spec.name}: the autoscaler does not follow CPU"
    assert cpu[0]["type"] == "Utilization" and 0 < cpu[0]["averageUtilization"] <= 80
    # Utilization is relative to the request: every container needs one. A limit below one
    # core would throttle a busy replica (tick latency) before the autoscaler reacts.
    for container in pod_spec(workload)["containers"]:
        resources = container.get("resources") or {}
        assert "cpu" in (resources.get("requests") or {}), f"{spec.name}: no CPU request"


def test_k8s_pricefeed_is_one_leader_and_one_standby() -> None:
    workload = deployment(LEADER_STANDBY)
    assert workload["spec"]["replicas"] == MIN_REPLICAS, "a leader and one hot standby"
    assert not autoscalers_of(workload), "more pricefeeds would only be more standbys"


def test_k8s_pricefeed_rolls_without_a_feed_gap() -> None:
    # Recreate would stop both replicas first: a feed gap on every rollout. One surge pod
    # becomes the new standby (it follows the leader's ticks) before an old pod goes through its
    # preStop, which hands the lease over within one renewal round.
    strategy = deployment(LEADER_STANDBY)["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


@by_process
def test_k8s_names_each_replica_after_its_pod(spec: ServiceSpec) -> None:
    item = env_item(only_container(deployment(spec)), REPLICA_ID)
    assert item, f"{spec.name}: no {REPLICA_ID}"
    field = (item.get("valueFrom") or {}).get("fieldRef") or {}
    assert field.get("fieldPath") == "metadata.name", f"{spec.name}: {REPLICA_ID} = the pod name"


@by(LEASED)
def test_k8s_sets_the_lease_ttl(spec: ServiceSpec) -> None:
    values = env_values(only_container(deployment(spec)))
    names = field_env(SETTINGS[spec.name], LEASE_TTL_FIELD)
    given = [values[name] for name in names if name in values]
    assert given, f"{spec.name}: none of {names} is set"
    assert all(float(value) > 0 for value in given), f"{spec.name}: {given}"


def test_k8s_pricefeed_takeover_fits_the_feed_silence_limit() -> None:
    assert_takeover_fits(
        env_values(only_container(deployment(LEADER_STANDBY))),
        env_values(only_container(deployment(SPECS["orders"]))),
    )


@by_process
def test_k8s_prestop_releases_leases_before_sigterm(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    container = only_container(workload)
    hook = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
    command = [str(c) for c in hook.get("command") or []]
    script = load_script("prestop")
    if spec in LEASED:
        assert command == ["python", prestop_in_image(), str(spec.default_port)], spec.name
    else:  # the gateway holds no leases: it only waits for the Ingress to drop it
        assert command == ["python", prestop_in_image(), script.NO_RELEASE], spec.name
    # The grace period starts with preStop: release + sleep + uvicorn's graceful shutdown
    # (its --timeout-graceful-shutdown, else an allowance of 10 s).
    args = [str(c) for c in container["command"]]
    flag = "--timeout-graceful-shutdown"
    shutdown = float(args[args.index(flag) + 1]) if flag in args else 10.0
    release = script.RELEASE_TIMEOUT_S if spec in LEASED else 0.0
    prestop = release + script.sleep_seconds(env_values(container))
    grace = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
    assert grace > prestop + shutdown, f"{spec.name}: {grace} s grace < {prestop + shutdown} s"


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
INGRESS_NAMESPACE = "ingress-nginx"
GATEWAY_API_NAMESPACE = "gateway-system"
POSTGRES_PORT = 5432
DNS_PORT = 53
PROBE_PORTS = sorted({spec.default_port for spec in SERVICES} | {4222, 5432, 8080, 8222, 9090})


def nats_endpoint() -> tuple[str, int]:
    """The namespace and port of ``NATS_URL`` (``nats://<service>.<namespace>.svc…:<port>``)."""
    url = urlsplit(k8s("ConfigMap")["dashboard-common"]["data"]["NATS_URL"])
    assert url.hostname and url.hostname.count(".") >= 1, f"NATS_URL names no namespace: {url}"
    return url.hostname.split(".")[1], url.port or 4222


def workloads() -> dict[str, dict[str, Any]]:
    return {**k8s("Deployment"), **k8s("Job")}


def callers() -> dict[str, Peer]:
    """Every kind of client a pod here could see: each Deployment's pods, the ingress
    controller, a pod of another namespace, an address outside the cluster."""
    ours = {name: Peer.pod(namespace(), pod_labels(w)) for name, w in k8s("Deployment").items()}
    return ours | {
        "ingress controller": Peer.pod(INGRESS_NAMESPACE, {"app.kubernetes.io/name": "x"}),
        "gateway api proxy": Peer.pod(GATEWAY_API_NAMESPACE, {"app.kubernetes.io/name": "y"}),
        "another namespace": Peer.pod("default", {"app.kubernetes.io/name": "gateway"}),
        "outside the cluster": Peer(None),
    }


def test_k8s_network_policies_deny_by_default() -> None:
    defaults = [
        policy
        for policy in k8s("NetworkPolicy").values()
        if policy["spec"]["podSelector"] in ({}, {"matchLabels": {}})
        and policy_types(policy) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
    ]
    assert defaults, "no default-deny NetworkPolicy (every pod, Ingress and Egress, no rules)"


def test_k8s_every_pod_is_isolated() -> None:
    for name, workload in workloads().items():
        labels = pod_labels(workload)
        assert isolating(labels, "Ingress"), f"{name}: no NetworkPolicy selects it for Ingress"
        assert isolating(labels, "Egress"), f"{name}: no NetworkPolicy selects it for Egress"


def test_k8s_only_the_gateway_is_reachable_from_outside_the_namespace() -> None:
    gateway = deployment(GATEWAY)
    for name, policy in k8s("NetworkPolicy").items():
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or [{"ipBlock": {"cidr": "0.0.0.0/0"}}]  # none: anyone
            if any("namespaceSelector" in p or "ipBlock" in p for p in peers):
                assert selects_only(policy["spec"]["podSelector"], gateway), (
                    f"{name} admits traffic from outside the namespace to pods but the gateway"
                )


@by_process
def test_k8s_who_may_connect_to_each_process(spec: ServiceSpec) -> None:
    labels = pod_labels(deployment(spec))
    admitted = {
        (caller, port)
        for caller, peer in callers().items()
        for port in PROBE_PORTS
        if allowed("Ingress", labels, peer, port)
    }
    if spec is GATEWAY:
        expected = {
            ("ingress controller", GATEWAY.default_port),
            ("gateway api proxy", GATEWAY.default_port),
        }
    elif spec in gateway_service_urls().values():
        expected = {(GATEWAY.name, spec.default_port)}
    else:  # the pricefeed: nothing calls it (probes come from the kubelet, unaffected)
        expected = set()
    assert admitted == expected, spec.name


def test_k8s_every_pod_reaches_nats_postgres_and_dns() -> None:
    nats_namespace, nats_port = nats_endpoint()
    nats = Peer.pod(nats_namespace, {"app.kubernetes.io/name": "nats"})
    dns = Peer.pod("kube-system", {"k8s-app": "kube-dns"})
    for name, workload in workloads().items():
        labels = pod_labels(workload)
        assert allowed("Egress", labels, nats, nats_port), f"{name} cannot reach NATS"
        # PostgreSQL's address is the operator's (a managed database, an operator): the port.
        assert any(
            allowed("Egress", labels, peer, POSTGRES_PORT)
            for peer in (Peer(None), Peer.pod("postgres", {}))
        ), f"{name} cannot reach PostgreSQL"
        for protocol in ("UDP", "TCP"):
            assert allowed("Egress", labels, dns, DNS_PORT, protocol), f"{name}: DNS/{protocol}"
        assert not allowed("Egress", labels, Peer(None), 443), f"{name}: egress is not denied"


def test_k8s_only_the_gateway_calls_other_pods_here() -> None:
    targets = {name: Peer.pod(namespace(), pod_labels(w)) for name, w in k8s("Deployment").items()}
    listening = sorted({spec.default_port for spec in SERVICES})  # all a pod here listens on
    for name, workload in workloads().items():
        labels = pod_labels(workload)
        reached = {
            (target, port)
            for target, peer in targets.items()
            for port in listening
            if allowed("Egress", labels, peer, port)
        }
        expected = (
            {(s.name, s.default_port) for s in gateway_service_urls().values()}
            if name == GATEWAY.name
            else set()
        )
        assert reached == expected, name


def test_k8s_network_policies_select_pods_that_exist() -> None:
    labels = [pod_labels(w) for w in workloads().values()]
    for name, policy in k8s("NetworkPolicy").items():
        assert any(selects(policy["spec"]["podSelector"], lab) for lab in labels), name


# -- the Ingress routes only what the browser needs -----------------------------------------------


def browser_paths() -> list[str]:
    """A URL of every route of the gateway's browser-facing routers, and a static file."""
    paths = ["/static/app.css"]
    for module in (auth, compose, proxy, ws):
        for route in module.router.routes:
            paths.append(re.sub(r"\{[^}]+\}", "x", route.path))
    return paths


def test_k8s_ingress_routes_the_browser_paths() -> None:
    for path in ingress_paths():
        # ImplementationSpecific means whatever the controller makes of it: not checkable
        assert path["pathType"] in ("Exact", "Prefix"), path
    for url in browser_paths():
        assert routed(url), f"the Ingress does not route {url}"


def test_k8s_ingress_does_not_route_internal_endpoints() -> None:
    for url in ("/metrics", "/readyz", "/healthz", "/ops/release", "/docs", "/openapi.json"):
        assert not routed(url), f"the Ingress routes {url}"
    assert routed("/") and not routed("/anything"), "/ must be Exact"


# -- forwarded headers ----------------------------------------------------------------------------


def test_k8s_gateway_trusts_forwarded_headers_only_from_the_ingress_controller() -> None:
    for name, workload in workloads().items():
        command = [str(c) for c in only_container(workload).get("command") or []]
        assert FORWARDED_FLAG not in command and "*" not in command, name
    value = env_values(only_container(deployment(GATEWAY))).get(FORWARDED_ALLOW_IPS)
    assert value, f"the gateway has no {FORWARDED_ALLOW_IPS} (uvicorn would trust 127.0.0.1)"
    assert trusted_proxies(value)


# -- the Gateway API route (httproute.yaml): the same paths, WebSocket-friendly timeouts ----------


def http_route() -> dict[str, Any]:
    (route,) = k8s("HTTPRoute").values()
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    return route


def route_matches() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(rule, path match)`` for every path match of the HTTPRoute."""
    return [
        (rule, match["path"])
        for rule in http_route()["spec"]["rules"]
        for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
    ]


def route_rule_for(url_path: str) -> dict[str, Any] | None:
    """The rule serving ``url_path`` as the Gateway API defines matching: Exact is equality;
    PathPrefix matches whole path elements, a trailing slash ignored; the longest prefix wins,
    Exact before any prefix."""
    for rule, path in route_matches():
        if path["type"] == "Exact" and path["value"] == url_path:
            return rule
    prefixes = [
        (len(_path_elements(path["value"])), rule)
        for rule, path in route_matches()
        if path["type"] == "PathPrefix"
        and _path_elements(url_path)[: len(_path_elements(path["value"]))]
        == _path_elements(path["value"])
    ]
    return max(prefixes, key=lambda item: item[0])[1] if prefixes else None


def _path_elements(path: str) -> list[str]:
    return [e for e in path.split("/") if e]


def test_k8s_httproute_serves_the_gateway_service() -> None:
    route = http_route()
    gateway_service = k8s("Service")[GATEWAY.name]
    for rule in route["spec"]["rules"]:
        for backend in rule["backendRefs"]:
            assert backend.get("kind", "Service") == "Service"
            assert backend["name"] == gateway_service["metadata"]["name"]
            assert backend["port"] in [p["port"] for p in gateway_service["spec"]["ports"]]
    for parent in route["spec"]["parentRefs"]:
        assert parent.get("kind", "Gateway") == "Gateway" and parent["name"], parent
    origins = json.loads(env_values(only_container(deployment(GATEWAY)))["GATEWAY_ALLOWED_ORIGINS"])
    ingress_hosts = {rule["host"] for i in k8s("Ingress").values() for rule in i["spec"]["rules"]}
    assert set(route["spec"]["hostnames"]) == ingress_hosts, "the same host as the Ingress"
    for host in route["spec"]["hostnames"]:
        if origins:
            assert f"https://{host}" in origins, "GATEWAY_ALLOWED_ORIGINS lacks the host"


def test_k8s_httproute_routes_the_browser_paths_and_nothing_internal() -> None:
    for _, path in route_matches():
        assert path["type"] in ("Exact", "PathPrefix"), path  # RegularExpression: not checkable
    for url in browser_paths():
        assert route_rule_for(url), f"the HTTPRoute does not route {url}"
    for url in ("/metrics", "/readyz", "/healthz", "/ops/release", "/docs", "/openapi.json"):
        assert not route_rule_for(url), f"the HTTPRoute routes {url}"
    assert route_rule_for("/") and not route_rule_for("/anything"), "/ must be Exact"


def test_k8s_httproute_keeps_websockets_open() -> None:
    # A request timeout covers the whole exchange, i.e. a WebSocket's whole life: "0s" (none)
    # on the rule serving /ws, a finite one everywhere else.
    ws_rule = route_rule_for("/ws")
    assert ws_rule is not None
    assert (ws_rule.get("timeouts") or {}).get("request") == "0s", "/ws needs request: 0s"
    assert (ws_rule.get("timeouts") or {}).get("backendRequest", "0s") == "0s"
    for rule in http_route()["spec"]["rules"]:
        if rule is not ws_rule:
            timeout = (rule.get("timeouts") or {}).get("request")
            assert timeout and timeout != "0s", f"a bound for the other paths: {rule['matches']}"


# -- what `kubectl kustomize deploy/k8s` renders (kubectl is optional on a development machine) --


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
