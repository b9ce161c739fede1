"""`blockfl claim`: show and claim a device's data rewards in merkle-mode blocks.

A merkle block keeps only the root of its update records on chain: the records come from a
miner (`--miners`), are checked against the chain's root, and each unclaimed update of the
device is claimed with its Merkle proof (`--list` only shows what is claimable;
`blockfl inspect claims` shows it for every device).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from blockfl.cli.deployed import DIRECT_MODE, miner_arguments, miner_clients, open_ledger


def register(commands: argparse._SubParsersAction) -> None:
    """Add `claim`."""
    parser = commands.add_parser("claim", help="show and claim rewards of merkle-mode blocks")
    parser.add_argument("--key", required=True, help="device key: dev:N, 0x-hex, or a key file")
    miner_arguments(parser)
    parser.add_argument("--deployment", type=Path, default=Path("deployment.json"),
                        help="deployment file written by `chain deploy` (default %(default)s)")
    parser.add_argument("--rpc-url", help="JSON-RPC node (default: the deployment's)")
    parser.add_argument("--list", action="store_true", help="only show what is claimable")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(func=claim_command)


def claim_command(args: argparse.Namespace) -> int:
    """Print each merkle-block update of the device (claimed or not), claiming the others."""
    from blockfl.chain.inspection import jsonable
    from blockfl.devices.claims import claim, claimable, served_blocks
    from blockfl.keys import parse_key
    from blockfl.signing import address_of

    key = parse_key(args.key)
    device = address_of(key)
    ledger = open_ledger(args)
    if ledger.params().mode != "merkle":
        print(DIRECT_MODE)
        return 0
    rows = []
    for block in served_blocks(ledger, miner_clients(args)):
        found = claimable(ledger, block, device)
        if not args.list:
            sent = {c.index for c in claim(ledger, key, block, device)}
            found = [replace(c, claimed=True) if c.index in sent else c for c in found]
        rows += found
    if args.json:
        print(json.dumps({"device": device, "updates": [jsonable(r) for r in rows]}, indent=2))
        return 0
    print(f"device {device}: {len(rows)} updates in merkle blocks")
    for r in rows:
        state = "claimed" if r.claimed else "claimable"
        print(f"  round {r.round:>4}  leaf {r.index:>6}  samples {r.samples:>7}  "
              f"reward {r.reward}  {state}")
    print(f"balance {ledger.balance_of(device)}")
    return 0
