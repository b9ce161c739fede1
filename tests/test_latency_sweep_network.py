"""`scripts/latency_sweep_network.py`'s accounting of the paper's fork cost on measured rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from blockfl.latency.staggered_race import race, start_offsets
from tests.conftest import load_script


def test_a_forked_round_is_charged_as_run_again():
    script = load_script("latency_sweep_network")
    durations = np.array([1.0, 2.0, 3.0, 2.0])
    # one round in four forked: a committed round takes 4/3 attempts of 2 s on average
    assert script.expected_latency(durations, np.array([0, 1, 0, 0.0])) == pytest.approx(8 / 3)
    assert script.expected_latency(durations, np.zeros(4)) == pytest.approx(2.0)
    assert script.expected_latency(durations, np.ones(4)) == math.inf


def test_the_rivals_window_is_solved_from_their_hashing():
    """Rivals exposed for W = 0.05 s hash (1 - exp(-λ W)) / λ a round on average before they
    notice or fork: the estimate gives W back from that at any mix of rates."""
    script = load_script("latency_sweep_network")
    lams, rounds = [1.0, 4.0, 16.0], [40, 40, 40]
    hashing = [n * -math.expm1(-lam * 0.05) / lam for lam, n in zip(lams, rounds, strict=True)]
    assert script.rival_window(lams, rounds, hashing) == pytest.approx(0.05, rel=1e-9)
    assert script.rival_window([16.0], [10], [10.0]) == math.inf  # more than an endless window


def test_a_simultaneous_start_is_the_papers_race():
    """Three miners starting together, rivals exposed for 0.1 s: the fork chance is the
    paper's 1 - exp(-λ (N_M - 1) 0.1) and the race 1 / (N_M λ), within the draws' error."""
    offsets = start_offsets([(0.2, 0.2, 0.2)] * 5)
    assert offsets.tolist() == [[0.0, 0.0, 0.0]] * 5
    got = race(4.0, offsets, [0.1], draws=200_000)
    assert got.p_fork == pytest.approx(-math.expm1(-4.0 * 2 * 0.1), abs=1e-9)
    assert got.seconds == pytest.approx(1 / 12, rel=0.01)
    assert race(4.0, offsets, [0.1], draws=1000, seed=3) == race(4.0, offsets, [0.1],
                                                                   draws=1000, seed=3)


def test_a_late_start_races_less_and_forks_less():
    """One miner starts 1 s after the others at λ = 16: the race is nearly the two's
    1 / (2 λ), and that miner is exposed only if its start is inside its window; a miner that
    never races (None) neither wins nor forks."""
    late = race(16.0, start_offsets([(1.0, 1.0, 0.0)]), [0.1], draws=100_000)
    assert late.seconds == pytest.approx(1 / 32, rel=0.02)
    assert late.p_fork == pytest.approx(-math.expm1(-16.0 * 0.1), rel=0.01)
    absent = race(16.0, start_offsets([(1.0, 1.0, None)]), [0.1], draws=100_000)
    assert absent.p_fork == pytest.approx(late.p_fork, rel=0.01)


def test_the_band_over_rates_holds_each_rates_interval_and_is_seeded():
    """The simultaneous band (each rate at 1 - 0.05 / rates) contains the rate's own 95%
    interval, is that interval for one rate, widens with the rates, and reads the same from
    the same seed; a resample of forked rounds only is an endless upper end, not a NaN."""
    script = load_script("latency_sweep_network")
    gen = np.random.default_rng(5)
    durations, forked = gen.exponential(1.0, 20) + 0.5, (gen.random(20) < 0.3).astype(float)

    def bands(rates: int, seed: int = 0):
        return script.intervals(durations, forked, np.random.default_rng(seed), rates)

    (low, high), (band_low, band_high) = bands(8)
    assert band_low < low < high < band_high
    assert bands(1)[0] == bands(1)[1]
    assert bands(16)[1][1] > band_high and bands(8) == bands(8)
    _, (_, endless) = script.intervals(durations[:3], np.array([1.0, 1.0, 0.0]),
                                       np.random.default_rng(0), 8)
    assert endless == math.inf
