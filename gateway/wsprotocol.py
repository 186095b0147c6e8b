"""The gateway's WebSocket protocol for uvicorn: permessage-deflate tuned for many small frames.

Browsers always offer permessage-deflate, and compressing every frame is the largest single
cost of the gateway's live path. uvicorn's protocol compresses at zlib's default level (6)
with a 4 KiB window (``server_max_window_bits=12``, memLevel 5). Measured on the frames the
gateway really sends (one per socket per tick, 2–4 KB), level 1 with a 16 KiB window sends
~3 % fewer bytes (the window reaches the same rows in earlier frames) and takes ~40 % less CPU
per frame with a few sockets, but only ~15 % less with hundreds: each socket keeps its own
compressor, touched once a tick, so at that scale the cost is mostly cache misses on its state
rather than the search that the level sets. The window costs ~48 KiB more per socket. The
settings are ``GATEWAY_WS_DEFLATE_LEVEL``, ``GATEWAY_WS_DEFLATE_WINDOW_BITS`` and
``GATEWAY_WS_DEFLATE_MEM_LEVEL``.

The compressor is zlib-ng's (the ``zlib-ng`` package: the same deflate stream, any browser
inflates it). On those frames its level 1 takes ~7 µs where zlib's level 1 takes ~22 µs,
for ~17 % more bytes (its level 2: ~17 µs, fewer bytes than zlib's level 1).

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
from websockets.server import ServerProtocol
from websockets.typing import ExtensionParameter
from zlib_ng import zlib_ng

from gateway.settings import GatewaySettings

__all__ = ["CLIENT_MAX_WINDOW_BITS", "Deflate", "GatewayWebSocketProtocol", "ZlibNgDeflateFactory"]

CLIENT_MAX_WINDOW_BITS = 12  # the page sends nothing but a close: a small inflate window


@dataclass(frozen=True)
class Deflate:
    level: int
    window_bits: int
    mem_level: int

    @classmethod
    def of(cls, settings: GatewaySettings) -> Deflate:
        return cls(
            settings.ws_deflate_level,
            settings.ws_deflate_window_bits,
            settings.ws_deflate_mem_level,
        )

    def factory(self) -> ServerPerMessageDeflateFactory:
        return ZlibNgDeflateFactory(
            server_max_window_bits=self.window_bits,
            client_max_window_bits=CLIENT_MAX_WINDOW_BITS,
            compress_settings={"level": self.level, "memLevel": self.mem_level},
        )


class ZlibNgDeflateFactory(ServerPerMessageDeflateFactory):
    """websockets' server side of permessage-deflate, compressing with zlib-ng."""

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, extension = super().process_request_params(params, accepted_extensions)
        if not extension.local_no_context_takeover:  # else a new zlib one per message
            extension.encoder = zlib_ng.compressobj(  # type: ignore[assignment]  # zlib's API
                wbits=-extension.local_max_window_bits, **extension.compress_settings
            )
        return response, extension


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
