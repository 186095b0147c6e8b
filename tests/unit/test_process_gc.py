"""A started process collects garbage less often and never rescans what it built at start."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from shared.process import GC_THRESHOLDS

STARTED = textwrap.dedent(
    """
    import asyncio, gc
    from shared.bus import InMemoryBus
    from shared.process import Connections, create_process_app
    from tests.example_service.fakes import settings

    print(gc.get_threshold(), gc.get_freeze_count())

    async def main():
        for _ in range(2):
            app = create_process_app(
                "p", settings(), [], connections=Connections(InMemoryBus(), database=False)
            )
            async with app.router.lifespan_context(app):
                print(gc.get_threshold(), gc.get_freeze_count())

    asyncio.run(main())
    """
)


def test_a_started_process_freezes_what_it_built_and_raises_the_thresholds() -> None:
    out = subprocess.run(
        [sys.executable, "-c", STARTED], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    before, first, second = out
    assert before.startswith("(700, 10, 10) 0")
    threshold, frozen = first.rsplit(" ", 1)
    assert threshold == str(GC_THRESHOLDS)
    assert int(frozen) > 10_000  # the modules, the app and its routes
    # once per process: a second app start freezes nothing more (the first app, frozen with
    # the rest, is freed by reference counting once dropped)
    again, refrozen = second.rsplit(" ", 1)
    assert again == threshold and int(refrozen) <= int(frozen)
