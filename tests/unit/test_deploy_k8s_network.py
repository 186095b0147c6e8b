"""Static checks of ``deploy/k8s/``: who may talk to whom (network policies) and what the
ingress and the Gateway API route reach."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from gateway import auth, compose, proxy, ws
from shared.launcher import SERVICES, ServiceSpec
from tests.unit.deploy_k8s_support import (
    Peer,
    allowed,
    deployment,
    env_values,
    ingress_paths,
    isolating,
    k8s,
    namespace,
    only_container,
    pod_labels,
    policy_types,
    routed,
    selects,
    selects_only,
)
from tests.unit.deploy_support import (
    FORWARDED_ALLOW_IPS,
    FORWARDED_FLAG,
    GATEWAY,
    by_process,
    gateway_service_urls,
    trusted_proxies,
)

# The init container every Deployment runs before its process: it waits until the schema is at
# this release's head (python -m shared.db.migrate wait-head), failing after a timeout.


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
