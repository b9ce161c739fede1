"""``blockfl latency`` subcommands: ``analyze`` (closed-form breakdown, lambda*) and ``sweep``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from blockfl.latency.model import (
    PARAMETERS,
    TERMS,
    LatencyParams,
    default_config_path,
    expected_latency,
    log_expected_latency,
    numeric_optimal_lambda,
    optimal_lambda,
    optimal_latency,
)
from blockfl.latency.sweep import SWEEP_PARAMS, run_sweep
from blockfl.text_table import table

LAMBDA_CONVENTION = (
    "λ is the block generation rate of EACH miner; the network's (winner's) rate is N_M λ"
)

PARAMETERS_HELP = "latency parameters (--set KEY=VALUE, SI units):\n" + "\n".join(
    f"  {key:<18} {meaning}" for key, meaning in PARAMETERS.items()
)


def params_arguments() -> argparse.ArgumentParser:
    """A parent parser with ``--config`` and ``--set`` for the latency parameters."""
    common = argparse.ArgumentParser(add_help=False)
    source = common.add_mutually_exclusive_group()
    source.add_argument(
        "--config", type=Path, default=None, help="latency TOML (default: packaged latency.toml)"
    )
    source.add_argument(
        "--experiment", metavar="CONFIG", default=None,
        help="take N_D, N_M, lambda, T_wait, links and local training from an experiment config "
        "(as simulate's --config: a TOML file, or demo/network); the update size stays delta_m",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, VALUE in TOML syntax (repeatable), e.g. --set n_miners=5; "
        "the keys are listed below",
    )
    return common


def _add_command(
    commands: argparse._SubParsersAction, name: str, **kwargs: object
) -> argparse.ArgumentParser:
    """A latency subcommand whose ``--help`` lists the parameter keys."""
    return commands.add_parser(
        name, epilog=PARAMETERS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,  # type: ignore[arg-type]
    )


def default_out_dir(kind: str) -> Path:
    """A fresh run directory ``runs/<kind>-<time>`` for a command's outputs."""
    stem = Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, suffix = stem, 1
    while out.exists():
        suffix += 1
        out = stem.with_name(f"{stem.name}-{suffix}")
    return out


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add the ``latency`` command with its ``analyze``, ``sweep`` and ``compare`` subcommands;
    return its subcommands, for commands that other packages add (``malfunction``)."""
    latency = subparsers.add_parser("latency", help="BlockFL end-to-end latency model")
    commands = latency.add_subparsers(dest="latency_command", required=True)

    common = params_arguments()

    analyze = _add_command(
        commands, "analyze", parents=[common], help="expected latency per term, p_fork and lambda*"
    )
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.set_defaults(func=analyze_command)

    sweep = _add_command(
        commands, "sweep", parents=[common], help="analytic vs Monte Carlo latency over a parameter"
    )
    sweep.add_argument("--param", required=True, choices=SWEEP_PARAMS)
    sweep.add_argument("--values", type=float, nargs="+", help="explicit sweep values")
    sweep.add_argument("--start", type=float, help="first value of a range")
    sweep.add_argument("--stop", type=float, help="last value of a range (inclusive)")
    sweep.add_argument("--num", type=int, default=9, help="number of range values (default 9)")
    sweep.add_argument("--log", action="store_true", help="geometric instead of linear range")
    sweep.add_argument("--rounds", type=int, default=100_000, help="Monte Carlo rounds per point")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    sweep.add_argument(
        "--out", type=Path, help="output directory for CSV/PNG (default: runs/latency-sweep-<time>)"
    )
    sweep.set_defaults(func=sweep_command)
    from blockfl.latency import compare  # imported here: it reuses this module's helpers

    compare.register(commands)
    return commands


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
    """Parameters from ``--config`` (or the packaged defaults) with ``--set`` overrides; any
    problem is a one-line ``ValueError``."""
    if getattr(args, "experiment", None):
        from blockfl.config import load_config
        from blockfl.latency.from_config import params_from_config

        try:
            config = load_config(args.experiment)  # bad TOML is already a ValueError
        except OSError as exc:
            raise ValueError(f"cannot read experiment config {args.experiment}: {exc}") from None
        params = params_from_config(config, LatencyParams().delta_m)
        return params.with_overrides(dict(parse_override(item) for item in args.overrides))
    path = args.config or default_config_path()
    try:
        params = LatencyParams.from_toml(path)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read latency config {path}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return params.with_overrides(dict(parse_override(item) for item in args.overrides))


def sweep_values(args: argparse.Namespace) -> list[float]:
    """The sweep values from ``--values`` or ``--start/--stop/--num [--log]``."""
    if args.values:
        return list(args.values)
    if args.start is None or args.stop is None:
        raise ValueError("give --values or both --start and --stop")
    space = np.geomspace if args.log else np.linspace
    return [float(v) for v in space(args.start, args.stop, args.num)]


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr (hidden when it is not a terminal); yields ``advance()``."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def _finite_or_none(x: object) -> object:
    """``x``, or ``None`` for a float past float range (JSON has no ``inf``)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def analyze_command(args: argparse.Namespace) -> int:
    """Print the closed-form latency breakdown, p_fork, E[N_fork] and lambda* (per miner and
    for the network); ``E[T]`` past float range is ``inf`` with its log10 beside it."""
    try:
        params = load_params(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = expected_latency(params)
    contributions = result.contributions()
    star = optimal_lambda(params)
    summary = {
        "lambda": params.lambda_,
        "aggregate_rate": params.aggregate_rate,
        "quorum": params.attesters,
        "p_fork": result.p_fork,
        "expected_n_fork": result.n_fork,
        "expected_total": result.total,
        "log10_expected_total": log_expected_latency(params) / math.log(10.0),
        "lambda_star": star,
        "lambda_star_numeric": numeric_optimal_lambda(params),
        "aggregate_rate_star": params.n_miners * star,
        "total_at_lambda_star": optimal_latency(params),
    }
    if args.json:
        terms = {
            t: {"per_attempt": getattr(result, f"t_{t}"),
                "expected": _finite_or_none(contributions[t])}
            for t in TERMS
        }
        payload = {
            "lambda_convention": "per_miner",
            "terms": terms,
            **{k: _finite_or_none(v) for k, v in summary.items()},
        }
        print(json.dumps(payload, indent=2))
        return 0
    rows = [[f"T_{t}", _fmt(getattr(result, f"t_{t}")), _fmt(contributions[t])] for t in TERMS]
    print(table(["term", "per attempt (s)", "in E[T] (s)"], rows))
    print()
    print(table(["quantity", "value"], [[k, _fmt(v)] for k, v in summary.items()]))
    print()
    print(LAMBDA_CONVENTION + ": lambda_star is per miner, aggregate_rate_star = N_M lambda_star.")
    if math.isinf(star):
        print("A single miner (or T_bp = 0) never forks: latency falls with λ, λ* = ∞.")
    if math.isinf(result.total):
        print("E[T] overflows a float here (forks make rounds practically endless).")
    return 0


SWEEP_COLUMNS = ["E[T] analytic", "MC mean", "MC 95% CI", "p_fork", "MC fork rate", "λ*"]


def _sweep_cells(row: dict) -> list[str]:
    """A sweep row as table cells; an undefined confidence interval says why."""
    ci = (f"[{row['mc_ci_low']:.5g}, {row['mc_ci_high']:.5g}]" if not row["mc_ci_undefined"]
          else f"undefined: {row['mc_ci_undefined']}")
    return [f"{row['value']:.6g}", f"{row['analytic_total']:.6g}", f"{row['mc_mean']:.6g}", ci,
            f"{row['p_fork']:.4f}", f"{row['mc_fork_rate']:.4f}", f"{row['lambda_star']:.6g}"]


def sweep_command(args: argparse.Namespace) -> int:
    """Run a sweep, write CSV/PNG into ``--out`` and print a table (``--json``: the rows, with
    ``null`` for values past float range)."""
    try:
        params = load_params(args)
        values = sweep_values(args)
        out = args.out or default_out_dir(f"latency-sweep-{args.param}")
        with progress_bar(len(values), f"sweep {args.param}") as advance:
            rows, paths = run_sweep(
                params, args.param, values, out, args.rounds, args.seed, on_point=advance
            )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{k: _finite_or_none(v) for k, v in r.items()} for r in rows], indent=2))
    else:
        print(table([args.param, *SWEEP_COLUMNS], [_sweep_cells(r) for r in rows]))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0
