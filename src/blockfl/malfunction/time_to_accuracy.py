"""Time to a target accuracy: the wall-clock latency (the model's) at which each run first
reaches ``malfunction.target_accuracy``, and its distribution over seeds.

A run that never reaches the target within its rounds has time ``inf`` (it is censored at
``run_latency``). Over seeds a system is summarised by how many seeds reached the target and
the median time over all seeds (``inf`` when half or more never reached it, never a mean over
the seeds that happened to reach it), with a seeded percentile-bootstrap 95% interval: its ends
are medians of resampled seeds, so they are positive times (or ``inf``). Runs of one seed share
the data split, initial model and latency draws at every ``p``, so the cost of malfunction is
the paired ratio ``time(p) / time(p_0)`` of each seed, summarised the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blockfl.malfunction.experiment import MalfunctionResults
from blockfl.malfunction.handouts import SYSTEMS

BOOTSTRAP_RESAMPLES = 10_000
"""Resamples of the seeds behind every bootstrap interval."""

BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's generator: the same outputs give the same intervals."""


@dataclass(frozen=True)
class TimeToTarget:
    """One run: the first round reaching the target and the cumulative latency then
    (``None`` and ``inf`` when no round does), and the latency of the whole run."""

    system: str
    p: float
    seed: int
    round: int | None
    latency: float
    run_latency: float


@dataclass(frozen=True)
class Median:
    """A median over seeds and its 95% percentile-bootstrap interval (``inf`` ends where the
    resampled medians are; NaN throughout where there is nothing to summarise)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class TargetSummary:
    """Time to target of one system at one ``p`` over seeds: how many seeds reached it, the
    median time over all seeds, and the median over seeds of the paired ratio to the time at
    the smallest ``p`` (over the ``pairs`` seeds that reached it there; NaN at that ``p``)."""

    system: str
    p: float
    seeds: int
    reached: int
    time: Median
    pairs: int
    ratio: Median


def times_to_target(results: MalfunctionResults) -> list[TimeToTarget]:
    """Every (system, p, seed) run's time to ``malfunction.target_accuracy``."""
    target = results.config.malfunction.target_accuracy
    out = []
    for seed in results.seeds:
        for p in results.p_values:
            for system in SYSTEMS:
                trajectory = results.trajectory(system, p, seed)
                hit = next((r for r in trajectory if r.accuracy >= target), None)
                out.append(TimeToTarget(system, p, seed, None if hit is None else hit.round + 1,
                                        math.inf if hit is None else hit.cumulative_latency,
                                        trajectory[-1].cumulative_latency))
    return out


def bootstrap_median(values: np.ndarray, rng: np.random.Generator) -> Median:
    """Median of ``values`` (``inf`` allowed) with the 2.5% and 97.5% quantiles of the medians
    of :data:`BOOTSTRAP_RESAMPLES` resamples (taken as order statistics: exact with ``inf``)."""
    if values.size == 0:
        return Median(math.nan, math.nan, math.nan)
    picks = rng.integers(0, values.size, size=(BOOTSTRAP_RESAMPLES, values.size))
    medians = np.median(values[picks], axis=1)
    low, high = np.quantile(medians, [0.025, 0.975], method="inverted_cdf")
    return Median(float(np.median(values)), float(low), float(high))


def summarize(times: list[TimeToTarget]) -> list[TargetSummary]:
    """One :class:`TargetSummary` per (p, system), in p then system order."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ps = sorted({t.p for t in times})
    by_run = {(t.system, t.p, t.seed): t.latency for t in times}
    seeds = sorted({t.seed for t in times})
    out = []
    for p in ps:
        for system in SYSTEMS:
            values = np.array([by_run[system, p, s] for s in seeds])
            base = np.array([by_run[system, ps[0], s] for s in seeds])
            paired = np.isfinite(base) if p != ps[0] else np.zeros(len(seeds), dtype=bool)
            out.append(TargetSummary(
                system, p, len(seeds), int(np.isfinite(values).sum()),
                bootstrap_median(values, rng), int(paired.sum()),
                bootstrap_median(values[paired] / base[paired], rng),
            ))
    return out
