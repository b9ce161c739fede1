"""The attestation term T_att of the latency model: by hand, in E[T], lambda* and Monte Carlo."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from blockfl.latency import model
from blockfl.latency.model import SIGNATURE_BITS, LatencyParams
from blockfl.latency.montecarlo import simulate

DB_3 = 10 * math.log10(3)  # log2(1 + 3) = 2 bit/s/Hz
DB_7 = 10 * math.log10(7)  # log2(1 + 7) = 3 bit/s/Hz
DB_15 = 10 * math.log10(15)  # log2(1 + 15) = 4 bit/s/Hz


def paper_latency(p: LatencyParams) -> float:
    """The paper's E[T], without an attestation phase, from its terms."""
    a = model.t_local(p) + model.t_up(p) + model.t_cross(p) + model.t_bp(p)
    return ((a + 1 / (p.n_miners * p.lambda_)) * math.exp(p.lambda_ * model.fork_exponent(p))
            + model.t_dn(p) + model.t_global(p))


def test_a_quorum_of_one_is_the_papers_latency():
    p = LatencyParams()
    assert p.quorum == 1 and model.t_att(p) == 0.0
    assert model.expected_latency(p).total == pytest.approx(paper_latency(p), rel=1e-12)
    assert model.expected_latency(p).total == pytest.approx(5.2277, abs=5e-5)  # docs/latency.md


def test_attesters_are_asked_one_after_another_by_hand():
    # miner 1 commits; the first q - 1 = 2 others in index order (0 and 2) attest, over links
    # of 7 Hz x 2, 3 and 4 bit/s/Hz; the candidate is h + delta_m N_D = 10 + 2 x 30 = 70 bits
    p = LatencyParams(n_devices=2, n_miners=4, miner=1, w_m=7.0, delta_m=30.0, h=10.0,
                      f_c=1000.0, snr_m_db=(DB_3, DB_7, DB_15, 0.0), quorum=3)
    sent = 70 + SIGNATURE_BITS
    assert model.t_att_links(p) == pytest.approx(sent / 14 + sent / 28)
    assert model.t_att_checks(p) == pytest.approx(2 * 2 * 60 / 1000)  # verify + recompute
    assert model.t_att(p) == pytest.approx(model.t_att_links(p) + model.t_att_checks(p))
    assert model.expected_latency(p).t_att == model.t_att(p)


def test_the_quorum_in_force_and_its_bounds():
    assert LatencyParams(quorum=0).attesters == 6  # a majority of 10, as [chain] quorum = 0
    assert LatencyParams(n_miners=4, quorum=0).attesters == 3
    assert LatencyParams(quorum=10).attesters == 10
    terms = [model.t_att(LatencyParams(quorum=q)) for q in range(1, 11)]
    assert terms[0] == 0.0 and np.all(np.diff(terms) > 0)
    slower = LatencyParams(quorum=3, w_m=1e6)
    assert model.t_att(slower) > model.t_att(LatencyParams(quorum=3))
    for bad in (-1, 11, 2.0, True):
        with pytest.raises(ValueError, match="quorum"):
            LatencyParams(quorum=bad)


def test_the_attestation_phase_is_repeated_on_every_fork():
    p = LatencyParams(quorum=6, lambda_=0.2)
    got = model.expected_latency(p)
    a = model.deterministic_bracket(p)
    assert a == pytest.approx(model.deterministic_bracket(LatencyParams(lambda_=0.2))
                              + model.t_att(p))
    assert got.contributions()["att"] == pytest.approx(model.t_att(p) * got.n_fork)
    assert got.total == pytest.approx(paper_latency(p) + model.t_att(p) * got.n_fork)
    # the fork window stays T_bp: the quorum leaves p_fork alone
    assert got.p_fork == model.expected_latency(LatencyParams(lambda_=0.2)).p_fork
    # a longer attempt makes forks costlier: lambda* falls
    assert model.optimal_lambda(p) < model.optimal_lambda(LatencyParams())


@pytest.mark.parametrize("factor", [0.5, 1.0, 3.0])
def test_monte_carlo_draws_the_attestation_phase_in_every_attempt(factor):
    base = LatencyParams(quorum=0)
    p = dataclasses.replace(base, lambda_=factor * model.optimal_lambda(base))
    result = simulate(p, 100_000, seed=5)
    np.testing.assert_allclose(result.samples["att"], result.n_fork * model.t_att(p))
    summary = result.summary()
    expected = model.expected_latency(p).total
    assert abs(summary.total.mean - expected) < 2 * summary.total.half_width  # ~4 sigma
