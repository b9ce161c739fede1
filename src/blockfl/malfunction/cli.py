"""``blockfl malfunction``: vanilla FL vs BlockFL (unverified, verified) under malfunction.

The experiment is configured like ``simulate``: a ``Config`` (``--config``, ``--set
SECTION.FIELD=VALUE``, ``--section-field VALUE``) whose ``[malfunction]`` section holds the
experiment's own fields; a few shortcuts (``--p``, ``--miners``, ...) set common fields, and a
shortcut that disagrees with an explicit flag is an error. Heavy modules (torch) are imported
only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blockfl.config import add_config_flags, config_from_args

SHORTCUTS = {
    "p": ("malfunction.p", float, "malfunction probability of the per-round trajectories"),
    "sweep_p": ("malfunction.sweep_p", str, "further probabilities, e.g. 0,0.1,0.3"),
    "seeds": ("malfunction.seeds", int, "number of seeds (run.seed, run.seed + 1, ...)"),
    "target": ("malfunction.target_accuracy", float, "target test accuracy"),
    "corruption": ("malfunction.corruption", str, "noise | sign"),
    "rounds": ("run.rounds", int, "rounds per run"),
    "seed": ("run.seed", int, "first seed"),
    "devices": ("network.devices", int, "number of devices N_D"),
    "miners": ("network.miners", int, "number of miners N_M"),
}


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``malfunction`` command."""
    parser = commands.add_parser(
        "malfunction",
        help="vanilla FL vs BlockFL when servers/miners fail: accuracy and time to accuracy",
        description="Accuracy (real training) and latency (the latency model of this config) "
        "of vanilla FL, BlockFL without and with model verification when the server/miners "
        "hand out a corrupted model; time to a target accuracy over seeds.",
    )
    for name, (dotted, kind, text) in SHORTCUTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{text} ({dotted})")
    parser.add_argument("--out", type=Path,
                        help="output directory (default: runs/malfunction-<time>)")
    add_config_flags(parser)
    parser.set_defaults(func=malfunction_command)


def malfunction_command(args: argparse.Namespace) -> int:
    """Run the experiment, write CSV/JSON/PNG into ``--out`` and print the tables."""
    from blockfl.latency.cli import default_out_dir, progress_bar
    from blockfl.malfunction.experiment import run_malfunction, runs_count, validate
    from blockfl.malfunction.outputs import write_outputs
    from blockfl.malfunction.report import sweep_table, target_table, trajectory_table
    from blockfl.malfunction.time_to_accuracy import summarize, times_to_target

    try:
        config = config_from_args(
            args, **{dotted: getattr(args, name) for name, (dotted, _, _) in SHORTCUTS.items()})
        validate(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with progress_bar(runs_count(config), "malfunction runs") as advance:
        results = run_malfunction(config, on_run=advance)
    paths = write_outputs(results, args.out or default_out_dir("malfunction"))
    print(trajectory_table(results))
    print()
    print(sweep_table(results))
    print()
    print(target_table(results, summarize(times_to_target(results))))
    for path in paths:
        print(f"wrote {path}")
    return 0
