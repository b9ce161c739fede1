"""The robust aggregation rules: their values, their selections, their bad-input behaviour,
and bit-identical results whatever the order of the updates, the thread count or the run."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from blockfl.aggregation import AggregationRule, FedAvg, WeightedUpdate
from blockfl.aggregation.kernels import grid_distances, squared_norm
from blockfl.aggregation.rules import clipped_fedavg, median, multi_krum, trimmed_mean
from blockfl.config import AGGREGATION_RULES, AggregationConfig, Config
from blockfl.protocol import Genesis, ProtocolSpec
from blockfl.tensors import tensor_hash

SHAPES = {"w": (6, 5), "b": (6,)}

NO_TASK = Genesis("none", bytes(32), {})  # the rules' specs need no model


def _updates(n: int, seed: int = 0, spread: float = 1.0) -> list[WeightedUpdate]:
    g = torch.Generator().manual_seed(seed)
    return [
        WeightedUpdate(f"0x{i + 1:040x}",
                       {k: torch.randn(s, generator=g) * spread for k, s in SHAPES.items()},
                       int(torch.randint(1, 500, (1,), generator=g)))
        for i in range(n)
    ]


def _base(seed: int = 9) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}


def _rule(name: str, **params) -> AggregationRule:
    return AggregationRule(AggregationConfig(rule=name, **params))


def _run(rule: AggregationRule, base, updates) -> bytes:
    kept, _ = rule.select(base, updates)
    return tensor_hash(rule.aggregate(base, kept))


@pytest.mark.parametrize("name", AGGREGATION_RULES)
def test_same_bytes_for_any_order_and_thread_count(name):
    base, updates = _base(), _updates(9)
    updates[3] = replace(updates[3], delta={k: v * 40 for k, v in updates[3].delta.items()})
    updates[4] = replace(updates[4], delta={k: -v for k, v in updates[4].delta.items()})
    rule = _rule(name, f=2, beta=0.2)
    expected = _run(rule, base, updates)
    threads = torch.get_num_threads()
    try:
        for i in range(6):
            torch.set_num_threads(1 + i % 2)
            shuffled = random.Random(i).sample(updates, len(updates))
            assert _run(rule, base, shuffled) == expected
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_median_is_numpy_median_of_the_deltas(n):
    base, updates = _base(), _updates(n, seed=n)
    got = median(base, updates)
    for name, b in base.items():
        stacked = np.stack([u.delta[name].numpy() for u in updates]).astype(np.float64)
        ref = (b.numpy().astype(np.float64) + np.median(stacked, axis=0)).astype(np.float32)
        assert np.array_equal(got[name].numpy(), ref), name


def test_trimmed_mean_drops_beta_n_at_each_end():
    base, updates = _base(), _updates(10, seed=3)
    got = trimmed_mean(base, updates, 0.2)
    for name, b in base.items():
        stacked = np.sort(np.stack([u.delta[name].numpy() for u in updates]), axis=0)
        ref = b.numpy().astype(np.float64) + stacked[2:8].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(got[name].numpy(), ref, rtol=1e-6, atol=1e-7)
    # beta 0 is the unweighted mean; a huge outlier moves it but not the trimmed one
    outlier = [*updates[:-1], replace(updates[-1], delta={k: v + 1e6 for k, v in
                                                          updates[-1].delta.items()})]
    assert float(trimmed_mean(base, outlier, 0.0)["w"].abs().max()) > 1e4
    assert float(trimmed_mean(base, outlier, 0.1)["w"].abs().max()) < 10


def test_median_ignores_sign_of_zero():
    base = {"w": torch.zeros(1)}
    signs = [WeightedUpdate(f"0x{i:02x}", {"w": torch.tensor([z])}, 1)
             for i, z in enumerate([-0.0, 0.0, -0.0])]
    out = {tensor_hash(median(base, random.Random(i).sample(signs, 3))) for i in range(6)}
    assert len(out) == 1


def test_krum_keeps_the_honest_cluster_and_excludes_the_rest():
    base = _base()
    honest = _updates(7, seed=1, spread=0.1)
    common = {k: torch.ones(s) for k, s in SHAPES.items()}
    honest = [replace(u, delta={k: v + common[k] for k, v in u.delta.items()}) for u in honest]
    attackers = [WeightedUpdate(f"0x{0xa0 + i:040x}", {k: -5 * v for k, v in common.items()},
                                100) for i in range(3)]
    updates = honest + attackers
    kept, excluded = _rule("multi_krum", f=3).select(base, updates)
    assert {u.device for u in kept} == {u.device for u in honest}
    assert {e.update.device for e in excluded} == {u.device for u in attackers}
    assert all(e.reason == "robust_filter" for e in excluded)
    kept, excluded = _rule("krum", f=3).select(base, updates)
    assert len(kept) == 1 and kept[0].device in {u.device for u in honest}
    assert len(excluded) == 9
    # Multi-Krum with m keeps exactly m
    kept, _ = _rule("multi_krum", f=3, m=4).select(base, updates)
    assert len(kept) == 4


def test_krum_falls_back_to_every_update_when_the_block_is_too_small():
    base, updates = _base(), _updates(4)
    kept, excluded = _rule("multi_krum", f=2).select(base, updates)  # needs f + 3 = 5
    assert len(kept) == 4 and excluded == []
    kept, excluded = _rule("krum", f=1).select(base, updates)  # 4 >= f + 3: scores
    assert len(kept) == 1 and len(excluded) == 3


def test_krum_distances_are_exact_integers_on_the_grid():
    updates = _updates(4, seed=5)
    tensors = [[u.delta[k] for k in SHAPES] for u in updates]
    got, squares = grid_distances(tensors)
    flat = [torch.cat([t.reshape(-1) for t in ts]).double() for ts in tensors]
    peak = max(float(f.abs().max()) for f in flat)
    bits = 20
    q = [[int(v) for v in torch.round(f * (2.0**bits / peak)).tolist()] for f in flat]
    for i in range(4):
        for j in range(4):
            assert got[i][j] == sum((a - b) ** 2 for a, b in zip(q[i], q[j], strict=True))
        assert squares[i] == sum(a * a for a in q[i])
    # Krum (f = 1, one neighbour) keeps the update whose nearest other is nearest
    scores = [min(got[i][j] for j in range(4) if j != i) for i in range(4)]
    kept, _ = multi_krum(_base(), updates, f=1, m=1)
    assert kept == [updates[min(range(4), key=lambda i: (scores[i], i))]]


def test_krum_distances_stay_exact_at_the_grid_bound():
    """Odd grid values next to the 20-bit peak over three chunks' length: one BLAS sum over more
    than a chunk would pass 2**53 and lose the odd low bits."""
    length = 3 * 4096 + 5
    near = 1.0 - 2.0**-20  # 2**20 - 1 on the grid: an odd square close to 2**40
    pattern = torch.where(torch.arange(length) % 3 == 0, -near, near)
    rows = [torch.full((length,), near), -pattern, pattern * 0.75, torch.full((length,), -near)]
    tensors = [[r, torch.ones(1)] for r in rows]  # the peak, 1.0, puts `near` on 2**20 - 1
    got, squares = grid_distances(tensors)
    q = [[int(v) for v in torch.round(torch.cat(ts).double() * 2.0**20).tolist()]
         for ts in tensors]
    assert q[0][0] == 2**20 - 1 and sum(v * v for v in q[0]) > 2**53
    for i in range(4):
        assert squares[i] == sum(a * a for a in q[i])
        for j in range(4):
            assert got[i][j] == sum((a - b) ** 2 for a, b in zip(q[i], q[j], strict=True))


def test_krum_excludes_free_riders_before_scoring():
    base, updates = _base(), _updates(7, seed=2)
    g = torch.Generator().manual_seed(4)
    riders = [WeightedUpdate(f"0x{0xf0 + i:040x}",
                             {k: torch.randn(s, generator=g) * 1e-5 for k, s in SHAPES.items()},
                             300) for i in range(3)]
    for rule in ("krum", "multi_krum"):
        kept, excluded = _rule(rule, f=3).select(base, updates + riders)
        assert not {u.device for u in kept} & {u.device for u in riders}
        assert "free-rider" in " ".join(e.detail for e in excluded)
    kept, _ = _rule("multi_krum", f=3, min_norm_ratio=0.0).select(base, updates + riders)
    assert {u.device for u in riders} <= {u.device for u in kept}  # without the filter


def test_clipped_fedavg_scales_long_updates_to_the_bound():
    base = {"w": torch.zeros(2)}
    updates = [WeightedUpdate("0x01", {"w": torch.tensor([3.0, 4.0])}, 1),
               WeightedUpdate("0x02", {"w": torch.tensor([30.0, 40.0])}, 1),
               WeightedUpdate("0x03", {"w": torch.tensor([0.6, 0.8])}, 2)]
    got = clipped_fedavg(base, updates, 1.0)["w"]  # every update clipped to norm 1
    torch.testing.assert_close(got, torch.tensor([0.6, 0.8]))
    got = clipped_fedavg(base, updates, 0.0)["w"]  # the median norm: 5
    torch.testing.assert_close(got, torch.tensor([(3 + 3 + 1.2) / 4, (4 + 4 + 1.6) / 4]))
    assert squared_norm([torch.tensor([3.0, 4.0])]) == 25.0


def test_fedavg_rule_is_the_default_and_keeps_every_update():
    base, updates = _base(), _updates(5)
    assert FedAvg().config == AggregationRule().config == AggregationConfig()
    assert tensor_hash(FedAvg().aggregate(base, updates)) == _run(_rule("fedavg"), base, updates)
    spec = ProtocolSpec.from_config(Config(), NO_TASK)
    kept, excluded = AggregationRule(spec.aggregation).select(base, updates)
    assert len(kept) == 5 and excluded == []


@pytest.mark.parametrize(("params", "message"), [
    ({"rule": "average"}, "unknown"),
    ({"beta": 0.5}, "beta"),
    ({"beta": -0.1}, "beta"),
    ({"f": -1}, ">= 0"),
    ({"min_norm_ratio": 1.0}, "min_norm_ratio"),
])
def test_rule_parameters_out_of_range_are_config_errors(params, message):
    with pytest.raises(ValueError, match=message):
        AggregationConfig(**params)


def test_krum_f_of_half_the_devices_is_a_config_error():
    config = Config()
    config = replace(config, aggregation=AggregationConfig(rule="krum", f=5))
    with pytest.raises(ValueError, match="f = 5 out of range for 10 devices"):
        ProtocolSpec.from_config(config, NO_TASK)
    ok = replace(config, aggregation=AggregationConfig(rule="krum", f=4))
    ProtocolSpec.from_config(ok, NO_TASK)
