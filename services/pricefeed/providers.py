"""Quote providers: the seeded simulation and an external HTTP quote API.

A provider answers fresh quotes or raises :class:`ProviderError`; the loop then keeps the
last prices and marks them stale. Nothing here may crash the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from services.pricefeed.domain import PRICE_STEP, GbmSimulation, Quote
from shared.domain import checked_quote

__all__ = ["HttpProvider", "ProviderError", "QuoteProvider", "SimulationProvider", "parse_quotes"]

log = logging.getLogger(__name__)


class ProviderError(Exception):
    """The provider could not deliver usable quotes."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider, self.reason = provider, reason
        super().__init__(f"{provider}: {reason}")


class QuoteProvider(Protocol):
    name: str

    async def fetch(self) -> Mapping[str, Quote]: ...

    async def aclose(self) -> None: ...


class SimulationProvider:
    """Quotes from :class:`GbmSimulation`, advancing ``dt_s`` simulated seconds a call."""

    name = "simulation"

    def __init__(self, simulation: GbmSimulation, dt_s: float) -> None:
        self.simulation, self.dt_s = simulation, dt_s

    async def fetch(self) -> Mapping[str, Quote]:
        return self.simulation.step(self.dt_s)

    async def aclose(self) -> None:
        return None


def _entries(body: Any) -> list[tuple[str, Any]]:
    if isinstance(body, dict):
        inner = body.get("prices", body.get("quotes", body))
        if isinstance(inner, dict):
            return list(inner.items())
        body = inner
    if isinstance(body, list):
        return [(str(e.get("symbol", e.get("ticker", ""))), e) for e in body if isinstance(e, dict)]
    raise ValueError("quotes are neither an object nor a list")


def parse_quotes(body: Any, known: Mapping[str, object]) -> dict[str, Quote]:
    """Quotes from a JSON body for the ``known`` tickers; bad entries are skipped.

    Accepted shapes: ``{"prices"|"quotes": {TICKER: {...}}}``, ``{TICKER: {...}}`` or a list
    of ``{"symbol"|"ticker": ..., ...}``; each entry has ``last`` (or ``price``) and
    optionally ``bid``/``ask`` (both default to last). Raises ``ValueError`` when nothing
    usable is in it.
    """
    quotes: dict[str, Quote] = {}
    for ticker, entry in _entries(body):
        if ticker not in known or not isinstance(entry, dict):
            continue
        last = entry.get("last", entry.get("price"))
        try:
            quote = checked_quote(last, entry.get("bid", last), entry.get("ask", last))
            prices = (quote.last, quote.bid, quote.ask)
            # checked again in cents: a price under half a cent would be published as 0
            quotes[ticker] = checked_quote(*(p.quantize(PRICE_STEP) for p in prices))
        except (ValueError, ArithmeticError):
            continue
    if not quotes:
        raise ValueError("no usable quote for a known symbol")
    return quotes


class HttpProvider:
    """Quotes from an HTTP JSON API, with a timeout and retries with exponential backoff.

    Transport errors and 5xx answers are retried; a 4xx or an unusable body is not.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        known: Mapping[str, object],
        *,
        timeout_s: float = 1.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url, self.known = url, known
        self.retries, self.backoff_s = retries, backoff_s
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def _get(self) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last_try = attempt == self.retries
            try:
                response = await self._client.get(self.url)
            except httpx.HTTPError as exc:
                if last_try:
                    raise ProviderError(self.name, f"{type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code < 500 or last_try:
                    return response
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    async def fetch(self) -> Mapping[str, Quote]:
        response = await self._get()
        if response.status_code != 200:
            raise ProviderError(self.name, f"HTTP {response.status_code}")
        try:
            return parse_quotes(response.json(), self.known)
        except ValueError as exc:  # includes JSONDecodeError
            raise ProviderError(self.name, f"garbage answer: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
