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


def inflated(data: bytes, inflate: Any = None) -> str:
    """What a browser does with a compressed message's payload (RFC 7692 §7.2.2)."""
    inflate = inflate or zlib.decompressobj(wbits=-15)
    return str(inflate.decompress(data + b"\x00\x00\xff\xff").decode())


def test_by_default_each_message_is_compressed_on_its_own() -> None:
    factory = Deflate(level=1, window_bits=14, mem_level=5).factory()
    response, extension = factory.process_request_params([], [])
    assert ("server_no_context_takeover", None) in response  # the browser is told
    assert not hasattr(extension, "encoder")  # no compressor kept per socket
    for text in FRAMES:
        frame = extension.encode(Frame(Opcode.TEXT, text.encode()))
        assert frame.rsv1 and frame.fin  # marked compressed, whole
        assert inflated(frame.data) == text  # on its own, with a fresh inflater


def test_a_fragmented_message_is_compressed_as_one() -> None:
    _response, extension = Deflate(1, 14, 5).factory().process_request_params([], [])
    head = extension.encode(Frame(Opcode.TEXT, b"<div>first half, ", fin=False))
    tail = extension.encode(Frame(Opcode.CONT, b"second half</div>"))
    assert head.rsv1 and not tail.rsv1
    assert inflated(head.data + tail.data) == "<div>first half, second half</div>"


def test_with_context_takeover_a_compressor_is_kept_per_socket() -> None:
    factory = Deflate(level=1, window_bits=14, mem_level=5, context_takeover=True).factory()
    response, extension = factory.process_request_params([], [])
    assert ("server_no_context_takeover", None) not in response
    inflate = zlib.decompressobj(wbits=-15)  # one inflater for the socket's life
    sizes = []
    for text in FRAMES:
        frame = extension.encode(Frame(Opcode.TEXT, text.encode()))
        assert inflated(frame.data, inflate) == text
        sizes.append(len(frame.data))
    assert sizes[-1] < sizes[0]  # later messages refer back to earlier ones
