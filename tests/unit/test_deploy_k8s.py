"""Static checks of ``deploy/k8s/``: the manifests agree with the code and the image."""

from __future__ import annotations

import json

from shared.db.demo import DEMO_PASSWORD_DEFAULT
from shared.launcher import ServiceSpec
from shared.settings import DEV_PLACEHOLDER_SECRET
from tests.unit.deploy_k8s_support import (
    applied_docs,
    assert_hardened,
    autoscalers_of,
    budgets_of,
    container_env,
    deployment,
    env_item,
    env_values,
    k8s,
    k8s_docs,
    kustomization,
    only_container,
    pod_spec,
    probe_port,
    selects_only,
    template_secret_keys,
)
from tests.unit.deploy_support import (
    AUTOSCALED,
    COMPOSE,
    DOCKERFILE,
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
    load_script,
    module_env_reads,
    prestop_in_image,
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
    # ... or the preStop hook's own (it runs in the same container, with the same env).
    accepted = {*env_names(SETTINGS[spec.name]), load_script("prestop").SLEEP_ENV}
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
        limit = (resources.get("limits") or {}).get("cpu")
        assert limit is None or cpu_cores(limit) >= 1, f"{spec.name}: CPU limit {limit}"


def test_k8s_pricefeed_is_one_leader_and_one_standby() -> None:
    workload = deployment(LEADER_STANDBY)
    assert workload["spec"]["replicas"] == MIN_REPLICAS, "a leader and one hot standby"
    assert not autoscalers_of(workload), "more pricefeeds would only be more standbys"


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
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    assert kinds == expected
