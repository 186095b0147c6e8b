"""The request id crosses NATS: what a request publishes carries it in a header, and the
subscriber handles (and logs, and publishes) under it; a tick outside a request has none."""

from __future__ import annotations

from typing import Any

import pytest

from shared.bus import NatsBus
from shared.db.engine import create_engine, session_factory
from shared.observability import request_id_var
from shared.outbox import OutboxRelay, stage
from tests.support import wait_until

pytestmark = pytest.mark.service


async def test_the_request_id_travels_with_the_message(nats_url: str) -> None:
    sender = await NatsBus.connect(nats_url, name="sender")
    receiver = await NatsBus.connect(nats_url, name="receiver")
    seen: list[tuple[str, str]] = []
    relayed: list[str] = []

    async def on_order(_subject: str, payload: dict[str, Any]) -> None:
        seen.append((payload["n"], request_id_var.get()))
        await receiver.publish("test.rid.ui", {"n": payload["n"]})  # what it causes

    async def on_ui(_subject: str, _payload: dict[str, Any]) -> None:
        relayed.append(request_id_var.get())

    await receiver.subscribe("test.rid.order", on_order)
    await sender.subscribe("test.rid.ui", on_ui)
    await receiver.flush()
    await sender.flush()
    token = request_id_var.set("click-7f3a")
    try:
        await sender.publish("test.rid.order", {"n": "in a request"})
    finally:
        request_id_var.reset(token)
    await sender.publish("test.rid.order", {"n": "a tick"})
    await wait_until(lambda: len(seen) == 2 and len(relayed) == 2)
    assert seen == [("in a request", "click-7f3a"), ("a tick", "-")]
    assert relayed == ["click-7f3a", "-"]  # from the click to the socket's part
    assert request_id_var.get() == "-"  # nothing leaks into what runs next
    await sender.close()
    await receiver.close()


async def test_an_outbox_message_is_published_under_the_request_that_staged_it(
    nats_url: str, database_url: str
) -> None:
    engine = create_engine(database_url, null_pool=True)
    db = session_factory(engine)
    bus = await NatsBus.connect(nats_url, name="relay")
    await bus.ensure_stream("RID_TEST", ["test.rid.outbox.>"], 3600)
    seen: list[tuple[int, str]] = []

    async def on_event(_subject: str, payload: dict[str, Any]) -> None:
        seen.append((payload["order_id"], request_id_var.get()))

    await bus.subscribe("test.rid.outbox.>", on_event)
    await bus.flush()
    token = request_id_var.set("click-42")  # the submit's request
    try:
        async with db() as s, s.begin():
            stage(s, "test.rid.outbox.1", {"order_id": 1})
    finally:
        request_id_var.reset(token)
    async with db() as s, s.begin():  # the venue's fill: no request
        stage(s, "test.rid.outbox.1", {"order_id": 2})
    assert await OutboxRelay(lambda: db, lambda: bus).relay_once() == 2  # later, elsewhere
    await wait_until(lambda: len(seen) == 2)
    assert seen == [(1, "click-42"), (2, "-")]
    await bus.close()
    await engine.dispose()
