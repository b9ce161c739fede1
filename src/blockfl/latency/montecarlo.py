"""Exact Monte Carlo simulation of BlockFL round timing, O(1) per round at any lambda.

Each attempt of a round is a race of ``N_M`` Exp(lambda) proof-of-work times; the first finisher
wins (``T_bg`` is its time) and the attempt forks when the runner-up finishes within ``T_bp`` of
the winner. A fork repeats the whole bracket (local, upload, cross, bg, att, bp) with fresh
draws, so the number of attempts is geometric. Rather than replaying every attempt (whose cost
grows as ``exp(lambda (N_M - 1) T_bp)``), :func:`simulate_mining` draws the number of attempts
and the sum of the winners' times directly from their exact distributions. The deterministic
terms, the attestation phase ``T_att`` among them, come from :mod:`.model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blockfl.latency import model
from blockfl.latency.model import BRACKET_TERMS, TERMS, LatencyParams

Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal distribution."""


@dataclass(frozen=True)
class Estimate:
    """A sample mean with the half-width of its normal 95% confidence interval; where there is
    no interval, ``undefined`` says why and ``half_width`` (so ``low`` and ``high``) is NaN."""

    mean: float
    half_width: float
    undefined: str = ""

    @property
    def defined(self) -> bool:
        """Whether the confidence interval exists."""
        return not self.undefined

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
        """Mean and 95% CI half-width of i.i.d. samples. Both are computed on the samples
        divided by the power of two of their largest magnitude (exact: the same bits where
        nothing overflows), so neither the sum nor the variance overflows where the mean itself
        is a float; an infinite sample makes the mean ``inf``."""
        peak = float(np.max(np.abs(samples)))
        unit = math.ldexp(1.0, math.frexp(peak)[1] - 1) if 0.0 < peak < math.inf else 1.0
        scaled = samples / unit
        with np.errstate(invalid="ignore"):  # inf - inf in the variance of infinite samples
            mean = float(scaled.mean()) * unit
            spread = float(scaled.std(ddof=1)) * unit if samples.size > 1 else math.nan
        half = Z_95 * spread / math.sqrt(samples.size)
        undefined = (
            "the mean is infinite" if not math.isfinite(mean)
            else "a single sample" if samples.size < 2
            else "the interval is past float range" if not math.isfinite(half)
            else ""
        )
        return cls(mean, math.nan if undefined else half, undefined)


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
        """Fraction of attempts that forked: ``(attempts - rounds) / attempts`` (1 past float
        range)."""
        return 1.0 - self.n_fork.size / float(self.n_fork.sum())

    def summary(self) -> MonteCarloSummary:
        """Means with 95% confidence intervals."""
        return MonteCarloSummary(
            rounds=self.n_fork.size,
            total=Estimate.of(self.samples["total"]),
            terms={term: Estimate.of(self.samples[term]) for term in TERMS},
            n_fork=Estimate.of(self.n_fork),
            fork_rate=self.fork_rate,
        )


def neg_log_p_fork(n_miners: int, lambda_: float, t_bp: float) -> float:
    """``-log p_fork`` with ``p_fork = 1 - exp(-c)``, ``c = lambda (N_M - 1) T_bp``, accurate
    at both ends: ``inf`` without forks (``c = 0``), about ``exp(-c)`` when forks are certain."""
    c = lambda_ * (n_miners - 1) * t_bp
    if c == 0.0:
        return math.inf
    if c > math.log(2.0):
        return -math.log1p(-math.exp(-c))
    return -math.log(-math.expm1(-c))


def simulate_mining(
    n_miners: int,
    lambda_: float,
    t_bp: float,
    rounds: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw, for ``rounds`` rounds at once, the attempts until a fork-free block and the summed
    winning proof-of-work times over those attempts, in O(1) work per round at any lambda.

    Attempts fork independently with ``p_fork``, so their number is geometric on {1, 2, ...}:
    ``N = 1 + floor(E / -log p_fork)`` with ``E ~ Exp(1)`` (exact, and unlike
    ``Generator.geometric`` it does not saturate at int64: ``N`` is a float, ``inf`` past
    float range). By memorylessness each winner's time is ``Exp(N_M lambda)`` independent of the
    fork events, so their sum over ``N`` attempts is ``Gamma(N, 1 / (N_M lambda))``.
    """
    with np.errstate(divide="ignore"):  # -log p_fork = 0: forks are certain, N = inf
        attempts = 1.0 + np.floor(
            rng.standard_exponential(rounds) / neg_log_p_fork(n_miners, lambda_, t_bp)
        )
    finite = np.isfinite(attempts)
    block_time = np.full(rounds, math.inf)
    block_time[finite] = rng.gamma(attempts[finite], 1.0 / n_miners / lambda_)
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
        "att": model.t_att(p),
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
            samples[term] = model.over_attempts(fixed[term], attempts)
        else:
            samples[term] = np.full(rounds, fixed[term])
    samples["total"] = np.sum([samples[term] for term in TERMS], axis=0)
    return MonteCarloResult(samples=samples, n_fork=attempts)
