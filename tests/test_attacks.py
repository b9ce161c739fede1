"""Attacking devices against robust rules, in whole rounds on real ledgers: what the attackers
send, what the rule keeps out of the block, who is paid, and that peers reject a block whose
selection is not the rule's."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import pytest
import torch

from blockfl.chain.node import find_anvil
from blockfl.config import AGGREGATION_RULES, AttackConfig, Config
from blockfl.devices.behaviours import BEHAVIOURS, attackers, behaviour
from blockfl.devices.device import Device, GlobalModelMismatch
from blockfl.events import read_events
from blockfl.launcher import LocalNetwork
from blockfl.miners.attestation import AttestationRefused
from blockfl.miners.node import InvalidBlock
from blockfl.signing import Domain, address_of
from blockfl.sim.engine import Simulation
from blockfl.sim.runner import run_experiment
from blockfl.sim.setup import Experiment, build_experiment
from blockfl.tensors import decode, tensor_hash
from tests.conftest import key, small_config

DOMAIN = Domain(31337, address_of(key("contract")))


@cache
def _experiment(tmp_path) -> tuple[Config, Experiment]:
    config = small_config(tmp_path)
    return config, build_experiment(config)


def _device(tmp_path, name: str, **attack) -> Device:
    config, experiment = _experiment(tmp_path)
    return Device(key("attacker"), experiment.shards[0], experiment.task, config.training,
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
    drawn = {tuple(attackers(10, 0.3, seed)) for seed in range(20)}
    assert len(drawn) > 10  # the seed chooses who attacks: not one fixed set
    assert all(len(d) == 3 and len(set(d)) == 3 and set(d) <= set(range(10)) for d in drawn)
    assert attackers(10, 0.0, 0) == []
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
        sim.attesters[0].attest(cheat.announcement(forged), sim.attesters[1].request(forged))
    assert cheat.commit(forged) is not None  # the chain cannot see the selection
    with pytest.raises(InvalidBlock, match="other updates than rule 'multi_krum'"):
        honest_miner.receive_block(cheat.announcement(forged))
    # leaving the excluded updates out of the announcement is no way around it
    with pytest.raises(InvalidBlock):
        honest_miner.receive_block(replace(cheat.announcement(forged), excluded=()))
    # a device that recomputes re-runs the selection too
    excluded = [e.update for e in candidate.excluded]
    excluded += [u for u in candidate.updates if u.device == victim.device]
    with pytest.raises(GlobalModelMismatch, match="other updates than rule 'multi_krum'"):
        sim.devices[0].adopt(forged.global_model_hash, state, kept_updates, cheat.strategy,
                             excluded)


def _mine(sim: Simulation, proposal) -> int:
    from blockfl.chain.blocks import solve_pow

    header = proposal.header(sim.ledger.domain)
    solution = solve_pow(header, sim.ledger.params().target, max_attempts=10**7)
    assert solution is not None
    return solution.nonce


def _agreeing_run(tmp_path, rule: str, **chain) -> list[str]:
    config = small_config(tmp_path, network={"devices": 7, "miners": 2}, run={"rounds": 2},
                          aggregation={"rule": rule, "f": 2, "beta": 0.2},
                          attack={"attackers": 0.3, "behaviour": "sign_flip"}, chain=chain)
    summary = run_experiment(config)
    assert summary.hashes_agree and summary.rewards_match
    return [r.global_model_hash for r in summary.rounds]


@pytest.mark.parametrize("rule", AGGREGATION_RULES)
def test_every_rule_keeps_miners_devices_and_chain_on_one_model(tmp_path, rule):
    """Devices recompute every block's aggregate with the rule; evm and local agree."""
    evm = _agreeing_run(tmp_path / "evm", rule, ledger="evm")
    assert _agreeing_run(tmp_path / "local", rule, ledger="local") == evm


@pytest.mark.anvil
def test_a_filtering_rule_agrees_on_anvil(tmp_path, anvil_url):
    local = _agreeing_run(tmp_path / "local", "multi_krum", ledger="local")
    assert _agreeing_run(tmp_path / "anvil", "multi_krum", ledger="evm", rpc_url=anvil_url) == local


@pytest.mark.anvil
@pytest.mark.slow
@pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)")
def test_a_process_network_keeps_sign_flippers_unpaid_under_multi_krum(tmp_path):
    """`network up --attackers 0.34 --attack sign_flip --rule multi_krum`, as processes."""
    config = small_config(tmp_path, run={"rounds": 2, "out_dir": str(tmp_path)},
                          network={"devices": 6, "miners": 2, "t_wait": 30.0},
                          chain={"block_rate": 2.0, "hash_rate": 20_000.0},
                          aggregation={"rule": "multi_krum", "f": 2},
                          attack={"attackers": 0.34, "behaviour": "sign_flip"})
    network = LocalNetwork(config, tmp_path / "net").start()
    try:
        network.wait_for_round(2, timeout=300)
        bad = {address_of(network.device_key(j)) for j in network.attackers}
        paid = {u.device for u in network.ledger.accepted_updates()}
        assert len(bad) == 2 and len(paid) == 4 and not paid & bad
    finally:
        network.stop()
    logs = tmp_path / "net" / "logs"
    excluded = [e for i in range(2) for e in read_events(logs / f"miner{i}.jsonl")
                if e["event"] == "excluded"]
    assert {e["device"] for e in excluded} == bad
    assert {e["reason"] for e in excluded} == {"robust_filter"}
    invalid = [e for i in range(2) for e in read_events(logs / f"miner{i}.jsonl")
               if e["event"] == "invalid_block"]
    assert invalid == []


def test_attack_command_writes_csv_figures_and_table(tmp_path, capsys):
    from blockfl.cli import main
    from blockfl.sim.attack import read_csv

    out = tmp_path / "attack"
    code = main(["attack", "--attacks", "sign_flip,sybil", "--rules", "fedavg,multi_krum",
                 "--fractions", "0,0.4", "--rounds", "1", "--out", str(out),
                 "--network-devices", "5", "--model-name", "logreg", "--aggregation-f", "2",
                 "--table-fraction", "0.4"])
    assert code == 0
    runs = read_csv(out / "attack.csv")
    assert len(runs) == 2 * 2 * 2  # the clean run of each rule is shared by both attacks
    flipped = {r.rule: r for r in runs if r.attack == "sign_flip" and r.fraction == 0.4}
    assert flipped["fedavg"].attacker_reward_share > 0.2
    assert flipped["multi_krum"].attacker_reward_share == 0.0
    assert (out / "attack_sign_flip.png").exists() and (out / "attack_sybil.png").exists()
    assert "40% attackers" in capsys.readouterr().out


def test_summary_over_seeds_gives_the_mean_and_spread_of_accuracy():
    from blockfl.sim.attack import AttackRun, summary_rows

    def run(rule: str, fraction: float, seed: int, accuracy: float) -> AttackRun:
        return AttackRun("sign_flip", rule, fraction, seed, accuracy, 0.0, 0.0, 0, 0, 0)

    runs = [run("fedavg", 0.0, 0, 0.95), run("fedavg", 0.0, 1, 0.93),
            run("fedavg", 0.3, 0, 0.60), run("fedavg", 0.3, 1, 0.40),
            run("median", 0.3, 0, 0.90), run("median", 0.3, 1, 0.90)]
    rows = {r["rule"]: r for r in summary_rows(runs, 0.3)}
    assert rows["fedavg"]["seeds"] == 2
    assert rows["fedavg"]["accuracy"] == pytest.approx(0.5)
    assert rows["fedavg"]["accuracy_sd"] == pytest.approx(0.02**0.5)
    assert rows["fedavg"]["gap_points"] == pytest.approx(44.0)
    assert rows["median"]["accuracy_sd"] == 0.0 and rows["median"]["best"]
    one_seed = summary_rows([r for r in runs if r.seed == 0], 0.3)
    assert [r["accuracy_sd"] for r in one_seed] == [0.0, 0.0]
