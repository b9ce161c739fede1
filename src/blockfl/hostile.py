"""Hostile clients of a miner, for testing one's own miner on loopback (`scripts/attack_miner.py`).

Every attack speaks raw HTTP/1.1 over asyncio sockets bound to a chosen source address (any
127.0.0.0/8 address is a distinct client on loopback), so it can send what no HTTP library
would: JSON nested 100,000 deep, a head that never ends, a body that stops half way, a
Content-Length that is no number, a thousand uploads at once. Every loop is bounded: a count of
connections and a time limit. An attack returns a `Tally` of how the miner answered.
`DrippingPeer` is the other side: a hostile peer or miner whose answers never end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from blockfl import safejson
from blockfl.hashing import keccak
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.wire import RECORD_HEADER, REQUEST_SIGNATURE_HEADER, TENSOR_MEDIA_TYPE, record_header

DEEP = 100_000
ATTACKER = "127.0.0.2"


def deep_json(depth: int = DEEP) -> bytes:
    """`[[[...]]]`, nested `depth` deep: the request that used to kill a miner (SIGSEGV)."""
    return b"[" * depth + b"]" * depth


def deep_safetensors(depth: int = DEEP) -> bytes:
    """A safetensors payload whose JSON header is nested `depth` deep."""
    header = deep_json(depth)
    return struct.pack("<Q", len(header)) + header


def upload_headers(key: bytes, domain: Domain, round_: int,
                   base_model_hash: bytes) -> dict[str, str]:
    """Headers of an upload that `key` really signed for `round_`, naming tensors that no body
    will match: the miner checks the signature, then has to read and decode the body."""
    record = UpdateRecord(device=address_of(key), round=round_, base_model_hash=base_model_hash,
                          update_hash=keccak(b"not these tensors"), samples=10,
                          compute_time_ms=10**6)
    signed = SignedUpdate(record, sign_update(key, record, domain))
    return {"Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: record_header(signed)}


@dataclass(frozen=True)
class Reply:
    """How the miner answered one request: HTTP status (None: no answer) and JSON error."""

    status: int | None
    error: str

    @property
    def label(self) -> str:
        """`status error`, or what happened instead of an answer."""
        return f"{self.status} {self.error}".strip() if self.status else self.error


@dataclass
class Tally:
    """How the miner answered the requests of one attack."""

    replies: Counter[str] = field(default_factory=Counter)

    def add(self, reply: Reply) -> None:
        """Count one answer."""
        self.replies[reply.label] += 1

    def __str__(self) -> str:
        return ", ".join(f"{n}x {label}" for label, n in self.replies.most_common())


def request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
            content_length: str | None = None) -> bytes:
    """The bytes of an HTTP/1.1 request (Connection: close), with any Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", "Host: miner", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or content_length is not None:
        lines.append(f"Content-Length: {content_length if content_length else len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_reply(data: bytes) -> Reply:
    """The status and JSON `error` of a raw HTTP response (`not_json` if the body is not)."""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Reply(None, "closed without an answer" if not data else "not HTTP")
    try:
        return Reply(status, str(safejson.loads(body, len(body))["error"]))
    except (ValueError, KeyError, TypeError):  # JsonRejected is a ValueError
        return Reply(status, "not_json")


async def exchange(host: str, port: int, data: bytes, source: str = ATTACKER,
                   timeout: float = 30.0, pause_after: int | None = None) -> Reply:
    """Send `data` from `source` and read the answer until the miner closes. With
    `pause_after`, only that many bytes are sent and the connection then idles (a slow client)
    until the miner answers or `timeout` passes."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            try:
                writer.write(data if pause_after is None else data[:pause_after])
                await writer.drain()
                return parse_reply(await reader.read())
            finally:
                writer.close()
    except TimeoutError:
        return Reply(None, f"no answer in {timeout:g} s")
    except OSError as exc:
        return Reply(None, type(exc).__name__)


async def disconnect_mid_body(host: str, port: int, path: str, headers: dict[str, str],
                              body: bytes, source: str = ATTACKER) -> Reply:
    """Send the head and half the body, then close the connection."""
    data = request("POST", path, headers, body)
    try:
        _, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        writer.write(data[: len(data) - len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()
    except OSError as exc:
        return Reply(None, type(exc).__name__)
    return Reply(None, "client left")


async def many(count: int, make: object) -> Tally:
    """Run `count` attacks `make(i)` (coroutines) at once and tally their replies."""
    tally = Tally()
    for reply in await asyncio.gather(*(make(i) for i in range(count))):  # type: ignore[operator]
        tally.add(reply)
    return tally


async def upload_flood(host: str, port: int, headers: dict[str, str], body: bytes,
                       count: int = 1000, source: str = ATTACKER, timeout: float = 60.0) -> Tally:
    """`count` uploads at once from one address."""
    data = request("POST", "/updates", headers, body)
    return await many(count, lambda _: exchange(host, port, data, source, timeout))


def padded_block(update: dict[str, object], miner: str, round_: int,
                 size: int = 8 * 2**20 - 4096) -> bytes:
    """A candidate block's JSON of about `size` bytes, one signed update repeated: what an
    attestation flood sends (bounded JSON that a miner must read and parse to refuse)."""
    one = len(json.dumps(update)) + 2
    block = {"prev_hash": "0x" + "00" * 32, "round": round_, "global_model_hash": "0x" + "00" * 32,
             "miner": miner, "nonce": "0", "updates": [update] * max(1, size // one),
             "excluded": []}
    return json.dumps(block).encode()


def flood_body(key: bytes, miner: str, domain: Domain, round_: int, base_model_hash: bytes
               ) -> bytes:
    """The 8 MiB body of an attestation flood on round `round_`: a block of `miner`'s naming
    one update `key` really signed, repeated (`padded_block`)."""
    update = json.loads(upload_headers(key, domain, round_, base_model_hash)[RECORD_HEADER])
    return padded_block(update, miner, round_)


async def attestation_flood(host: str, port: int, body: bytes, count: int = 64,
                            sources: tuple[str, ...] = (ATTACKER, "127.0.0.4"),
                            timeout: float = 120.0) -> Tally:
    """`count` attestation requests with `body` at once, spread over the `sources`, each with
    a committer's signature header (forged: one is only checked against the body once it is
    read, so the body's size and the upload gate are what refuse these)."""
    headers = {"Content-Type": "application/json", REQUEST_SIGNATURE_HEADER: "0x" + "11" * 65}
    data = request("POST", "/attestations", headers, body)
    return await many(count, lambda i: exchange(host, port, data, sources[i % len(sources)],
                                                timeout))


async def slow_connections(host: str, port: int, count: int = 300, source: str = ATTACKER,
                           timeout: float = 60.0) -> Tally:
    """`count` connections from one address that send part of a request head, then idle."""
    head = request("POST", "/updates", {"Content-Type": "application/octet-stream"})
    return await many(count, lambda _: exchange(host, port, head, source, timeout,
                                                pause_after=len(head) // 2))


async def held_while_probed(host: str, port: int, count: int, probe_path: str,
                            source: str = ATTACKER, prober: str = "127.0.0.3",
                            timeout: float = 30.0) -> tuple[Tally, Reply]:
    """`slow_connections` from `source` and, a second into them, one GET of `probe_path` from
    `prober`: how the slow ones were answered, and whether another address was served."""
    held = asyncio.create_task(slow_connections(host, port, count, source, timeout))
    await asyncio.sleep(1.0)
    probe = await exchange(host, port, request("GET", probe_path), prober, timeout=10)
    return await held, probe


async def flood(host: str, port: int, headers: dict[str, str], body: bytes, seconds: float,
                stop: threading.Event | None = None, uploads: int = 1000, slow: int = 300,
                source: str = ATTACKER, timeout: float = 60.0) -> Tally:
    """Waves of `uploads` concurrent uploads and `slow` slow connections from one address,
    started until `stop` is set or `seconds` have passed (a wave ends when the miner answered
    or dropped all of its requests, each waited for at most `timeout` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    tally = Tally()
    while loop.time() < deadline and not (stop and stop.is_set()):
        for wave in await asyncio.gather(
            upload_flood(host, port, headers, body, uploads, source, timeout),
            slow_connections(host, port, slow, source, timeout),
        ):
            tally.replies.update(wave.replies)
    return tally



class _Drip(socketserver.BaseRequestHandler):
    """One connection to a `DrippingPeer`: read the request head, then drip the answer."""

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client gave up: what a dripping peer is for
            self._drip()

    def _drip(self) -> None:
        peer: DrippingPeer = self.server.peer  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        sock.settimeout(peer.every + 5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        with peer.lock:
            peer.requests += 1
        head = (f"HTTP/1.1 200 OK\r\ncontent-type: {TENSOR_MEDIA_TYPE}\r\n"
                f"content-length: {peer.declared}\r\n\r\n").encode()
        if not peer.drip_head:
            sock.sendall(head)
            head = b""
        end = time.monotonic() + peer.limit
        for i in range(len(head) + peer.declared):
            if peer.stopped.wait(peer.every) or time.monotonic() > end:
                return
            sock.sendall(head[i:i + 1] or b"\0")


class _DripServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # a fixed port, again right after a run
    daemon_threads = True


class DrippingPeer:
    """A hostile peer or miner on loopback: it answers every request with a `declared`
    Content-Length and then one byte every `every` seconds (with `drip_head`, the head too),
    for at most `limit` seconds a connection, on `port` (0: a free one). A per-read timeout
    never fires on it."""

    def __init__(self, host: str = "127.0.0.1", every: float = 5.0,
                 declared: int = 10_000_000, drip_head: bool = False,
                 limit: float = 120.0, port: int = 0) -> None:
        self.every, self.declared, self.drip_head, self.limit = every, declared, drip_head, limit
        self.requests = 0  # request heads it read
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._server = _DripServer((host, port), _Drip)
        self._server.peer = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Its `http://host:port`."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> DrippingPeer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
