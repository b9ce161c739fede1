"""Monte Carlo round simulator against the closed form and a per-attempt oracle."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from blockfl.latency import model
from blockfl.latency.model import BRACKET_TERMS, TERMS, LatencyParams
from blockfl.latency.montecarlo import Estimate, neg_log_p_fork, simulate, simulate_mining
from tests.test_latency_model import REVIEW

ROUNDS = 100_000
LAMBDA_FACTORS = (0.25, 0.4, 0.6, 0.8, 1.0, 1.5, 2.5, 4.0)  # multiples of lambda*
PARAMETER_SETS = {
    "default": LatencyParams(),
    "other": LatencyParams(
        n_devices=7, n_miners=4, samples=(50, 80, 120, 40, 60, 90, 70), w_m=2e6, snr_m_db=3.0,
        t_wait=0.5, delta_m=3e5, h=1e5,
    ),
}


def simulate_attempts(n_miners, lambda_, t_bp, rounds, rng):
    """The test oracle: replay every attempt's race of N_M exponential proof-of-work times
    (cost grows as exp(lambda (N_M - 1) T_bp), so only for small lambda)."""
    attempts = np.zeros(rounds)
    block_time = np.zeros(rounds)
    active = np.arange(rounds)
    while active.size:
        finish = np.sort(rng.exponential(1.0 / lambda_, size=(active.size, n_miners)), axis=1)
        forked = finish[:, 1] - finish[:, 0] < t_bp
        attempts[active] += 1
        block_time[active] += finish[:, 0]
        active = active[forked]
    return attempts, block_time


@pytest.mark.parametrize("name", PARAMETER_SETS)
@pytest.mark.parametrize("lam", np.geomspace(0.01, 100, 9).tolist())
def test_mean_within_the_95_ci_of_the_closed_form_at_any_lambda(name, lam):
    p = dataclasses.replace(PARAMETER_SETS[name], lambda_=lam)
    summary = simulate(p, ROUNDS, seed=11).summary()
    expected = model.expected_latency(p).total
    if math.isinf(expected):  # past float range: the simulation says so too
        assert summary.total.mean == math.inf
        return
    assert summary.total.low <= expected <= summary.total.high
    assert summary.n_fork.low <= model.expected_latency(p).n_fork <= summary.n_fork.high


@pytest.mark.parametrize(("n_miners", "lam"), [(2, 0.5), (4, 0.3), (10, 0.1), (10, 0.4)])
def test_o1_sampler_has_the_distribution_of_the_per_attempt_oracle(n_miners, lam):
    t_bp = model.t_bp(LatencyParams())
    exact = simulate_mining(n_miners, lam, t_bp, 20_000, np.random.default_rng(1))
    oracle = simulate_attempts(n_miners, lam, t_bp, 20_000, np.random.default_rng(2))
    for ours, theirs in zip(exact, oracle, strict=True):
        assert stats.ks_2samp(ours, theirs).pvalue > 0.01
    # attempts: geometric on {1, 2, ...}, P(N = k) = (1 - q) q^(k - 1); 6+ in one bin
    q = model.p_fork(LatencyParams(n_miners=n_miners, lambda_=lam))
    observed = np.bincount(np.minimum(exact[0], 6).astype(int), minlength=7)[1:]
    expected = 20_000 * np.array([(1 - q) * q**k for k in range(5)] + [q**5])
    assert stats.chisquare(observed, expected).pvalue > 0.01


def test_neg_log_p_fork_is_accurate_at_both_ends():
    assert neg_log_p_fork(1, 5.0, 1.0) == math.inf
    assert neg_log_p_fork(3, 1e-12, 1.0) == pytest.approx(-math.log(2e-12), rel=1e-9)
    assert neg_log_p_fork(3, 50.0, 1.0) == pytest.approx(math.exp(-100.0), rel=1e-9)
    attempts, block_time = simulate_mining(3, 1e4, 1.0, 10, np.random.default_rng(0))
    assert np.all(attempts == math.inf) and np.all(block_time == math.inf)


@pytest.mark.parametrize("factor", LAMBDA_FACTORS)
def test_mean_within_two_percent_of_closed_form_around_lambda_star(factor):
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


def test_infinite_latency_is_inf_never_nan_at_quorum_one():
    p = dataclasses.replace(REVIEW, lambda_=100.0)  # E[T] = 1e3169 s, T_att = 0
    summary = simulate(p, 1000, seed=0).summary()
    assert summary.total.mean == math.inf and summary.terms["att"].mean == 0.0
    assert not any(math.isnan(est.mean) for est in summary.terms.values())
    assert not summary.total.defined and summary.total.undefined == "the mean is infinite"
    contributions = model.expected_latency(dataclasses.replace(p, lambda_=1e308)).contributions()
    assert contributions["att"] == 0.0 and contributions["bg"] == math.inf
    assert not any(math.isnan(v) for v in contributions.values())


def test_confidence_interval_where_the_variance_overflows_a_float():
    p = dataclasses.replace(REVIEW, lambda_=5.62)  # E[T] = 2.4e179 s: its square overflows
    total = simulate(p, 20_000, seed=3).summary().total
    assert 0 < total.low < total.mean < total.high < math.inf and total.defined
    assert total.low <= model.expected_latency(p).total <= total.high


def test_undefined_confidence_intervals_say_why():
    assert Estimate.of(np.array([2.0])).undefined == "a single sample"
    assert Estimate.of(np.array([1.0, math.inf])).mean == math.inf
    assert Estimate.of(np.array([1e308, 1.7e308, 1e300])).mean == pytest.approx(9e307)
    wide = Estimate.of(np.array([-1.7e308, 1.7e308]))  # half-width 0.98 × 3.4e308
    assert wide.mean == 0.0 and wide.undefined == "the interval is past float range"
    assert math.isnan(wide.low) and math.isnan(wide.high)
