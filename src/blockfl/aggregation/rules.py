"""The aggregation rules: which updates a block keeps, and how they make the next global model.

A rule is a consensus parameter (`[aggregation]` in the config, part of the protocol spec): a
miner builds its candidate block with it and every peer and device checks blocks with it, so
each rule is a pure function of the base model and the updates, with a fixed order (updates
sorted by device address) and deterministic kernels (`blockfl.aggregation.kernels`).

- `fedavg`: the mean of the deltas weighted by sample count.
- `median`: the coordinate-wise median (mean of the two middle values for an even count).
- `trimmed_mean`: per coordinate, drop the `floor(beta * n)` smallest and largest values and
  average the rest.
- `krum` / `multi_krum`: exclude free-riders (an L2 norm below `min_norm_ratio` times the
  block's median), score each other update by the sum of squared distances to its
  `n - f - 2` nearest others, keep the `m` lowest scores (krum: 1, multi_krum: `m`, or
  `n - f` of all `n` when `m` is 0: excluded free-riders count towards `f`), then FedAvg over
  those. The others are *excluded*: they never
  enter the block, so they are never paid.
- `clipped_fedavg`: scale every delta whose L2 norm exceeds the bound down to it (the bound:
  `clip`, or the median norm of the block's updates when `clip` is 0), then FedAvg.
- `geomed`: the sample-weighted geometric median (RFA: `iterations` Weiszfeld steps).
- `centered_clip`: centered clipping over buckets of `bucket` updates (`iterations` steps).
  Both are in `blockfl.aggregation.centres`; neither excludes an update.
- `trust`: excludes free-riders, near-duplicate updates (Sybils) and updates not aligned with
  the block's geometric median, then takes the clipped geometric median of the rest
  (`blockfl.aggregation.trust`): one rule decides both the model and who is paid.

Too few updates: a rule never fails for lack of updates. Krum and Multi-Krum need
`n >= f + 3` to score (at least one neighbour each); with fewer they keep every update that
is not a free-rider (FedAvg).
The median and trimmed mean work for any `n >= 1` (`floor(beta * n) < n / 2` always).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from blockfl.aggregation.centres import centered_clip, geometric_median
from blockfl.aggregation.kernels import (
    grid_distances,
    order_statistic_mean,
    squared_norm,
    weighted_mean,
)
from blockfl.aggregation.trust import trust_aggregate, trust_select
from blockfl.aggregation.updates import WeightedUpdate, ordered_updates
from blockfl.config import AggregationConfig
from blockfl.tensors import StateDict

ROBUST_FILTER = "robust_filter"  # the reason an excluded update is logged and journaled with


class Exclusion(NamedTuple):
    """An update a rule kept out of the block, and why."""

    update: WeightedUpdate
    reason: str
    detail: str


class Selection(NamedTuple):
    """The updates a block keeps (in block order) and those the rule excluded."""

    kept: list[WeightedUpdate]
    excluded: list[Exclusion]


def fedavg(base: StateDict, updates: Sequence[WeightedUpdate]) -> StateDict:
    """``base + sum_i(n_i * delta_i) / sum_i(n_i)`` over updates in block order."""
    ordered = ordered_updates(base, updates)
    weights = [u.n_samples for u in ordered]
    total = sum(weights)
    return {
        name: weighted_mean(b, [u.delta[name] for u in ordered], weights, total)
        for name, b in base.items()
    }


def _order_statistic(base: StateDict, updates: Sequence[WeightedUpdate], trim: int) -> StateDict:
    ordered = ordered_updates(base, updates)
    n = len(ordered)
    low, high = ((n - 1) // 2, n // 2 + 1) if trim < 0 else (trim, n - trim)
    return {
        name: order_statistic_mean(b, [u.delta[name] for u in ordered], low, high)
        for name, b in base.items()
    }


def median(base: StateDict, updates: Sequence[WeightedUpdate]) -> StateDict:
    """``base`` plus the coordinate-wise median of the deltas (unweighted)."""
    return _order_statistic(base, updates, -1)


def trimmed_mean(base: StateDict, updates: Sequence[WeightedUpdate], beta: float) -> StateDict:
    """``base`` plus the coordinate-wise mean of the deltas without the ``floor(beta * n)``
    smallest and largest values (unweighted)."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"trimmed mean needs 0 <= beta < 0.5, got {beta}")
    return _order_statistic(base, updates, int(beta * len(updates)))


def norms(base: StateDict, updates: Sequence[WeightedUpdate]) -> list[float]:
    """Each update's L2 norm (deterministic), tensors in the base model's order."""
    return [squared_norm([u.delta[name] for name in base]) ** 0.5 for u in updates]


def clipped_fedavg(base: StateDict, updates: Sequence[WeightedUpdate], clip: float) -> StateDict:
    """FedAvg of the deltas, each scaled to L2 norm at most ``clip`` (0: the median norm)."""
    ordered = ordered_updates(base, updates)
    lengths = norms(base, ordered)
    bound = clip if clip > 0 else statistics.median(lengths)
    weights = [
        u.n_samples * (bound / norm if norm > bound else 1.0)
        for u, norm in zip(ordered, lengths, strict=True)
    ]
    total = sum(u.n_samples for u in ordered)
    return {
        name: weighted_mean(b, [u.delta[name] for u in ordered], weights, total)
        for name, b in base.items()
    }


def multi_krum(
    base: StateDict, updates: Sequence[WeightedUpdate], f: int, m: int,
    min_norm_ratio: float = 0.0,
) -> Selection:
    """Multi-Krum with a free-rider filter (Krum is ``m = 1``).

    First, updates whose squared norm is below ``min_norm_ratio**2`` times the block's median
    squared norm are excluded: they carry (almost) no work, and a few of them would otherwise
    form the tightest cluster Krum prefers. Then each remaining update is scored by the sum of
    its ``n - f - 2`` smallest squared distances to the others, and the ``m`` lowest scores are
    kept (``m = 0``: ``n - f`` of the block's ``n`` updates, so free-riders the filter excluded
    count towards the ``f`` it drops; ties: lower device address first). Norms and distances
    are exact integers on the fixed-point grid of `kernels.grid_distances`. With fewer than
    ``f + 3`` remaining updates, or at least as many to keep as remain, every remaining update
    is kept.
    """
    ordered = ordered_updates(base, updates)
    n = len(ordered)
    dist, squares = grid_distances([[u.delta[name] for name in base] for u in ordered])
    floor = min_norm_ratio**2 * statistics.median(squares)
    why = {i: f"L2 norm below {min_norm_ratio} x the block's median: no work (a free-rider)"
           for i in range(n) if squares[i] < floor}
    rest = [i for i in range(n) if i not in why]
    keep = m or n - f
    if len(rest) >= f + 3 and keep < len(rest):
        k = len(rest) - f - 2
        scores = {i: sum(sorted(dist[i][j] for j in rest if j != i)[:k]) for i in rest}
        ranked = sorted(rest, key=lambda i: (scores[i], i))
        for rank, i in enumerate(ranked[keep:], start=keep + 1):
            why[i] = f"krum score ranks {rank} of {len(rest)}; the block keeps the {keep} lowest"
    return Selection([u for i, u in enumerate(ordered) if i not in why],
                     [Exclusion(ordered[i], ROBUST_FILTER, why[i]) for i in sorted(why)])


@dataclass(frozen=True)
class AggregationRule:
    """A configured rule: `select` decides the block's updates, `aggregate` combines them."""

    config: AggregationConfig = field(default_factory=AggregationConfig)

    @property
    def name(self) -> str:
        """The rule's name (`[aggregation] rule`)."""
        return self.config.rule

    def select(self, base: StateDict, updates: Sequence[WeightedUpdate]) -> Selection:
        """Which updates enter the block (block order) and which the rule excludes."""
        c = self.config
        if c.rule in ("krum", "multi_krum"):
            return multi_krum(base, updates, c.f, 1 if c.rule == "krum" else c.m,
                              c.min_norm_ratio)
        if c.rule == "trust":
            ordered, why, kept = trust_select(base, updates, c)
            return Selection(kept, [Exclusion(ordered[i], ROBUST_FILTER, why[i])
                                    for i in sorted(why)])
        return Selection(ordered_updates(base, updates), [])

    def aggregate(self, base: StateDict, updates: Sequence[WeightedUpdate]) -> StateDict:
        """The next global model from the block's (already selected) updates."""
        c = self.config
        if c.rule == "median":
            return median(base, updates)
        if c.rule == "trimmed_mean":
            return trimmed_mean(base, updates, c.beta)
        if c.rule == "clipped_fedavg":
            return clipped_fedavg(base, updates, c.clip)
        if c.rule == "geomed":
            return geometric_median(base, updates, c.iterations)
        if c.rule == "centered_clip":
            return centered_clip(base, updates, c.bucket, c.iterations)
        if c.rule == "trust":
            return trust_aggregate(base, updates, c)
        return fedavg(base, updates)  # fedavg, and krum / multi_krum over the kept updates


class FedAvg(AggregationRule):
    """The default rule: FedAvg weighted by sample count, nothing excluded."""
