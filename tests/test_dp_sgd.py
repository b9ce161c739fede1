"""`[privacy] mode = "dp_sgd"`: Opacus's DP-SGD on each device, its epsilon from Opacus's
accountant, and the budget every miner enforces, on the embedded EVM."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest
import torch

from blockfl.chain.deployment import Deployment
from blockfl.chain.node import find_anvil, node_from_state
from blockfl.cli import main
from blockfl.config import PrivacyConfig, TrainingConfig, load_config
from blockfl.devices.data import load_digits
from blockfl.devices.device import Device
from blockfl.keys import derived_key
from blockfl.launcher import LocalNetwork
from blockfl.models import initial_state, model_for_state
from blockfl.privacy import (
    PrivacyRule,
    dp_sgd_steps,
    epsilon,
    noise_multiplier,
    rounds_within_budget,
)
from blockfl.protocol import Genesis, ProtocolSpec
from blockfl.signing import address_of
from blockfl.sim.attack import run_one
from blockfl.sim.runner import run_experiment
from blockfl.sim.setup import task_data
from blockfl.task import TaskError, load_task
from tests.conftest import small_config
from tests.test_explorer_browser import READ_TABLE, browser, wait_until
from tests.test_privacy import deployed

pytest.importorskip("opacus")
__all__ = ["browser"]  # the fixture, shared with the explorer's browser tests

DP = {"mode": "dp_sgd", "noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5}


def test_epsilon_is_opacus_accountant_of_the_steps_a_device_trains():
    from blockfl.devices.training_dp import make_private

    data = load_digits()
    shard = replace(data, x=data.x[:200], y=data.y[:200])
    training = TrainingConfig(epochs=1, batch_size=16, lr=0.1)
    cfg = PrivacyConfig(**DP).for_training(training)
    model = model_for_state("logreg", shard.input_shape,
                            initial_state("logreg", shard.input_shape, shard.n_outputs, 0))
    engine, module, optimizer, loader = make_private(model, shard, training, cfg, seed=3)
    for rounds in (1, 2):  # a round: one pass of ceil(200 / 16) = 13 Poisson-sampled steps
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(xb), yb).backward()
            optimizer.step()
        assert epsilon(cfg, rounds, 200) == pytest.approx(engine.get_epsilon(1e-5), rel=1e-12)
    assert dp_sgd_steps(16, 2, 200) == (26, 1 / 13)
    assert epsilon(cfg, 3, 200) > epsilon(cfg, 2, 200) > 0
    assert epsilon(cfg, 2, 400) < epsilon(cfg, 2, 200)  # a smaller sampling rate spends less


def test_the_spec_holds_the_training_steps_dp_sgd_is_charged_by(tmp_path):
    genesis = Genesis("none", b"\0" * 32, {})
    config = small_config(tmp_path, privacy=DP)
    spec = ProtocolSpec.from_config(config, genesis).to_dict()["privacy"]
    assert (spec["batch_size"], spec["epochs"]) == (16, 1) and "clip" not in spec
    client = ProtocolSpec.from_config(small_config(tmp_path, privacy={"mode": "client"}),
                                      genesis).to_dict()["privacy"]
    assert "max_grad_norm" not in client and "batch_size" not in client
    with pytest.raises(ValueError, match=r"privacy\.batch_size = 8 differs from training"):
        ProtocolSpec.from_config(small_config(tmp_path, privacy={**DP, "batch_size": 8}),
                                 genesis)
    with pytest.raises(ValueError, match=r"privacy\.max_grad_norm"):
        PrivacyConfig(**{**DP, "max_grad_norm": 0.0})


def test_a_budget_below_one_rounds_epsilon_of_a_device_is_a_config_error(tmp_path):
    config = small_config(tmp_path, privacy={**DP, "epsilon_budget": 1.0})
    with pytest.raises(ValueError, match=r"privacy\.epsilon_budget = 1 is below one round's "
                                         r"epsilon for a device of \d+ samples"):
        run_experiment(config)


def test_a_task_that_does_not_train_with_dp_sgd_is_refused(tmp_path):
    class Plain:
        name = "plain"

    data = load_digits()
    with pytest.raises(TaskError, match="does not train with DP-SGD"):
        Device(derived_key("device", 0, 0), data, Plain(), TrainingConfig(), {},
               privacy=PrivacyConfig(**DP))


def _dp_run(tmp_path, rounds: int, **privacy):
    """A 4-device MLP run of `rounds` rounds with DP-SGD (`DP` updated by `privacy`)."""
    config = small_config(tmp_path, privacy={**DP, **privacy},
                          network={"devices": 4, "miners": 2}, model={"name": "mlp"},
                          training={"epochs": 1, "lr": 0.5, "batch_size": 32,
                                    "compute_time": "modelled"},
                          run={"rounds": rounds, "out_dir": str(tmp_path), "name": "run"})
    return config, run_experiment(config)


def _paid_rounds(ledger) -> dict[str, set[int]]:
    """Per device, the rounds the chain paid it for."""
    paid: dict[str, set[int]] = {}
    for update in ledger.accepted_updates():
        paid.setdefault(update.device, set()).add(update.round)
    return paid


def test_a_dp_sgd_run_trains_reports_epsilon_and_stops_at_the_budget(tmp_path):
    _, summary = _dp_run(tmp_path, 6, epsilon_budget=5.0)
    sim = summary.simulation
    cfg = sim.spec.privacy
    allowed = {d.address: rounds_within_budget(cfg, len(d.shard)) for d in sim.devices}
    # the largest shard samples at a lower rate: more rounds within the same budget
    assert sorted(allowed.values()) == [3, 3, 3, 5]
    assert summary.report["stopped_early"] == "every device spent its privacy budget after round 5"
    assert summary.rounds[-1].metrics["accuracy"] > 0.3  # digits: chance is 0.1
    paid = _paid_rounds(sim.ledger)
    assert paid == {d: set(range(1, n + 1)) for d, n in allowed.items()}  # never past it
    report = json.loads((summary.run_dir / "report.json").read_text())["privacy"]
    assert (report["mode"], report["batch_size"], report["epochs"]) == ("dp_sgd", 32, 1)
    for device, row in zip(sim.devices, report["devices"], strict=True):
        rounds, n = allowed[device.address], len(device.shard)
        spent = epsilon(cfg, rounds, n)
        assert (row["rounds"], row["epsilon"]) == (rounds, pytest.approx(spent, rel=1e-12))
        assert row["budget_left"] == pytest.approx(5.0 - spent) and spent <= 5.0
        assert epsilon(cfg, rounds + 1, n) > 5.0
    assert summary.hashes_agree and summary.rewards_match
    # a device that trains and sends anyway is refused by a miner, charged from the chain
    miner, device = sim.miners[0], sim.devices[0]
    late = device.train(miner.round, sim.ledger.domain).submission
    verdict = miner.receive_upload(late)
    assert (verdict.accepted, verdict.reason) == (False, "privacy_budget_exhausted")


def test_calibrated_noise_is_the_least_on_its_grid_that_lasts_the_rounds_it_names(tmp_path):
    cfg = PrivacyConfig(**{**DP, "noise_multiplier": 0.5, "epsilon_budget": 5.0,
                           "budget_rounds": 6}).for_training(TrainingConfig(epochs=1,
                                                                            batch_size=32))
    noise = {n: noise_multiplier(cfg, n) for n in (20, 100, 450)}
    for n, sigma in noise.items():
        assert sigma * 100 == round(sigma * 100) and sigma > 0.5
        assert epsilon(cfg, 6, n) <= 5.0 and rounds_within_budget(cfg, n) >= 6
        one_less = replace(cfg, budget_rounds=0, noise_multiplier=round(sigma - 0.01, 2))
        assert epsilon(one_less, 6, n) > 5.0  # the least multiplier on the grid
    # a small shard is sampled whole each step: more noise than a large one sampled at 1/15
    assert noise[20] > noise[100] > noise[450]
    assert noise_multiplier(cfg, 33) == noise_multiplier(cfg, 64)  # the same steps a round
    assert noise_multiplier(replace(cfg, noise_multiplier=9.0), 450) == 9.0  # the floor
    assert noise_multiplier(replace(cfg, budget_rounds=0), 450) == 0.5
    with pytest.raises(ValueError, match=r"privacy\.budget_rounds = 6 needs an epsilon_budget"):
        PrivacyConfig(**{**DP, "budget_rounds": 6})
    genesis = Genesis("none", b"\0" * 32, {})
    spec = ProtocolSpec.from_config(small_config(tmp_path, privacy={**DP, "epsilon_budget": 5.0,
                                                                    "budget_rounds": 6}),
                                    genesis).to_dict()["privacy"]
    plain = ProtocolSpec.from_config(small_config(tmp_path, privacy=DP),
                                     genesis).to_dict()["privacy"]
    assert spec["budget_rounds"] == 6 and "budget_rounds" not in plain  # older specs' hashes


def test_a_calibrated_dp_sgd_run_pays_every_device_every_round_within_its_budget(tmp_path):
    from blockfl.devices.training_dp import make_private

    config, summary = _dp_run(tmp_path, 4, noise_multiplier=0.3, epsilon_budget=5.0,
                              budget_rounds=4)
    sim = summary.simulation
    cfg = sim.spec.privacy
    assert "stopped_early" not in summary.report
    assert _paid_rounds(sim.ledger) == {d.address: {1, 2, 3, 4} for d in sim.devices}
    report = json.loads((summary.run_dir / "report.json").read_text())["privacy"]
    for device, row in zip(sim.devices, report["devices"], strict=True):
        n = len(device.shard)
        assert row["noise_multiplier"] == noise_multiplier(cfg, n) > 0.3
        assert row["epsilon"] == pytest.approx(epsilon(cfg, 4, n), rel=1e-12)
        assert row["epsilon"] <= 5.0
    assert summary.hashes_agree and summary.rewards_match
    shard = sim.devices[0].shard  # and the device trains at its multiplier
    model = model_for_state("mlp", shard.input_shape, sim.miners[0].base_state)
    _, _, optimizer, _ = make_private(model, shard, config.training, config.privacy, seed=1)
    assert optimizer.noise_multiplier == noise_multiplier(cfg, len(shard))


def test_the_rule_charges_dp_sgd_at_the_signed_sample_count_and_bounds_no_norm():
    cfg = PrivacyConfig(**{**DP, "epsilon_budget": 5.0}).for_training(
        TrainingConfig(epochs=1, batch_size=32))
    rule = PrivacyRule(cfg)
    small, large = rounds_within_budget(cfg, 300), rounds_within_budget(cfg, 450)
    assert 0 < small < large
    assert rule.refusal(1e9, 650, small - 1, 300) is None  # any norm: no bound in this mode
    assert rule.refusal(1.0, 650, small, 300)[0] == "privacy_budget_exhausted"
    assert rule.refusal(1.0, 650, small, 450) is None


@pytest.fixture(scope="module")
def dp_deployment(tmp_path_factory, anvil_url):
    """A 2-round dp_sgd run on anvil: (its deployment, deployment.json, its run summary)."""
    tmp_path = tmp_path_factory.mktemp("dp_sgd")
    config = small_config(tmp_path, privacy={**DP, "epsilon_budget": 20.0, "budget_rounds": 2},
                          network={"devices": 3, "miners": 2},
                          run={"rounds": 2, "out_dir": str(tmp_path), "name": "run"})
    deployment, path = deployed(config, anvil_url, tmp_path)
    return deployment, path, run_experiment(config, ledger=deployment.ledger())


def _explorer(deployment, privacy: bool = True):
    from blockfl.explorer.reader import Explorer

    spec = ProtocolSpec.from_dict(deployment.protocol_spec)
    return Explorer(deployment.ledger(), **({"privacy": spec.privacy} if privacy else {}))


def test_inspect_privacy_and_the_explorer_show_each_devices_dp_sgd_epsilon(dp_deployment,
                                                                            capsys):
    from blockfl.cli import main

    deployment, path, summary = dp_deployment
    capsys.readouterr()
    assert main(["inspect", "privacy", "--deployment", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["mode"], shown["max_grad_norm"], shown["batch_size"]) == ("dp_sgd", 1.0, 16)
    expected = {d["address"]: d for d in summary.report["privacy"]["devices"]}
    assert {d["address"]: d for d in shown["devices"]} == expected
    for device in summary.simulation.devices:
        assert expected[device.address]["epsilon"] == pytest.approx(
            epsilon(summary.simulation.spec.privacy, 2, len(device.shard)), rel=1e-12)
    # the explorer's rewards page: the same epsilon per device, beside its balance
    rewards = _explorer(deployment).refresh().rewards
    assert {d["address"]: d for d in rewards["privacy"]["devices"]} == expected
    assert {r["address"] for r in rewards["rows"] if r["role"] == "device"} == set(expected)
    assert "privacy" not in _explorer(deployment, privacy=False).refresh().rewards
    # the table names the per-device noise and gives each device's multiplier
    assert main(["inspect", "privacy", "--deployment", str(path)]) == 0
    table = capsys.readouterr().out
    assert "noise per device (lasting 2 rounds" in table
    for device in summary.simulation.devices:
        sigma = noise_multiplier(summary.simulation.spec.privacy, len(device.shard))
        assert expected[device.address]["noise_multiplier"] == sigma
        assert f"{sigma:g}" in table


def test_the_rewards_page_shows_an_epsilon_column_in_a_browser(dp_deployment, browser):
    from blockfl.chain.node import free_port
    from blockfl.cli.explorer import explorer_server

    deployment, _, summary = dp_deployment
    spent = {d["address"]: d["epsilon"] for d in summary.report["privacy"]["devices"]}
    port = free_port()
    server = explorer_server(_explorer(deployment), "127.0.0.1", port, 1.0, lambda *a, **k: None)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the explorer to start")
        browser.get(f"http://127.0.0.1:{port}/rewards")
        rows = wait_until(lambda: browser.execute_script(READ_TABLE, "balances"), 60,
                          "the balances table")
        head = browser.execute_script(
            "return Array.from(document.querySelectorAll('table#balances thead th'))"
            ".map((th) => th.innerText)")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert head[-1].startswith("ε spent (dp_sgd")
    shown = {r["text"][0]: r["text"][-1] for r in rows if r["text"][1] == "device"}
    assert shown.keys() == spent.keys()
    for address, text in shown.items():
        assert float(text) == pytest.approx(spent[address], rel=1e-3)
    assert all(r["text"][-1] == "" for r in rows if r["text"][1] == "miner")


@pytest.mark.anvil
@pytest.mark.slow
@pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)")
def test_a_dp_sgd_network_of_processes_stops_each_device_at_its_budget(tmp_path):
    """`network up` with dp_sgd: every device process trains with Opacus and stops at its
    budget (the small shards first), the run check passes, and the chain pays each device
    exactly the rounds its budget covers."""
    run_dir = tmp_path / "net"
    code = main(["network", "up", "--devices", "4", "--miners", "2", "--rounds", "4",
                 "--run-dir", str(run_dir), "--privacy-mode", "dp_sgd",
                 "--privacy-noise-multiplier", "1.0", "--privacy-epsilon-budget", "5",
                 "--training-batch-size", "32", "--training-epochs", "1",
                 "--network-t-wait", "2"])
    assert code == 0  # the run check passed
    config = load_config(run_dir / "config.toml")
    cfg = config.privacy.for_training(config.training)
    shards = task_data(config, load_task(config))[0]
    allowed = {address_of(LocalNetwork.device_key(j)): min(4, rounds_within_budget(cfg, len(s)))
               for j, s in enumerate(shards)}
    assert min(allowed.values()) < 4  # some device stopped at its budget before the end
    with node_from_state(run_dir / "anvil-state.json") as url:
        ledger = Deployment.read(run_dir / "deployment.json").ledger(url)
        paid: dict[str, set[int]] = {}
        for update in ledger.accepted_updates():
            paid.setdefault(update.device, set()).add(update.round)
    assert paid == {d: set(range(1, n + 1)) for d, n in allowed.items()}
    stops = [e for j in range(4) for e in map(json.loads, (run_dir / "logs" / f"device{j}.jsonl")
             .read_text().splitlines()) if e["event"] == "privacy_budget_exhausted"]
    assert len(stops) == sum(n < 4 for n in allowed.values())


def test_an_attack_run_ends_when_every_device_spent_its_budget(tmp_path):
    """`blockfl attack` with dp_sgd and a budget every device spends before the last round
    ends the run there, as `simulate` does (it raised 'no miner holds a verified update')."""
    config = small_config(tmp_path, privacy={**DP, "epsilon_budget": 5.0},
                          network={"devices": 4, "miners": 2}, model={"name": "mlp"},
                          training={"epochs": 1, "lr": 0.5, "batch_size": 32,
                                    "compute_time": "modelled"},
                          attack={"attackers": 0.25, "behaviour": "sign_flip"},
                          run={"rounds": 7, "out_dir": str(tmp_path)})
    run = run_one(config, tmp_path / "work")
    assert run.attacker_updates_paid >= 3 and 0 < run.honest_paid_mean < 1
    assert run.accuracy == run.accuracy  # a number: the last round run, not NaN
