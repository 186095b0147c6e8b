"""Static checks of ``deploy/monitoring/``: promtool accepts the rules, every alert and
dashboard query names a metric some process exports, and the folder builds with kustomize."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from shared import wire
from shared.bus import NatsBus
from shared.db.engine import create_engine
from shared.launcher import SERVICES
from tests.unit.deploy_support import (
    DEPLOY,
    SETTINGS,
    kustomize,
    load,
    load_all,
    required_tool,
)

MONITORING = DEPLOY / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboard.json"
SEVERITIES = {"critical", "warning"}

# -- reading PromQL ------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![A-Za-z_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING, _NUMBER):
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _NAME.finditer(expr):
        word = match.group()
        if expr[match.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function call or an operator
        names.add(word)
    return names


def test_metric_names_reads_names_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, service) (rate(a_seconds_bucket{stage="sent",'
        'x=~"b|c"}[5m]))) > 0.25 or absent(b_total) unless on (pod) group_left c_info * 1e3'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c_info"}


# -- what the processes export -------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "untyped": ("",),
}


def sample_names(family: str, kind: str) -> set[str]:
    """The series names a family of ``kind`` exports (a counter ``x`` as ``x_total``)."""
    return {family + suffix for suffix in _SUFFIXES[kind]}


@pytest.fixture(scope="module")
def exported() -> Iterator[dict[str, set[str]]]:
    """Each process → the series names its real ``/metrics`` exports once it runs: the app
    as its factory builds it, with the parts its lifespan would add (a NATS bus, a pooled
    engine; neither connects until used)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield {spec.name: _scrape(spec.name, spec.factory) for spec in SERVICES}
    finally:
        root.handlers[:], root.level = handlers, level


def _scrape(name: str, factory: str) -> set[str]:
    module, function = factory.split(":")
    app: FastAPI = getattr(importlib.import_module(module), function)(SETTINGS[name]())
    app.state.bus = NatsBus(None)
    app.state.engine = create_engine("postgresql://metrics:unused@127.0.0.1:9/metrics")
    try:
        text = _get_metrics(app)
    finally:
        asyncio.run(app.state.engine.dispose())
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= sample_names(family.name, family.type)
    return names


def _get_metrics(app: FastAPI) -> str:
    async def get() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://process") as client:
            response = await client.get("/metrics")
            assert response.status_code == 200
            return response.text

    return asyncio.run(get())


def test_every_process_exports_the_operators_series(exported: dict[str, set[str]]) -> None:
    common = {
        "build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_collections_total",
        "http_requests_total",
        "http_request_seconds_bucket",
        "nats_connected",
        "nats_reconnects_total",
        "nats_disconnects_total",
        "nats_slow_consumer_drops_total",
        "db_pool_in_use",
        "db_pool_waits_total",
    }
    for process, names in exported.items():
        assert common <= names, f"{process} lacks {sorted(common - names)}"
    orders = {"orders_submit_ack_seconds_bucket", "orders_submit_to_fill_seconds_bucket"}
    assert orders | {"outbox_backlog", "outbox_oldest_unsent_age_seconds"} <= exported["orders"]
    for process in ("portfolio", "watchlist", "risk", "orders"):
        assert "component_tick_seq_gaps_total" in exported[process]


# -- the rules -----------------------------------------------------------------------------------


def rule_groups() -> list[dict[str, Any]]:
    rule = load(RULES.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def promtool() -> str:
    return required_tool("promtool", ".ci/run installs Debian's prometheus package")


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(json.dumps({"groups": rule_groups()}))  # JSON is YAML
    result = run_promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alerts())} rules found" in result.stdout


def test_the_night_pages_fire_on_their_symptoms(tmp_path: Path) -> None:
    """promtool's rule unit tests: a feed that stops, two leaders, a stuck outbox, a 5xx
    burst page; the healthy series beside them do not."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(json.dumps({"groups": rule_groups()}))
    leader = 'pricefeed_leader{service="pricefeed",pod="%s"}'
    http = 'http_requests_total{service="gateway",pod="g1",code="%s"}'
    series = [  # scraped every 15 s for 15 minutes; the trouble starts at minute 5
        # 4 ticks a second, then none (the counter stays)
        {"series": 'pricefeed_ticks_total{service="pricefeed",pod="p1"}',
         "values": "0+60x20 1200x40"},
        {"series": leader % "p1", "values": "1x60"},
        {"series": leader % "p2", "values": "0x20 1x40"},  # a second leader
        {"series": 'outbox_oldest_unsent_age_seconds{service="orders",pod="o1"}',
         "values": "0x20 45x40"},
        {"series": http % "200", "values": "0+150x60"},  # 10 a second
        {"series": http % "503", "values": "0x20 0+30x40"},  # then 2 a second fail
    ]  # fmt: skip

    def fired(alert: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
        rule = next(a for a in alerts() if a["alert"] == alert)
        expected = [
            {
                "exp_labels": {"severity": rule["labels"]["severity"], **lab},
                "exp_annotations": rule["annotations"],
            }
            for lab in labels
        ]
        return {"eval_time": at, "alertname": alert, "exp_alerts": expected}

    tests = {
        "rule_files": [rules.name],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "alert_rule_test": [
                    fired("PriceFeedSilent", "4m"),  # still ticking: nothing
                    fired("PriceFeedSilent", "8m", {}),
                    fired("DuplicatePricefeedLeaders", "4m"),
                    fired("DuplicatePricefeedLeaders", "7m", {}),
                    fired("OutboxStuck", "6m"),
                    fired("OutboxStuck", "9m", {}),
                    fired("Http5xxRatioHigh", "5m"),
                    fired("Http5xxRatioHigh", "12m", {"service": "gateway"}),
                    fired("PriceFeedNoLeader", "12m"),
                ],
            }
        ],
    }
    unit = tmp_path / "tests.yaml"
    unit.write_text(json.dumps(tests))
    result = run_promtool("test", "rules", str(unit))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_pages_with_a_severity_and_a_runbook() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "two alerts share a name"
    for alert in alerts():
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        annotations = alert["annotations"]
        assert annotations.get("summary") and annotations.get("runbook"), alert["alert"]


def test_the_alerts_cover_what_pages_someone_at_night() -> None:
    wanted = {
        "PriceFeedSilent": "pricefeed_ticks_total",
        "PricesStale": "pricefeed_prices_stale",
        "TickToSocketLatencyHigh": "gateway_ui_latency_seconds_bucket",
        "GatewayBufferOverflows": "gateway_ws_buffer_overflows_total",
        "FragmentErrorRatioHigh": "gateway_fragments_total",
        "Http5xxRatioHigh": "http_requests_total",
        "OrderAckLatencyHigh": "orders_submit_ack_seconds_bucket",
        "OutboxStuck": "outbox_oldest_unsent_age_seconds",
        "NatsReconnectStorm": "nats_reconnects_total",
        "DuplicatePricefeedLeaders": "pricefeed_leader",
        "DuplicatePartitionOwners": "component_live_partitions",
    }
    by_name = {a["alert"]: a for a in alerts()}
    for alert, metric in wanted.items():
        assert alert in by_name, f"no {alert} alert"
        assert metric in metric_names(by_name[alert]["expr"]), f"{alert} does not read {metric}"
    partitions = by_name["DuplicatePartitionOwners"]["expr"]
    assert f"> {wire.LIVE_PARTITIONS}" in partitions, "the partition count changed"


def test_every_alert_reads_series_the_code_exports(exported: dict[str, set[str]]) -> None:
    every = set().union(*exported.values())
    for alert in alerts():
        names = metric_names(alert["expr"])
        assert names, f"{alert['alert']} reads no metric"
        unknown = names - every
        assert not unknown, f"{alert['alert']} reads {sorted(unknown)}, which no process exports"


def test_the_deploy_readme_lists_every_alert() -> None:
    readme = (DEPLOY / "README.md").read_text()
    section = readme[readme.index("## Monitoring") :]
    for alert in alerts():
        assert f"| `{alert['alert']}` | {alert['labels']['severity']} |" in section, alert["alert"]


def test_a_misspelt_metric_is_caught(exported: dict[str, set[str]]) -> None:
    every = set().union(*exported.values())
    assert metric_names("sum(rate(pricefeed_tick_total[1m])) == 0") - every  # sic: tick
    assert not metric_names("sum(rate(pricefeed_ticks_total[1m])) == 0") - every


# -- the dashboard and the folder ----------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_reads_series_the_code_exports(
    exported: dict[str, set[str]],
) -> None:
    every = set().union(*exported.values())
    queries = dashboard_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        unknown = metric_names(expr) - every
        assert not unknown, f"panel {title!r} reads {sorted(unknown)}, which no process exports"


def test_the_podmonitor_scrapes_every_process() -> None:
    monitor = load((MONITORING / "podmonitor.yaml").read_text())
    assert monitor["kind"] == "PodMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for spec in SERVICES:
        manifest = load_all((DEPLOY / "k8s" / f"{spec.name}.yaml").read_text())
        deployment = next(d for d in manifest if d["kind"] == "Deployment")
        template = deployment["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), spec.name
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        endpoints = monitor["spec"]["podMetricsEndpoints"]
        assert all(e["port"] in ports and e["path"] == "/metrics" for e in endpoints), spec.name


def test_the_folder_builds_with_kustomize() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in kustomize(MONITORING)}
    assert {
        ("PodMonitor", "trading-dashboard"),
        ("PrometheusRule", "trading-dashboard"),
        ("ConfigMap", "trading-dashboard-grafana"),
        ("NetworkPolicy", "prometheus-scrape"),
    } <= kinds
