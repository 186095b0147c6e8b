"""Static checks of ``deploy/k8s/``: replicas, rollouts, disruption budgets, autoscaling and
the partition leases' settings."""

from __future__ import annotations

from shared.launcher import ServiceSpec
from tests.unit.deploy_k8s_support import (
    autoscalers_of,
    budgets_of,
    deployment,
    env_item,
    env_values,
    only_container,
    pod_spec,
    selects_only,
)
from tests.unit.deploy_support import (
    AUTOSCALED,
    LEADER_STANDBY,
    LEASE_TTL_FIELD,
    LEASED,
    MIN_REPLICAS,
    REPLICA_ID,
    SETTINGS,
    SPECS,
    assert_takeover_fits,
    by,
    by_process,
    field_env,
    load_script,
    prestop_in_image,
)


@by_process
def test_k8s_runs_two_replicas_at_least(spec: ServiceSpec) -> None:
    workload = deployment(spec)
    autoscalers = autoscalers_of(workload)
    if autoscalers:  # the autoscaler owns the count: a count here would reset it at apply
        assert "replicas" not in workload["spec"], f"{spec.name}: replicas beside an HPA"
        replicas = min(hpa["spec"].get("minReplicas", 1) for hpa in autoscalers)
    else:
        replicas = workload["spec"].get("replicas", 1)
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
    autoscalers = autoscalers_of(workload)  # when there is one, it sets the count
    floor = min(
        [hpa["spec"].get("minReplicas", 1) for hpa in autoscalers]
        or [workload["spec"].get("replicas", 1)]
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
