"""Latency sweeps (CSV/PNG output, lambda* curves) and the ``blockfl latency`` CLI."""

import argparse
import csv
import dataclasses
import json

import matplotlib.image
import numpy as np
import pytest

from blockfl.latency import model
from blockfl.latency.cli import parse_override, register
from blockfl.latency.model import LatencyParams
from blockfl.latency.sweep import apply_param, optimum_curve, run_sweep, sweep, sweep_figure
from tests.test_latency_model import REVIEW

PNG_MAGIC = b"\x89PNG"
CURVE_RGB = np.array([0x1F, 0x77, 0xB4]) / 255  # the analytic curve's colour (C0)


def curve_pixels(png):
    """Pixels of the analytic curve's colour in a PNG (its legend sample alone is ~130)."""
    rgb = matplotlib.image.imread(png)[..., :3]
    return int((np.abs(rgb - CURVE_RGB).max(axis=2) < 0.1).sum())


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


@pytest.mark.parametrize(
    ("p", "values"),
    [
        (REVIEW, np.geomspace(0.001, 100, 9).tolist()),  # E[T] past float range: was blank
        (REVIEW, [0.001, 9.0]),  # E[T] = 3e286 s: matplotlib's log axis raised OverflowError
        (LatencyParams(), [0.01, 252.0]),
        (LatencyParams(), [0.05, 0.1, 0.2]),
    ],
)
def test_lambda_sweep_png_shows_the_curve(tmp_path, p, values):
    run_sweep(p, "lambda", values, tmp_path, rounds=500, seed=1)
    assert curve_pixels(tmp_path / "latency_vs_lambda.png") > 600


def test_latency_past_float_range_is_plotted_in_log10_with_infinite_points_marked():
    values = np.geomspace(0.001, 100, 9).tolist()
    fig = sweep_figure(sweep(REVIEW, "lambda", values, rounds=500, seed=1), "lambda", REVIEW)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    curve = np.asarray(lines["analytic E[T]"].get_ydata())
    low, high = ax.get_ylim()
    assert np.isfinite(curve).all() and low <= curve.min() and curve.max() <= high
    assert curve.max() == pytest.approx(
        model.log_expected_latency(apply_param(REVIEW, "lambda", 100)) / np.log(10))
    assert "log" in ax.get_ylabel()
    marked = lines["Monte Carlo mean = ∞ (past float range)"]
    assert list(marked.get_xdata()) == values[-2:]  # λ = 23.7 and 100: E[T] ≈ 1e730, 1e3169


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


def test_analyze_and_sweep_the_quorum(parser, capsys, tmp_path):
    assert run(parser, ["latency", "analyze", "--json", "--set", "quorum=0"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = LatencyParams(quorum=0)
    assert out["quorum"] == 6
    assert out["terms"]["att"]["per_attempt"] == pytest.approx(model.t_att(p))
    assert out["expected_total"] == pytest.approx(model.expected_latency(p).total)
    argv = ["latency", "sweep", "--param", "quorum", "--values", "1", "4", "10"]
    assert run(parser, [*argv, "--rounds", "20000", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "latency_vs_quorum.csv")
    totals = [float(r["analytic_total"]) for r in rows]
    assert totals[0] == pytest.approx(model.expected_latency(LatencyParams()).total)
    assert totals[0] < totals[1] < totals[2]
    stars = read_csv(tmp_path / "lambda_star_vs_quorum.csv")
    assert float(stars[0]["lambda_star"]) > float(stars[2]["lambda_star"])


def test_analyze_table_and_bad_override(parser, capsys, tmp_path):
    config = tmp_path / "lat.toml"
    config.write_text("lambda_ = 0.2\n")
    assert run(parser, ["latency", "analyze", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "lambda_star_numeric" in out and "T_cross" in out and "T_att" in out
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


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("nope=3", "unknown latency parameter(s): nope; valid: n_devices"),
        ("lambda=-1", "lambda_ must be positive, got -1"),
        ("w_up=0", "w_up must be positive, got 0"),
        ("n_miners=0", "n_miners must be a positive integer, got 0"),
        ("n_miners=2.5", "n_miners must be a positive integer, got 2.5"),
        ("lambda_=fast", "cannot parse value of 'lambda_': 'fast'"),
        ("lambda_='fast'", "lambda_ must be a finite number or a list of them, got 'fast'"),
        ("t_wait=nan", "t_wait must be a finite number or a list of them, got nan"),
        ("samples=[1,2]", "samples must be a scalar or a sequence of length 10"),
        ("lambda_", "expected KEY=VALUE, got 'lambda_'"),
    ],
)
@pytest.mark.parametrize("command", ["analyze", "sweep"])
def test_bad_settings_give_one_line_errors(parser, capsys, tmp_path, command, setting, message):
    argv = ["latency", command, "--set", setting]
    if command == "sweep":
        argv += ["--param", "lambda", "--values", "0.1", "--out", str(tmp_path)]
    assert run(parser, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("lam", ["273", "1e5"])
def test_analyze_reports_inf_where_the_latency_overflows(parser, capsys, lam):
    assert run(parser, ["latency", "analyze", "--set", f"lambda={lam}"]) == 0
    out = capsys.readouterr().out
    assert "E[T] overflows a float" in out and "per miner" in out
    assert run(parser, ["latency", "analyze", "--json", "--set", f"lambda={lam}"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["expected_total"] is None and payload["log10_expected_total"] > 308
    assert payload["lambda_convention"] == "per_miner"
    assert payload["aggregate_rate_star"] == pytest.approx(10 * payload["lambda_star"])


def test_single_miner_is_valid_and_never_forks(parser, capsys):
    assert run(parser, ["latency", "analyze", "--set", "n_miners=1", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["p_fork"] == 0.0 and payload["lambda_star"] is None  # inf


def test_lambda_sweep_over_four_decades_matches_the_closed_form(parser, capsys, tmp_path):
    argv = ["latency", "sweep", "--param", "lambda", "--start", "0.01", "--stop", "100"]
    assert run(parser, [*argv, "--num", "9", "--log", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "latency_vs_lambda.csv")
    assert len(rows) == 9
    for row in rows:  # within 3 standard errors (a 95% CI misses 1 point in 20 by design)
        analytic, mean, low = (float(row[k]) for k in ("analytic_total", "mc_mean", "mc_ci_low"))
        assert abs(mean - analytic) <= 1.5 * (mean - low)


def test_help_lists_every_key_and_the_lambda_alias(parser, capsys):
    for command in ("analyze", "sweep"):
        with pytest.raises(SystemExit):
            parser.parse_args(["latency", command, "--help"])
        out = capsys.readouterr().out
        assert all(key in out for key in model.PARAMETERS) and "alias: lambda" in out


def test_sweep_without_out_writes_a_fresh_run_dir(parser, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["latency", "sweep", "--param", "lambda", "--values", "0.1", "--rounds", "100"]
    assert run(parser, argv) == 0 and run(parser, argv) == 0
    dirs = sorted((tmp_path / "runs").iterdir())
    assert len(dirs) == 2 and all(d.name.startswith("latency-sweep-lambda-") for d in dirs)
    assert (dirs[0] / "latency_vs_lambda.csv").is_file()


def test_analyze_reads_an_experiment_config(parser, capsys, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text("[network]\nminers = 4\nt_wait = 1.5\n[chain]\nblock_rate = 0.25\n")
    argv = ["latency", "analyze", "--json", "--experiment", str(config), "--set", "delta_m=2e5"]
    assert run(parser, argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["lambda"] == 0.25 and payload["aggregate_rate"] == 1.0
    p = LatencyParams(n_miners=4, n_devices=10, lambda_=0.25, t_wait=1.5, delta_m=2e5,
                      w_up=1e6, w_dn=1e6, w_m=1e7, h=1536.0, delta_d=4e4, f_c=1e9,
                      quorum=0)  # [chain] quorum = 0: a majority of the miners attests
    assert payload["quorum"] == 3 and payload["terms"]["att"]["per_attempt"] > 0
    assert payload["expected_total"] == pytest.approx(model.expected_latency(p).total)
    config.write_text("[nosuch]\nx = 1\n")
    assert run(parser, ["latency", "analyze", "--experiment", str(config)]) == 2
    assert "unknown section [nosuch]" in capsys.readouterr().err


def strict_json(text):
    """Parse JSON as a strict reader would: no NaN or Infinity."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


def review_config(tmp_path):
    path = tmp_path / "review.toml"
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in dataclasses.asdict(REVIEW).items()
                            if v is not None))
    return ["--config", str(path)]


def test_analyze_where_every_bracket_term_is_infinite_has_no_nan(parser, capsys, tmp_path):
    argv = ["latency", "analyze", *review_config(tmp_path), "--set", "lambda=1e308"]
    assert run(parser, argv) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "E[T] overflows a float" in out
    assert run(parser, [*argv, "--json"]) == 0
    payload = strict_json(capsys.readouterr().out)
    assert payload["terms"]["att"]["expected"] == 0.0
    assert payload["terms"]["bg"]["expected"] is None  # inf: 1.4e-309 s × e^(1e308 × 73)


def test_sweep_says_where_the_confidence_interval_is_undefined(parser, capsys, tmp_path):
    argv = ["latency", "sweep", "--param", "lambda", "--values", "0.01", "100", "--rounds", "500",
            *review_config(tmp_path), "--out", str(tmp_path)]
    assert run(parser, argv) == 0
    table_out = capsys.readouterr().out
    assert "undefined: the mean is infinite" in table_out and "nan" not in table_out
    rows = read_csv(tmp_path / "latency_vs_lambda.csv")
    assert rows[0]["mc_ci_undefined"] == "" and float(rows[0]["mc_ci_low"]) > 0
    assert rows[1]["mc_mean"] == "inf" and rows[1]["mc_ci_low"] == rows[1]["mc_ci_high"] == ""
    assert rows[1]["mc_ci_undefined"] == "the mean is infinite"
    assert run(parser, [*argv, "--json"]) == 0
    captured = capsys.readouterr()
    payload = strict_json(captured.out)
    assert payload[1]["mc_mean"] is None and payload[1]["mc_ci_low"] is None
    assert payload[1]["mc_ci_undefined"] == "the mean is infinite"
    assert "wrote" in captured.err
