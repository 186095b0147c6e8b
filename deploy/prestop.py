"""Kubernetes preStop hook: hand this replica's leases over, then wait for the endpoint to go.

    python /app/prestop.py [PORT]           # component services and the pricefeed
    python /app/prestop.py --no-release     # the gateway: it holds no leases, it only waits

First ``POST http://127.0.0.1:PORT/ops/release`` (3 s timeout): the process gives back its
leases, so the other replica takes over within one renewal round instead of one lease TTL. Any
failure is reported on stderr and ignored (the leases then simply expire). Then sleep
``PRESTOP_SLEEP_S`` seconds (default 5) so that Services and the Ingress stop sending new
requests before the kubelet sends SIGTERM. The hook always exits 0.

Without PORT the port is found as ``healthcheck.py`` finds it: the ``--port`` of the uvicorn
process in this container. Only the standard library: the image has no curl or wget.
"""

from __future__ import annotations

import math
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence

RELEASE_PATH = "/ops/release"
RELEASE_HEADER = "X-Ops-Release"  # shared.wire.HEADER_OPS_RELEASE: refused without it
RELEASE_TIMEOUT_S = 3.0
DEFAULT_SLEEP_S = 5.0
SLEEP_ENV = "PRESTOP_SLEEP_S"  # read by this hook, not by the process's settings
NO_RELEASE = "--no-release"


def release_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{RELEASE_PATH}"


def sleep_seconds(environ: Mapping[str, str]) -> float:
    """``PRESTOP_SLEEP_S`` if it is a finite number >= 0, else the default."""
    raw = environ.get(SLEEP_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_SLEEP_S
    except ValueError:
        return DEFAULT_SLEEP_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_SLEEP_S


def parse(argv: Sequence[str]) -> tuple[bool, int | None]:
    """``(release?, port)`` from the command line; port ``None`` = detect it."""
    release = NO_RELEASE not in argv
    rest = [arg for arg in argv if arg != NO_RELEASE]
    if len(rest) > 1 or (rest and not rest[0].isdigit()):
        raise SystemExit(f"usage: prestop.py [PORT | {NO_RELEASE}]")
    return release, int(rest[0]) if rest else None


def detect_port() -> int:
    # healthcheck.py sits beside this script, in the image and in deploy/.
    from healthcheck import detect_port as uvicorn_port_in_container

    return uvicorn_port_in_container()


def release(url: str, timeout: float = RELEASE_TIMEOUT_S) -> bool:
    """POST ``url``; True on a 2xx answer. Never raises: a hook that fails changes nothing."""
    request = urllib.request.Request(url, data=b"", method="POST", headers={RELEASE_HEADER: "1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except Exception as exc:  # refused, timeout, HTTPError, a broken answer: all the same here
        print(f"{url}: {exc} (ignored: the leases expire instead)", file=sys.stderr)
        return False
    return 200 <= status < 300


def main(
    argv: Sequence[str],
    environ: Mapping[str, str] = os.environ,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    do_release, port = parse(argv)
    if do_release:
        release(release_url(port if port is not None else detect_port()))
    sleep(sleep_seconds(environ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
