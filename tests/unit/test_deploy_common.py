"""Static checks of ``deploy/`` as a whole: every process has settings, every YAML file parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.deploy_support import (
    DEPLOY,
    LEASE_TTL_FIELD,
    LEASED,
    REPLICA_ID,
    SETTINGS,
    SPECS,
    env_names,
    field_env,
    load_all,
)


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


def test_every_process_reads_the_replica_settings() -> None:
    # The manifests give every process its pod name, and every lease holder its lease TTL.
    for name, cls in SETTINGS.items():
        assert REPLICA_ID in env_names(cls), f"{name}'s settings do not read {REPLICA_ID}"
    for spec in LEASED:
        assert field_env(SETTINGS[spec.name], LEASE_TTL_FIELD), f"{spec.name}: no lease TTL"
