"""The rules from the literature (geomed, centered_clip, trust): their values against
straightforward reference implementations, trust's exact cosine gates, who it pays, and one
model hash on a real node. Order and thread-count independence, and evm/local agreement, are
tested for every rule in tests/test_robust_rules.py and tests/test_attacks.py."""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from blockfl.aggregation import AggregationRule, WeightedUpdate
from blockfl.aggregation.centres import NU, buckets, centered_clip, geometric_median
from blockfl.aggregation.trust import at_least
from blockfl.config import AggregationConfig
from blockfl.tensors import tensor_hash

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


#: digests of each rule's model on `_pinned_case`, computed before norms and distances moved into
#: a compiled loop (commit 1649a1f): any change to how they are computed must keep every bit
PINNED = {
    "clipped_fedavg": ("3001bc78a4b0973823162968b62c64a118a18cbf5010df477478b7903f3f6543", 13),
    "geomed": ("6641aef6e26207be651322d62ce7a20b208128fef5972a62ba88d254a3470227", 13),
    "centered_clip": ("433ad1cf77a4972da81031d4d8543670a32123fd67aeea5afcc4f419940578e0", 13),
    "trust": ("ab60153d861abfb738cf84587d40c3169d77085debcd5efd06db52437030872e", 7),
}


def _pinned_case():
    """13 seeded float32 updates around a common direction, magnitudes 1e-3 to 1, every fifth
    one flipped and tripled, layers of odd and even sizes."""
    rng = np.random.default_rng(11)
    shapes = {"a.weight": (37, 29), "a.bias": (37,), "b.weight": (5, 37)}
    base = {k: torch.from_numpy(rng.standard_normal(s).astype(np.float32))
            for k, s in shapes.items()}
    common = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    updates = []
    for i in range(13):
        scale = 10.0 ** rng.uniform(-3, 0)
        delta = {k: torch.from_numpy(((common[k] + 0.5 * rng.standard_normal(s)) * scale)
                                     .astype(np.float32)) for k, s in shapes.items()}
        if i % 5 == 4:
            delta = {k: -3 * v for k, v in delta.items()}
        updates.append(WeightedUpdate(f"0x{i + 1:040x}", delta, int(rng.integers(20, 400))))
    return base, updates


@pytest.mark.parametrize("rule", list(PINNED))
def test_the_rules_bits_are_pinned(rule):
    base, updates = _pinned_case()
    chosen = AggregationRule(AggregationConfig(rule=rule, f=3))
    kept, _ = chosen.select(base, updates)
    assert (tensor_hash(chosen.aggregate(base, kept)).hex(), len(kept)) == PINNED[rule]


def test_the_weiszfeld_steps_reused_for_the_same_updates_are_the_steps_made_anew():
    base, updates = _pinned_case()
    other = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
             for k, v in base.items()}
    cases = [(base, None, 8), (other, None, 8), (base, [0.5] * 13, 8), (base, None, 3),
             (base, None, 8)]
    # each with fresh objects (nothing to reuse), then all with the same objects in turn
    cold = [tensor_hash(geometric_median(b, [dataclasses.replace(u) for u in updates], n, s))
            for b, s, n in cases]
    for (b, scales, steps), want in zip(cases, cold, strict=True):
        assert tensor_hash(geometric_median(b, updates, steps, scales)) == want
        assert tensor_hash(geometric_median(b, updates, steps, scales)) == want  # reused


def test_the_reused_weiszfeld_weights_keep_no_update_alive():
    import gc
    import weakref

    base, updates = _pinned_case()
    geometric_median(base, updates, 2)
    refs = [weakref.ref(u) for u in updates]
    del updates
    gc.collect()
    assert all(ref() is None for ref in refs)
