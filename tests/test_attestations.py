"""Miners attest only candidates they checked: a lone dishonest miner cannot reach the quorum,
the honest block lands; the `POST /attestations` route gathers and refuses over HTTP."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from blockfl.chain.attestation import sign_request
from blockfl.chain.blocks import BlockProposal
from blockfl.chain.errors import BlockRejected
from blockfl.events import EventLog, read_events
from blockfl.hashing import keccak, to_hex
from blockfl.miners.api import create_app
from blockfl.miners.attestation import AttestationRefused, gather
from blockfl.miners.service import MinerService
from blockfl.signing import SignedUpdate, address_of, sign_update
from blockfl.sim.engine import Simulation
from blockfl.tensors import tensor_hash
from blockfl.wire import REQUEST_SIGNATURE_HEADER, proposal_to_dict
from tests.conftest import key, small_config
from tests.test_ledger_conformance import mined as with_nonce
from tests.test_miner_api import LIMIT, two_miners

OUTSIDER = key("attestation outsider")


def signed_by(signature: bytes) -> dict[str, str]:
    """The header of an attestation request with this signature."""
    return {REQUEST_SIGNATURE_HEADER: to_hex(signature)}


def forged_requests(ledger, honest: BlockProposal) -> dict[str, tuple[BlockProposal, bytes]]:
    """An outsider's ways to spend a miner's one signature of the round on a candidate built
    from the honest updates (each a request and its signature), by the refusal each gets."""
    mine = with_nonce(ledger, replace(honest, miner=address_of(OUTSIDER)))
    in_their_name = with_nonce(ledger, honest)
    unsolved = honest if not solved(ledger, honest) else replace(honest, nonce=honest.nonce + 1)
    while solved(ledger, unsolved):
        unsolved = replace(unsolved, nonce=unsolved.nonce + 1)
    return {
        "committer_not_miner": (mine, request_of(OUTSIDER, ledger, mine)),
        "bad_request_signature": (in_their_name, request_of(OUTSIDER, ledger, in_their_name)),
        "insufficient_work": (unsolved, request_of(OUTSIDER, ledger, unsolved)),
    }


def solved(ledger, proposal: BlockProposal) -> bool:
    header = proposal.header(ledger.domain, ledger.params().mode)
    return int.from_bytes(header.block_hash(proposal.nonce), "big") <= ledger.params().target


def request_of(signer: bytes, ledger, proposal: BlockProposal) -> bytes:
    return sign_request(signer, ledger.attested_block(proposal), proposal.nonce, ledger.domain)


@pytest.fixture
def sim(tmp_path):
    config = small_config(tmp_path, network={"devices": 4, "miners": 3},
                          verification={"min_ms_per_sample": 0.01})
    simulation = Simulation(config, tmp_path / "run")
    domain = simulation.ledger.domain
    for device in simulation.devices:  # every update reaches every miner (upload + gossip)
        assert simulation.miners[0].receive_upload(device.train(1, domain).submission).accepted
    return simulation


def ask_all(sim, announcement, but: int, signature: bytes | None = None
            ) -> tuple[list, list[str]]:
    """Miner `but` asks every other miner (with its signed request unless `signature`)."""
    refusals: list[str] = []
    signature = signature or sim.attesters[but].request(announcement.proposal)
    asks = [lambda a=a: a.attest(announcement, signature)
            for i, a in enumerate(sim.attesters) if i != but]
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
    attester, request = sim.attesters[2], sim.attesters[0].request(first)
    attestation = attester.attest(sim.miners[0].announcement(first), request)
    assert attestation.signer(sim.ledger.domain) == sim.miners[2].address
    assert attester.attest(sim.miners[0].announcement(first), request) == attestation  # same
    other = smaller(sim, first)
    request = sim.attesters[0].request(other)
    assert sim.attesters[1].attest(sim.miners[1].announcement(other), request)  # a fresh miner
    with pytest.raises(AttestationRefused) as info:
        attester.attest(sim.miners[1].announcement(other), request)
    assert info.value.reason == "already_attested"


def test_a_committer_that_withholds_its_attested_block_cannot_stall_the_round(sim):
    """Honest miners sign one candidate per round *and committer*: miner 2 gathers miner 1's
    attestation and never commits; miner 0's block still gets miner 1's and lands."""
    withheld = mined(sim, sim.miners[2].candidate().proposal)
    attester = sim.attesters[1]
    assert attester.attest(sim.miners[2].announcement(withheld), sim.attesters[2].request(withheld))
    proposal = mined(sim, sim.miners[0].candidate().proposal)
    got = [attester.attest(sim.miners[0].announcement(proposal),
                           sim.attesters[0].request(proposal))]
    assert sim.miners[0].commit(proposal, got) is not None
    assert sim.ledger.head().round == 1


def smaller(sim, proposal):
    """A smaller but valid candidate of the same round and committer, solved: signing it too
    would be equivocation."""
    updates = proposal.updates[:3]
    state = sim.strategy.aggregate(sim.miners[1].base_state, sim.miners[1].block_updates(
        sim.miners[0].announcement(replace(proposal, updates=updates))))
    return mined(sim, replace(proposal, updates=updates, global_model_hash=tensor_hash(state)))


def test_attestations_are_gathered_over_http_and_refused_with_reasons(tmp_path):
    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True, quorum=2, a_asks_b=True)
    for d in devices:  # only miner a hears of the updates: b fetches them to check
        assert a.node.receive_upload(d.train(1, ledger.domain).submission).accepted
    client = TestClient(create_app(b, LIMIT))

    lying = with_nonce(ledger, replace(a.node.candidate().proposal,
                                       global_model_hash=keccak(b"x")))
    response = client.post("/attestations", json=proposal_to_dict(lying),
                           headers=signed_by(a.attester.request(lying)))
    assert response.status_code == 409 and response.json()["error"] == "model_mismatch"
    response = client.post("/attestations", content=b"{not json",
                           headers=signed_by(a.attester.request(lying)))
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


def test_a_forged_request_is_refused_by_every_miner_before_it_signs(sim):
    """Issue 18 (1): an outsider's candidate, one in a miner's name or one without a solved
    proof-of-work is refused with a named reason; no miner's signature of the round is spent,
    so the honest candidate still reaches the quorum."""
    honest = sim.miners[0].candidate().proposal
    for reason, (proposal, signature) in forged_requests(sim.ledger, honest).items():
        got, refusals = ask_all(sim, sim.miners[0].announcement(proposal), 0, signature)
        assert got == [] and len(refusals) == 2 and all(r.startswith(reason) for r in refusals)
    proposal = mined(sim, honest)
    got, refusals = ask_all(sim, sim.miners[0].announcement(proposal), but=0)
    assert refusals == [] and len(got) == 1
    assert sim.miners[0].commit(proposal, got) is not None
    assert sim.ledger.head().round == 1


def test_an_outsiders_candidate_is_refused_over_http_and_the_chain_keeps_committing(tmp_path):
    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True, quorum=2, a_asks_b=True)
    for d in devices:
        assert a.node.receive_upload(d.train(1, ledger.domain).submission).accepted
    client = TestClient(create_app(b, LIMIT))
    honest = a.node.candidate().proposal
    for reason, (proposal, signature) in forged_requests(ledger, honest).items():
        response = client.post("/attestations", json=proposal_to_dict(proposal),
                               headers=signed_by(signature))
        assert (response.status_code, response.json()["error"]) == (403, reason)
    for headers in ({}, {REQUEST_SIGNATURE_HEADER: "0x12"}):
        response = client.post("/attestations", json=proposal_to_dict(honest), headers=headers)
        assert (response.status_code, response.json()["error"]) == (403, "bad_request_signature")
    refused = [e["reason"] for e in read_events(tmp_path / "b.jsonl")
               if e["event"] == "attestation_refused"]
    assert refused == list(forged_requests(ledger, honest))  # logged, the header ones not read
    stop = threading.Event()
    timer = threading.Timer(30.0, stop.set)  # before the fix b had signed the outsider's
    timer.start()
    a.mine(stop)
    timer.cancel()
    assert ledger.head().round == 1 and ledger.get_block(1).miner == a.address
    a.close()
    b.close()


def test_a_restarted_miner_refuses_a_second_candidate_of_a_round_it_attested(tmp_path):
    """Issue 18 (3): what a miner attested is journaled before the signature leaves it, so a
    restart cannot make it sign a second candidate (which anyone could report as equivocation)."""
    a, b, devices, ledger = two_miners(tmp_path, b_asks_a=True, quorum=2)
    for d in devices:
        assert a.node.receive_upload(d.train(1, ledger.domain).submission).accepted
    first = with_nonce(ledger, a.node.candidate().proposal)
    attestation = b.attest(first, a.attester.request(first))
    updates = first.updates[:2]
    state = a.node.strategy.aggregate(a.node.base_state, a.node.block_updates(
        a.node.announcement(replace(first, updates=updates))))
    second = with_nonce(ledger, replace(first, updates=updates,
                                        global_model_hash=tensor_hash(state)))
    b.close()
    b = MinerService(b.node.key, ledger, b.node.verifier.policy, b.settings, tmp_path / "b",
                     b.clients, None, EventLog("b", tmp_path / "b2.jsonl"), rule=b.node.strategy)
    with pytest.raises(AttestationRefused) as info:
        b.attest(second, a.attester.request(second))
    assert info.value.reason == "already_attested"
    assert b.attest(first, a.attester.request(first)) == attestation  # the same one: fine
    a.close()
    b.close()


def test_two_miners_holding_a_devices_two_updates_attest_each_others_block(tmp_path):
    """A device that re-trained after a restart sent one update to miner 0 and another to
    miner 1 (the same tensors, another compute time: another signed record). With two miners
    the quorum is both, so the round would stall on `replay` if either refused the other's:
    each attests the other's candidate, the block lands, and the device is paid once."""
    config = small_config(tmp_path, network={"devices": 2, "miners": 2},
                          verification={"min_ms_per_sample": 0.01})
    sim = Simulation(config, tmp_path / "run")
    ledger, domain = sim.ledger, sim.ledger.domain
    restarted, steady = sim.devices
    first = restarted.train(1, domain).submission
    record = replace(first.signed.record, compute_time_ms=first.signed.record.compute_time_ms + 7)
    second = replace(first, signed=SignedUpdate(record, sign_update(restarted.key, record, domain)))
    assert sim.miners[0].receive_gossip(first).accepted
    assert sim.miners[1].receive_gossip(second).accepted
    assert sim.miners[1].receive_gossip(first).reason == "replay"  # as gossip: a second update
    for miner in sim.miners:
        assert miner.receive_gossip(steady.train(1, domain).submission).accepted
    assert ledger.required_attesters() == 2

    proposals = [mined(sim, miner.candidate().proposal) for miner in sim.miners]
    held = [{u.device: u for u in p.updates}[restarted.address] for p in proposals]
    assert held[0] != held[1]  # each candidate holds the update its miner got
    got = {}
    for committer, attester in ((0, 1), (1, 0)):
        announcement = sim.miners[committer].announcement(proposals[committer])
        attestation = sim.attesters[attester].attest(
            announcement, sim.attesters[committer].request(proposals[committer]))
        assert attestation.signer(domain) == sim.miners[attester].address
        got[committer] = attestation
    # the attester kept its own update for its own candidate
    assert sim.miners[1].candidate().proposal == replace(proposals[1], nonce=0)
    # a tampered alternative is still refused: the exception covers the device's own update only
    forged = replace(second, payload=sim.miners[0].announcement(proposals[0]).payloads[
        steady.address])
    assert not sim.miners[0].check_candidate_update(forged).accepted

    assert sim.miners[0].commit(proposals[0], [got[0]]) is not None
    assert ledger.head().round == 1
    paid = ledger.params().reward_per_sample * held[0].record.samples
    assert ledger.balance_of(restarted.address) == paid
    assert sim.miners[1].commit(proposals[1], [got[1]]) is None  # a fork: the round is decided
    assert ledger.head().round == 1 and ledger.balance_of(restarted.address) == paid
