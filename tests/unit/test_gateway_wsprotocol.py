"""The gateway's uvicorn WebSocket protocol negotiates permessage-deflate with its settings."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from gateway.testing import Served
from gateway.wsprotocol import Deflate, GatewayWebSocketProtocol

FRAMES = [
    f'<div hx-swap-oob="true" id="watchlist-quote-T{i % 7}" class="cells">{100 + i}.25</div>'
    for i in range(40)
]


async def frames(websocket: WebSocket) -> None:
    await websocket.accept()
    for frame in FRAMES:
        await websocket.send_text(frame)
    await websocket.close()


@asynccontextmanager
async def serving(ws: Any, **config: Any) -> AsyncIterator[Served]:
    app = Starlette(routes=[WebSocketRoute("/ws", frames)])
    async with Served(app, ws=ws, lifespan="off", **config) as served:
        yield served


async def receive_all(served: Served) -> tuple[str, list[str]]:
    """The extensions the server accepted (the client offers permessage-deflate) and every
    frame, decompressed."""
    async with connect(f"{served.ws_url}/ws", compression="deflate") as socket:
        assert socket.response is not None
        accepted = socket.response.headers.get("Sec-WebSocket-Extensions", "")
        return accepted, [str(frame) async for frame in socket]


async def test_the_settings_window_and_level_are_negotiated_and_frames_arrive_whole() -> None:
    protocol = GatewayWebSocketProtocol.with_deflate(Deflate(level=2, window_bits=14, mem_level=5))
    async with serving(protocol) as served:
        accepted, received = await receive_all(served)
    assert "permessage-deflate" in accepted
    assert "server_max_window_bits=14" in accepted  # uvicorn's own protocol says 12
    assert received == FRAMES  # every frame decompresses to what was sent, in order


async def test_without_explicit_settings_the_environment_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_WS_DEFLATE_WINDOW_BITS", "11")
    protocol = type("Fresh", (GatewayWebSocketProtocol,), {"deflate": None})
    async with serving(protocol) as served:
        accepted, received = await receive_all(served)
    assert "server_max_window_bits=11" in accepted
    assert received == FRAMES


async def test_declining_compression_still_works() -> None:
    protocol = GatewayWebSocketProtocol.with_deflate(Deflate(level=2, window_bits=14, mem_level=5))
    async with serving(protocol, ws_per_message_deflate=False) as served:
        accepted, received = await receive_all(served)
    assert "permessage-deflate" not in accepted
    assert received == FRAMES


def test_frames_are_compressed_by_zlib_ng_and_inflate_with_zlib() -> None:
    factory = Deflate(level=1, window_bits=14, mem_level=5).factory()
    _response, extension = factory.process_request_params([], [])
    assert type(extension.encoder).__module__.startswith("zlib_ng")
    inflate = zlib.decompressobj(wbits=-15)  # what a browser does: the same deflate stream
    for text in FRAMES:
        frame = extension.encode(Frame(Opcode.TEXT, text.encode()))
        assert frame.rsv1  # marked compressed
        assert inflate.decompress(frame.data + b"\x00\x00\xff\xff").decode() == text


def test_without_context_takeover_each_message_stands_alone() -> None:
    factory = Deflate(level=1, window_bits=14, mem_level=5).factory()
    _response, extension = factory.process_request_params(
        [("server_no_context_takeover", None)], []
    )
    for text in FRAMES[:3]:
        frame = extension.encode(Frame(Opcode.TEXT, text.encode()))
        inflate = zlib.decompressobj(wbits=-15)
        assert inflate.decompress(frame.data + b"\x00\x00\xff\xff").decode() == text
