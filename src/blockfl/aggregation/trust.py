"""`trust`: one deterministic rule for which updates a block pays and how they make the model.

Every peer re-runs it on a block's updates and those its miner excluded (`selection_mismatch`).

1. Free-riders and boosted updates: an update whose squared norm is below
   ``min_norm_ratio**2`` times the block's median is excluded (no work), and one above
   ``max_norm_ratio**2`` times it (a boosted or noise update: its direction would weigh on the
   reference of step 3 out of proportion; 0: no ceiling).
2. Sybils: updates whose cosine similarity is at least ``duplicate_cosine`` are near-duplicates
   under different keys; every member of such a pair is excluded (paid not at all: a copy
   cannot be told from its original, and paying one would pay whoever signed first).
3. Trust: the others' geometric median is taken (each update clipped to ``clip_factor`` x
   their median norm, so that a boosted attack counts no more than a long honest update; 0:
   no clipping); an update whose cosine with it is below ``min_cosine`` is excluded.
4. The model: the same (clipped) geometric median over the updates the block keeps.

Cosines are decided exactly: updates (and the median) are quantized to the common fixed-point
grid of `kernels.grid_distances`, whose inner products are exact integers, and ``cos >= t`` is
tested as ``g > 0 and g**2 * q**2 >= p**2 * |a|**2 * |b|**2`` with ``t = p / q`` (the
decimal value of the parameter) in Python integers. If a step would leave no update, the
block keeps those that entered it (a rule never fails for lack of updates), and the gate (3)
needs at least three updates.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from fractions import Fraction

import torch

from blockfl.aggregation.centres import geometric_median
from blockfl.aggregation.kernels import grid_distances, squared_norm
from blockfl.aggregation.updates import WeightedUpdate, ordered_updates
from blockfl.config import AggregationConfig
from blockfl.tensors import StateDict


def _gram(updates: Sequence[StateDict], base: StateDict) -> tuple[list[list[int]], list[int]]:
    """Exact inner products and squared norms on the grid (tensors in the base's order)."""
    dist, squares = grid_distances([[u[k] for k in base] for u in updates])
    n = len(updates)
    return ([[(squares[i] + squares[j] - dist[i][j]) // 2 for j in range(n)] for i in range(n)],
            squares)


def at_least(inner: int, square_a: int, square_b: int, cosine: Fraction) -> bool:
    """Whether ``inner / sqrt(square_a * square_b) >= cosine``, exactly (a zero vector's
    cosine counts as 0)."""
    if square_a == 0 or square_b == 0:
        return cosine <= 0
    lhs, p = inner * cosine.denominator, cosine.numerator  # lhs >= p * sqrt(a * b) ?
    if (lhs >= 0) != (p > 0):
        return lhs >= 0
    holds = lhs * lhs >= p * p * square_a * square_b
    return holds if lhs >= 0 else lhs * lhs <= p * p * square_a * square_b


def clip_scales(base: StateDict, updates: Sequence[WeightedUpdate], factor: float) -> list[float]:
    """Per update, the factor that clips it to `factor` x the updates' median L2 norm (all 1
    for `factor` 0: no clipping)."""
    if factor == 0:
        return [1.0] * len(updates)
    norms = [squared_norm([u.delta[k] for k in base]) ** 0.5 for u in updates]
    bound = factor * statistics.median(norms)
    return [bound / norm if norm > bound else 1.0 for norm in norms]


def _clipped_median(base: StateDict, updates: Sequence[WeightedUpdate],
                    config: AggregationConfig) -> StateDict:
    return geometric_median(base, updates, config.iterations,
                            clip_scales(base, updates, config.clip_factor))


def trust_select(
    base: StateDict, updates: Sequence[WeightedUpdate], config: AggregationConfig
) -> tuple[list[WeightedUpdate], dict[int, str], list[WeightedUpdate]]:
    """Block order, then why each excluded index is excluded, and the kept updates."""
    ordered = ordered_updates(base, updates)
    n = len(ordered)
    inner, squares = _gram([u.delta for u in ordered], base)
    floor = config.min_norm_ratio**2 * statistics.median(squares)
    why = {i: f"L2 norm below {config.min_norm_ratio} x the block's median: no work "
              "(a free-rider)" for i in range(n) if squares[i] < floor}
    ceiling = config.max_norm_ratio**2 * statistics.median(squares)
    why |= {i: f"L2 norm above {config.max_norm_ratio} x the block's median: boosted"
            for i in range(n) if config.max_norm_ratio and squares[i] > ceiling}
    rest = [i for i in range(n) if i not in why]
    same = Fraction(str(config.duplicate_cosine))
    twins = {a: b for a in rest for b in reversed(rest)
             if a != b and at_least(inner[a][b], squares[a], squares[b], same)}
    candidates = [i for i in rest if i not in twins]
    if candidates:
        why |= {i: f"a near-duplicate (cosine >= {config.duplicate_cosine}) of "
                   f"{ordered[j].device}: a Sybil copy" for i, j in twins.items()}
    else:
        candidates = rest
    if len(candidates) >= 3:
        chosen = [ordered[i] for i in candidates]
        zero = {k: torch.zeros_like(b) for k, b in base.items()}
        g, sq = _gram([*(u.delta for u in chosen),
                       _clipped_median(zero, chosen, config)], base)
        least = Fraction(str(config.min_cosine))
        low = [i for row, i in enumerate(candidates)
               if not at_least(g[row][-1], sq[row], sq[-1], least)]
        if len(low) < len(candidates):
            why |= {i: f"cosine with the block's geometric median below {config.min_cosine}"
                    for i in low}
    return ordered, why, [u for i, u in enumerate(ordered) if i not in why]


def trust_aggregate(base: StateDict, updates: Sequence[WeightedUpdate],
                    config: AggregationConfig) -> StateDict:
    """The model from the kept updates: their clipped geometric median."""
    return _clipped_median(base, ordered_updates(base, updates), config)
