"""Attack your own miner on loopback, as a hostile client would, and print what it did.

Every case of issue 13 in turn: JSON nested 100,000 deep at each entry point, broken HTTP,
slow heads and bodies, a client that leaves mid-body, 300 slow connections and 1,000
concurrent uploads from one address; then issue 18's forged attestation requests, each sent
right after a new head (an outsider's candidate, one in the attacked miner's name, one without
the committer's signature), each followed by a check that the chain still commits. The
attacks come from one loopback address (`--attacker`,
default 127.0.0.2); after each case (during it, for the floods) an honest device on another
address (`--honest`, 127.0.0.3) checks `/health` and uploads a real signed update. Every loop is
bounded (counts and timeouts). The table: case, HTTP status, JSON error, whether the miner
still serves, whether the honest update landed. Exit status 1 unless every case left the miner
serving with JSON answers and every honest update landed.

Then issue 18's network cases, each followed by the chain committing a block (honest devices
fill the open round until it does): waves of 64 concurrent 8 MiB attestation requests from two
addresses, and a slow peer, a server on loopback that drips one byte a second behind a 10 MB
Content-Length: the honest device asks it for the head model first and must be cut off at the
config's `network.answer_timeout`, then served by the miner. With `--slow-peer-port P` the
dripping peer serves on 127.0.0.1:P for the whole run: start the miner with
`--peers http://127.0.0.1:P,...` and its row shows how often the miner asked it, with the
chain still committing.

Honest updates are real: each case's device (keys `derived_key("attack-honest", i)`) trains on
a shard of the experiment and its update enters the miner's open round (the miner needs
`chain.allow_list = false`, the default). So point it at a miner of a test network, e.g. one
started by `blockfl network up`:

    .venv/bin/python scripts/attack_miner.py --miner http://127.0.0.1:8600 \\
        --deployment runs/net/deployment.json --config runs/net/config.toml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import httpx

from blockfl import hostile
from blockfl.chain.attestation import sign_request
from blockfl.chain.blocks import BlockProposal, solve_pow
from blockfl.chain.deployment import Deployment
from blockfl.client import MinerClient, MinerRejected, MinerUnavailable
from blockfl.config import load_config
from blockfl.devices.device import Device
from blockfl.hashing import keccak
from blockfl.keys import derived_key
from blockfl.signing import SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.sim.setup import build_experiment
from blockfl.wire import (
    RECORD_HEADER,
    REQUEST_SIGNATURE_HEADER,
    TENSOR_MEDIA_TYPE,
    proposal_to_dict,
)

Attack = Callable[[], Awaitable[hostile.Tally | hostile.Reply]]


class Honest:
    """Honest devices on their own address: each probe checks /health and lands one update."""

    def __init__(self, url: str, source: str, args: argparse.Namespace) -> None:
        config = load_config(args.config)
        self.experiment = build_experiment(config)
        self.config = config
        self.ledger = Deployment.read(args.deployment).ledger(args.rpc_url)
        self.domain = self.ledger.domain
        transport = httpx.HTTPTransport(local_address=source)
        self.http = httpx.Client(base_url=url, transport=transport, timeout=30)
        self.miner = MinerClient(url, http=self.http)
        self.count = 0

    def probe(self) -> tuple[bool, str]:
        """(serving, honest update landed or why not)."""
        try:
            serving = self.http.get("/health").json() == {"ok": True}
        except (httpx.HTTPError, ValueError):
            return False, "no"
        self.count += 1
        shards = self.experiment.shards
        device = Device(derived_key("attack-honest", self.count), shards[self.count % len(shards)],
                        self.experiment.task, self.config.training, self.experiment.initial,
                        seed=self.count)
        why = "the round kept closing"
        for _ in range(3):  # the round may close between reading it and uploading
            try:
                head = self.miner.info()["head"]
                model_hash = bytes.fromhex(head["global_model_hash"][2:])
                if device.global_hash != model_hash:
                    model = self.miner.model(model_hash)
                    if model is None:
                        return serving, "no: the miner lacks its head model"
                    device.adopt(model_hash, model)
                self.miner.upload(device.train(head["round"] + 1, self.domain).submission)
                return serving, "yes"
            except MinerRejected as exc:
                why = exc.reason
                if why not in ("wrong_round", "stale_base_model", "busy"):
                    break
            except MinerUnavailable as exc:
                why = str(exc)[:60]
        return serving, f"no: {why}"

    def upload_headers(self) -> dict[str, str]:
        """Headers of an attacker's upload signed for the miner's open round."""
        info = self.miner.info()
        return hostile.upload_headers(derived_key("attacker", 0), self.domain, info["round"],
                                      bytes.fromhex(info["head"]["global_model_hash"][2:]))


def cases(host: str, port: int, attacker: str, upload: dict[str, str]) -> dict[str, Attack]:
    """Every attack, by name."""
    def send(data: bytes, **kwargs: object) -> Attack:
        return lambda: hostile.exchange(host, port, data, attacker, **kwargs)  # type: ignore[arg-type]

    deep, block = hostile.deep_json(), {"Content-Type": "application/json"}
    nested = {"Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: hostile.deep_json(2000).decode()}
    body = b"\0" * 50_000
    full = hostile.request("POST", "/updates", upload, body)
    return {
        "100,000-deep block announcement": send(hostile.request("POST", "/blocks", block, deep)),
        "2,000-deep record header (/updates)": send(hostile.request("POST", "/updates", nested)),
        "2,000-deep record header (/gossip)": send(hostile.request("POST", "/gossip", nested)),
        "100,000-deep record header": send(hostile.request(
            "POST", "/gossip", nested | {RECORD_HEADER: deep.decode()})),
        "100,000-deep safetensors header": send(hostile.request(
            "POST", "/updates", upload, hostile.deep_safetensors())),
        "bad Content-Length": send(hostile.request("POST", "/blocks", block, b"{}",
                                                   content_length="12abc")),
        "oversized request head": send(hostile.request("GET", "/health", {"X-Big": "a" * 20_000})),
        "1 GB declared body": send(hostile.request("POST", "/updates", upload,
                                                   content_length=str(10**9))),
        "slow request head": send(full, pause_after=60, timeout=60),
        "slow body": send(full, pause_after=len(full) - len(body) // 2, timeout=60),
        "client leaves mid-body": lambda: hostile.disconnect_mid_body(
            host, port, "/updates", upload, body, attacker),
        "300 slow connections, one address": lambda: hostile.slow_connections(
            host, port, 300, attacker, timeout=60),
        "1,000 concurrent uploads, one address": lambda: hostile.flood(
            host, port, upload, body, seconds=8, uploads=1000, slow=0, source=attacker),
    }


def forged_attestation_rows(honest: Honest, url: str, attacker: str, rounds: int = 2,
                            timeout: float = 120.0) -> tuple[list[tuple[str, ...]], bool]:
    """Issue 18 (1): an outsider asks the miner to attest candidates right after a new head
    (before the fix it signed one and the round's committer waited for a quorum for good).
    Each request must be refused before any signature and the chain must commit `rounds` more
    blocks within `timeout` seconds. The rows, and whether every case held."""
    outsider = derived_key("attack-outsider", 0)
    params = honest.ledger.params()
    http = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=attacker),
                        timeout=30)

    def candidate(miner: str) -> BlockProposal:
        """One junk update of 1 sample from a fresh key on the current head, solved (if a nonce
        is found within 2^20 hashes) for `miner`'s header."""
        head = honest.ledger.head()
        record = UpdateRecord(address_of(outsider), head.round + 1, head.global_model_hash,
                              keccak(b"junk %d" % head.round), 1, 1)
        update = SignedUpdate(record, sign_update(outsider, record, honest.domain))
        proposal = BlockProposal(head.block_hash, head.round + 1, keccak(b"junk model"),
                                 (update,), miner)
        found = solve_pow(proposal.header(honest.domain, params.mode), params.target,
                          max_attempts=2**20)
        return proposal if found is None else replace(proposal, nonce=found.nonce)

    def signed(proposal: BlockProposal) -> dict[str, str]:
        block = honest.ledger.attested_block(proposal)
        signature = sign_request(outsider, block, proposal.nonce, honest.domain)
        return {REQUEST_SIGNATURE_HEADER: "0x" + signature.hex()}

    victim = honest.miner.info()["address"]
    requests = [("forged attestation: an outsider's candidate", address_of(outsider), True),
                ("forged attestation: in the miner's name", victim, True),
                ("forged attestation: no committer signature", victim, False)]
    rows, ok = [], True
    for name, committer, sign in requests:
        chain_moves(honest, timeout)  # right after a new head, as the reported attack did
        proposal = candidate(committer)
        headers = signed(proposal) if sign else {}
        try:
            answer = http.post("/attestations", json=proposal_to_dict(proposal), headers=headers)
            status, error = str(answer.status_code), answer.json().get("error", "")
        except (httpx.HTTPError, ValueError) as exc:
            status, error = "-", type(exc).__name__
        moves = [chain_moves(honest, timeout) for _ in range(rounds)]
        moved = honest.ledger.head().round - proposal.round + 1
        serving, landed = honest.probe()
        committing = "STALLED" not in moves and moved >= rounds
        ok &= status == "403" and serving and committing
        rows.append((name, status, error, "yes" if serving else "NO",
                     f"{landed}; chain +{moved} rounds" + ("" if committing else " (STALLED)")))
        print(f"  {name}: {status} {error}, chain +{moved}", file=sys.stderr)
    return rows, ok


def chain_moves(honest: Honest, timeout: float = 120.0) -> str:
    """`+N rounds` once the chain committed a block, honest devices filling the open round
    meanwhile (a network without running devices commits when its block is full); `STALLED`
    if none came within `timeout` seconds."""
    ledger = honest.ledger
    start, deadline = ledger.head().round, time.monotonic() + timeout
    while ledger.head().round == start and time.monotonic() < deadline:
        honest.probe()
        time.sleep(0.5)
    moved = ledger.head().round - start
    return f"+{moved} rounds" if moved else "STALLED"


def attestation_flood_row(honest: Honest, host: str, port: int, attacker: str,
                          seconds: float = 15.0) -> tuple[str, ...]:
    """Waves of 64 concurrent 8 MiB attestation requests from `attacker` and the next address
    for `seconds` (issue 18: they took a miner from 565 to 2,907 MiB and slowed its rounds
    sevenfold), the honest probe and the chain's progress measured during them."""
    headers = honest.upload_headers()
    update = json.loads(headers[RECORD_HEADER])
    body = hostile.padded_block(update, address_of(derived_key("attacker", 1)),
                                int(honest.miner.info()["round"]))
    second = ".".join([*attacker.split(".")[:3], str(int(attacker.split(".")[3]) + 2)])

    async def waves() -> hostile.Tally:
        tally, end = hostile.Tally(), time.monotonic() + seconds
        while time.monotonic() < end:
            wave = await hostile.attestation_flood(host, port, body, 64, (attacker, second), 60)
            tally.replies.update(wave.replies)
        return tally

    async def during() -> tuple[hostile.Tally, bool, str, str]:
        task = asyncio.create_task(waves())
        await asyncio.sleep(1.0)
        serving, landed = await asyncio.to_thread(honest.probe)
        moved = await asyncio.to_thread(chain_moves, honest)
        return await task, serving, landed, moved

    tally, serving, landed, moved = asyncio.run(during())
    status, error = describe(tally)
    return ("64 x 8 MiB attestation requests, two addresses", status, error,
            "yes" if serving else "NO", landed, moved)


def slow_peer_row(honest: Honest, peer: hostile.DrippingPeer | None) -> tuple[str, ...]:
    """The honest device asks a dripping peer for the head model before the miner: it must be
    cut off at `network.answer_timeout` and then served (a per-read timeout never fired: the
    reported device hung). With the run's `--slow-peer-port` peer, how often the miner asked."""
    deadline = honest.config.network.answer_timeout
    own = None if peer is not None else hostile.DrippingPeer(every=1.0, limit=deadline + 30)
    dripping = peer or own
    assert dripping is not None
    with own or nullcontext():
        model_hash = bytes.fromhex(honest.miner.info()["head"]["global_model_hash"][2:])
        started = time.monotonic()
        try:
            MinerClient(dripping.url, timeout=deadline).model(model_hash)
            error = "the dripping peer answered?"
        except MinerUnavailable as exc:
            error = f"cut after {time.monotonic() - started:.1f} s: {str(exc).split(': ')[-1]}"
        served = honest.miner.model(model_hash) is not None
    if peer is not None:
        error += f"; the miner asked it {peer.requests} times"
    serving, landed = honest.probe()
    return (f"slow peer (1 byte/s, answer_timeout {deadline:g} s)", "-", error,
            "yes" if serving and served else "NO", landed, chain_moves(honest))


def describe(outcome: hostile.Tally | hostile.Reply) -> tuple[str, str]:
    """(status, error) columns of a case."""
    if isinstance(outcome, hostile.Reply):
        return str(outcome.status or "-"), outcome.error
    statuses: dict[str, int] = {}
    errors: list[str] = []
    for label, n in outcome.replies.most_common():
        status, _, error = label.partition(" ")
        statuses[status] = statuses.get(status, 0) + n
        errors += [error] if error and error not in errors else []
    return " ".join(f"{n}x{s}" for s, n in statuses.items()), ", ".join(errors)


async def run_case(attack: Attack, honest: Honest, flood: bool) -> tuple[object, bool, str]:
    """The attack's outcome, and the honest probe: during a flood, else after the attack."""
    if not flood:
        outcome = await attack()
        return (outcome, *(await asyncio.to_thread(honest.probe)))
    task = asyncio.create_task(attack())
    await asyncio.sleep(1.0)
    serving, landed = await asyncio.to_thread(honest.probe)
    return await task, serving, landed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--miner", required=True, help="the miner's URL (loopback, http)")
    parser.add_argument("--deployment", type=Path, default=Path("deployment.json"))
    parser.add_argument("--config", type=Path, required=True, help="the network's config TOML")
    parser.add_argument("--rpc-url", help="JSON-RPC node (default: the deployment's)")
    parser.add_argument("--attacker", default=hostile.ATTACKER, help="source address of attacks")
    parser.add_argument("--honest", default="127.0.0.3", help="source address of honest device")
    parser.add_argument("--slow-peer-port", type=int,
                        help="serve the dripping peer on 127.0.0.1:PORT for the whole run (give "
                             "it to the miner's --peers)")
    args = parser.parse_args(argv)
    url = urlparse(args.miner)
    if url.scheme != "http" or not (url.hostname or "").startswith("127."):
        parser.error("--miner must be http://127.x.x.x:PORT: attack only your own miner")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1,300 sockets at once
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))

    slow_peer = (hostile.DrippingPeer(every=1.0, limit=3600, port=args.slow_peer_port)
                 if args.slow_peer_port else None)
    with slow_peer or nullcontext():
        return run_attacks(args, url.hostname or "127.0.0.1", url.port or 80, slow_peer)


def run_attacks(args: argparse.Namespace, host: str, port: int,
           slow_peer: hostile.DrippingPeer | None) -> int:
    """Every case against the miner; print the table; 0 if every case held."""
    honest = Honest(args.miner, args.honest, args)
    rows = [("case", "status", "error", "miner serving", "honest update landed")]
    ok = True
    for name in cases(host, port, args.attacker, {}):
        attack = cases(host, port, args.attacker, honest.upload_headers())[name]
        outcome, serving, landed = asyncio.run(run_case(attack, honest, "one address" in name))
        status, error = describe(outcome)  # type: ignore[arg-type]
        ok &= serving and landed == "yes" and "not_json" not in error and "not HTTP" not in error
        rows.append((name, status, error, "yes" if serving else "NO", landed))
        print(f"  {name}: {status} {error}", file=sys.stderr)
    network_rows = [attestation_flood_row(honest, host, port, args.attacker),
                    slow_peer_row(honest, slow_peer)]
    for name, status, error, serving, landed, moved in network_rows:
        ok &= serving == "yes" and landed == "yes" and moved != "STALLED"
        ok &= "not_json" not in error and "not HTTP" not in error
        rows.append((name, status, error, serving, f"{landed}; chain {moved}"))
        print(f"  {name}: {status} {error}, chain {moved}", file=sys.stderr)
    forged, held = forged_attestation_rows(honest, args.miner, args.attacker)
    rows += forged
    ok &= held
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for i, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print("zero crashes: the miner served after every case" if ok else "FAILED: see the table")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
