"""Quote providers: parsing, timeouts, retries with backoff, garbage; a real local server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from services.pricefeed.domain import Quote, QuoteBoard, SymbolInfo
from services.pricefeed.loop import PriceLoop
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import RiskMonitor
from services.pricefeed.providers import HttpProvider, ProviderError, parse_quotes
from shared.bus import InMemoryBus

D = Decimal
KNOWN = {"AAA": None, "BBB": None}


def test_parse_accepts_the_documented_shapes() -> None:
    expected = {"AAA": Quote(D("10.5000"), D("10.4000"), D("10.6000"))}
    entry = {"last": "10.5", "bid": 10.4, "ask": "10.6"}
    assert parse_quotes({"prices": {"AAA": entry}}, KNOWN) == expected
    assert parse_quotes({"AAA": entry, "ZZZ": entry}, KNOWN) == expected
    assert parse_quotes([{"symbol": "AAA", **entry}], KNOWN) == expected
    assert parse_quotes({"quotes": [{"ticker": "AAA", "price": 7}]}, KNOWN) == {
        "AAA": Quote(D(7), D(7), D(7))
    }


@pytest.mark.parametrize(
    "entry",
    [
        {"last": "abc"},
        {"last": -1},
        {"last": "NaN"},
        {"last": "Infinity"},
        {"last": True},
        {"last": None},
        {"last": 10, "bid": 11, "ask": 9},
        {"last": "0.004"},  # positive, but 0.00 in cents
        {"last": "1.00", "bid": "0.004", "ask": "1.01"},
        "10",
    ],
)
def test_parse_skips_bad_entries(entry: object) -> None:
    body = {"AAA": entry, "BBB": {"last": 5}}
    assert parse_quotes(body, KNOWN) == {"BBB": Quote(D(5), D(5), D(5))}


@pytest.mark.parametrize("body", [None, 42, "x", [], {}, {"prices": 3}, {"ZZZ": {"last": 1}}])
def test_parse_rejects_bodies_with_nothing_usable(body: object) -> None:
    with pytest.raises(ValueError):
        parse_quotes(body, KNOWN)


def mock_provider(handler, retries: int = 2) -> HttpProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return HttpProvider("http://quotes.test/q", KNOWN, retries=retries, backoff_s=0, client=client)


async def test_retries_server_errors_then_succeeds() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(503)
        return httpx.Response(200, json={"AAA": {"last": "1.5"}})

    provider = mock_provider(handler)
    assert await provider.fetch() == {"AAA": Quote(D("1.5"), D("1.5"), D("1.5"))}
    assert len(calls) == 3
    await provider.aclose()


async def test_gives_up_after_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    provider = mock_provider(handler, retries=1)
    with pytest.raises(ProviderError, match="ConnectError"):
        await provider.fetch()
    assert len(calls) == 2
    await provider.aclose()


async def test_backoff_grows_exponentially(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("services.pricefeed.providers.asyncio.sleep", fake_sleep)
    provider = mock_provider(lambda request: httpx.Response(500), retries=3)
    provider.backoff_s = 0.1
    with pytest.raises(ProviderError, match="HTTP 500"):
        await provider.fetch()
    assert slept == [0.1, 0.2, 0.4]
    await provider.aclose()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"<html>oops</html>"),
        httpx.Response(200, json={"AAA": {"last": "zero"}}),
        httpx.Response(404),
    ],
)
async def test_garbage_and_client_errors_are_not_retried(response: httpx.Response) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response

    provider = mock_provider(handler)
    with pytest.raises(ProviderError):
        await provider.fetch()
    assert len(calls) == 1
    await provider.aclose()


class QuoteServer:
    """A real HTTP server on 127.0.0.1 whose next answers the test sets."""

    def __init__(self) -> None:
        self.status, self.body, self.delay = 200, b"{}", 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if outer.delay:
                    threading.Event().wait(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/quotes"

    def answer(self, status: int, body: object) -> None:
        self.status, self.delay = status, 0.0
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.fixture
def quote_server() -> Iterator[QuoteServer]:
    qs = QuoteServer()
    thread = threading.Thread(target=qs.server.serve_forever, daemon=True)
    thread.start()
    yield qs
    qs.server.shutdown()
    qs.server.server_close()
    thread.join()


async def test_real_server_failures_raise_provider_errors(quote_server: QuoteServer) -> None:
    provider = HttpProvider(quote_server.url, KNOWN, timeout_s=0.2, retries=1, backoff_s=0)
    quote_server.answer(200, {"prices": {"AAA": {"last": "3", "bid": "2.9", "ask": "3.1"}}})
    assert await provider.fetch() == {"AAA": Quote(D(3), D("2.9"), D("3.1"))}
    quote_server.answer(500, {"error": "down"})
    with pytest.raises(ProviderError, match="HTTP 500"):
        await provider.fetch()
    quote_server.answer(200, b"\x00garbage")
    with pytest.raises(ProviderError, match="garbage"):
        await provider.fetch()
    quote_server.delay = 0.5
    with pytest.raises(ProviderError, match="Timeout"):
        await provider.fetch()
    await provider.aclose()


async def test_loop_keeps_last_prices_through_failure_and_garbage(
    quote_server: QuoteServer,
) -> None:
    book = QuoteBoard(
        SymbolInfo(i, t, D(10), D("0.5"), Quote(D(10), D("9.9"), D("10.1")))
        for i, t in enumerate(KNOWN, 1)
    )
    bus = InMemoryBus()
    provider = HttpProvider(quote_server.url, book.symbols, timeout_s=0.5, retries=1, backoff_s=0)
    loop = PriceLoop(
        provider=provider,
        book=book,
        monitor=RiskMonitor(book.last_prices(), {}),
        bus=bus,
        metrics=PricefeedMetrics(),
    )
    quote_server.answer(200, {"AAA": {"last": "11", "bid": "10.9", "ask": "11.1"}})
    assert (await loop.cycle()).seq == 1
    kept = dict(book.quotes)
    for status, body in [(503, {"error": "busy"}), (200, b"not json"), (200, {"AAA": "x"})]:
        quote_server.answer(status, body)
        result = await loop.cycle()
        assert result.stale and book.stale and book.quotes == kept
    quote_server.answer(
        200, {"AAA": {"last": "11", "bid": "10.9", "ask": "11.1"}, "BBB": {"last": "12"}}
    )
    result = await loop.cycle()
    assert not book.stale and result.seq == 2
    assert [list(p["prices"]) for _, p in bus.published] == [["AAA"], ["BBB"]]
    await provider.aclose()
