"""Miners attest only candidates they checked: a lone dishonest miner cannot reach the quorum,
the honest block lands; the `POST /attestations` route gathers and refuses over HTTP."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from blockfl.chain.errors import BlockRejected
from blockfl.events import read_events
from blockfl.hashing import keccak
from blockfl.miners.api import create_app
from blockfl.miners.attestation import AttestationRefused, gather
from blockfl.signing import SignedUpdate, address_of, sign_update
from blockfl.sim.engine import Simulation
from blockfl.tensors import tensor_hash
from blockfl.wire import proposal_to_dict
from tests.conftest import small_config
from tests.test_miner_api import LIMIT, two_miners


@pytest.fixture
def sim(tmp_path):
    config = small_config(tmp_path, network={"devices": 4, "miners": 3},
                          verification={"min_ms_per_sample": 0.01})
    simulation = Simulation(config, tmp_path / "run")
    domain = simulation.ledger.domain
    for device in simulation.devices:  # every update reaches every miner (upload + gossip)
        assert simulation.miners[0].receive_upload(device.train(1, domain).submission).accepted
    return simulation


def ask_all(sim, announcement, but: int) -> tuple[list, list[str]]:
    refusals: list[str] = []
    asks = [lambda a=a: a.attest(announcement) for i, a in enumerate(sim.attesters) if i != but]
    return gather(asks, sim.ledger.required_attesters() - 1, refusals.append), refusals


def mined(sim, proposal):
    from tests.test_ledger_conformance import mined as with_nonce

    return with_nonce(sim.ledger, proposal)


def test_a_lone_miner_cannot_pay_itself_or_lie_about_the_model(sim):
    ledger, cheat, honest = sim.ledger, sim.miners[0], sim.miners[1]
    assert ledger.required_attesters() == 2
    candidate = cheat.candidate()
    # (a) a block that also pays the miner for a self-reported update at the sample cap
    own = candidate.proposal.updates[0].record
    record = replace(own, device=cheat.address, samples=ledger.params().max_samples_per_update,
                     compute_time_ms=1)
    payload = cheat.announcement(candidate.proposal).payloads[own.device]
    fake = SignedUpdate(record, sign_update(cheat.key, record, ledger.domain))
    from blockfl.chain.blocks import sort_updates

    paying = mined(sim, replace(candidate.proposal,
                                updates=tuple(sort_updates([*candidate.proposal.updates, fake]))))
    announcement = cheat.announcement(replace(paying, updates=candidate.proposal.updates))
    announcement = replace(announcement, proposal=paying,
                           payloads={**announcement.payloads, cheat.address: payload})
    # (b) the honest updates with a global model hash of the miner's choosing
    lying = mined(sim, replace(candidate.proposal, global_model_hash=keccak(b"my model")))
    for proposal, ann, reason in [
        (paying, announcement, "implausible_compute_time"),
        (lying, cheat.announcement(lying), "model_mismatch"),
    ]:
        got, refusals = ask_all(sim, ann, but=0)
        assert got == [] and len(refusals) == 2
        assert all(reason in r for r in refusals), refusals
        with pytest.raises(BlockRejected) as info:
            cheat.commit(proposal, got)
        assert info.value.error == "QuorumNotReached"
    assert ledger.head().round == 0

    # the honest miner's block gets the quorum and lands; nobody paid the cheat
    proposal = mined(sim, honest.candidate().proposal)
    got, refusals = ask_all(sim, honest.announcement(proposal), but=1)
    assert len(got) == 1 and refusals == []
    assert honest.commit(proposal, got) is not None
    assert ledger.head().round == 1
    assert ledger.balance_of(cheat.address) == 0
    assert ledger.balance_of(honest.address) == ledger.params().mining_reward
    for device in sim.devices:
        assert ledger.balance_of(device.address) > 0


def test_an_honest_miner_attests_one_candidate_per_round(sim):
    first = mined(sim, sim.miners[0].candidate().proposal)
    attester = sim.attesters[2]
    attestation = attester.attest(sim.miners[0].announcement(first))
    assert attestation.signer(sim.ledger.domain) == sim.miners[2].address
    assert attester.attest(sim.miners[0].announcement(first)) == attestation  # same: fine
    # a smaller but valid candidate of the same round: signing it too would be equivocation
    updates = first.updates[:3]
    state = sim.strategy.aggregate(sim.miners[1].base_state, sim.miners[1].block_updates(
        sim.miners[0].announcement(replace(first, updates=updates))))
    other = replace(first, updates=updates, global_model_hash=tensor_hash(state))
    assert sim.attesters[1].attest(sim.miners[1].announcement(other))  # a fresh miner signs it
    with pytest.raises(AttestationRefused) as info:
        attester.attest(sim.miners[1].announcement(other))
    assert info.value.reason == "already_attested"


def test_attestations_are_gathered_over_http_and_refused_with_reasons(tmp_path):
    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True, quorum=2, a_asks_b=True)
    for d in devices:  # only miner a hears of the updates: b fetches them to check
        assert a.node.receive_upload(d.train(1, ledger.domain).submission).accepted
    client = TestClient(create_app(b, LIMIT))

    lying = replace(a.node.candidate().proposal, global_model_hash=keccak(b"x"))
    response = client.post("/attestations", json=proposal_to_dict(lying))
    assert response.status_code == 409 and response.json()["error"] == "model_mismatch"
    response = client.post("/attestations", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"] == "malformed_block"
    assert ledger.head().round == 0

    a.mine(threading.Event())
    assert ledger.head().round == 1
    events = [e["event"] for e in read_events(tmp_path / "a.jsonl")]
    assert "attestations" in events and "committed" in events
    assert any(e["event"] == "attested" for e in read_events(tmp_path / "b.jsonl"))
    a.close()
    b.close()


def test_a_miner_short_of_quorum_waits_and_says_why(tmp_path):
    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=False, quorum=2)
    for d in devices:
        assert a.node.receive_upload(d.train(1, ledger.domain).submission).accepted
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    a.mine(stop)  # no peer to ask: it retries with backoff until stopped
    assert ledger.head().round == 0
    waits = [e for e in read_events(tmp_path / "a.jsonl") if e["event"] == "quorum_wait"]
    assert len(waits) >= 2 and waits[0]["quorum"] == 2 and waits[0]["attesters"] == 1
    assert waits[1]["retry_in"] > waits[0]["retry_in"]
    assert address_of(a.node.key) == a.address
    a.close()
    b.close()
