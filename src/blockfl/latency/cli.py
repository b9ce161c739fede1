"""``blockfl latency`` subcommands: ``analyze`` (closed-form breakdown, lambda*) and ``sweep``."""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blockfl.latency.model import (
    TERMS,
    LatencyParams,
    default_config_path,
    expected_latency,
    numeric_optimal_lambda,
    optimal_lambda,
    optimal_latency,
)
from blockfl.latency.sweep import SWEEP_PARAMS, run_sweep


def params_arguments() -> argparse.ArgumentParser:
    """A parent parser with ``--config`` and ``--set`` for the latency parameters."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=None, help="latency TOML (default: packaged latency.toml)"
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, VALUE in TOML syntax (repeatable), e.g. --set n_miners=5",
    )
    return common


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``latency`` command with its ``analyze`` and ``sweep`` subcommands."""
    latency = subparsers.add_parser("latency", help="BlockFL end-to-end latency model")
    commands = latency.add_subparsers(dest="latency_command", required=True)

    common = params_arguments()

    analyze = commands.add_parser(
        "analyze", parents=[common], help="expected latency per term, p_fork and lambda*"
    )
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.set_defaults(func=analyze_command)

    sweep = commands.add_parser(
        "sweep", parents=[common], help="analytic vs Monte Carlo latency over a parameter"
    )
    sweep.add_argument("--param", required=True, choices=SWEEP_PARAMS)
    sweep.add_argument("--values", type=float, nargs="+", help="explicit sweep values")
    sweep.add_argument("--start", type=float, help="first value of a range")
    sweep.add_argument("--stop", type=float, help="last value of a range (inclusive)")
    sweep.add_argument("--num", type=int, default=9, help="number of range values (default 9)")
    sweep.add_argument("--log", action="store_true", help="geometric instead of linear range")
    sweep.add_argument("--rounds", type=int, default=100_000, help="Monte Carlo rounds per point")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--out", type=Path, required=True, help="output directory for CSV/PNG")
    sweep.set_defaults(func=sweep_command)
    # imported here: these subcommand modules reuse this module's helpers
    from blockfl.latency import compare, malfunction_cli

    compare.register(commands)
    malfunction_cli.register(commands)


def parse_override(item: str) -> tuple[str, object]:
    """Parse ``KEY=VALUE`` with VALUE in TOML syntax (numbers, lists, quoted strings)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {item!r}")
    try:
        return key.strip(), tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"cannot parse value of {key.strip()!r}: {raw!r}") from exc


def load_params(args: argparse.Namespace) -> LatencyParams:
    """Parameters from ``--config`` (or the packaged defaults) with ``--set`` overrides."""
    params = LatencyParams.from_toml(args.config or default_config_path())
    return params.with_overrides(dict(parse_override(item) for item in args.overrides))


def sweep_values(args: argparse.Namespace) -> list[float]:
    """The sweep values from ``--values`` or ``--start/--stop/--num [--log]``."""
    if args.values:
        return list(args.values)
    if args.start is None or args.stop is None:
        raise ValueError("give --values or both --start and --stop")
    space = np.geomspace if args.log else np.linspace
    return [float(v) for v in space(args.start, args.stop, args.num)]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    rule = "  ".join("-" * w for w in widths)
    head = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    return "\n".join([head, rule, *lines])


def analyze_command(args: argparse.Namespace) -> int:
    """Print the closed-form latency breakdown, p_fork, E[N_fork] and lambda*."""
    try:
        params = load_params(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = expected_latency(params)
    contributions = result.contributions()
    summary = {
        "lambda": params.lambda_,
        "p_fork": result.p_fork,
        "expected_n_fork": result.n_fork,
        "expected_total": result.total,
        "lambda_star": optimal_lambda(params),
        "lambda_star_numeric": numeric_optimal_lambda(params),
        "total_at_lambda_star": optimal_latency(params),
    }
    if args.json:
        terms = {
            t: {"per_attempt": getattr(result, f"t_{t}"), "expected": contributions[t]}
            for t in TERMS
        }
        payload = {"terms": terms, **{k: _finite_or_none(v) for k, v in summary.items()}}
        print(json.dumps(payload, indent=2))
        return 0
    rows = [
        [f"T_{t}", f"{getattr(result, f't_{t}'):.6g}", f"{contributions[t]:.6g}"] for t in TERMS
    ]
    print(_table(["term", "per attempt (s)", "in E[T] (s)"], rows))
    print()
    print(_table(["quantity", "value"], [[k, f"{v:.6g}"] for k, v in summary.items()]))
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    """Run a sweep, write CSV/PNG into ``--out`` and print a table."""
    try:
        params = load_params(args)
        values = sweep_values(args)
        rows, paths = run_sweep(params, args.param, values, args.out, args.rounds, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    header = [args.param, "E[T] analytic", "MC mean", "MC 95% CI", "p_fork", "MC fork rate", "λ*"]
    table = [
        [
            f"{r['value']:.6g}",
            f"{r['analytic_total']:.6g}",
            f"{r['mc_mean']:.6g}",
            f"[{r['mc_ci_low']:.5g}, {r['mc_ci_high']:.5g}]",
            f"{r['p_fork']:.4f}",
            f"{r['mc_fork_rate']:.4f}",
            f"{r['lambda_star']:.6g}",
        ]
        for r in rows
    ]
    print(_table(header, table))
    for path in paths:
        print(f"wrote {path}")
    return 0
