"""The `blockfl` command line: one subcommand module per area, registered here.

`blockfl --help` must answer at once, so the top-level parser names every subcommand from the
table below without importing its module; only the module of the subcommand being run is
imported (and registers its full parser). Command modules import torch, web3 and FastAPI inside
the functions that need them, never at module level (a test holds every module to that).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from blockfl.chain.errors import BlockRejected  # light: names only, no web3

#: subcommand -> (module whose `register(commands)` adds it, one line for `blockfl --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("blockfl.cli.run", "10 devices, 3 miners, 10 rounds on the embedded chain"),
    "simulate": ("blockfl.cli.run", "run an experiment from a TOML config"),
    "chain": ("blockfl.cli.chain", "local anvil node and contract deployment"),
    "miner": ("blockfl.cli.nodes", "run a miner service (HTTP API + mining loop)"),
    "device": ("blockfl.cli.nodes", "run a device: train, upload, follow the chain"),
    "network": ("blockfl.cli.network", "a local network of miner/device processes"),
    "attack": ("blockfl.cli.attack", "attacker fraction x attack x rule: accuracy, rewards"),
    "claim": ("blockfl.cli.claim", "claim a device's merkle-block rewards"),
    "inspect": ("blockfl.cli.inspect", "read blocks, updates, rewards and models from a chain"),
    "model": ("blockfl.cli.model", "export, evaluate, predict with a global model"),
    "data": ("blockfl.cli.data", "per-device data files from a data set"),
    "new": ("blockfl.cli.new", "start a task from a template: new task NAME"),
    "explorer": ("blockfl.cli.explorer", "a live web page of blocks, rewards, models, accuracy"),
    "latency": ("blockfl.latency.cli", "BlockFL end-to-end latency model"),
    "malfunction": ("blockfl.malfunction.cli", "vanilla FL vs BlockFL when servers/miners fail"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser. With `command`, only that subcommand's module is imported and the
    others are listed by name; with None every module registers its full parser."""
    parser = argparse.ArgumentParser(
        prog="blockfl",
        description="BlockFL: blockchain-incentivized federated learning on an Ethereum chain.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    modules = dict.fromkeys(
        module for name, (module, _) in COMMANDS.items() if command in (None, name)
    )
    for module in modules:
        importlib.import_module(module).register(commands)
    for name, (_, text) in COMMANDS.items():
        if name not in commands.choices:
            commands.add_parser(name, help=text)
    return parser


def innermost(parser: argparse.ArgumentParser,
              args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the deepest subcommand that `args` selected."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, actions[0].dest, None) if actions else None
        if chosen not in (actions[0].choices if actions else {}):
            return parser
        parser = actions[0].choices[chosen]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `blockfl` console script."""
    # one torch thread per process unless told otherwise: small models run many times faster
    # than on a thread per core, and many of our processes share a machine (read at torch import)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a typo in a flag: the usage of the subcommand it was given to, not blockfl's
        innermost(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ConnectionError, LookupError, ValueError, BlockRejected) as exc:
        print(f"blockfl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
