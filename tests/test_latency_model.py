"""Closed-form BlockFL latency model: hand-computed terms, lambda*, convexity, config loading."""

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from blockfl.latency import model
from blockfl.latency.model import LatencyParams

DB_3 = 10 * math.log10(3)  # log2(1 + 3) = 2 bit/s/Hz
DB_7 = 10 * math.log10(7)  # log2(1 + 7) = 3 bit/s/Hz

TINY = LatencyParams(
    n_devices=2,
    n_miners=2,
    samples=(100, 300),
    device=1,
    miner=0,
    lambda_=0.3,
    t_wait=10.0,
    w_up=5.0,
    w_dn=10.0,
    w_m=7.0,
    snr_up_db=DB_3,
    snr_dn_db=0.0,
    snr_m_db=DB_7,
    delta_d=10.0,
    delta_m=30.0,
    f_c=1000.0,
    h=10.0,
)

REVIEW = LatencyParams(  # the independent review's parameter set
    n_devices=50, n_miners=7, snr_up_db=5.0, snr_dn_db=5.0, snr_m_db=5.0, h=1e4, delta_m=5e5,
    w_up=1e6, w_dn=1e6, w_m=1e6, f_c=1e9, delta_d=1e4, samples=300.0, t_wait=0.5,
)


def total_at(p: LatencyParams, lam: float) -> float:
    return model.expected_latency(dataclasses.replace(p, lambda_=lam)).total


def test_tiny_terms_by_hand():
    r = model.expected_latency(TINY)
    assert r.t_local == pytest.approx(10 * 300 / 1000)  # delta_d N_o / f_c, device o = 1
    assert r.t_up == pytest.approx(30 / (5 * 2))
    assert r.t_dn == pytest.approx((10 + 30 * 2) / (10 * 1))
    assert r.t_global == pytest.approx(30 * 2 / 1000)
    assert r.t_bp == pytest.approx(70 / 21)
    # waiting dominates: T_wait - (T_local + T_up) = 4 > exchange 30 * 1 / 21; then verification
    assert r.t_cross == pytest.approx(4 + 0.06)
    assert r.t_bg == pytest.approx(1 / (2 * 0.3))
    # lambda (N_M - 1) T_bp = 0.3 * 70 / 21 = 1
    assert r.p_fork == pytest.approx(1 - math.exp(-1))
    assert r.n_fork == pytest.approx(math.e)
    assert r.total == pytest.approx((3 + 3 + 4.06 + 10 / 3 + 5 / 3) * math.e + 7 + 0.06)
    assert sum(r.contributions().values()) == pytest.approx(r.total)


def test_cross_exchange_dominates_when_wait_is_short():
    p = dataclasses.replace(TINY, t_wait=5.0)  # 5 - 6 < 0, so the 30 / 21 s exchange counts
    assert model.t_cross(p) == pytest.approx(30 / 21 + 0.06)


def test_explicit_association_and_per_miner_snr():
    p = dataclasses.replace(
        TINY,
        n_devices=6,
        n_miners=3,
        samples=100,
        device=0,
        miner=1,
        devices_per_miner=(1, 2, 3),
        snr_m_db=(DB_7, DB_3, DB_7),  # miner rates 21, 14, 21 bit/s
    )
    assert model.t_exchange(p) == pytest.approx(30 * 1 / 21 + 30 * 3 / 21)  # miners 0 and 2
    assert model.t_bp(p) == pytest.approx((10 + 30 * 6) / 14)  # slowest miner link


def test_uniform_association_is_the_default():
    p = LatencyParams(n_devices=12, n_miners=4)
    np.testing.assert_allclose(p.association, [3, 3, 3, 3])
    rate = model.link_rate(p.w_m, p.snr_m_db)
    assert model.t_exchange(p) == pytest.approx(3 * p.delta_m * 3 / rate)


def test_default_toml_matches_dataclass_defaults():
    assert LatencyParams.from_toml(model.default_config_path()) == LatencyParams()


def test_from_toml_lists_and_unknown_keys(tmp_path):
    path = tmp_path / "lat.toml"
    path.write_text("n_devices = 3\nsamples = [10, 20, 30]\nlambda_ = 0.5\n")
    p = LatencyParams.from_toml(path)
    assert p.samples == (10, 20, 30) and p.lambda_ == 0.5 and p.n_miners == 10
    path.write_text("lambda = 0.5\n")  # the alias of lambda_
    assert LatencyParams.from_toml(path).lambda_ == 0.5
    path.write_text("lamda = 0.5\n")
    with pytest.raises(ValueError, match=r"unknown latency parameter.*valid: n_devices"):
        LatencyParams.from_toml(path)


def test_every_field_is_documented_for_help():
    assert list(model.PARAMETERS) == [f.name for f in dataclasses.fields(LatencyParams)]


@pytest.mark.parametrize(
    "overrides",
    [
        {"samples": (1, 2)},  # length != n_devices
        {"device": 10},
        {"n_miners": 0},
        {"lambda_": 0.0},
        {"snr_m_db": (10.0, 10.0)},
        {"devices_per_miner": (1.0,) * 9},
        {"lambda_": "fast"},
        {"w_up": math.inf},
        {"samples": {"a": 1}},
        {"device": 1.5},
        {"snr_up_db": True},
        {"quorum": 11},
    ],
)
def test_invalid_params_raise(overrides):
    with pytest.raises(ValueError):
        dataclasses.replace(LatencyParams(), **overrides)


def test_db_conversion():
    assert model.db_to_linear(10.0) == pytest.approx(10.0)
    assert model.db_to_linear(0.0) == pytest.approx(1.0)
    assert model.link_rate(1e6, DB_3) == pytest.approx(2e6)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"snr_m_db": 0.0},
        {"snr_m_db": 25.0},
        {"n_miners": 3},
        {"n_miners": 30},
        {"quorum": 0},
        dataclasses.asdict(TINY),
    ],
)
def test_closed_form_lambda_star_solves_first_order_condition(overrides):
    p = dataclasses.replace(LatencyParams(), **overrides)
    star = model.optimal_lambda(p)
    a, c, n = model.deterministic_bracket(p), model.fork_exponent(p), p.n_miners
    assert a * c * n * star**2 + c * star - 1 == pytest.approx(0.0, abs=1e-9)
    assert model.numeric_optimal_lambda(p) == pytest.approx(star, rel=0.01)
    eps = 1e-4 * star
    derivative = (total_at(p, star + eps) - total_at(p, star - eps)) / (2 * eps)
    assert abs(derivative) * star < 1e-6 * total_at(p, star)
    assert model.optimal_latency(p) == pytest.approx(total_at(p, star))


def test_latency_convex_on_grid_with_minimum_at_lambda_star():
    p = LatencyParams()
    star = model.optimal_lambda(p)
    grid = star * np.linspace(0.2, 4.0, 77)
    totals = np.array([total_at(p, lam) for lam in grid])
    assert np.all(np.diff(totals, 2) > 0)
    assert abs(grid[np.argmin(totals)] - star) <= grid[1] - grid[0]
    assert 0.05 < star < 0.2  # the default parameters put lambda* in the swept range


def test_single_miner_has_no_finite_optimum():
    p = dataclasses.replace(LatencyParams(), n_miners=1)
    assert model.optimal_lambda(p) == math.inf
    assert model.numeric_optimal_lambda(p) == math.inf
    assert model.p_fork(p) == 0.0
    totals = [total_at(p, lam) for lam in np.geomspace(0.01, 100, 20)]
    assert np.all(np.diff(totals) < 0)
    limit = model.deterministic_bracket(p) + model.t_dn(p) + model.t_global(p)
    assert model.optimal_latency(p) == pytest.approx(limit)
    assert totals[-1] - limit == pytest.approx(1 / 100)  # E[T] = limit + 1 / (N_M lambda)


@pytest.mark.parametrize("lam", [1e-6, 0.1, 10.0, 273.0, 1e4, 1e300])
def test_expected_latency_never_overflows_and_its_log_is_finite(lam):
    p = LatencyParams(lambda_=lam)
    log_total = model.log_expected_latency(p)
    assert math.isfinite(log_total)
    total = model.expected_latency(p).total
    if log_total < 700:
        assert total == pytest.approx(math.exp(log_total), rel=1e-12)
        bracket = model.deterministic_bracket(p) + model.t_bg(p)
        rest = model.t_dn(p) + model.t_global(p)
        by_hand = bracket * math.exp(lam * model.fork_exponent(p)) + rest
        assert total == pytest.approx(by_hand, rel=1e-12)
    else:
        assert total == math.inf and model.expected_latency(p).n_fork == math.inf


def test_the_latency_package_never_imports_the_simulator_or_the_experiments():
    probe = (
        "import sys, pkgutil, importlib, blockfl.latency as lat\n"
        "for m in pkgutil.iter_modules(lat.__path__):\n"
        "    importlib.import_module(f'blockfl.latency.{m.name}')\n"
        "print(sorted(n for n in sys.modules if n.startswith(('blockfl.sim', 'blockfl.malf'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"f_c": 1e-300}, "t_local overflow"), ({"w_up": 1e-300, "delta_m": 1e300}, "t_up overflow")],
)
def test_parameters_whose_terms_overflow_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        LatencyParams(**overrides)


def test_lambda_star_of_huge_blocks_is_finite_and_positive():
    p = LatencyParams(delta_m=1e300, n_devices=1000)  # c^2 and A c N overflow a float
    star = model.optimal_lambda(p)
    assert 0 < star < math.inf
    assert model.numeric_optimal_lambda(p) == pytest.approx(star, rel=1e-5)
    assert math.isfinite(model.optimal_latency(p))


@pytest.mark.parametrize("snr_db", [-150.0, -155.0, -300.0])
def test_link_rate_keeps_full_precision_at_low_snr(snr_db):
    snr = 10.0 ** (snr_db / 10.0)  # log2(1 + x) = x / ln 2 to within x / 2 relative
    exact = 1e6 * snr / math.log(2.0)
    assert model.link_rate(1e6, snr_db) == pytest.approx(exact, rel=1e-12, abs=0)


def test_minus_300_db_links_give_finite_terms_and_log_latency():
    p = dataclasses.replace(REVIEW, snr_up_db=-300.0, snr_dn_db=-300.0, snr_m_db=-300.0)
    rate = 1e6 * 1e-30 / math.log(2.0)
    assert model.t_bp(p) == pytest.approx(model.block_bits(p) / rate, rel=1e-12)  # 1.7e31 s
    assert model.t_up(p) == pytest.approx(5e5 / rate, rel=1e-12)
    assert model.expected_latency(p).total == math.inf  # e^(0.1 × 6 × 1.7e31) attempts
    log_forks = p.lambda_ * model.fork_exponent(p)
    assert model.log_expected_latency(p) == pytest.approx(log_forks, rel=1e-12)


def test_alike_devices_cost_no_memory_per_device():
    import tracemalloc

    tracemalloc.start()
    try:
        p = dataclasses.replace(REVIEW, n_devices=10**11)  # was a 93 GiB allocation
        result, star = model.expected_latency(p), model.optimal_lambda(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert result.t_global == pytest.approx(5e5 * 1e11 / 1e9) and 0 < star < math.inf
    assert LatencyParams(n_devices=1e11).n_devices == 10**11  # TOML's 1e11 is a float
