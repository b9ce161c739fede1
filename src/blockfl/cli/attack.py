"""`blockfl attack`: attacker fraction x attack x aggregation rule x seed -> CSV, PNGs, table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from blockfl.config import (
    AGGREGATION_RULES,
    Config,
    add_config_flags,
    check_counts,
    config_from_args,
)

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_ATTACKS = "sign_flip,scale_x10,gaussian_noise,label_flip,free_rider,sample_inflation,sybil"
DEFAULT_RULES = ",".join(AGGREGATION_RULES)


def register(commands: argparse._SubParsersAction) -> None:
    """Add `attack`."""
    parser = commands.add_parser(
        "attack", help="sweep attacker fraction x attack x rule: accuracy and rewards")
    parser.add_argument("--attacks", default=DEFAULT_ATTACKS, help="comma-separated behaviours")
    parser.add_argument("--rules", default=DEFAULT_RULES, help="comma-separated rules")
    parser.add_argument("--fractions", default="0,0.1,0.2,0.3,0.4",
                        help="attacker fractions (0 is the clean run of each rule)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--rounds", type=int, help="rounds per run (run.rounds)")
    parser.add_argument("--table-fraction", type=float, default=0.3,
                        help="the attacker fraction the table shows")
    parser.add_argument("--out", type=Path, help="output directory (default runs/attack-<time>)")
    parser.add_argument("--from-csv", type=Path,
                        help="only redraw the figures and table from an attack.csv")
    parser.add_argument("--matrix", action="store_true",
                        help="run the robustness matrix instead (every attack and rule on IID "
                             "and Dirichlet splits, beside the oracle) into OUT/matrix.csv, "
                             "resuming where it stopped; --attacks and --rules narrow it "
                             "(with --from-csv matrix.csv: only write the report)")
    parser.add_argument("--splits",
                        help="matrix: split:seeds;... (default iid:0,1,2,3,4;dirichlet0.3:"
                             "0,1,2;dirichlet1:0,1,2)")
    parser.add_argument("--large", default="50:0.2",
                        help="matrix: devices:fraction of the default rule's and the oracle's "
                             "large runs ('' for none)")
    parser.add_argument("--report", type=Path,
                        help="matrix: where to write the markdown report (default "
                             "OUT/robustness.md; the repository's is docs/robustness.md)")
    add_config_flags(parser, default="attack")
    parser.set_defaults(func=attack_command)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _or_dash(value: object, form: str) -> str:
    """`value` formatted, or "-" where it was not measured (no clean run: fraction 0)."""
    return "-" if value is None else form.format(value)


def attack_command(args: argparse.Namespace) -> int:
    """Run the sweep (or read it back), then write the figures and print the table."""
    from rich.console import Console
    from rich.table import Table

    from blockfl.sim import attack

    config = check_counts(config_from_args(args, **{"run.rounds": args.rounds}))
    out = args.out or Path(config.run.out_dir) / time.strftime("attack-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    if args.matrix:
        return _matrix(args, config, out, console)
    if args.from_csv:
        runs = attack.read_csv(args.from_csv)
    else:
        attacks, rules = _split(args.attacks), _split(args.rules)
        fractions = [float(f) for f in _split(args.fractions)]
        seeds = [int(s) for s in _split(args.seeds)]
        total = len(rules) * len(seeds) * sum(1 if f == 0 else len(attacks) for f in fractions)
        (out / "config.toml").write_text(config.to_toml())
        done = 0

        def progress(run: attack.AttackRun) -> None:
            nonlocal done
            done += 1
            console.print(f"[{done}/{total}] {run.attack:16} {run.rule:14} "
                          f"{run.fraction:4.0%} seed {run.seed}: accuracy {run.accuracy:.3f}, "
                          f"attackers got {run.attacker_reward_share:.1%} of data rewards")

        runs = attack.sweep(config, attacks, rules, fractions, seeds, out / "attack.csv",
                            progress)
    figures = attack.plot(runs, out)
    rows = attack.summary_rows(runs, args.table_fraction)
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = Table(title=f"{args.table_fraction:.0%} attackers: final accuracy (mean ± standard "
                        "deviation over seeds)")
    for column in ("attack", "rule", "accuracy", "clean", "gap to clean FedAvg (points)",
                   "attackers' data rewards", "excluded", "rejected"):
        table.add_column(column, justify="left" if column in ("attack", "rule") else "right")
    for row in rows:
        best = " (best)" if row["best"] else ""
        table.add_row(str(row["attack"]), f"{row['rule']}{best}",
                      f"{row['accuracy']:.3f} ± {row['accuracy_sd']:.3f}",
                      _or_dash(row["clean_accuracy"], "{:.3f}"),
                      _or_dash(row["gap_points"], "{:+.1f}"),
                      f"{row['attacker_reward_share']:.1%}", f"{row['excluded']:.0f}",
                      f"{row['rejected']:.0f}")
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    print(f"wrote {out / 'attack.csv'}, {out / 'summary.json'} and "
          f"{', '.join(p.name for p in figures)} in {out}")
    return 0


def _matrix(args: argparse.Namespace, config: Config, out: Path, console: Console) -> int:
    """`attack --matrix`: run (or resume) the matrix, then write its report."""
    from blockfl.sim import matrix

    try:
        splits = matrix.SPLITS if not args.splits else {
            name: [int(x) for x in _split(seeds)] for name, _, seeds in
            (part.partition(":") for part in args.splits.split(";") if part.strip())}
        large = None
        if args.large:
            devices, _, fraction = args.large.partition(":")
            large = (int(devices), float(fraction))
    except ValueError as exc:
        raise SystemExit(f"error: bad --splits or --large: {exc}") from None
    attacks = _split(args.attacks) if args.attacks != DEFAULT_ATTACKS else list(matrix.ATTACKS)
    rules = _split(args.rules)
    default = config.aggregation.rule
    planned = matrix.plan(rules, default, attacks, splits, large=large)
    (out / "config.toml").write_text(config.to_toml())

    def progress(p: matrix.Progress) -> None:
        r = p.row.run
        console.print(f"[{p.done}/{p.total}] {p.row.split} seed {r.seed} {p.row.devices} "
                      f"devices {r.attack} x {r.rule}: accuracy {r.accuracy:.3f}, attackers "
                      f"got {r.attacker_reward_share:.1%} | {p.elapsed / 60:.0f} min, about "
                      f"{p.left / 60:.0f} min left")

    rows = (matrix.read_rows(args.from_csv) if args.from_csv
            else matrix.run_matrix(config, planned, out / "matrix.csv", progress))
    report = args.report or out / "robustness.md"
    command = f"blockfl attack --matrix --out {out}"
    matrix.write_report(rows, default, len(planned), report, command, config.run.rounds)
    print(f"wrote {out / 'matrix.csv'} ({len(rows)} of {len(planned)} runs) and {report}")
    return 0
