"""LOG_FORMAT=json: one JSON object per record, with the service and the request id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.observability import configure_logging, request_id_var
from shared.settings import ServiceSettings


@contextmanager
def configured(service: str, level: str, fmt: str) -> Iterator[io.StringIO]:
    """:func:`configure_logging` for one test: what the root handler writes, then the root
    logger as it was."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(service, level, fmt)
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_a_record_is_one_json_object_with_the_request_id() -> None:
    with configured("orders", "INFO", "json") as stream:
        token = request_id_var.set("req-42")
        try:
            logging.getLogger("services.orders").info("filled %s", "order #7")
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("services.orders").exception("failed")
        finally:
            request_id_var.reset(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "filled order #7" and first["level"] == "INFO"
    assert (first["service"], first["request_id"], first["logger"]) == (
        "orders",
        "req-42",
        "services.orders",
    )
    assert first["ts"].endswith("+00:00")
    assert "ValueError: boom" in second["exc"]


def test_log_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert ServiceSettings().log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match=r"log_format|LOG_FORMAT"):
        ServiceSettings()


def test_uvicorn_logs_follow_the_level_and_format() -> None:
    """uvicorn set its loggers up at INFO with handlers of its own: every socket opened
    was a plain-text line at LOG_LEVEL=WARNING (and ~5 % of the gateway's CPU while
    1,000 traders connected)."""
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    saved = (
        root.handlers[:],
        root.level,
        [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers],
    )
    own = logging.StreamHandler(io.StringIO())
    for lg in loggers:  # as uvicorn leaves them
        lg.handlers[:] = [own] if lg.name == "uvicorn" else []
        lg.setLevel(logging.INFO)
        lg.propagate = lg.name != "uvicorn"
    try:
        configure_logging("gateway", "WARNING", "json")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("uvicorn.error").info("('127.0.0.1', 5) - \"WebSocket /ws\" [accepted]")
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
        lines = stream.getvalue().splitlines()
    finally:
        root.handlers[:], _, kept = saved
        root.setLevel(saved[1])
        for lg, (handlers, level, propagate) in zip(loggers, kept, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
    assert [json.loads(line)["message"] for line in lines] == ["Invalid HTTP request received."]
    assert own.stream.getvalue() == ""  # type: ignore[attr-defined]


def test_a_logged_socket_path_shows_no_csrf_token() -> None:
    """uvicorn logs each socket's path with its query: the page's carries the session's
    CSRF token, valid for the whole session."""
    with configured("gateway", "INFO", "text") as stream:
        uvicorn = logging.getLogger("uvicorn.error")
        uvicorn.info('%s - "WebSocket %s" [accepted]', "10.0.0.7:5123", "/ws?csrf=s3cr3t.t0k3n")
        uvicorn.info("GET /ws?x=1&csrf=an0ther&y=2 403")
        logging.getLogger("gateway").info("csrf: %s", "fine")  # no token in it: unchanged
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "s3cr3t" not in lines[0] and "an0ther" not in lines[1]
    assert lines[0].endswith('10.0.0.7:5123 - "WebSocket /ws?csrf=…" [accepted]')
    assert lines[1].endswith("GET /ws?x=1&csrf=…&y=2 403")
    assert lines[2].endswith("csrf: fine")
