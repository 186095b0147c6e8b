"""Run every benchmark and write its table to ``bench/results/<name>.md``."""

from __future__ import annotations

import datetime as dt
import platform
import sys
from pathlib import Path

from bench import bench_pricefeed

RESULTS = Path(__file__).with_name("results")
BENCHMARKS = {"pricefeed": bench_pricefeed.main}


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    wanted = sys.argv[1:] or list(BENCHMARKS)
    for name in wanted:
        table = BENCHMARKS[name]([])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        header = f"# {name} benchmark\n\n{stamp}, Python {platform.python_version()}\n\n"
        (RESULTS / f"{name}.md").write_text(header + table + "\n")
        print(f"wrote {RESULTS / (name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
