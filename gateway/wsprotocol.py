"""The gateway's WebSocket protocol for uvicorn: permessage-deflate tuned for many sockets.

Browsers always offer permessage-deflate, and compressing every frame is the largest single
cost of the gateway's live path. By default each message is compressed on its own
(``server_no_context_takeover``, which the server may choose whatever the browser offered)
with zlib-ng at level 1. With a compressor kept per socket (context takeover, uvicorn's
way), a socket's compressor state (~80 KB) is touched once a tick: with hundreds of
sockets each compression starts from cold memory. Measured on 1,000 compressors taking
turns, as the gateway does, on 3 KB frames like its own:

| per socket | µs per frame | bytes |
|---|---:|---:|
| one zlib compressor, level 1, 16 KiB window (takeover) | 43 | 645 |
| the same with zlib-ng | 42 | 777 |
| a fresh zlib compressor per message | 28 | 884 |
| a fresh zlib-ng compressor per message (the default) | 9 | 1,118 |

So ~4.6× less CPU and no compressor memory kept per socket, for ~1.7× the bytes (at
1,000 traders 5.5 MB/s on the wire for 15.8 MB/s of HTML, about 5.5 KB/s per trader).
``GATEWAY_WS_DEFLATE_CONTEXT_TAKEOVER=true`` keeps a zlib compressor per socket instead
(fewest bytes); ``GATEWAY_WS_DEFLATE_LEVEL``, ``_WINDOW_BITS`` and ``_MEM_LEVEL`` tune it.

Run uvicorn with ``--ws gateway.wsprotocol:GatewayWebSocketProtocol`` (the launcher does);
``--ws-per-message-deflate=false`` still declines compression.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter
from zlib_ng import zlib_ng

from gateway.settings import GatewaySettings

__all__ = [
    "CLIENT_MAX_WINDOW_BITS",
    "Deflate",
    "DeflateFactory",
    "GatewayWebSocketProtocol",
    "PerMessageZlibNg",
]

CLIENT_MAX_WINDOW_BITS = 12  # the page sends nothing but a close: a small inflate window


@dataclass(frozen=True)
class Deflate:
    level: int
    window_bits: int
    mem_level: int
    context_takeover: bool = False

    @classmethod
    def of(cls, settings: GatewaySettings) -> Deflate:
        return cls(
            settings.ws_deflate_level,
            settings.ws_deflate_window_bits,
            settings.ws_deflate_mem_level,
            settings.ws_deflate_context_takeover,
        )

    def factory(self) -> ServerPerMessageDeflateFactory:
        return DeflateFactory(
            server_no_context_takeover=not self.context_takeover,
            server_max_window_bits=self.window_bits,
            client_max_window_bits=CLIENT_MAX_WINDOW_BITS,
            compress_settings={"level": self.level, "memLevel": self.mem_level},
        )


class PerMessageZlibNg(PerMessageDeflate):
    """permessage-deflate that compresses a whole message on its own with zlib-ng (the
    same deflate stream: any browser inflates it). With context takeover, or for a
    fragmented message, websockets' own zlib path."""

    def encode(self, frame: Frame) -> Frame:
        if not (self.local_no_context_takeover and frame.fin and frame.opcode in _MESSAGES):
            return super().encode(frame)
        encoder = zlib_ng.compressobj(wbits=-self.local_max_window_bits, **self.compress_settings)
        data = encoder.compress(frame.data) + encoder.flush(zlib_ng.Z_SYNC_FLUSH)
        # a sync flush ends with the empty stored block 00 00 ff ff, which is not sent
        return Frame(frame.opcode, data[:-4], True, True, frame.rsv2, frame.rsv3)


_MESSAGES = (Opcode.TEXT, Opcode.BINARY)


class DeflateFactory(ServerPerMessageDeflateFactory):
    """websockets' server side of permessage-deflate, answering with
    :class:`PerMessageZlibNg`."""

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, ext = super().process_request_params(params, accepted_extensions)
        return response, PerMessageZlibNg(
            ext.remote_no_context_takeover,
            ext.local_no_context_takeover,
            ext.remote_max_window_bits,
            ext.local_max_window_bits,
            ext.compress_settings,
        )


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with the gateway's deflate settings."""

    deflate: ClassVar[Deflate | None] = None
    """``None``: read from the environment (``GatewaySettings``) on the first connection."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if config.ws_per_message_deflate:
            self.conn = ServerProtocol(
                extensions=[self.settings().factory()],
                max_size=config.ws_max_size,
                logger=self.conn.logger,
            )

    @classmethod
    def settings(cls) -> Deflate:
        if cls.deflate is None:
            cls.deflate = Deflate.of(GatewaySettings())
        return cls.deflate

    @classmethod
    def with_deflate(cls, deflate: Deflate) -> type[GatewayWebSocketProtocol]:
        """This protocol with explicit settings (``uvicorn.Config(ws=...)`` in tests)."""
        return type(cls.__name__, (cls,), {"deflate": deflate})
