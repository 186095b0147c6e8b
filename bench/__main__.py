"""Run benchmarks and write each one's table to ``bench/results/<name>.md``.

``python -m bench [NAME ...] [--flag ...]``: no names runs every benchmark; flags are passed to
each one, so give only flags they all accept (``--quick`` results go to ``<name>-quick.md``).
``python -m bench NAME --help`` describes one. A benchmark in ``SECTIONS`` writes its own
section of a shared file and keeps the others' (replicas and takeover: ``replicas.md``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from bench import (
    bench_live,
    bench_pricefeed,
    bench_relay,
    bench_render,
    bench_replicas,
    bench_takeover,
)

RESULTS = Path(__file__).with_name("results")
BENCHMARKS = {
    "live": bench_live.main,
    "pricefeed": bench_pricefeed.main,
    "relay": bench_relay.main,
    "render": bench_render.main,
    "replicas": bench_replicas.main,
    "takeover": bench_takeover.main,
}
SECTIONS = {"replicas": "replicas", "takeover": "replicas"}  # benchmark → shared file
USAGE = (
    "usage: python -m bench [NAME ...] [--flag ...]; NAME among: {names}; "
    "python -m bench NAME --help for its flags"
)


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


def _machine() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    except OSError:
        model = None
    cpu = model.group(1).strip() if model else platform.processor() or "unknown CPU"
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} × {cpu}"


def _write_section(path: Path, name: str, text: str) -> None:
    """Replace (or add) ``name``'s section of ``path``, keeping the other benchmarks'
    sections, in ``SECTIONS`` order."""
    old = path.read_text() if path.exists() else ""
    sections = dict(re.findall(r"<!-- (\w+): begin -->\n(.*?)<!-- \1: end -->\n", old, re.S))
    sections[name] = text
    title = f"# {SECTIONS[name]} benchmarks{' (quick)' if path.stem.endswith('-quick') else ''}"
    order = [n for n in SECTIONS if n in sections] + [n for n in sections if n not in SECTIONS]
    body = "".join(f"<!-- {n}: begin -->\n{sections[n]}<!-- {n}: end -->\n\n" for n in order)
    path.write_text(f"{title}\n\n{body}".rstrip("\n") + "\n")


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE.format(names=", ".join(BENCHMARKS)))
        return 0
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
        about = f"{run}{stamp}, {version}; {_machine()}\n\n"
        quick = "-quick" if "--quick" in flags else ""
        if name in SECTIONS:
            path = RESULTS / f"{SECTIONS[name]}{quick}.md"
            _write_section(path, name, f"## {name} benchmark\n\n{about}{table}\n")
        else:
            path = RESULTS / f"{name}{quick}.md"
            path.write_text(f"# {name} benchmark\n\n{about}{table}\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
