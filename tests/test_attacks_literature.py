"""The attacks from the literature as real devices: each sends what its definition says of the
updates it observed, the same bytes for the same seed, and in `simulate` it reads what its
miner holds once the honest devices uploaded."""

from __future__ import annotations

import pytest
import torch

from blockfl.aggregation import AggregationRule, WeightedUpdate
from blockfl.config import AggregationConfig, AttackConfig
from blockfl.devices.behaviours import behaviour
from blockfl.devices.observing_attacks import Observed, alie_z
from blockfl.sim.engine import Simulation, observed_updates
from blockfl.tensors import canonical_bytes
from tests.conftest import small_config

ME = "0x" + "f" * 40


def _draws(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Noisy updates around a common direction, as honest SGD updates are."""
    g = torch.Generator().manual_seed(0)
    shift = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    g = torch.Generator().manual_seed(seed)
    return [{k: 0.5 * v + torch.randn(v.shape, generator=g) for k, v in shift.items()}
            for _ in range(n)]


def _honest(n: int = 7) -> list[WeightedUpdate]:
    return [WeightedUpdate(f"0x{i + 1:040x}", d, 50 + i) for i, d in enumerate(_draws(n, 1))]


def _stack(updates: list[WeightedUpdate], name: str) -> torch.Tensor:
    return torch.stack([u.delta[name].double() for u in updates])


def _own() -> dict[str, torch.Tensor]:
    return _draws(1, 99)[0]


def _sent(name: str, observed: Observed | None, **attack) -> dict[str, torch.Tensor]:
    chosen = behaviour(name, AttackConfig(attackers=0.3, **attack), 10, seed=5)
    return chosen.delta(_own(), 1, observed)


def _observed(rule: str = "fedavg", **params) -> Observed:
    base = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
    rule_ = AggregationRule(AggregationConfig(rule=rule, **params))
    return Observed(base, tuple(_honest()), rule_, ME, 50)


def test_alie_sends_mean_plus_z_std_of_the_honest_updates():
    honest = _honest()
    got = _sent("alie", _observed(), alie_z=1.5)
    for k in got:
        x = _stack(honest, k)
        want = x.mean(0) + 1.5 * x.std(0, correction=0)
        assert torch.allclose(got[k].double(), want, atol=1e-6)
    # z = 0: the paper's z_max for 10 devices and 3 attackers: s = 6 - 3, Phi^-1(7/10)
    assert alie_z(10, 3) == pytest.approx(0.5244, abs=1e-4)
    default = _sent("alie", _observed())
    x = _stack(honest, "b")
    assert torch.allclose(default["b"].double(),
                          x.mean(0) + alie_z(10, 3) * x.std(0, correction=0), atol=1e-6)


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
    got = _sent("ipm", _observed(), ipm_epsilon=0.5)
    for k in got:
        assert torch.allclose(got[k].double(), -0.5 * _stack(_honest(), k).mean(0), atol=1e-6)


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([d[k].reshape(-1).double() for k in sorted(d)])


def test_min_max_goes_as_far_from_the_mean_as_the_honest_spread_allows():
    honest = [_flat(u.delta) for u in _honest()]
    got = _flat(_sent("min_max", _observed()))
    mean = torch.stack(honest).mean(0)
    spread = max(float(torch.dist(a, b)) for a in honest for b in honest)
    farthest = max(float(torch.dist(got, h)) for h in honest)
    assert spread * (1 - 1e-5) <= farthest <= spread * (1 + 1e-6)
    away = got - mean  # along minus the mean's direction
    cosine = float(away @ -mean / (away.norm() * mean.norm()))
    assert cosine == pytest.approx(1.0, abs=1e-6)


def _kept(observed: Observed, delta: dict[str, torch.Tensor]) -> bool:
    assert observed.rule is not None
    mine = WeightedUpdate(ME, delta, observed.samples)
    kept, _ = observed.rule.select(observed.base, [*observed.updates, mine])
    return ME in {u.device for u in kept}


def test_adaptive_scales_its_flipped_update_to_just_pass_the_rule():
    observed = _observed("multi_krum", f=3)
    got = _sent("adaptive", observed, adaptive_max_scale=10.0)
    own = _own()
    scale = float(-got["w"].double().sum() / own["w"].double().sum())
    assert 0 < scale < 10.0
    assert all(torch.allclose(got[k], -scale * own[k]) for k in own)
    assert _kept(observed, got)
    assert not _kept(observed, {k: v * -(scale + 10.0 / 2**11) for k, v in own.items()})
    # a rule that keeps everything: the largest scale
    assert torch.allclose(_sent("adaptive", _observed(), adaptive_max_scale=10.0)["b"],
                          -10.0 * own["b"])


def _device(name: str, seed: int = 1):
    from blockfl.devices.device import Device
    from blockfl.sim.setup import build_experiment
    from tests.conftest import key

    config = small_config(".")
    experiment = build_experiment(config)
    return Device(key(f"attacker-{seed}"), experiment.shards[0], experiment.task,
                  config.training, experiment.initial, seed=seed,
                  behaviour=behaviour(name, AttackConfig(copies=3), 5, seed=seed))


def _decoded(submission) -> dict[str, torch.Tensor]:
    from blockfl.tensors import decode

    return decode(submission.payload, max_bytes=10**7)


def test_colluding_sybils_send_near_identical_flipped_means_under_their_keys():
    from blockfl.signing import Domain, address_of
    from tests.conftest import key

    device = _device("collude")
    base = {k: torch.zeros_like(v) for k, v in device.global_state.items()}
    honest = [WeightedUpdate(f"0x{i + 1:040x}", {k: torch.randn(v.shape) for k, v in
                                                 base.items()}, 40) for i in range(5)]
    sent = device.train(1, Domain(31337, address_of(key("contract"))),
                        Observed(base, tuple(honest), None, device.address, 40))
    copies = [sent.submission, *sent.copies]
    assert len({s.device for s in copies}) == 3
    assert len({s.signed.record.update_hash for s in copies}) == 3
    mean = torch.stack([_flat(u.delta) for u in honest]).mean(0)
    for s in copies:
        assert torch.allclose(_flat(_decoded(s)), -mean, atol=1e-5)


def test_sybil_noise_copies_differ_by_tiny_noise_only():
    from blockfl.signing import Domain, address_of
    from tests.conftest import key

    sent = _device("sybil_noise").train(1, Domain(31337, address_of(key("contract"))))
    copies = [sent.submission, *sent.copies]
    assert len({s.signed.record.update_hash for s in copies}) == 3
    assert len({s.device for s in copies}) == 3
    first = _flat(_decoded(copies[0]))
    for s in copies[1:]:
        assert 0 < float((_flat(_decoded(s)) - first).abs().max()) < 1e-5


@pytest.mark.parametrize("name", ["alie", "ipm", "min_max", "adaptive", "collude"])
def test_an_observing_attack_is_deterministic_for_a_seed(name):
    first = _sent(name, _observed("multi_krum", f=3))
    assert canonical_bytes(first) == canonical_bytes(_sent(name, _observed("multi_krum", f=3)))
    # observing nothing, it takes its own update as the honest estimate
    assert canonical_bytes(_sent(name, None)) == canonical_bytes(_sent(name, None))


def test_in_simulate_an_attacker_reads_what_its_miner_holds(tmp_path):
    config = small_config(tmp_path, network={"devices": 6, "miners": 1},
                          attack={"attackers": 0.34, "behaviour": "ipm", "ipm_epsilon": 0.5})
    sim = Simulation(config, tmp_path)
    held: list[tuple[WeightedUpdate, ...]] = []
    sim.run_round(inject=lambda round_, miners: held.append(observed_updates(miners[0])))
    bad = {d.address for d in sim.devices if d.behaviour.observes}
    assert len(bad) == 2
    honest = [u for u in held[0] if u.device not in bad]
    attacks = [u for u in held[0] if u.device in bad]
    assert len(honest) == 4 and len(attacks) == 2
    for sent in attacks:
        for k, v in sent.delta.items():
            assert torch.allclose(v.double(), -0.5 * _stack(honest, k).mean(0), atol=1e-6)


@pytest.mark.anvil
@pytest.mark.slow
def test_in_a_process_network_an_attacker_reads_the_gossiped_updates(tmp_path):
    """`network up --attackers 0.34 --attack ipm`: the attackers read the verified updates
    a miner holds (GET /pending, GET /updates/{hash}) before they sign."""
    from blockfl.chain.node import find_anvil
    from blockfl.events import read_events
    from blockfl.launcher import LocalNetwork

    if find_anvil() is None:
        pytest.skip("anvil binary not found (npm install)")
    config = small_config(tmp_path, run={"rounds": 1, "out_dir": str(tmp_path)},
                          network={"devices": 6, "miners": 2, "t_wait": 20.0},
                          chain={"block_rate": 2.0, "hash_rate": 20_000.0},
                          attack={"attackers": 0.34, "behaviour": "ipm"})
    network = LocalNetwork(config, tmp_path / "net").start()
    try:
        network.wait_for_round(1, timeout=300)
        bad = network.attackers
    finally:
        network.stop()
    logs = tmp_path / "net" / "logs"
    seen = [e for j in bad for e in read_events(logs / f"device{j}.jsonl")
            if e["event"] == "observed"]
    assert len(seen) == 2 and all(e["updates"] >= 1 for e in seen)
