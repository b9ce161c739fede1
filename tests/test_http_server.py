"""The guarded HTTP server in process, over real loopback sockets: connection caps per address
and in all, the slots kept for new addresses, and JSON refusals that the client gets to read."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

from fastapi import FastAPI

from blockfl import hostile
from blockfl.chain.node import free_port
from blockfl.config import ServerConfig
from blockfl.events import Throttled
from blockfl.miners.http_server import _LingeringTransport, miner_server


def test_an_address_holding_connections_cannot_take_the_slots_kept_for_new_ones():
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    events: list[tuple[str, dict]] = []
    limits = ServerConfig(max_connections=4, reserved_for_new_clients=2,
                          connections_per_client=3, header_timeout=1.5)
    port = free_port()
    server = miner_server(app, "127.0.0.1", port, limits, lambda e, **kw: events.append((e, kw)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    probe = hostile.request("GET", "/health")
    head = hostile.request("POST", "/updates")

    async def scenario() -> list[hostile.Reply]:
        def slow(source: str) -> asyncio.Task:
            return asyncio.create_task(hostile.exchange("127.0.0.1", port, head, source,
                                                        timeout=10, pause_after=10))

        held = [slow("127.0.0.2"), slow("127.0.0.2")]
        await asyncio.sleep(0.3)
        # 2 of 4 connections open: the other 2 are kept for addresses that hold none
        third = await hostile.exchange("127.0.0.1", port, probe, "127.0.0.2", timeout=10)
        newcomer = await hostile.exchange("127.0.0.1", port, probe, "127.0.0.3", timeout=10)
        return [third, newcomer, *await asyncio.gather(*held)]

    try:
        third, newcomer, *held = asyncio.run(scenario())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert (third.status, third.error) == (503, "server_full")
    assert newcomer.status == 200
    assert [(r.status, r.error) for r in held] == [(408, "header_timeout")] * 2
    # one event per client and reason (the second timeout is counted for the next one)
    refused = sorted((kw["reason"], kw["count"]) for event, kw in events if event == "http_refused")
    assert refused == [("header_timeout", 1), ("server_full", 1)]


def test_closing_a_connection_whose_client_left_is_an_event_not_an_error():
    """The client reset the connection while the server was not reading (uvicorn pauses reading
    while it answers): the server's half-close fails with ENOTCONN, which used to escape into
    the app as an `internal_error` with a traceback."""
    left: list[str] = []

    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Paused(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transport.pause_reading()  # type: ignore[attr-defined]
                accepted.set_result(transport)  # type: ignore[arg-type]

        server = await loop.create_server(Paused, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        transport = await accepted
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset
        await asyncio.sleep(0.2)
        closing = _LingeringTransport(transport, loop, lambda: left.append("left"))
        closing.close()  # raised OSError: [Errno 107] Transport endpoint is not connected
        server.close()
        await server.wait_closed()
        return closing.is_closing(), closing.lingering

    closed, lingering = asyncio.run(scenario())
    assert closed and not lingering
    assert left == ["left"]


def test_events_of_one_key_are_written_once_a_while_with_their_count():
    events: list[tuple[str, dict]] = []
    note = Throttled(lambda e, **kw: events.append((e, kw)), every=0.3)
    for _ in range(5):
        note("internal_error", ("OSError",), error="OSError: gone")
    note("internal_error", ("KeyError",), error="KeyError: x")
    time.sleep(0.35)
    note("internal_error", ("OSError",), error="OSError: gone")
    assert [(kw["error"], kw["count"]) for _, kw in events] == [
        ("OSError: gone", 1), ("KeyError: x", 1), ("OSError: gone", 5)]


def test_uvicorn_prints_a_traceback_at_most_once_a_while():
    """uvicorn printed a 60-line traceback for every error in the app (the issue counted 70-93
    in 20 minutes of normal traffic): they are let through once every `LOG_EVERY` seconds."""
    import logging

    from blockfl.miners.http_server import _TracebackEvery

    def record(exc_info: object) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                                 "Exception in ASGI application", None, exc_info)  # type: ignore[arg-type]

    gone = (OSError, OSError(107, "Transport endpoint is not connected"), None)
    only = _TracebackEvery()
    assert [only.filter(record(gone)) for _ in range(3)] == [True, False, False]
    assert only.filter(record(None))  # a line without a traceback always passes
