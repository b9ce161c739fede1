"""Reading and refusing a request of the miner API (`blockfl.miners.api` and its routers): a
`Rejection` and its JSON error, bodies streamed within their size limit and deadline, and JSON
bodies size- and depth-checked before they are decoded, in a turn of the app's `UploadGate`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from blockfl.wire import WireError, decode_json

T = TypeVar("T")

#: HTTP status of each rejection reason (anything else is 400 or 422)
STATUS = {
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "body_timeout": 408,
    "busy": 503,
    "wrong_round": 409,
    "stale_base_model": 409,
    "replay": 409,
    "unknown_device": 403,
    "not_found": 404,
}


class Rejection(Exception):
    """A request the miner refuses, with its reason."""

    def __init__(self, reason: str, detail: str = "", status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.status = status or STATUS.get(reason, 400)
        self.headers = headers


def error(reason: str, detail: str = "", status: int | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error response of a rejection."""
    return JSONResponse({"error": reason, "detail": detail},
                        status_code=status or STATUS.get(reason, 400), headers=headers)


def client_of(request: Request) -> str:
    """The client's address (what limits and turns are counted by)."""
    return request.client.host if request.client else "unknown"


def check_declared(request: Request, limit: int) -> None:
    """Refuse a request whose Content-Length is no number or more than `limit` bytes (before
    it waits for a turn or anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejection("bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejection("payload_too_large", f"{declared} > {limit} bytes")


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes, and with 408
    (closing the connection) unless it arrives within `timeout` seconds (default: the app's
    `body_timeout`)."""
    check_declared(request, limit)
    timeout = timeout if timeout is not None else request.app.state.limits.body_timeout
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Rejection("payload_too_large", f"more than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise Rejection("body_timeout", f"{size} bytes of the body in {timeout:g} s",
                        headers={"Connection": "close"}) from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int, reason: str = "malformed_json",
                    parse: Callable[[Any], T] = lambda data: data) -> T:
    """A JSON request body (`read_body`) of at most `limit` bytes, and never more than the
    app's `json_limit` (every JSON body of the miner API is a block: no larger than one of the
    chain's `max_updates_per_block` updates), size- and depth-checked before it is decoded,
    then `parse`d (raising WireError on what it refuses), both off the event loop and in a
    turn of the app's `UploadGate`, as an upload (503 `busy` when none comes); Rejection
    `reason` for anything that is not bounded JSON `parse` accepts."""
    limit = min(limit, request.app.state.json_limit)
    check_declared(request, limit)
    async with request.app.state.gate.turn(client_of(request)):
        body = await read_body(request, limit)

        def decode() -> T:
            return parse(decode_json(body, limit, "body"))

        try:
            return await run_in_threadpool(decode)
        except WireError as exc:
            raise Rejection(reason, str(exc)[:300]) from None
