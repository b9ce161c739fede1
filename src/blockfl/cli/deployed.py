"""What `inspect` and `claim` share to reach a deployed chain: its ledger (`--deployment`,
`--rpc-url`) and the miners that serve merkle blocks' records (`--miners`, `--ca-cert`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from blockfl.cli import args as cli_args

if TYPE_CHECKING:
    from blockfl.chain.evm import EvmLedger
    from blockfl.client import MinerClient

DIRECT_MODE = "this deployment is in direct mode: rewards are paid in the commit, nothing to claim"


def open_ledger(args: argparse.Namespace) -> EvmLedger:
    """The deployment's ledger, through --rpc-url if given."""
    from blockfl.chain.deployment import Deployment

    return Deployment.read(args.deployment).ledger(args.rpc_url)


def miner_arguments(parser: argparse.ArgumentParser) -> None:
    """`--miners` and `--ca-cert`: the miners that serve merkle blocks' records."""
    parser.add_argument("--miners", required=True,
                        help="comma-separated miner URLs (they serve the blocks' records)")
    parser.add_argument("--ca-cert", type=Path, help="CA certificate for HTTPS miners")


def miner_clients(args: argparse.Namespace) -> list[MinerClient]:
    """Clients of the `--miners` URLs."""
    return cli_args.miner_clients(args.miners, args.ca_cert)
