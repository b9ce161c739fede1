"""Time to a target accuracy: the wall-clock latency (the model's) at which each run first
reaches ``malfunction.target_accuracy``, and its distribution over seeds."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from blockfl.malfunction.experiment import MalfunctionResults
from blockfl.malfunction.handouts import SYSTEMS


@dataclass(frozen=True)
class TimeToTarget:
    """One run: the first round reaching the target and the cumulative latency then
    (``None`` and ``inf`` when no round does)."""

    system: str
    p: float
    seed: int
    round: int | None
    latency: float


@dataclass(frozen=True)
class TargetSummary:
    """Time to target of one system at one ``p`` over seeds: how many seeds reached it, the
    mean and 95% Student-t confidence half-width over those, and the median over all seeds
    (``inf`` when half or more never reached it)."""

    system: str
    p: float
    seeds: int
    reached: int
    mean: float
    half_width: float
    median: float


def times_to_target(results: MalfunctionResults) -> list[TimeToTarget]:
    """Every (system, p, seed) run's time to ``malfunction.target_accuracy``."""
    target = results.config.malfunction.target_accuracy
    out = []
    for seed in results.seeds:
        for p in results.p_values:
            for system in SYSTEMS:
                hit = next((r for r in results.trajectory(system, p, seed)
                            if r.accuracy >= target), None)
                out.append(TimeToTarget(system, p, seed, None if hit is None else hit.round + 1,
                                        math.inf if hit is None else hit.cumulative_latency))
    return out


def summarize(times: list[TimeToTarget]) -> list[TargetSummary]:
    """One :class:`TargetSummary` per (p, system), in p then system order."""
    out = []
    for p in sorted({t.p for t in times}):
        for system in SYSTEMS:
            values = [t.latency for t in times if t.p == p and t.system == system]
            reached = [v for v in values if math.isfinite(v)]
            n = len(reached)
            mean = statistics.fmean(reached) if reached else math.inf
            half = (float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(reached) / math.sqrt(n)
                    if n > 1 else math.nan)
            out.append(TargetSummary(system, p, len(values), n, mean, half,
                                     statistics.median(values)))
    return out
