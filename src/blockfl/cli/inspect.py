"""`blockfl inspect blocks|updates|rewards|claims|privacy|model`: read a deployment through any
JSON-RPC node (`claims` also asks miners for the records of merkle blocks)."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Column, Table

from blockfl.cli.args import BLOCK_ROUND, ROUND
from blockfl.cli.deployed import DIRECT_MODE, miner_arguments, miner_clients, open_ledger
from blockfl.hashing import to_hex

if TYPE_CHECKING:
    from blockfl.devices.claims import Claimable

TOKEN_DECIMALS = 18
#: table width when stdout is not a terminal (rich would otherwise squeeze tables into 80)
PIPE_WIDTH = 160

Number = partial(Column, justify="right")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `inspect` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--deployment", type=Path, default=Path("deployment.json"),
                        help="deployment file written by `chain deploy` (default %(default)s)")
    common.add_argument("--rpc-url", help="JSON-RPC node (default: the one in --deployment)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    inspect = commands.add_parser("inspect", help="read blocks, updates, rewards, models on chain")
    sub = inspect.add_subparsers(dest="inspect_command", required=True)

    blocks = sub.add_parser("blocks", parents=[common], help="committed blocks")
    blocks.add_argument("--from", dest="first", type=BLOCK_ROUND, default=1, metavar="ROUND")
    blocks.add_argument("--to", dest="last", type=BLOCK_ROUND, metavar="ROUND")
    blocks.set_defaults(func=inspect_blocks)

    updates = sub.add_parser("updates", parents=[common], help="accepted updates of a round")
    updates.add_argument("round", type=BLOCK_ROUND)
    updates.set_defaults(func=inspect_updates)

    rewards = sub.add_parser(
        "rewards", parents=[common], help="token balances against reward events (exit 1: differ)"
    )
    rewards.set_defaults(func=inspect_rewards)

    claims = sub.add_parser(
        "claims", parents=[common],
        help="rewards of merkle-mode blocks per round and device: claimed or claimable",
    )
    claims.add_argument("--address", help="only this device's updates")
    miner_arguments(claims)
    claims.set_defaults(func=inspect_claims)

    budgets = sub.add_parser(
        "privacy", parents=[common],
        help="per device: rounds its updates are in, epsilon spent, budget left ([privacy])",
    )
    budgets.set_defaults(func=inspect_privacy)

    model = sub.add_parser(
        "model", parents=[common],
        help="compare a model file with a round's global model hash (exit 1: differ)",
    )
    model.add_argument("round", type=ROUND, help="round (0: the genesis model)")
    model.add_argument("--file", type=Path, required=True, help="safetensors model file")
    model.set_defaults(func=inspect_model)


def tokens(amount: int) -> str:
    """A token amount in whole tokens, exact (18 decimals, trailing zeros dropped)."""
    whole, fraction = divmod(amount, 10**TOKEN_DECIMALS)
    digits = f"{fraction:0{TOKEN_DECIMALS}d}".rstrip("0")
    return f"{whole:,}" + (f".{digits}" if digits else "")


def short(value: bytes) -> str:
    """A hash abbreviated for tables: 0x12345678…abcdef."""
    text = to_hex(value)
    return f"{text[:10]}…{text[-6:]}"


def emit_json(value: Any) -> None:
    """Print JSON output."""
    print(json.dumps(value, indent=2))


def emit_table(table: Table) -> None:
    """Print a rich table (wide when piped)."""
    Console(width=None if sys.stdout.isatty() else PIPE_WIDTH).print(table)


def inspect_blocks(args: argparse.Namespace) -> int:
    """Table of committed blocks."""
    from blockfl.chain import inspection

    found = inspection.blocks(open_ledger(args), args.first, args.last)
    if args.json:
        emit_json([inspection.block_json(b) for b in found])
        return 0
    table = Table(
        Number("round"), "miner", "global model", "block hash", Number("updates"),
        Number("samples"), "time", title="committed blocks",
    )
    for b in found:
        table.add_row(
            str(b.round), b.miner, short(b.global_model_hash), short(b.block_hash),
            str(b.num_updates), str(b.total_samples), inspection.iso_time(b.timestamp),
        )
    emit_table(table)
    return 0


def inspect_updates(args: argparse.Namespace) -> int:
    """Table of the accepted updates of a round."""
    from blockfl.chain import inspection

    ledger = open_ledger(args)
    head = ledger.head().round
    if args.round > head:
        print(f"blockfl inspect updates: no block committed for round {args.round} (the head "
              f"is round {head})", file=sys.stderr)
        return 1
    found = inspection.updates(ledger, args.round)
    if args.json:
        emit_json([inspection.jsonable(u) for u in found])
        return 0
    table = Table(
        "device", "update hash", Number("samples"), Number("reward (tokens)"),
        title=f"accepted updates of round {args.round}",
    )
    for u in found:
        table.add_row(u.device, short(u.update_hash), str(u.samples), tokens(u.reward))
    emit_table(table)
    return 0


def inspect_privacy(args: argparse.Namespace) -> int:
    """The deployment's `[privacy]` and each device's budget, charged from the chain."""
    from blockfl import privacy
    from blockfl.chain.deployment import Deployment
    from blockfl.chain.participation import Participation
    from blockfl.protocol import ProtocolSpec

    deployment = Deployment.read(args.deployment)
    cfg = ProtocolSpec.from_dict(deployment.protocol_spec).privacy
    if cfg.mode == "off":
        print("privacy is off in this deployment ([privacy] mode = \"off\"): updates are not "
              "noised and no epsilon is spent", file=sys.stderr)
        return 0
    ledger = deployment.ledger(args.rpc_url)
    report = privacy.summary(cfg, Participation(ledger).charged())
    if args.json:
        emit_json(report)
        return 0
    budget = f", budget {cfg.epsilon_budget:g}" if cfg.epsilon_budget else ""
    per_device = cfg.mode == "dp_sgd" and cfg.budget_rounds > 0
    noise = (f"noise per device (lasting {cfg.budget_rounds} rounds, at least "
             f"x{cfg.noise_multiplier:g})" if per_device else f"noise x{cfg.noise_multiplier:g}")
    table = Table("device", Number("rounds"), Number("epsilon"), Number("budget left"),
                  *([Number("noise")] if per_device else []),
                  title=f"privacy: {cfg.mode} mode, {noise} of clip "
                        f"{privacy.clip_of(cfg):g}, delta {cfg.delta:g}{budget} (Opacus RDP)")
    for row in report["devices"]:
        left = row["budget_left"]
        table.add_row(row["address"], str(row["rounds"]), f"{row['epsilon']:.4g}",
                      "" if left is None else f"{left:.4g}",
                      *([f"{row['noise_multiplier']:g}"] if per_device else []))
    emit_table(table)
    return 0


def inspect_rewards(args: argparse.Namespace) -> int:
    """Token balance against reward events per address; exit 1 if any differ."""
    from blockfl.chain import inspection

    rows = inspection.rewards(open_ledger(args))
    balance = sum(r.balance for r in rows)
    event_total = sum(r.event_total for r in rows)
    agrees = all(r.agrees for r in rows)
    if args.json:
        emit_json({
            "rows": [inspection.jsonable(r) for r in rows],
            "total": {"balance": str(balance), "event_total": str(event_total)},
            "agrees": agrees,
        })
    else:
        table = Table(
            "address", "role", Number("balance (tokens)"), Number("reward events (tokens)"),
            "agrees", title="rewards: token balances against events",
        )
        for r in rows:
            table.add_row(r.address, r.role, tokens(r.balance), tokens(r.event_total),
                          "yes" if r.agrees else "NO")
        table.add_section()
        table.add_row("total", "", tokens(balance), tokens(event_total), "yes" if agrees else "NO")
        emit_table(table)
    return 0 if agrees else 1


def claim_totals(rows: list[Claimable]) -> dict[str, int]:
    """Samples and rewards of claim rows: in all, claimed and still claimable."""
    return {"samples": sum(r.samples for r in rows),
            "reward": sum(r.reward for r in rows),
            "claimed": sum(r.reward for r in rows if r.claimed),
            "claimable": sum(r.reward for r in rows if not r.claimed)}


def inspect_claims(args: argparse.Namespace) -> int:
    """Table of the updates of merkle blocks (records from the miners, checked against the
    chain's roots): samples, reward, claimed or claimable, with totals."""
    from blockfl.chain import inspection
    from blockfl.devices.claims import claimable, served_blocks

    ledger = open_ledger(args)
    mode = ledger.params().mode
    rows = [] if mode != "merkle" else [
        c for block in served_blocks(ledger, miner_clients(args))
        for c in claimable(ledger, block, args.address)]
    totals = claim_totals(rows)
    if args.json:
        emit_json({"mode": mode, "rows": [inspection.jsonable(r) for r in rows],
                   "total": {k: str(v) for k, v in totals.items()}})
        return 0
    if mode != "merkle":
        print(DIRECT_MODE)
        return 0
    table = Table(
        Number("round"), Number("leaf"), "device", Number("samples"), Number("reward (tokens)"),
        "state", title="merkle-block rewards: claimed or claimable",
    )
    for r in rows:
        table.add_row(str(r.round), str(r.index), r.device, str(r.samples), tokens(r.reward),
                      "claimed" if r.claimed else "claimable")
    table.add_section()
    table.add_row("total", "", "", str(totals["samples"]), tokens(totals["reward"]),
                  f"claimed {tokens(totals['claimed'])}, "
                  f"claimable {tokens(totals['claimable'])}")
    emit_table(table)
    return 0


def inspect_model(args: argparse.Namespace) -> int:
    """Compare a model file with a round's global model hash: exit 0 match, 1 mismatch, 2 error."""
    from blockfl.chain import inspection

    ledger = open_ledger(args)
    try:
        check = inspection.check_model(ledger, args.round, args.file)
    except (OSError, ValueError) as exc:
        print(f"blockfl inspect model: cannot check {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        emit_json(inspection.jsonable(check))
    else:
        print(f"{'match' if check.matches else 'MISMATCH'}: {check.path}")
        for label, value in (("file tensor hash", check.file_hash),
                             (f"round {check.round} global model", check.chain_hash)):
            print(f"  {label + ':':<28}{to_hex(value)}")
    return 0 if check.matches else 1
