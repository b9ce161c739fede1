"""The `blockfl` command line: one subcommand module per area, registered here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from blockfl.cli import chain as chain_commands
from blockfl.cli import inspect as inspect_commands
from blockfl.cli import network as network_commands
from blockfl.cli import nodes as node_commands
from blockfl.cli import run as run_commands
from blockfl.latency import cli as latency_commands
from blockfl.malfunction import cli as malfunction_commands


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="blockfl",
        description="BlockFL: blockchain-incentivized federated learning on an Ethereum chain.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (run_commands, chain_commands, node_commands, network_commands,
                   inspect_commands):
        module.register(commands)
    malfunction_commands.register(latency_commands.register(commands))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `blockfl` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ConnectionError, LookupError, ValueError) as exc:
        print(f"blockfl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
