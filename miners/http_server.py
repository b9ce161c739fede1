"""The miner's HTTP server: uvicorn's h11 protocol, guarded against hostile clients.

uvicorn alone caps connections globally (so 300 idle connections from one address lock every
client out with 503), never times out a slow request head, and answers its own errors as plain
text. `GuardedProtocol` adds, per connection: a cap on the connections of one client address
and on all connections (the last `reserved_for_new_clients` slots only for addresses that hold
none), a deadline for each request head (from connect, or from the previous answer on a
keep-alive connection), and JSON for every refusal of the HTTP layer, in the API's shape
`{"error": reason, "detail": ...}`: `too_many_connections` and `server_full` (503),
`header_timeout` (408), `bad_http_request` (400, e.g. a bad Content-Length),
`header_too_large` (431). Refusals are `http_refused` events in the miner's log, at most one per
client and reason every `LOG_EVERY` seconds, with the `count` of refusals it stands for (a
flood does not become a flood of log lines). A connection closed
by the server (after any refusal, also the API's, e.g. 413 before the body was read) is first
half-closed, and what the client still sends is drained for `LINGER` seconds: the client reads
the answer instead of a connection reset. A client that has already left (the half-close fails,
e.g. `ENOTCONN`) is a `client_left` event, throttled the same way, never an error; uvicorn's
own tracebacks of errors in the app are printed at most once every `LOG_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from blockfl.config import ServerConfig
from blockfl.events import Log, Throttled

LINGER = 2.0  # seconds a refused connection is drained before it is closed
LOG_EVERY = 10.0  # seconds between two `http_refused` events of one client and reason
_REASONS = {400: "bad_http_request", 408: "header_timeout", 431: "header_too_large"}


def refusal_bytes(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response that refuses with the API's JSON error, then closes."""
    body = json.dumps({"error": reason, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class _LingeringTransport:
    """An asyncio transport whose `close` half-closes, drains for `LINGER` seconds, then closes
    (see the module docstring); everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 left: Callable[[], None]) -> None:
        self._transport = transport
        self._loop = loop
        self._left = left  # called when the client turns out to have left already
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        transport = self._transport
        if self.is_closing():
            return
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client left (ENOTCONN, ECONNRESET): nothing to drain
            transport.close()
            self._left()
            return
        self.lingering = True
        transport.resume_reading()
        self._loop.call_later(LINGER, transport.close)


class _Connection(h11.Connection):
    """h11's connection that refuses a request head over `max_head` bytes (h11 itself only
    bounds a head that arrives in pieces) and remembers why the peer's last request was bad."""

    last_error: h11.RemoteProtocolError | None = None

    def __init__(self, max_head: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > self.max_head:
                    raise h11.RemoteProtocolError(
                        f"request head of {size} bytes, more than {self.max_head}", 431)
            return event
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the guards of the module docstring; `protocol_class`
    makes one with its limits, its table of open connections and the log to write to."""

    limits: ServerConfig = ServerConfig()
    open_by_client: Counter[str]
    note: Throttled  # the server's log, at most one event per client and reason a while

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(self.limits.max_head_bytes)
        self._deadline: asyncio.TimerHandle | None = None
        self._holder: str | None = None  # the client address this connection counts for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        lingering = _LingeringTransport(transport, self.loop, self._left)
        super().connection_made(lingering)  # type: ignore[arg-type]
        host = self._host()
        refusal = self._refusal(host)
        if refusal is not None:
            self._refuse(503, *refusal)
            return
        self._holder = host
        self.open_by_client[host] += 1
        self._arm()

    def _host(self) -> str:
        return self.client[0] if self.client else "unknown"

    def _left(self) -> None:
        self.note("client_left", (self._host(),), client=self._host())

    def _refusal(self, host: str) -> tuple[str, str] | None:
        limits, held = self.limits, self.open_by_client[host]
        if held >= limits.connections_per_client:
            return "too_many_connections", (
                f"{held} connections open from {host}; at most {limits.connections_per_client}")
        total = self.open_by_client.total()
        if total >= limits.max_connections or (
            held and total >= limits.max_connections - limits.reserved_for_new_clients
        ):
            return "server_full", f"{total} connections open; try again shortly"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._holder is not None:
            table = self.open_by_client
            table[self._holder] -= 1
            if table[self._holder] <= 0:
                del table[self._holder]
            self._holder = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.transport.is_closing():  # a closing connection is drained, not parsed
            super().data_received(data)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope:  # a complete request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request head on this keep-alive connection

    def send_400_response(self, msg: str) -> None:
        exc = self.conn.last_error
        status = exc.error_status_hint if exc is not None else 400
        detail = str(exc) if exc is not None and str(exc) else msg
        self._refuse(status, _REASONS.get(status, "bad_http_request"), detail)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._refuse(408, "header_timeout",
                     f"no complete request head within {self.limits.header_timeout:g} s")

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        if self.transport.is_closing():
            return
        self._disarm()
        self.transport.write(refusal_bytes(status, reason, detail))
        self.transport.close()
        host = self._host()
        self.note("http_refused", (host, reason), client=host, status=status, reason=reason)


class _TracebackEvery(logging.Filter):
    """Lets a log record with a traceback through at most once every `LOG_EVERY` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -LOG_EVERY

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None:
            return True
        now = time.monotonic()
        if now - self._last < LOG_EVERY:
            return False
        self._last = now
        return True


_TRACEBACKS = _TracebackEvery()


def protocol_class(limits: ServerConfig, log: Log) -> type[GuardedProtocol]:
    """A `GuardedProtocol` class for one server: its limits, connection table and log."""
    attributes = {"limits": limits, "open_by_client": Counter(),
                  "note": Throttled(log, LOG_EVERY)}
    return type("GuardedProtocol", (GuardedProtocol,), attributes)


def miner_server(
    app: Any, host: str, port: int, limits: ServerConfig, log: Log,
    tls: tuple[Path, Path] | None = None,
) -> uvicorn.Server:
    """The uvicorn server of a miner's app with the guarded protocol (`tls`: certificate and
    key files to serve HTTPS)."""
    ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    logging.getLogger("uvicorn.error").addFilter(_TRACEBACKS)  # once: the filter is one object
    return uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_keep_alive=5,
        # asyncio's own loop, whose transports `GuardedProtocol` wraps, also where uvloop is
        # installed (uvicorn's "auto" would take it; the `flower` extra brings it)
        loop="asyncio", http=protocol_class(limits, log),
        h11_max_incomplete_event_size=limits.max_head_bytes, **ssl,
    ))
