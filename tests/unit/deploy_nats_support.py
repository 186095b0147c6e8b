"""Readers of ``deploy/nats/`` (the NATS server's identities) shared by the static checks.

``deploy/nats/auth.conf`` is nats-server configuration, a superset of JSON: maps and arrays,
keys with ``:``, ``=`` or nothing before a map, optional separators, ``#`` and ``//`` comments,
quoted or bare strings, and ``$NAME`` variable references (a config variable, else an
environment variable of the server). :func:`parse_nats_conf` reads that subset and fails on
anything else, so the file stays simple enough to be checked here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from tests.unit.deploy_support import DEPLOY

NATS_DIR = DEPLOY / "nats"
NATS_AUTH = NATS_DIR / "auth.conf"
HELM_VALUES = NATS_DIR / "helm-values.yaml"
# The Secret holding every identity's password, under the name of the server's variable: one
# copy beside the dashboard (each process reads its own key), one beside the NATS server.
NATS_SECRET = "nats-users"

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>(?:\#|//)[^\n]*)
  | (?P<dq>"(?:[^"\\]|\\.)*")
  | (?P<sq>'[^']*')
  | (?P<punct>[{}\[\],:=;])
  | (?P<bare>[^\s{}\[\],:=;#"']+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Variable:
    """A ``$NAME`` reference: nats-server substitutes the variable's value when it loads."""

    name: str


@dataclass(frozen=True)
class AuthUser:
    password: Any  # a Variable: no literal password belongs in the repository
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _tokens(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"cannot read nats config at offset {pos}: {text[pos : pos + 20]!r}")
        kind, value = match.lastgroup, match.group()
        pos = match.end()
        if kind in ("space", "comment"):
            continue
        if kind == "dq":
            tokens.append(("str", json.loads(value)))
        elif kind == "sq":
            tokens.append(("str", value[1:-1]))
        elif kind == "bare":
            tokens.append(("var", Variable(value[1:])) if value.startswith("$") else ("str", value))
        else:
            tokens.append((value, value))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, *kinds: str) -> Any:
        kind = self.peek()
        if kind not in kinds:
            raise ValueError(f"nats config: expected {kinds}, found {kind!r} (token {self.pos})")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def members(self, end: str | None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while self.peek() != end:
            key = self.take("str")
            if self.peek() in (":", "="):
                self.pos += 1
            elif self.peek() != "{":
                raise ValueError(f"nats config: {key!r} has no value")
            if key in result:
                raise ValueError(f"nats config: duplicate key {key!r}")
            result[key] = self.value()
            if self.peek() in (",", ";"):
                self.pos += 1
        return result

    def value(self) -> Any:
        kind = self.peek()
        if kind == "{":
            self.pos += 1
            members = self.members("}")
            self.take("}")
            return members
        if kind == "[":
            self.pos += 1
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.pos += 1
            self.take("]")
            return items
        return self.take("str", "var")


def parse_nats_conf(text: str) -> dict[str, Any]:
    """A nats-server configuration file (the subset described above) as a dict."""
    return _Parser(text).members(None)


def _subjects(value: Any, where: str) -> tuple[str, ...]:
    assert isinstance(value, list) and all(isinstance(s, str) for s in value), (
        f"{where}: a list of subjects expected (not allow/deny maps), got {value!r}"
    )
    return tuple(value)


@cache
def auth_users() -> dict[str, AuthUser]:
    """``deploy/nats/auth.conf``'s users: name → password reference and permissions."""
    config = parse_nats_conf(NATS_AUTH.read_text())
    assert set(config) == {"authorization"}, f"{NATS_AUTH.name}: only an authorization block"
    users: dict[str, AuthUser] = {}
    for entry in config["authorization"]["users"]:
        name = entry["user"]
        assert name not in users, f"{NATS_AUTH.name}: user {name} twice"
        permissions = entry["permissions"]
        users[name] = AuthUser(
            password=entry["password"],
            publish=_subjects(permissions["publish"], f"{name}.publish"),
            subscribe=_subjects(permissions["subscribe"], f"{name}.subscribe"),
        )
    return users


def password_variable(identity: str) -> str:
    """The name of the variable (and Secret key) that holds ``identity``'s password."""
    password = auth_users()[identity].password
    assert isinstance(password, Variable), f"{identity}: the password must be a $VARIABLE"
    return password.name
