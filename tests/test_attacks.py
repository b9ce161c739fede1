"""Attacking devices against robust rules, in whole rounds on real ledgers: what the attackers
send, what the rule keeps out of the block, who is paid, and that peers reject a block whose
selection is not the rule's."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from blockfl.config import AttackConfig
from blockfl.devices.behaviours import BEHAVIOURS, attackers, behaviour
from blockfl.devices.device import Device
from blockfl.miners.attestation import AttestationRefused
from blockfl.miners.node import InvalidBlock
from blockfl.signing import Domain, address_of
from blockfl.sim.engine import Simulation
from blockfl.sim.setup import build_experiment
from blockfl.tensors import decode, tensor_hash
from tests.conftest import key, small_config

DOMAIN = Domain(31337, address_of(key("contract")))


def _device(tmp_path, name: str, **attack) -> Device:
    config = small_config(tmp_path)
    experiment = build_experiment(config)
    return Device(key("attacker"), experiment.shards[0], "logreg", config.training,
                  experiment.initial, seed=1,
                  behaviour=behaviour(name, AttackConfig(**attack), 5, seed=1))


def test_every_behaviour_changes_what_the_device_sends(tmp_path):
    honest = _device(tmp_path, "honest").train(1, DOMAIN)
    delta = decode(honest.submission.payload, max_bytes=10**7)
    samples = honest.submission.signed.record.samples
    sent = {name: _device(tmp_path, name, inflation=4, copies=3).train(1, DOMAIN)
            for name in BEHAVIOURS}
    got = {name: decode(t.submission.payload, max_bytes=10**7) for name, t in sent.items()}
    for name, value in delta.items():
        assert torch.equal(got["sign_flip"][name], -value)
        assert torch.equal(got["free_rider"][name], torch.zeros_like(value))
        assert 0 < float(got["free_rider_noise"][name].abs().max()) < 1e-3
        assert float(got["gaussian_noise"][name].std()) > 0.5
    assert tensor_hash(got["label_flip"]) != tensor_hash(delta)
    assert all(torch.allclose(got["scale_x10"][k], 10 * got["label_flip"][k]) for k in delta)
    assert sent["sample_inflation"].submission.signed.record.samples == 4 * samples
    assert (sent["sample_inflation"].submission.signed.record.compute_time_ms
            == honest.submission.signed.record.compute_time_ms)
    sybil = [sent["sybil"].submission, *sent["sybil"].copies]
    assert len({s.device for s in sybil}) == 3
    assert len({s.signed.record.update_hash for s in sybil}) == 1


def test_attackers_are_drawn_with_the_seed():
    assert attackers(10, 0.3, 0) == attackers(10, 0.3, 0)
    assert len(attackers(10, 0.3, 0)) == 3 and attackers(10, 0.0, 0) == []
    with pytest.raises(ValueError, match="unknown behaviour"):
        behaviour("bribe", AttackConfig(), 10)


def _attacked(tmp_path, rule: str, name: str, ledger: str = "local", **chain) -> Simulation:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = small_config(tmp_path, network={"devices": 10, "miners": 2},
                          aggregation={"rule": rule, "f": 3},
                          attack={"attackers": 0.3, "behaviour": name},
                          chain={"ledger": ledger, **chain},
                          verification={"min_ms_per_sample": 0.01})
    return Simulation(config, tmp_path)


def _paid(sim: Simulation, round_: int) -> set[str]:
    return {u.device for u in sim.ledger.accepted_updates(round_)}


@pytest.mark.parametrize("ledger", ["evm", "local"])
def test_multi_krum_keeps_sign_flippers_out_of_the_block_and_unpaid(tmp_path, ledger):
    sim = _attacked(tmp_path, "multi_krum", "sign_flip", ledger)
    bad = {d.address for d in sim.devices if not d.behaviour.honest}
    assert len(bad) == 3
    for _ in range(2):
        result = sim.run_round()
        assert set(result.excluded) == bad
        assert all(v.startswith("robust_filter") for v in result.excluded.values())
        assert _paid(sim, result.round) == {d.address for d in sim.devices} - bad
        # every miner and device holds the chain's model
        head = sim.ledger.head().global_model_hash
        assert {tensor_hash(m.base_state) for m in sim.miners} == {head}
        assert {d.global_hash for d in sim.devices} == {head}


def test_fedavg_pays_sign_flippers(tmp_path):
    sim = _attacked(tmp_path, "fedavg", "sign_flip")
    result = sim.run_round()
    assert result.excluded == {}
    assert _paid(sim, 1) == {d.address for d in sim.devices}


def test_sample_inflation_and_sybil_copies_are_refused(tmp_path):
    sim = _attacked(tmp_path / "a", "fedavg", "sample_inflation")
    result = sim.run_round()
    reasons = {d: v.reason for d, v in result.verdicts.items() if not v.accepted}
    assert sorted(reasons.values()) == ["implausible_compute_time"] * 3
    sim = _attacked(tmp_path / "b", "fedavg", "sybil")
    result = sim.run_round()
    reasons = [v.reason for v in result.verdicts.values() if not v.accepted]
    assert reasons == ["replay"] * 6  # two copies of each of the 3 attackers' updates
    assert len(_paid(sim, 1)) == 10


def test_a_peer_rejects_a_block_whose_selection_is_not_the_rules(tmp_path):
    # a quorum of 1, as if the cheat were the only miner the chain asks for
    sim = _attacked(tmp_path, "multi_krum", "sign_flip", quorum=1)
    for device in sim.devices:  # every update reaches both miners (gossip)
        sim.miners[0].receive_upload(device.train(1, sim.ledger.domain).submission)
    honest_miner, cheat = sim.miners
    candidate = cheat.candidate()
    assert candidate is not None and len(candidate.excluded) == 3
    # the cheating miner hides one honest update among the excluded ones
    victim = candidate.proposal.updates[0]
    kept = tuple(u for u in candidate.proposal.updates if u is not victim)
    kept_updates = [u for u in candidate.updates if u.device != victim.device]
    state = cheat.strategy.aggregate(cheat.base_state, kept_updates)
    forged = replace(candidate.proposal, updates=kept, global_model_hash=tensor_hash(state),
                     excluded=(*candidate.proposal.excluded, victim.record.update_hash))
    nonce = _mine(sim, forged)
    forged = replace(forged, nonce=nonce)
    # with a quorum, the honest miner would not have attested it
    with pytest.raises(AttestationRefused, match="other updates than rule 'multi_krum'"):
        sim.attesters[0].attest(cheat.announcement(forged))
    assert cheat.commit(forged) is not None  # the chain cannot see the selection
    with pytest.raises(InvalidBlock, match="other updates than rule 'multi_krum'"):
        honest_miner.receive_block(cheat.announcement(forged))
    # leaving the excluded updates out of the announcement is no way around it
    with pytest.raises(InvalidBlock):
        honest_miner.receive_block(replace(cheat.announcement(forged), excluded=()))


def _mine(sim: Simulation, proposal) -> int:
    from blockfl.chain.blocks import solve_pow

    header = proposal.header(sim.ledger.domain)
    solution = solve_pow(header, sim.ledger.params().target, max_attempts=10**7)
    assert solution is not None
    return solution.nonce
