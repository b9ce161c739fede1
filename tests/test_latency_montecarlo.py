"""Monte Carlo round simulator against the closed form."""

import dataclasses
import math

import numpy as np
import pytest

from blockfl.latency import model
from blockfl.latency.model import BRACKET_TERMS, TERMS, LatencyParams
from blockfl.latency.montecarlo import Estimate, simulate, simulate_mining

ROUNDS = 100_000
LAMBDA_FACTORS = (0.25, 0.4, 0.6, 0.8, 1.0, 1.5, 2.5, 4.0)  # multiples of lambda*


@pytest.mark.parametrize("factor", LAMBDA_FACTORS)
def test_mean_within_two_percent_of_closed_form(factor):
    p = LatencyParams()
    p = dataclasses.replace(p, lambda_=factor * model.optimal_lambda(p))
    summary = simulate(p, ROUNDS, seed=7).summary()
    expected = model.expected_latency(p).total
    assert summary.total.mean == pytest.approx(expected, rel=0.02)
    assert abs(summary.total.mean - expected) < 4 * summary.total.half_width


@pytest.mark.parametrize(("n_miners", "lam"), [(2, 0.5), (10, 0.05), (10, 0.4), (30, 0.1)])
def test_fork_statistics_match_memoryless_formula(n_miners, lam):
    p = dataclasses.replace(LatencyParams(), n_miners=n_miners, lambda_=lam)
    result = simulate(p, ROUNDS, seed=n_miners)
    attempts = int(result.n_fork.sum())
    p_fork = model.p_fork(p)
    assert p_fork == pytest.approx(-math.expm1(-lam * (n_miners - 1) * model.t_bp(p)))
    assert abs(result.fork_rate - p_fork) < 5 * math.sqrt(p_fork * (1 - p_fork) / attempts)
    assert result.n_fork.mean() == pytest.approx(math.exp(lam * model.fork_exponent(p)), rel=0.02)
    # winner's time per attempt ~ Exp(N_M lambda)
    assert result.samples["bg"].sum() / attempts == pytest.approx(model.t_bg(p), rel=0.02)


def test_terms_add_up_and_deterministic_terms_scale_with_attempts():
    p = LatencyParams(lambda_=0.3)
    result = simulate(p, 1000, seed=1)
    np.testing.assert_allclose(result.samples["total"], sum(result.samples[t] for t in TERMS))
    for term in BRACKET_TERMS:
        if term != "bg":
            per_attempt = getattr(model, f"t_{term}")(p)
            np.testing.assert_allclose(result.samples[term], result.n_fork * per_attempt)
    np.testing.assert_allclose(result.samples["dn"], model.t_dn(p))
    assert result.n_fork.max() > 1  # forks happen at this lambda


def test_single_miner_never_forks():
    attempts, block_time = simulate_mining(1, 2.0, 10.0, 5000, np.random.default_rng(0))
    assert np.all(attempts == 1)
    assert block_time.mean() == pytest.approx(0.5, rel=0.05)


def test_seeded_reproducibility():
    p = LatencyParams()
    a, b, c = (simulate(p, 2000, seed=s).samples["total"] for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_confidence_interval():
    est = Estimate.of(np.array([1.0, 2.0, 3.0, 4.0]))
    assert est.mean == 2.5
    assert est.half_width == pytest.approx(1.959963984540054 * np.std([1, 2, 3, 4], ddof=1) / 2)
    assert est.low < est.mean < est.high


def test_rejects_non_positive_rounds():
    with pytest.raises(ValueError):
        simulate(LatencyParams(), 0)
