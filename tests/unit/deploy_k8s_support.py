"""Readers of ``deploy/k8s/`` shared by the static ``deploy/`` checks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from shared.launcher import ServiceSpec
from tests.unit.deploy_support import K8S, SECRET_TEMPLATE, image_uid, load, load_all


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


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``matchExpressions``) matches ``labels``."""
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True  # an empty selector selects everything
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def selects_only(selector: dict[str, Any], workload: dict[str, Any]) -> bool:
    """``selector`` matches the pods of ``workload`` and of no other Deployment."""
    others = [d for d in k8s("Deployment").values() if d is not workload]
    return selects(selector, pod_labels(workload)) and not any(
        selects(selector, pod_labels(other)) for other in others
    )


def budgets_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The PodDisruptionBudgets that select ``workload``'s pods."""
    return [
        budget
        for budget in k8s("PodDisruptionBudget").values()
        if selects(budget["spec"]["selector"], pod_labels(workload))
    ]


def autoscalers_of(workload: dict[str, Any]) -> list[dict[str, Any]]:
    """The HorizontalPodAutoscalers that scale ``workload``."""
    return [
        hpa
        for hpa in k8s("HorizontalPodAutoscaler").values()
        if hpa["spec"]["scaleTargetRef"].get("kind") == workload["kind"]
        and hpa["spec"]["scaleTargetRef"].get("name") == workload["metadata"]["name"]
    ]


def env_item(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The container's ``env`` entry for ``name``, if any."""
    return next((item for item in container.get("env") or [] if item["name"] == name), None)


# -- NetworkPolicies -----------------------------------------------------------------------------

# Kubernetes labels every namespace with its name (1.21+); policies select namespaces by it.
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (its namespace and labels), or, with no namespace, an
    address outside the cluster."""

    namespace: str | None
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def pod(cls, namespace: str, labels: dict[str, str]) -> Peer:
        return cls(namespace, tuple(sorted(labels.items())))


def namespace() -> str:
    (name,) = k8s("Namespace")
    return name


def policy_types(policy: dict[str, Any]) -> set[str]:
    """A NetworkPolicy's directions; without ``policyTypes``, Ingress, and Egress if it has
    egress rules (the API's defaulting)."""
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def isolating(labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    """The policies that select pods with ``labels`` (in our namespace) for ``direction``."""
    return [
        policy
        for policy in k8s("NetworkPolicy").values()
        if direction in policy_types(policy) and selects(policy["spec"]["podSelector"], labels)
    ]


def peer_matches(peer_spec: dict[str, Any], peer: Peer) -> bool:
    if "ipBlock" in peer_spec:  # used here only for addresses outside the cluster
        return peer.namespace is None
    if peer.namespace is None:
        return False
    if "namespaceSelector" in peer_spec:
        if not selects(peer_spec["namespaceSelector"], {NAMESPACE_LABEL: peer.namespace}):
            return False
    elif peer.namespace != namespace():
        return False  # a bare podSelector means pods of the policy's own namespace
    return selects(peer_spec.get("podSelector") or {}, dict(peer.labels))


def port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True  # no ports: every port
    for item in ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        if "port" not in item:
            return True
        assert isinstance(item["port"], int), f"use port numbers in policies: {item['port']!r}"
        if item["port"] <= port <= item.get("endPort", item["port"]):
            return True
    return False


def allowed(
    direction: str, labels: dict[str, str], peer: Peer, port: int, protocol: str = "TCP"
) -> bool:
    """Whether the NetworkPolicies let a pod with ``labels`` accept a connection from ``peer``
    (Ingress) or open one to ``peer`` (Egress), on ``port``. Only this side's policies: a
    connection between two pods here needs the source's Egress and the target's Ingress."""
    policies = isolating(labels, direction)
    if not policies:
        return True  # a pod no policy isolates accepts (or opens) everything
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(p, peer) for p in peers)) and port_matches(
                rule.get("ports"), port, protocol
            ):
                return True
    return False


# -- Ingress -------------------------------------------------------------------------------------


def ingress_paths() -> list[dict[str, Any]]:
    return [
        path
        for ingress in k8s("Ingress").values()
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]


def _elements(path: str) -> list[str]:
    return [e for e in path.split("/") if e]


def routed(url_path: str) -> bool:
    """Whether an Ingress path matches ``url_path``, as the Ingress API defines it: Exact is
    equality; Prefix matches whole path elements (``/c`` matches ``/c/x``, not ``/cx``), a
    trailing slash ignored."""
    for path in ingress_paths():
        kind, value = path["pathType"], path["path"]
        if kind == "Exact" and url_path == value:
            return True
        if kind == "Prefix":
            wanted = _elements(value)
            if _elements(url_path)[: len(wanted)] == wanted:
                return True
    return False
