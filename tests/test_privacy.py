"""Differential privacy on the devices (`blockfl.privacy`): configuration, accounting with
Opacus, clipping and noise, and the rules every miner enforces, read back from the chain."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from blockfl.chain.deployment import Deployment
from blockfl.chain.participation import Participation
from blockfl.config import Config, PrivacyConfig, VerificationPolicy
from blockfl.devices.device import Device
from blockfl.keys import derived_key
from blockfl.miners.verification import UpdateRejected, Verifier
from blockfl.privacy import (
    epsilon,
    max_plausible_norm,
    may_take_part,
    privatize,
    rounds_within_budget,
)
from blockfl.protocol import Genesis, ProtocolSpec
from blockfl.sim.runner import run_experiment
from blockfl.tensors import l2_norm, tensor_hash
from tests.conftest import small_config

pytest.importorskip("opacus")

CLIENT = PrivacyConfig(mode="client", noise_multiplier=2.0, clip=1.0, delta=1e-5)


@pytest.mark.parametrize("field,value,match", [
    ("delta", 1.0, "privacy.delta"), ("delta", 0.0, "privacy.delta"),
    ("noise_multiplier", -0.1, "privacy.noise_multiplier"), ("clip", 0.0, "privacy.clip"),
    ("epsilon_budget", -1.0, "privacy.epsilon_budget"), ("mode", "central", "privacy.mode"),
    ("clip", math.inf, "privacy.clip"),
])
def test_out_of_range_privacy_settings_are_config_errors_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        replace(CLIENT, **{field: value})


def test_a_budget_below_one_rounds_epsilon_is_refused_when_the_spec_is_built(tmp_path):
    config = small_config(tmp_path, privacy={**CLIENT.__dict__, "epsilon_budget": 1.0})
    with pytest.raises(ValueError, match=r"privacy.epsilon_budget = 1 is below one round's"):
        ProtocolSpec.from_config(config, Genesis("none", b"\0" * 32, {}))


def test_epsilon_is_opacus_rdp_for_a_gaussian_of_half_the_noise_multiplier():
    from opacus.accountants import RDPAccountant

    for rounds in (1, 5, 40):
        accountant = RDPAccountant()
        for _ in range(rounds):
            accountant.step(noise_multiplier=CLIENT.noise_multiplier / 2, sample_rate=1.0)
        assert epsilon(CLIENT, rounds) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert epsilon(CLIENT, 0) == 0.0
    assert epsilon(PrivacyConfig(), 10) == 0.0  # privacy off spends nothing
    spent = [epsilon(CLIENT, r) for r in range(1, 10)]
    assert spent == sorted(spent) and len(set(spent)) == len(spent)


def test_the_budget_admits_exactly_the_rounds_whose_epsilon_it_covers():
    budget = replace(CLIENT, epsilon_budget=8.0)
    allowed = rounds_within_budget(budget)
    assert epsilon(CLIENT, allowed) <= 8.0 < epsilon(CLIENT, allowed + 1)
    assert may_take_part(budget, allowed - 1) and not may_take_part(budget, allowed)
    assert rounds_within_budget(CLIENT) is None  # no budget


def _delta(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(10, 64, generator=g) * 3, "b": torch.randn(10, generator=g),
            "count": torch.tensor(7)}


def test_privatize_clips_to_the_bound_and_adds_noise_keyed_by_the_device_and_round():
    delta, key = _delta(), derived_key("device", 0, 0)
    clipped = privatize(delta, replace(CLIENT, noise_multiplier=0.0), key, 1)
    assert l2_norm({k: v for k, v in clipped.items() if k != "count"}) == pytest.approx(1.0)
    assert torch.equal(clipped["count"], delta["count"])  # only floating tensors are touched
    noised = privatize(delta, CLIENT, key, 1)
    again = privatize(delta, CLIENT, key, 1)
    assert tensor_hash(noised) == tensor_hash(again)  # the same key and round: the same bits
    assert tensor_hash(privatize(delta, CLIENT, key, 2)) != tensor_hash(noised)
    other = derived_key("device", 1, 0)
    assert tensor_hash(privatize(delta, CLIENT, other, 1)) != tensor_hash(noised)
    noise = torch.cat([(noised[k] - clipped[k]).reshape(-1) for k in ("w", "b")])
    assert noise.std().item() == pytest.approx(CLIENT.noise_multiplier * CLIENT.clip, rel=0.1)
    assert privatize(delta, PrivacyConfig(), key, 1) is delta


def test_a_noised_update_stays_below_the_plausible_norm_and_an_unclipped_one_does_not():
    delta, key = _delta(), derived_key("device", 0, 0)
    values = 10 * 64 + 10
    for round_ in range(1, 30):
        noised = privatize(delta, CLIENT, key, round_)
        norm = l2_norm({k: v for k, v in noised.items() if k != "count"})
        assert norm < max_plausible_norm(CLIENT, values)
    unclipped = {k: v * 50 for k, v in delta.items() if k != "count"}
    assert l2_norm(unclipped) > max_plausible_norm(CLIENT, values)


def test_every_miner_refuses_an_implausible_norm_and_an_update_past_the_budget(tmp_path):
    config = small_config(tmp_path, privacy={**CLIENT.__dict__, "epsilon_budget": 8.0},
                          verification={"norm_bound": 1e9})
    summary = run_experiment(replace(config, run=replace(config.run, rounds=1)))
    sim = summary.simulation
    device = sim.devices[0]
    miner = sim.miners[0]
    # a device that claims DP but sends its raw, unclipped update
    raw = Device(device.key, device.shard, device.task, device.training,
                 device.global_state, seed=device.seed)
    local = raw.local_update(2)
    scaled = replace(local, delta={k: v * 1e4 for k, v in local.delta.items()})
    verdict = miner.receive_upload(raw.submission(2, sim.ledger.domain, scaled).submission)
    assert (verdict.accepted, verdict.reason) == (False, "dp_norm_implausible")

    # one round spent of two allowed: the verifier charges the device by the chain's record
    verifier = Verifier(VerificationPolicy(norm_bound=1e9), privacy=config.privacy,
                        included_rounds=lambda _: rounds_within_budget(config.privacy))
    submission = device.train(2, sim.ledger.domain).submission
    with pytest.raises(UpdateRejected) as refused:
        verifier.verify(submission, miner.context())
    assert refused.value.reason == "privacy_budget_exhausted"
    assert Participation(sim.ledger).rounds(device.address) == 1


@pytest.mark.parametrize("ledger", ["evm", "local"])
def test_a_device_past_its_budget_is_never_paid(tmp_path, ledger):
    config = small_config(tmp_path, privacy={**CLIENT.__dict__, "epsilon_budget": 8.0},
                          chain={"ledger": ledger}, verification={"norm_bound": 1e9},
                          run={"rounds": 4, "out_dir": str(tmp_path), "name": "run"})
    allowed = rounds_within_budget(config.privacy)
    assert allowed == 2
    summary = run_experiment(config)
    assert summary.report["stopped_early"] == "every device spent its privacy budget after round 2"
    chain = summary.simulation.ledger
    assert chain.head().round == allowed
    paid: dict[str, set[int]] = {}
    for update in chain.accepted_updates():
        paid.setdefault(update.device, set()).add(update.round)
    devices = [d.address for d in summary.simulation.devices]
    assert {d: paid.get(d) for d in devices} == {d: {1, 2} for d in devices}
    for row in summary.report["privacy"]["devices"]:
        assert row["rounds"] == allowed
        assert row["epsilon"] == pytest.approx(epsilon(config.privacy, allowed))
        assert 0 <= row["budget_left"] < epsilon(config.privacy, allowed + 1) - row["epsilon"]
    assert summary.hashes_agree and summary.rewards_match


def deployed(config: Config, anvil_url: str, tmp_path: Path) -> tuple[Deployment, Path]:
    """`config` deployed on the anvil node, and its `deployment.json`."""
    from blockfl.chain.deploy import deploy_to_node
    from blockfl.chain.evm import DEV_DEPLOYER_KEY
    from blockfl.signing import address_of
    from blockfl.sim.setup import build_experiment

    genesis = build_experiment(config).genesis
    miners = [address_of(derived_key("miner", i, config.run.seed))
              for i in range(config.network.miners)]
    deployment = deploy_to_node(config, anvil_url, miners, DEV_DEPLOYER_KEY, genesis)
    path = tmp_path / "deployment.json"
    deployment.write(path)
    return deployment, path


def test_inspect_privacy_charges_each_device_from_the_chain(tmp_path, anvil_url, capsys):
    from blockfl.cli import main

    config = small_config(tmp_path, privacy={**CLIENT.__dict__, "epsilon_budget": 20.0},
                          verification={"norm_bound": 1e9},
                          run={"rounds": 2, "out_dir": str(tmp_path), "name": "run"})
    deployment, path = deployed(config, anvil_url, tmp_path)
    summary = run_experiment(config, ledger=deployment.ledger())
    capsys.readouterr()
    assert main(["inspect", "privacy", "--deployment", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["mode"], shown["epsilon_budget"], shown["delta"]) == ("client", 20.0, 1e-5)
    expected = {d["address"]: d for d in summary.report["privacy"]["devices"]}
    assert {d["address"]: d for d in shown["devices"]} == expected
    assert {d["rounds"] for d in shown["devices"]} == {2}
    assert shown["devices"][0]["budget_left"] == pytest.approx(20.0 - epsilon(CLIENT, 2))
