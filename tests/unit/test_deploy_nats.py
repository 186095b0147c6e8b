"""Static checks of ``deploy/nats/``: the NATS server enforces ``shared.natsauth.IDENTITIES``.

compose and Kubernetes give every process its identity (``test_deploy_compose.py``,
``test_deploy_k8s.py``); these check the server's side.
"""

from __future__ import annotations

import re
import string
import subprocess

import pytest

from shared import devservers, natsauth
from tests.unit.deploy_nats_support import (
    HELM_VALUES,
    NATS_AUTH,
    NATS_SECRET,
    Variable,
    auth_users,
    parse_nats_conf,
    password_variable,
)
from tests.unit.deploy_support import DEPLOY, ROOT, load


def test_nats_conf_reader() -> None:
    text = """
    # comment
    a { b: [1, "two", $THREE]  // comment
        c = 'x'; d: {} }
    """
    assert parse_nats_conf(text) == {"a": {"b": ["1", "two", Variable("THREE")], "c": "x", "d": {}}}
    for bad in ("a: {", "a b", "a: 1, a: 2"):
        with pytest.raises(ValueError):
            parse_nats_conf(bad)


def test_nats_users_are_the_identities() -> None:
    assert set(auth_users()) == set(natsauth.IDENTITIES)


@pytest.mark.parametrize("identity", sorted(natsauth.IDENTITIES))
def test_nats_permissions_are_the_identities(identity: str) -> None:
    # Drift between the code's identities and what the deployed server enforces shows up
    # here, not as a permissions violation in production.
    wanted, found = natsauth.IDENTITIES[identity], auth_users()[identity]
    assert sorted(found.publish) == sorted(wanted.publish), f"{identity}: publish"
    assert sorted(found.subscribe) == sorted(wanted.subscribe), f"{identity}: subscribe"


def test_nats_passwords_are_variables_one_per_identity() -> None:
    names = [password_variable(identity) for identity in auth_users()]
    assert len(set(names)) == len(names), "two identities share a password"
    for name in names:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), name


def test_nats_server_accepts_the_config() -> None:
    """nats-server itself loads the file (``-t``: check and exit), the variables set."""
    try:
        executable = devservers.nats_executable()
    except FileNotFoundError:
        pytest.skip("no nats-server here")
    letters = string.ascii_letters * 2  # letters only, as deploy/README.md says
    env = {password_variable(identity): letters for identity in auth_users()}

    def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [executable, "-c", str(NATS_AUTH), "-t"]
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=30, check=False
        )

    result = check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    missing = dict(list(env.items())[1:])  # one variable unset: the server must refuse
    assert check(missing).returncode != 0, "an unset password variable must stop the server"


def test_helm_values_include_the_config_and_the_passwords() -> None:
    values = load(HELM_VALUES.read_text())
    assert values["config"]["jetstream"]["enabled"] is True, "the leases need JetStream"
    merge = values["config"].get("merge") or {}
    includes = [v for k, v in merge.items() if str(k).endswith("$include")]
    assert NATS_AUTH.name in includes, f"the chart's config must include {NATS_AUTH.name}"
    env = values["container"]["env"]
    for identity in auth_users():
        name = password_variable(identity)
        ref = ((env.get(name) or {}).get("valueFrom") or {}).get("secretKeyRef")
        assert ref == {"name": NATS_SECRET, "key": name}, f"{name} not from Secret {NATS_SECRET}"
    # The chart's ConfigMap gets the file through --set-file, as the install command says.
    key = NATS_AUTH.name.replace(".", "\\.")  # a dot in a --set key is escaped
    source = NATS_AUTH.relative_to(ROOT).as_posix()
    command = f"--set-file 'configMap.merge.data.{key}={source}'"
    for documented in (HELM_VALUES, DEPLOY / "README.md"):
        assert command in documented.read_text(), f"{documented.name}: no {command}"
