"""The miner's HTTP API in process (FastAPI TestClient) on the embedded chain: uploads, every
kind of bad request, mining a block, serving blocks/updates/models, and the journal."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient

from blockfl.chain.blocks import BlockProposal
from blockfl.chain.deploy import chain_params
from blockfl.chain.evm import EvmLedger, embedded_web3
from blockfl.devices.device import Device
from blockfl.events import EventLog
from blockfl.hashing import to_hex
from blockfl.keys import derived_key
from blockfl.miners.api import create_app
from blockfl.miners.service import MinerService, MiningSettings
from blockfl.miners.verification import VerificationPolicy
from blockfl.signing import SignedUpdate, address_of, sign_update
from blockfl.sim.setup import build_experiment
from blockfl.tensors import decode, tensor_hash
from blockfl.wire import (
    RECORD_HEADER,
    TENSOR_MEDIA_TYPE,
    UpdateSubmission,
    proposal_from_dict,
    proposal_to_dict,
    record_header,
)
from tests.conftest import small_config

MINER_KEY = derived_key("api-miner", 0)
LIMIT = 100_000


@pytest.fixture
def setup(tmp_path):
    config = small_config(tmp_path, network={"devices": 3, "miners": 1},
                          chain={"block_rate": 50.0, "hash_rate": 1000.0})
    experiment = build_experiment(config)
    ledger = EvmLedger.create(embedded_web3(), chain_params(config, experiment.genesis),
                              [address_of(MINER_KEY)])
    devices = [Device(derived_key("api-device", i), shard, experiment.task, config.training,
                      experiment.initial, seed=i) for i, shard in enumerate(experiment.shards)]
    policy = VerificationPolicy(max_payload_bytes=LIMIT)
    settings = MiningSettings(t_wait=60.0, block_size=3, hash_rate=0.0)

    def start_service() -> MinerService:
        return MinerService(MINER_KEY, ledger, policy, settings, tmp_path / "miner", [],
                            experiment.initial, EventLog("miner", tmp_path / "miner.jsonl"))

    service = start_service()
    yield service, TestClient(create_app(service, LIMIT)), devices, ledger, start_service
    service.close()


def post(client: TestClient, submission: UpdateSubmission, path: str = "/updates", **headers):
    base = {"Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: record_header(submission.signed)}
    return client.post(path, content=submission.payload, headers=base | headers)


def test_upload_then_serve_update(setup):
    _, client, devices, ledger, _ = setup
    submission = devices[0].train(1, ledger.domain).submission
    response = post(client, submission)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] is True
    assert client.get("/info").json()["pending"] == [devices[0].address]

    update_hash = to_hex(submission.signed.record.update_hash)
    served = client.get(f"/updates/{update_hash}")
    assert served.status_code == 200
    assert served.content == submission.payload
    assert json.loads(served.headers[RECORD_HEADER])["device"] == devices[0].address

    again = post(client, submission)
    assert again.status_code == 409 and again.json()["error"] == "replay"


def test_bad_requests_get_clear_errors_and_the_miner_keeps_serving(setup):
    _, client, devices, ledger, _ = setup
    good = devices[0].train(1, ledger.domain).submission
    forged = UpdateSubmission(
        SignedUpdate(good.signed.record,
                     sign_update(derived_key("thief", 0), good.signed.record, ledger.domain)),
        good.payload,
    )
    wrong_round = devices[1].train(7, ledger.domain).submission
    cases = {
        "wrong content type": (post(client, good, **{"Content-Type": "application/json"}),
                               415, "unsupported_media_type"),
        "no record header": (client.post("/updates", content=good.payload,
                                         headers={"Content-Type": TENSOR_MEDIA_TYPE}),
                             400, "malformed_record"),
        "record not JSON": (post(client, good, **{RECORD_HEADER: "{nope"}),
                            400, "malformed_record"),
        "record lacks fields": (post(client, good, **{RECORD_HEADER: '{"device": "0x12"}'}),
                                400, "malformed_record"),
        "body not safetensors": (post(client, UpdateSubmission(good.signed, b"\x00" * 64)),
                                 400, "malformed_payload"),
        "oversized body": (post(client, UpdateSubmission(good.signed, b"\x00" * (LIMIT + 1))),
                           413, "payload_too_large"),
        "forged signature": (post(client, forged), 400, "bad_signature"),
        "wrong round": (post(client, wrong_round), 409, "wrong_round"),
        "block not JSON": (client.post("/blocks", content=b"\xff\x00"), 400, "malformed_block"),
        "block missing fields": (client.post("/blocks", json={"round": 1}),
                                 400, "malformed_block"),
        "block of another round": (client.post("/blocks", json=proposal_to_dict(
            BlockProposal(b"\0" * 32, 9, b"\0" * 32, (), devices[0].address))),
                                   409, "wrong_round"),
        "hash not hex": (client.get("/models/xyz"), 400, "bad_request"),
        "unknown model": (client.get(f"/models/{to_hex(b'1' * 32)}"), 404, "not_found"),
        "unknown block": (client.get("/blocks/99"), 404, "not_found"),
        "round not a number": (client.get("/blocks/abc"), 400, "bad_request"),
        "block hash not hex": (client.get("/blocks/0xzz"), 400, "bad_request"),
        "unknown route": (client.get("/nothing"), 404, "not_found"),
        "wrong method": (client.put("/updates"), 405, "http_405"),
    }
    for name, (response, status, reason) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"] == reason, name
        assert "detail" in response.json(), name
    # nothing was accepted, and the honest update still is
    assert client.get("/info").json()["pending"] == []
    assert post(client, good).status_code == 200
    assert client.get("/health").json() == {"ok": True}


def test_full_block_is_mined_committed_and_served(setup):
    service, client, devices, ledger, _ = setup
    submissions = [d.train(1, ledger.domain).submission for d in devices]
    for s in submissions[:2]:
        assert post(client, s).status_code == 200
    assert not service.ready()  # 2 of 3 updates and T_wait not passed
    assert post(client, submissions[2]).status_code == 200
    assert service.ready()

    service.mine(threading.Event())
    record = ledger.get_block(1)
    assert record is not None and record.num_updates == 3
    assert {u.device for u in ledger.accepted_updates(1)} == {d.address for d in devices}
    assert client.get("/info").json()["round"] == 2

    block = proposal_from_dict(client.get("/blocks/1").json())
    assert client.get(f"/blocks/{to_hex(record.block_hash)}").json() == client.get(
        "/blocks/1").json()
    assert block.global_model_hash == record.global_model_hash
    assert block.header(ledger.domain).block_hash(block.nonce) == record.block_hash
    model = client.get(f"/models/{to_hex(record.global_model_hash)}")
    assert tensor_hash(decode(model.content, max_bytes=LIMIT)) == record.global_model_hash
    for s in submissions:  # the block's updates stay downloadable
        got = client.get(f"/updates/{to_hex(s.signed.record.update_hash)}")
        assert got.content == s.payload


def test_restarted_miner_keeps_acknowledged_updates(setup):
    service, client, devices, ledger, start_service = setup
    submission = devices[0].train(1, ledger.domain).submission
    assert post(client, submission).status_code == 200
    service.close()  # the process dies; its journal and model store stay

    restarted = start_service()
    try:
        assert restarted.node.pending_devices() == [devices[0].address]
        again = TestClient(create_app(restarted, LIMIT))
        # the restored update is remembered: a second copy is a replay
        assert post(again, submission).json()["error"] == "replay"
    finally:
        restarted.close()


def test_journal_refuses_another_deployment(tmp_path):
    from blockfl.miners.journal import MinerJournal

    MinerJournal(tmp_path / "miner.db", "31337:0xA").close()
    with pytest.raises(ValueError, match="journal of deployment 31337:0xA"):
        MinerJournal(tmp_path / "miner.db", "31337:0xB")


def two_miners(tmp_path, b_asks_a: bool, quorum: int = 1, a_asks_b: bool = False,
               rule=None):
    """Miners a and b on one embedded chain (b with a as its peer if `b_asks_a`, a with b if
    `a_asks_b`), 3 devices; a block needs `quorum` miners (1: a commits alone); `rule`: both
    miners' aggregation rule (FedAvg)."""
    from blockfl.client import MinerClient

    config = small_config(tmp_path, network={"devices": 3, "miners": 2},
                          chain={"block_rate": 50.0, "hash_rate": 1000.0, "quorum": quorum})
    experiment = build_experiment(config)
    keys = [derived_key("api-miner", i) for i in range(2)]
    ledger = EvmLedger.create(embedded_web3(), chain_params(config, experiment.genesis),
                              [address_of(k) for k in keys])
    policy = VerificationPolicy(max_payload_bytes=LIMIT)
    settings = MiningSettings(t_wait=60.0, block_size=3, hash_rate=0.0, check_grace=60.0)

    def miner(name: str, key: bytes, peers: list) -> MinerService:
        return MinerService(key, ledger, policy, settings, tmp_path / name, peers,
                            experiment.initial, EventLog(name, tmp_path / f"{name}.jsonl"),
                            rule=rule)

    b_peers: list = []
    a = miner("a", keys[0], b_peers)
    peers = [MinerClient("http://a", http=TestClient(create_app(a, LIMIT)))] if b_asks_a else []
    b = miner("b", keys[1], peers)
    if a_asks_b:
        b_peers.append(MinerClient("http://b", http=TestClient(create_app(b, LIMIT))))
        a.clients = b_peers
    devices = [Device(derived_key("api-device", i), shard, experiment.task, config.training,
                      experiment.initial, seed=i) for i, shard in enumerate(experiment.shards)]
    return a, b, devices, ledger


def test_a_tampered_announcement_is_refused_and_the_real_block_adopted(tmp_path):
    from dataclasses import replace

    from blockfl.events import read_events

    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True)
    for d in devices:  # only miner a hears of the updates (no gossip)
        assert a.node.receive_upload(d.train(1, ledger.domain).submission).accepted
    a.mine(threading.Event())
    real = a.block(1)
    assert real is not None and ledger.head().round == 1

    tampered = replace(real, updates=real.updates[:2])
    assert b.announced(tampered)
    assert not b.sync()  # refused: not the block on chain, and b waits for the real one
    assert any(e["event"] == "invalid_block" for e in read_events(tmp_path / "b.jsonl"))
    assert b.node.round == 1

    assert b.sync()  # rebuilt from the chain with the updates fetched from a, fully checked
    assert b.node.round == 2
    assert b.node.head.global_model_hash == ledger.head().global_model_hash
    adopted = [e for e in read_events(tmp_path / "b.jsonl") if e["event"] == "adopted"]
    assert adopted[-1]["checked"] is True
    # the announcement's arrival (its transfer's end in `latency compare`) is one line a round,
    # however often the block is posted again
    assert b.announced(real) and b.announced(real)
    arrivals = [e for e in read_events(tmp_path / "b.jsonl") if e["event"] == "block_announced"]
    assert [e["round"] for e in arrivals] == [1]
    a.close()
    b.close()


def test_a_block_whose_miner_died_is_rebuilt_from_the_chain(tmp_path):
    from blockfl.events import read_events

    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=False)
    for d in devices:  # both miners hold every update (as after gossip)
        submission = d.train(1, ledger.domain).submission
        assert a.node.receive_upload(submission).accepted
        assert b.node.receive_gossip(submission).accepted
    a.mine(threading.Event())
    a.close()  # a dies before b hears of its block; b has no peer to ask

    assert b.sync()
    assert b.node.head.global_model_hash == ledger.head().global_model_hash
    adopted = [e for e in read_events(tmp_path / "b.jsonl") if e["event"] == "adopted"]
    assert adopted[-1]["checked"] is True  # rebuilt and fully checked, not taken on trust
    client = TestClient(create_app(b, LIMIT))  # and b now serves the block and its model
    assert client.get("/blocks/1").json()["nonce"] == str(ledger.get_block(1).nonce)
    assert client.get(f"/models/{to_hex(ledger.head().global_model_hash)}").status_code == 200
    b.close()


def test_a_block_seen_on_chain_before_its_miner_serves_it_keeps_its_exclusions(
        tmp_path, monkeypatch):
    """The chain does not hold the updates a rule excluded: a miner that sees a new head
    before the block's miner serves it waits for the block rather than rebuilding it from the
    chain (it used to, and then served the block without its exclusions)."""
    from blockfl.aggregation import AggregationRule
    from blockfl.config import AggregationConfig

    krum = AggregationRule(AggregationConfig(rule="krum", f=0))  # keeps 1 of the 3 updates
    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True, rule=krum)
    for d in devices:  # both miners hold every update (as after gossip)
        submission = d.train(1, ledger.domain).submission
        assert a.node.receive_upload(submission).accepted
        assert b.node.receive_gossip(submission).accepted
    a.mine(threading.Event())
    committed = a.block(1)
    assert committed is not None and len(committed.excluded) == 2

    with monkeypatch.context() as m:  # the moment between a's commit and a serving the block
        m.setattr(a.journal, "block", lambda ref: None)
        assert not b.sync()  # b waits for the block; check_grace is 60 s
        assert b.block(1) is None
    assert b.sync()
    assert b.block(1) == committed  # with the updates Krum excluded
    a.close()
    b.close()


def test_a_restarted_miner_catches_up_on_every_block_it_missed(tmp_path):
    from blockfl.events import read_events

    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True)
    b.close()  # b is down while a commits rounds 1 and 2
    for round_ in (1, 2):
        for d in devices:
            head = ledger.head()
            d.adopt(head.global_model_hash, a.store.get(head.global_model_hash))
            assert a.node.receive_upload(d.train(round_, ledger.domain).submission).accepted
        a.mine(threading.Event())
    assert ledger.head().round == 2

    restarted = MinerService(b.node.key, ledger, b.node.verifier.policy, b.settings,
                             tmp_path / "b", b.clients, None, b.log)
    assert restarted.node.round == 3  # it starts at the chain head
    assert restarted.catch_up() == 2
    assert restarted.catch_up() == 0  # nothing left to fetch
    client = TestClient(create_app(restarted, LIMIT))
    for round_ in (1, 2):
        record = ledger.get_block(round_)
        block = proposal_from_dict(client.get(f"/blocks/{round_}").json())
        assert block.header(ledger.domain).block_hash(block.nonce) == record.block_hash
        model = client.get(f"/models/{to_hex(record.global_model_hash)}")
        assert tensor_hash(decode(model.content, max_bytes=LIMIT)) == record.global_model_hash
    caught = [e["round"] for e in read_events(tmp_path / "b.jsonl") if e["event"] == "caught_up"]
    assert caught == [1, 2]
    a.close()
    restarted.close()


def test_attestation_requests_take_turns_and_keep_to_the_size_of_a_block(setup):
    """`/attestations` used to bypass the upload gate and read 8 MiB bodies on any chain."""
    from blockfl.config import ServerConfig
    from blockfl.wire import REQUEST_SIGNATURE_HEADER, block_json_limit

    service, client, devices, ledger, _ = setup
    limit = block_json_limit(ledger.params().max_updates_per_block)
    assert limit < 8 * 2**20
    # a request that names a committer's signature (checked once the body is read): its size
    # and its turn come first (one without the header is refused unread, as forged)
    signed = {REQUEST_SIGNATURE_HEADER: "0x" + "11" * 65}
    big = client.post("/attestations", content=b" " * (limit + 1),
                      headers={"Content-Type": "application/json", **signed})
    assert (big.status_code, big.json()["error"]) == (413, "payload_too_large")

    shut = TestClient(create_app(service, LIMIT, ServerConfig(uploads=0, upload_wait=0.1)))
    proposal = proposal_to_dict(BlockProposal(b"\0" * 32, 1, b"\0" * 32, (), devices[0].address))
    for path in ("/attestations", "/blocks"):
        response = shut.post(path, json=proposal, headers=signed)
        assert (response.status_code, response.json()["error"]) == (503, "busy"), path


def test_a_reorganisation_at_the_same_height_is_followed(tmp_path):
    """The chain swaps the block of round 1 for another one (a reorg at the same height, made
    with the embedded chain's snapshot and revert): miner a, which committed the abandoned
    block and took round-2 updates on its model, drops both, serves only the chain's block,
    and commits round 2 on top of it; nobody is paid for the abandoned block."""
    from blockfl.events import read_events

    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True, a_asks_b=True)
    w3 = ledger.w3
    before = w3.testing.snapshot()
    for i, d in enumerate(devices):  # b hears of two of the three updates only
        submission = d.train(1, ledger.domain).submission
        assert a.node.receive_upload(submission).accepted
        if i < 2:
            assert b.node.receive_gossip(submission).accepted
    a.mine(threading.Event())
    abandoned = a.block(1)
    assert abandoned is not None and len(abandoned.updates) == 3
    head = ledger.head()
    for d in devices:  # round 2 is under way on the abandoned block's model
        d.adopt(head.global_model_hash, a.store.get(head.global_model_hash))
        assert a.node.receive_upload(d.train(2, ledger.domain).submission).accepted

    w3.testing.revert(before)  # ... and the chain takes b's block of round 1 instead
    b.mine(threading.Event())
    chosen = ledger.head()
    assert chosen.round == 1 and chosen != head
    assert chosen.global_model_hash != head.global_model_hash  # two updates, not three

    assert a.sync()
    assert a.node.head == chosen and a.node.round == 2
    rollback = [e for e in read_events(tmp_path / "a.jsonl") if e["event"] == "rollback"][-1]
    assert (rollback["from_round"], rollback["to_round"]) == (1, 1)
    assert rollback["abandoned_blocks"] == [1]
    dropped = [e for e in read_events(tmp_path / "a.jsonl") if e["event"] == "dropped"]
    assert sorted(e["device"] for e in dropped) == sorted(d.address for d in devices)
    assert not a.node.pending_devices()  # round 2's updates were on the abandoned model
    assert a.block(1) is None  # the abandoned block is no longer served
    assert a.catch_up() == 1 and a.block(1) == b.block(1)  # the chain's, checked in full

    for d in devices:  # round 2 again, on the chain's model: a commits it
        d.adopt(chosen.global_model_hash, a.store.get(chosen.global_model_hash))
        assert a.node.receive_upload(d.train(2, ledger.domain).submission).accepted
    a.mine(threading.Event())
    assert ledger.head().round == 2 and ledger.head().block_hash == a.block(2).header(
        ledger.domain).block_hash(a.block(2).nonce)
    paid_round_1 = {u.device for u in b.block(1).updates}
    assert len(paid_round_1) == 2
    unpaid = next(d for d in devices if d.address not in paid_round_1)
    per_sample = ledger.params().reward_per_sample
    round_2 = {u.device: u.record.samples for u in a.block(2).updates}
    assert ledger.balance_of(unpaid.address) == per_sample * round_2[unpaid.address]
    a.close()
    b.close()
