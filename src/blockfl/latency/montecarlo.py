"""Vectorised Monte Carlo simulation of BlockFL round timing.

Each attempt of a round draws one Exp(lambda) proof-of-work time per miner; the first finisher
wins (``T_bg`` is its time) and the attempt forks when the runner-up finishes within ``T_bp`` of
the winner. A fork repeats the whole bracket (local, upload, cross, bg, bp) with fresh draws, so
the number of attempts is geometric. The deterministic terms come from :mod:`.model`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blockfl.latency import model
from blockfl.latency.model import BRACKET_TERMS, TERMS, LatencyParams

Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal distribution."""


@dataclass(frozen=True)
class Estimate:
    """A sample mean with the half-width of its normal 95% confidence interval."""

    mean: float
    half_width: float

    @property
    def low(self) -> float:
        """Lower end of the 95% confidence interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the 95% confidence interval."""
        return self.mean + self.half_width

    @classmethod
    def of(cls, samples: np.ndarray) -> Estimate:
        """Mean and 95% CI half-width of i.i.d. samples."""
        half = Z_95 * samples.std(ddof=1) / np.sqrt(samples.size) if samples.size > 1 else np.nan
        return cls(float(samples.mean()), float(half))


@dataclass(frozen=True)
class MonteCarloSummary:
    """Estimates of the total and per-term round latency, and the fork statistics."""

    rounds: int
    total: Estimate
    terms: dict[str, Estimate]
    n_fork: Estimate
    fork_rate: float


@dataclass(frozen=True)
class MonteCarloResult:
    """Per-round samples: ``samples[term]`` is the time spent in ``term`` over the whole round
    (all attempts), ``samples["total"]`` the round latency, ``n_fork`` the attempts per round."""

    samples: dict[str, np.ndarray]
    n_fork: np.ndarray

    @property
    def fork_rate(self) -> float:
        """Fraction of attempts that forked: ``(attempts - rounds) / attempts``."""
        attempts = int(self.n_fork.sum())
        return (attempts - self.n_fork.size) / attempts

    def summary(self) -> MonteCarloSummary:
        """Means with 95% confidence intervals."""
        return MonteCarloSummary(
            rounds=self.n_fork.size,
            total=Estimate.of(self.samples["total"]),
            terms={term: Estimate.of(self.samples[term]) for term in TERMS},
            n_fork=Estimate.of(self.n_fork),
            fork_rate=self.fork_rate,
        )


def simulate_mining(
    n_miners: int,
    lambda_: float,
    t_bp: float,
    rounds: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the proof-of-work race until a fork-free block, for ``rounds`` rounds at once.

    Returns the number of attempts per round and the summed winning times over its attempts.
    """
    attempts = np.zeros(rounds, dtype=np.int64)
    block_time = np.zeros(rounds)
    active = np.arange(rounds)
    while active.size:
        finish = rng.exponential(1.0 / lambda_, size=(active.size, n_miners))
        if n_miners > 1:
            first_two = np.partition(finish, 1, axis=1)
            winner = first_two[:, 0]
            forked = first_two[:, 1] - winner < t_bp
        else:
            winner = finish[:, 0]
            forked = np.zeros(active.size, dtype=bool)
        attempts[active] += 1
        block_time[active] += winner
        active = active[forked]
    return attempts, block_time


def simulate(
    p: LatencyParams, rounds: int = 100_000, seed: int | np.random.SeedSequence = 0
) -> MonteCarloResult:
    """Simulate ``rounds`` independent rounds with ``np.random.default_rng(seed)``."""
    if rounds < 1:
        raise ValueError(f"rounds must be positive, got {rounds}")
    fixed = {
        "local": model.t_local(p),
        "up": model.t_up(p),
        "cross": model.t_cross(p),
        "bp": model.t_bp(p),
        "dn": model.t_dn(p),
        "global": model.t_global(p),
    }
    attempts, block_time = simulate_mining(
        p.n_miners, p.lambda_, fixed["bp"], rounds, np.random.default_rng(seed)
    )
    samples: dict[str, np.ndarray] = {}
    for term in TERMS:
        if term == "bg":
            samples[term] = block_time
        elif term in BRACKET_TERMS:
            samples[term] = attempts * fixed[term]
        else:
            samples[term] = np.full(rounds, fixed[term])
    samples["total"] = np.sum([samples[term] for term in TERMS], axis=0)
    return MonteCarloResult(samples=samples, n_fork=attempts)
