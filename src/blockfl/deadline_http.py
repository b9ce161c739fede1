"""An httpx transport whose requests each have one total deadline.

httpx's timeouts are per operation: a server that drips one byte every few seconds behind a
large `Content-Length` never trips them and holds the caller for hours. Under `deadline(s)`
connecting, sending and every read of the answer share one budget of `s` seconds (each socket
operation waits at most what is left of it), so no answer takes longer, however it is dripped.
The deadline is the calling thread's: one client may serve several threads at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_deadline = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's requests inside ends within `seconds`."""
    outer = getattr(_deadline, "end", None)
    end = time.monotonic() + seconds
    _deadline.end = end if outer is None else min(outer, end)
    try:
        yield
    finally:
        _deadline.end = outer


def _left(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """The operation's timeout cut to what is left of the deadline; `error` once none is."""
    end = getattr(_deadline, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the deadline of the whole answer passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    """A network stream whose reads and writes wait at most what is left of the deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # the stream's own write sends in a loop under one timeout: a server that reads slowly
        # would get that timeout once per partial send
        sock = self._stream.get_extra_info("socket")
        view = memoryview(buffer)
        try:
            while view:
                sock.settimeout(_left(timeout, httpcore.WriteTimeout))
                view = view[sock.send(view):]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname,
                                              _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's socket backend, its streams under the deadline."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_client(base_url: str, timeout: float, verify: str | bool) -> httpx.Client:
    """An httpx client whose every request inside `deadline` keeps it (`timeout`: each
    operation's limit, also waiting for a pooled connection)."""
    transport = httpx.HTTPTransport(verify=verify)
    transport._pool._network_backend = _Backend()  # httpx does not take a backend itself
    return httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

