"""The rules from the literature (geomed, centered_clip, trust): their values against
straightforward reference implementations, trust's exact cosine gates, who it pays, and one
model hash on a real node. Order and thread-count independence, and evm/local agreement, are
tested for every rule in tests/test_robust_rules.py and tests/test_attacks.py."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from blockfl.aggregation import AggregationRule, WeightedUpdate
from blockfl.aggregation.centres import NU, buckets, centered_clip, geometric_median
from blockfl.aggregation.trust import at_least
from blockfl.config import AggregationConfig

SHAPES = {"w": (5, 4), "b": (4,)}


def _updates(n: int, seed: int = 0, common: float = 0.5) -> list[WeightedUpdate]:
    g = torch.Generator().manual_seed(seed)
    shift = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    return [WeightedUpdate(f"0x{i + 1:040x}",
                           {k: common * shift[k] + torch.randn(s, generator=g)
                            for k, s in SHAPES.items()}, 20 + 7 * i) for i in range(n)]


def _base() -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s) for k, s in SHAPES.items()}


def _flat(d: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([d[k].double().numpy().reshape(-1) for k in SHAPES])


def _weiszfeld(points: np.ndarray, weights: np.ndarray, steps: int) -> np.ndarray:
    beta = weights.copy()
    for _ in range(steps):
        z = (beta[:, None] * points).sum(0) / beta.sum()
        beta = weights / np.maximum(NU, np.linalg.norm(points - z, axis=1))
    return (beta[:, None] * points).sum(0) / beta.sum()


def test_geomed_is_the_weiszfeld_geometric_median():
    updates = _updates(7)
    got = _flat(geometric_median(_base(), updates, 8))
    want = _weiszfeld(np.stack([_flat(u.delta) for u in updates]),
                      np.array([u.n_samples for u in updates], float), 8)
    assert np.allclose(got, want, atol=1e-5)
    # an outlier far away moves the mean, barely the median
    far = [*updates, WeightedUpdate("0x" + "e" * 40, {k: v * 1e3 for k, v in
                                                      updates[0].delta.items()}, 30)]
    moved = _flat(geometric_median(_base(), far, 8))
    assert np.linalg.norm(moved - got) < 0.2 * np.linalg.norm(got)


def test_centered_clip_clips_bucket_means_around_their_median():
    updates = _updates(8)
    base = _base()
    groups = buckets(base, updates, 2)
    assert sorted(i for g in groups for i in g) == list(range(8))
    assert groups == buckets(base, list(reversed(updates)), 2)  # a function of the base only
    means = []
    for g in groups:
        w = np.array([updates[i].n_samples for i in g], float)
        means.append((w[:, None] * np.stack([_flat(updates[i].delta) for i in g])).sum(0)
                     / w.sum())
    m = np.stack(means)
    v = np.median(m, axis=0)
    tau = np.median(np.linalg.norm(m - v, axis=1))
    for _ in range(3):
        gaps = m - v
        lengths = np.linalg.norm(gaps, axis=1)
        v = v + (np.minimum(1.0, tau / lengths)[:, None] * gaps).sum(0) / len(m)
    assert np.allclose(_flat(centered_clip(base, updates, 2, 3)), v, atol=1e-5)


def test_exact_cosine_gate_agrees_with_floating_point_away_from_ties():
    rng = random.Random(3)
    for _ in range(2000):
        a = [rng.randint(-50, 50) for _ in range(4)]
        b = [rng.randint(-50, 50) for _ in range(4)]
        t = Fraction(rng.randint(-100, 100), 100)
        inner = sum(x * y for x, y in zip(a, b, strict=True))
        sa, sb = sum(x * x for x in a), sum(y * y for y in b)
        if sa == 0 or sb == 0:
            continue
        cosine = inner / (sa * sb) ** 0.5
        if abs(cosine - float(t)) > 1e-9:
            assert at_least(inner, sa, sb, t) == (cosine >= float(t))
    assert at_least(3, 9, 1, Fraction(1))  # parallel: exactly 1
    assert not at_least(0, 4, 4, Fraction(1, 100)) and at_least(0, 4, 4, Fraction(0))


def _trust(**params) -> AggregationRule:
    return AggregationRule(AggregationConfig(rule="trust", **params))


def test_trust_excludes_flippers_copies_boosts_and_free_riders_and_pays_honest_devices():
    honest = _updates(7)
    flipped = [WeightedUpdate(f"0x{0xa0 + i:040x}", {k: -v for k, v in honest[i].delta.items()},
                              honest[i].n_samples) for i in range(2)]
    g = torch.Generator().manual_seed(5)
    copies = [WeightedUpdate(f"0x{0xb0 + i:040x}",
                             {k: v + 1e-6 * torch.randn(v.shape, generator=g)
                              for k, v in honest[3].delta.items()}, 30) for i in range(2)]
    rider = WeightedUpdate("0x" + "c" * 40, {k: 1e-5 * v for k, v in honest[1].delta.items()},
                           30)
    boosted = WeightedUpdate("0x" + "d" * 40, {k: 10 * v for k, v in honest[2].delta.items()},
                             30)
    kept, excluded = _trust().select(_base(), [*honest, *flipped, *copies, rider, boosted])
    why = {e.update.device: e.detail for e in excluded}
    assert "boosted" in why[boosted.device]
    # honest[3] is paid not at all either: a copy cannot be told from its original
    assert {u.device for u in kept} == {u.device for u in honest} - {honest[3].device}
    assert all("near-duplicate" in why[c.device] for c in [*copies, honest[3]])
    assert all("geometric median" in why[f.device] for f in flipped)
    assert "free-rider" in why[rider.device]


def test_trust_flags_no_honest_pair_as_duplicates_at_its_threshold():
    _, excluded = _trust().select(_base(), _updates(10, seed=7, common=3.0))
    assert not [e for e in excluded if "near-duplicate" in e.detail]


@pytest.mark.anvil
def test_trust_agrees_on_anvil(tmp_path, anvil_url):
    from tests.test_attacks import _agreeing_run

    local = _agreeing_run(tmp_path / "local", "trust", ledger="local")
    assert _agreeing_run(tmp_path / "anvil", "trust", ledger="evm", rpc_url=anvil_url) == local
