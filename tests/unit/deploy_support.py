"""Shared helpers of the static ``deploy/`` checks (``test_deploy_*.py``).

No Docker engine runs here, so these read the files. Processes, factories and ports come from
``shared.launcher.SERVICES``; the environment variables a process may be given come from its
pydantic-settings class (env prefix + field name, or the field's validation alias).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shutil
import subprocess
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
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
from shared.launcher import SERVICES, ServiceSpec
from shared.settings import ServiceSettings

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

# Scale-out (DESIGN.md §8): every process runs at least two replicas. Every process but the
# gateway holds leases in JetStream KV, so its preStop hands them over; the pricefeed is a
# leader and a hot standby, exactly two, never autoscaled; the others scale on CPU.
MIN_REPLICAS = 2
LEADER_STANDBY = SPECS["pricefeed"]
LEASED = [spec for spec in SERVICES if spec is not GATEWAY]
AUTOSCALED = [spec for spec in SERVICES if spec is not LEADER_STANDBY]
# Read by every process (ServiceSettings): the replica's name in its lease records.
REPLICA_ID = "REPLICA_ID"
# The settings field of a lease holder's TTL. Its variable differs: LEASE_TTL_S for the component
# services, PRICEFEED_LEASE_TTL_S (shorter, under the orders' feed-silence limit) for the pricefeed.
LEASE_TTL_FIELD = "lease_ttl_s"

# Read by uvicorn itself, not by a settings class: the addresses whose X-Forwarded-For/-Proto
# it believes (the client address keys the login throttle, the scheme makes cookies Secure).
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"
FORWARDED_FLAG = "--forwarded-allow-ips"

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


def by(specs: list[ServiceSpec]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("spec", specs, ids=[s.name for s in specs])


by_process = by(SERVICES)


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


def field_env(cls: type[BaseSettings], field: str) -> set[str]:
    """The environment variables that set ``cls.<field>``."""
    return {env for env, f in env_names(cls).items() if f == field}


def effective(cls: type[BaseSettings], field: str, given: dict[str, str]) -> Any:
    """``cls.<field>`` as a process given the variables ``given`` sees it (else the default)."""
    for env in field_env(cls, field):
        if env in given:
            return type(cls.model_fields[field].default)(given[env])
    return cls.model_fields[field].default


def assert_takeover_fits(pricefeed: dict[str, str], orders: dict[str, str]) -> None:
    """A standby pricefeed takes a dead leader's lease over about 1.25 lease TTLs after the
    leader's last renewal (the lease expires, then one renewal round) plus one tick. That must
    stay under the orders service's feed-silence limit, or market orders are refused during
    every failover. ``pricefeed`` and ``orders`` are the variables each process is given."""
    ttl = effective(PricefeedSettings, LEASE_TTL_FIELD, pricefeed)
    tick = effective(PricefeedSettings, "tick_interval_ms", pricefeed) / 1000
    silence = effective(OrdersSettings, "max_feed_silence_s", orders)
    takeover = ttl * 1.25 + tick
    assert takeover < silence, f"pricefeed takeover ~{takeover:.2f} s >= feed silence {silence} s"


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
    """How ``make run`` starts ``spec`` (its own uvicorn flags included), on the port and
    host a container listens on: every deployed command starts with it."""
    return [
        "uvicorn",
        spec.factory,
        "--factory",
        *spec.uvicorn_args,
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


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


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


def in_image(source: str) -> str:
    """Where the image puts ``source`` (a path in the repository, e.g. ``deploy/prestop.py``)."""
    for args in args_of("COPY", final_stage()):
        parts = args.split()
        if source in parts:
            dest = parts[-1]
            workdir = args_of("WORKDIR", final_stage())[-1]
            return dest if dest.startswith("/") else str(Path(workdir) / dest)
    raise AssertionError(f"the image does not contain {source}")


def healthcheck_in_image() -> str:
    return in_image("deploy/healthcheck.py")


def prestop_in_image() -> str:
    return in_image("deploy/prestop.py")


def load_script(name: str) -> ModuleType:
    """``deploy/<name>.py`` as a module (the scripts are not in a package)."""
    loader = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert loader and loader.loader, name
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity (``500m``, ``"2"``, ``1.5``) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def trusted_proxies(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A ``FORWARDED_ALLOW_IPS`` value as networks; ``*`` (trust anyone) or a name is refused."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    assert "*" not in items, f"{FORWARDED_ALLOW_IPS}={value!r}: '*' trusts any client"
    networks = [ipaddress.ip_network(item) for item in items]  # ValueError on anything else
    assert all(n.prefixlen > 0 for n in networks), f"{FORWARDED_ALLOW_IPS}={value!r}: everyone"
    return networks


def required_tool(name: str, installed_by: str) -> str:
    """``name``'s path. CI must have it (a failure there), a workstation may not (a skip)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: {installed_by}")
        pytest.skip(f"{name} is not installed ({installed_by}; the other tests read the files)")
    return path


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize folder`` renders."""
    kubectl = required_tool("kubectl", ".ci/run installs it")
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in load_all(out.stdout) if doc]
