"""Container health check: GET a path of the process in this container; exit 0 if it answers 200.

    python /app/healthcheck.py [PATH] [PORT]

PATH defaults to ``/healthz``. Without PORT the port is the ``--port`` of the uvicorn process
running in the container (one image serves six processes on six ports), else 8000. Only the
standard library: the image has no curl or wget.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

DEFAULT_PORT = 8000
TIMEOUT_S = 2.0


def uvicorn_port(argv: Sequence[str]) -> int | None:
    """The ``--port`` of a uvicorn command line (``--port N`` or ``--port=N``), if any."""
    if not any("uvicorn" in arg for arg in argv):
        return None
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return None


def _command_lines(proc: Path = Path("/proc")) -> Iterable[list[str]]:
    for entry in sorted(proc.glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        yield [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def detect_port() -> int:
    for argv in _command_lines():
        port = uvicorn_port(argv)
        if port is not None:
            return port
    return DEFAULT_PORT


def main(argv: Sequence[str]) -> int:
    path = argv[0] if argv else "/healthz"
    port = int(argv[1]) if len(argv) > 1 else detect_port()
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except OSError as exc:  # urllib's HTTPError (e.g. 503 from /readyz) is an OSError too
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
