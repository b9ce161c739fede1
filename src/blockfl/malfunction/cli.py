"""``blockfl malfunction``: vanilla FL vs BlockFL (unverified, verified) under malfunction.

The experiment itself lives in
:mod:`blockfl.malfunction.experiment`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from blockfl.latency import cli
from blockfl.malfunction.experiment import (
    CORRUPTIONS,
    SYSTEMS,
    MalfunctionConfig,
    MalfunctionResults,
    run_malfunction,
    summary,
    write_outputs,
)


def probabilities(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of probabilities, e.g. ``0,0.1,0.3``."""
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text!r}") from None


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``malfunction`` command."""
    d = MalfunctionConfig()
    parser = commands.add_parser(
        "malfunction",
        parents=[cli.params_arguments()],
        help="accuracy and latency of vanilla FL and BlockFL when servers/miners malfunction",
    )
    parser.add_argument("--p", type=float, default=d.p, help=f"malfunction probability ({d.p})")
    parser.add_argument(
        "--sweep-p",
        type=probabilities,
        default=d.sweep_p,
        metavar="P,P,...",
        help="probabilities for the final-accuracy sweep (default "
        + ",".join(f"{p:g}" for p in d.sweep_p)
        + ")",
    )
    for flag, value in [
        ("rounds", d.rounds),
        ("devices", d.devices),
        ("miners", d.miners),
        ("seed", d.seed),
        ("epochs", d.epochs),
        ("batch-size", d.batch_size),
    ]:
        parser.add_argument(f"--{flag}", type=int, default=value, help=f"default {value}")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    parser.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration")
    parser.add_argument("--dataset", choices=["digits", "synthetic"], default=d.dataset)
    parser.add_argument("--model", default=d.model, help=f"model name (default {d.model})")
    parser.add_argument("--partition", choices=["iid", "dirichlet"], default=d.partition)
    parser.add_argument("--corruption", choices=sorted(CORRUPTIONS), default=d.corruption)
    parser.add_argument("--out", type=Path, required=True, help="output directory for CSV/PNG")
    parser.set_defaults(func=malfunction_command)


def config_from_args(args: argparse.Namespace) -> MalfunctionConfig:
    """The experiment configuration of parsed ``malfunction`` arguments."""
    return MalfunctionConfig(
        rounds=args.rounds,
        devices=args.devices,
        miners=args.miners,
        p=args.p,
        sweep_p=args.sweep_p,
        seed=args.seed,
        dataset=args.dataset,
        model=args.model,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        partition=args.partition,
        alpha=args.alpha,
        corruption=args.corruption,
        latency=cli.load_params(args),
    )


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or math.isnan(x) else format(x, spec)


def tables(results: MalfunctionResults) -> str:
    """Per-round table at ``p`` and the final-round table of every ``p``."""
    p = results.config.p
    metric = "acc" if results.task == "classification" else "mse"
    header = ["round"]
    for system in SYSTEMS:
        header += [f"{system}: {metric}", "T (s)", "affected"]
    rows = []
    for r in range(results.config.rounds):
        row = [str(r + 1)]
        for system in SYSTEMS:
            rec = results.trajectory(system, p)[r]
            value = rec.accuracy if results.task == "classification" else rec.loss
            row += [_fmt(value, ".4f"), f"{rec.latency:.3f}", str(rec.affected_devices)]
        rows.append(row)
    sweep_header = [
        "p", "system", f"final {metric}", f"mean {metric}", "total latency (s)",
        "mean affected", "re-downloads", "stalls",
    ]  # fmt: skip
    key = "accuracy" if results.task == "classification" else "loss"
    sweep_rows = [
        [
            f"{run['p']:g}",
            run["system"],
            _fmt(run[f"final_{key}"], ".4f"),
            _fmt(run[f"mean_{key}"], ".4f"),
            f"{run['total_latency']:.2f}",
            f"{run['mean_affected_devices']:.2f}",
            str(run["redownloads"]),
            str(run["stalled_slots"]),
        ]
        for run in summary(results)["runs"]
    ]
    return "\n".join(
        [f"p = {p:g}", cli._table(header, rows), "", cli._table(sweep_header, sweep_rows)]
    )


def malfunction_command(args: argparse.Namespace) -> int:
    """Run the experiment, write CSV/JSON/PNG into ``--out`` and print the tables."""
    try:
        config = config_from_args(args)
        results = run_malfunction(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = write_outputs(results, args.out)
    print(tables(results))
    for path in paths:
        print(f"wrote {path}")
    return 0
