"""Latency sweeps (CSV/PNG output, lambda* curves) and the ``blockfl latency`` CLI."""

import argparse
import csv
import json

import numpy as np
import pytest

from blockfl.latency import model
from blockfl.latency.cli import parse_override, register
from blockfl.latency.model import LatencyParams
from blockfl.latency.sweep import apply_param, optimum_curve, run_sweep

PNG_MAGIC = b"\x89PNG"


def read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_lambda_sweep_writes_csv_and_png(tmp_path):
    p = LatencyParams()
    values = [0.05, 0.1, 0.2]
    _, paths = run_sweep(p, "lambda", values, tmp_path, rounds=5000, seed=1)
    assert [path.name for path in paths] == ["latency_vs_lambda.csv", "latency_vs_lambda.png"]
    table = read_csv(tmp_path / "latency_vs_lambda.csv")
    assert [float(r["value"]) for r in table] == values
    for r, lam in zip(table, values, strict=True):
        expected = model.expected_latency(apply_param(p, "lambda", lam)).total
        assert float(r["analytic_total"]) == pytest.approx(expected)
        assert float(r["mc_ci_low"]) < float(r["mc_mean"]) < float(r["mc_ci_high"])
        assert float(r["lambda_star"]) == pytest.approx(model.optimal_lambda(p))
    assert (tmp_path / "latency_vs_lambda.png").read_bytes()[:4] == PNG_MAGIC


def test_snr_sweep_adds_lambda_star_curve(tmp_path):
    _, paths = run_sweep(LatencyParams(), "snr", [0, 10, 20], tmp_path, rounds=2000)
    assert {path.name for path in paths} >= {"lambda_star_vs_snr.csv", "lambda_star_vs_snr.png"}
    stars = [float(r["lambda_star"]) for r in read_csv(tmp_path / "lambda_star_vs_snr.csv")]
    assert np.all(np.diff(stars) > 0)  # faster links, shorter T_bp, fewer forks: mine faster
    assert (tmp_path / "lambda_star_vs_snr.png").read_bytes()[:4] == PNG_MAGIC


def test_lambda_star_falls_with_more_miners():
    points = optimum_curve(LatencyParams(), "miners", [1, 2, 5, 10, 20])
    assert points[0].lambda_star == np.inf
    stars = [pt.lambda_star for pt in points[1:]]
    assert np.all(np.diff(stars) < 0)
    for pt in points[1:]:
        assert pt.lambda_star_numeric == pytest.approx(pt.lambda_star, rel=0.01)


def test_apply_param():
    p = apply_param(LatencyParams(), "snr", 3.0)
    assert (p.snr_up_db, p.snr_dn_db, p.snr_m_db) == (3.0, 3.0, 3.0)
    assert apply_param(p, "miners", 4.0).n_miners == 4
    assert apply_param(p, "devices", 7).n_devices == 7
    with pytest.raises(ValueError):
        apply_param(p, "miners", 2.5)
    with pytest.raises(ValueError):
        apply_param(p, "bandwidth", 1.0)
    with pytest.raises(ValueError):
        optimum_curve(p, "lambda", [0.1])


@pytest.fixture
def parser():
    parser = argparse.ArgumentParser(prog="blockfl")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def run(parser, argv):
    args = parser.parse_args(argv)
    return args.func(args)


def test_analyze_json_with_overrides(parser, capsys):
    assert run(parser, ["latency", "analyze", "--json", "--set", "n_miners=5"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = LatencyParams(n_miners=5)
    assert out["lambda_star"] == pytest.approx(model.optimal_lambda(p))
    assert out["expected_total"] == pytest.approx(model.expected_latency(p).total)
    assert set(out["terms"]) == set(model.TERMS)


def test_analyze_table_and_bad_override(parser, capsys, tmp_path):
    config = tmp_path / "lat.toml"
    config.write_text("lambda_ = 0.2\n")
    assert run(parser, ["latency", "analyze", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "lambda_star_numeric" in out and "T_cross" in out
    assert run(parser, ["latency", "analyze", "--set", "no_such=1"]) == 2
    assert "unknown latency parameter" in capsys.readouterr().err


def test_sweep_command_range(parser, capsys, tmp_path):
    argv = ["latency", "sweep", "--param", "miners", "--start", "2", "--stop", "4", "--num", "3"]
    assert run(parser, [*argv, "--rounds", "1000", "--out", str(tmp_path)]) == 0
    assert len(read_csv(tmp_path / "latency_vs_miners.csv")) == 3
    assert "wrote" in capsys.readouterr().out
    assert run(parser, ["latency", "sweep", "--param", "snr", "--out", str(tmp_path)]) == 2


def test_parse_override():
    assert parse_override("samples=[1, 2]") == ("samples", [1, 2])
    assert parse_override(" lambda_ = 0.5") == ("lambda_", 0.5)
    with pytest.raises(ValueError):
        parse_override("lambda_")
    with pytest.raises(ValueError):
        parse_override("lambda_=fast")
