"""Run benchmarks and write each one's table to ``bench/results/<name>.md``.

``python -m bench [NAME ...] [--flag ...]``: no names runs every benchmark; flags are passed to
each one, so give only flags they all accept (``--quick`` results go to ``<name>-quick.md``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench import bench_live, bench_pricefeed, bench_relay, bench_render

RESULTS = Path(__file__).with_name("results")
BENCHMARKS = {
    "live": bench_live.main,
    "pricefeed": bench_pricefeed.main,
    "relay": bench_relay.main,
    "render": bench_render.main,
}


def _revision() -> str:
    """The commit measured, ``+changes`` when tracked files differ from it (read-only git)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never touch the index

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(RESULTS.parent), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, env=env).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
        changed = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" +uncommitted changes" if changed else "")


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    args = sys.argv[1:]
    first_flag = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    names, flags = args[:first_flag], args[first_flag:]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names or list(BENCHMARKS):
        table = BENCHMARKS[name](flags)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        run = f"`python -m bench {name}{''.join(' ' + f for f in flags)}`, "
        version = f"Python {platform.python_version()}, revision {_revision()}"
        header = f"# {name} benchmark\n\n{run}{stamp}, {version}\n\n"
        path = RESULTS / f"{name}{'-quick' if '--quick' in flags else ''}.md"
        path.write_text(header + table + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
