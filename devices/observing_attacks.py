"""Attacks that read the round's other updates before they sign: ALIE, inner-product
manipulation, min-max, an attacker that knows the rule, and colluders.

An attacker sees what any miner holds: the verified, gossiped updates of the round
(`Observed`). Every estimate is taken in float64 over the updates in device order, so an attack
is a deterministic function of what it observed; the result has the delta's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import torch

from blockfl.aggregation import AggregationStrategy, WeightedUpdate
from blockfl.tensors import StateDict

BISECTION_STEPS = 40  # min-max's gamma: the bracket shrinks 2**40 times
ADAPTIVE_STEPS = 12  # adaptive: rule evaluations after the first, each halving the bracket


@dataclass(frozen=True)
class Observed:
    """What an attacker knows when it signs: the round's base model, the other updates a miner
    holds, the rule every miner runs (a consensus parameter), and its own address and count."""

    base: StateDict
    updates: tuple[WeightedUpdate, ...]
    rule: AggregationStrategy | None
    device: str
    samples: int

    def others(self, own: StateDict) -> list[StateDict]:
        """The deltas of the other devices' updates in device order, or `[own]` (the attacker's
        honestly trained update) when it observed none."""
        mine = self.device.lower()
        seen = sorted((u for u in self.updates if u.device.lower() != mine),
                      key=lambda u: u.device.lower())
        return [u.delta for u in seen] or [own]


def _stacked(deltas: Sequence[StateDict], name: str) -> torch.Tensor:
    return torch.stack([d[name].to(torch.float64) for d in deltas])


def _cast(values: dict[str, torch.Tensor], like: StateDict) -> StateDict:
    return {k: values[k].to(like[k].dtype) for k in sorted(like)}


def mean_of(deltas: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """The coordinate-wise float64 mean of the deltas."""
    return {k: _stacked(deltas, k).mean(0) for k in sorted(deltas[0])}


def alie(deltas: Sequence[StateDict], z: float) -> StateDict:
    """Per value, mean + z x standard deviation (population: n in the denominator)."""
    return _cast({k: _stacked(deltas, k).mean(0) + z * _stacked(deltas, k).std(0, correction=0)
                  for k in sorted(deltas[0])}, deltas[0])


def alie_z(devices: int, attackers: int) -> float:
    """ALIE's z_max for n devices and m attackers: s = floor(n/2 + 1) - m supporters needed,
    z = Phi^-1((n - s) / n), the quantile within which the attack still looks typical (the
    fraction kept within [1/2, 1 - 1/(2n)], so z is finite and at least 0)."""
    supporters = devices // 2 + 1 - attackers
    share = min(max(devices - supporters, devices / 2), devices - 0.5) / devices
    return NormalDist().inv_cdf(share)


def ipm(deltas: Sequence[StateDict], epsilon: float) -> StateDict:
    """-epsilon x the mean of the deltas."""
    return _cast({k: -epsilon * v for k, v in mean_of(deltas).items()}, deltas[0])


def _flat(values: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([values[k].reshape(-1).to(torch.float64) for k in sorted(values)])


def min_max(deltas: Sequence[StateDict]) -> StateDict:
    """mean - gamma x mean / |mean|, gamma the largest (bisection, `BISECTION_STEPS`) for which
    its largest distance to a delta is at most the largest distance between two deltas."""
    mean = mean_of(deltas)
    flat = torch.stack([_flat(d) for d in deltas])
    centre = _flat(mean)
    length = float(torch.linalg.vector_norm(centre))
    if length == 0.0:
        return _cast(mean, deltas[0])
    direction = -centre / length
    bound = float(torch.cdist(flat, flat).max())
    low, high = 0.0, 2.0 * bound + float(torch.cdist(centre[None], flat).max())
    for _ in range(BISECTION_STEPS):
        gamma = (low + high) / 2
        if float(torch.cdist((centre + gamma * direction)[None], flat).max()) <= bound:
            low = gamma
        else:
            high = gamma
    scale = -low / length
    return _cast({k: v + scale * v for k, v in mean.items()}, deltas[0])


def adaptive(own: StateDict, observed: Observed, max_scale: float) -> StateDict:
    """-s x `own`, s the largest the rule keeps in the block next to the observed updates:
    `max_scale` if the rule keeps that, else bisection on (0, max_scale] (`ADAPTIVE_STEPS`
    evaluations), ending at the smallest s tried if none passes. Without a rule: -max_scale."""
    def sent(s: float) -> StateDict:
        return {k: own[k] * -s for k in sorted(own)}

    def kept(s: float) -> bool:
        rule = observed.rule
        assert rule is not None
        mine = WeightedUpdate(observed.device, sent(s), observed.samples)
        others = [u for u in observed.updates if u.device.lower() != observed.device.lower()]
        selection = rule.select(observed.base, [*others, mine])
        return any(u.device.lower() == observed.device.lower() for u in selection.kept)

    if observed.rule is None or kept(max_scale):
        return sent(max_scale)
    low, high = max_scale / 2**ADAPTIVE_STEPS, max_scale
    for _ in range(ADAPTIVE_STEPS):
        middle = (low + high) / 2
        if kept(middle):
            low = middle
        else:
            high = middle
    return sent(low)
