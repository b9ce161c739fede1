"""`blockfl chain up|down|deploy`: a local anvil node and the BlockFL deployment on it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from blockfl.chain.node import DEFAULT_PORT, STATE_INTERVAL, reach_host, start_anvil, stop_pid
from blockfl.cli.args import at_least, port
from blockfl.config import add_config_flags, add_task_flag, config_from_args

STATE_DIR = Path(".blockfl")
STATE_FILE = "anvil-state.json"


def register(commands: argparse._SubParsersAction) -> None:
    """Add `chain` and its subcommands."""
    chain = commands.add_parser("chain", help="local anvil node and contract deployment")
    sub = chain.add_subparsers(dest="chain_command", required=True)

    state_help = "where the pid file, node URL, log and chain state live (default %(default)s)"
    up = sub.add_parser("up", help="start anvil on loopback")
    up.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    up.add_argument("--port", type=port, default=DEFAULT_PORT,
                    help="JSON-RPC port (default %(default)s)")
    up.add_argument("--detach", action="store_true", help="run in the background (pid file)")
    up.add_argument("--state", type=Path,
                    help="chain state file: loaded if it exists, saved every --state-interval "
                         f"seconds and when anvil stops (default <state-dir>/{STATE_FILE}; "
                         "e.g. runs/net-…/anvil-state.json of a `network up` run)")
    up.add_argument("--state-interval", type=at_least(1, "an interval"), default=STATE_INTERVAL,
                    metavar="SECONDS",
                    help="seconds between saves: a crash loses at most this much of the chain "
                         "(default %(default)s)")
    up.add_argument("--ephemeral", action="store_true",
                    help="keep no state: the chain is gone when anvil stops")
    up.add_argument("--state-dir", type=Path, default=STATE_DIR, help=state_help)
    up.set_defaults(func=chain_up)

    down = sub.add_parser("down", help="stop an anvil started with --detach")
    down.add_argument("--state-dir", type=Path, default=STATE_DIR, help=state_help)
    down.set_defaults(func=chain_down)

    deploy = sub.add_parser("deploy", help="deploy BlockFL and write deployment.json")
    deploy.add_argument("--rpc-url", help="JSON-RPC node (default: the anvil of `chain up "
                                          f"--detach`, else http://127.0.0.1:{DEFAULT_PORT})")
    deploy.add_argument("--state-dir", type=Path, default=STATE_DIR, help=state_help)
    deploy.add_argument(
        "--miners", default="dev:1,dev:2,dev:3",
        help="comma-separated miner addresses or keys (dev:N = N-th development account)",
    )
    deploy.add_argument("--deployer-key", default="dev:0")
    deploy.add_argument("--out", type=Path, default=Path("deployment.json"))
    add_task_flag(deploy)
    add_config_flags(deploy)
    deploy.set_defaults(func=chain_deploy)


def detached_node(state_dir: Path) -> tuple[int, str] | None:
    """(pid, URL) of the anvil `chain up --detach` started, if it still runs."""
    pid_file, url_file = state_dir / "anvil.pid", state_dir / "anvil.url"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return None
    url = url_file.read_text().strip() if url_file.exists() else ""
    return pid, url


def chain_up(args: argparse.Namespace) -> int:
    """Start anvil in the foreground, or detached with a pid file."""
    args.state_dir.mkdir(parents=True, exist_ok=True)
    running = detached_node(args.state_dir) if args.detach else None
    if running is not None:
        raise ValueError(f"an anvil started by `chain up` already runs (pid {running[0]}, "
                         f"{running[1] or 'unknown URL'}): `blockfl chain down` stops it, or "
                         "pass another --state-dir")
    log = args.state_dir / "anvil.log"
    if args.ephemeral and args.state is not None:
        raise ValueError("--ephemeral keeps no state: it goes without --state")
    state = None if args.ephemeral else args.state or args.state_dir / STATE_FILE
    proc = start_anvil(args.port, log_path=log, host=args.host, state=state,
                       state_interval=args.state_interval)
    url = f"http://{reach_host(args.host)}:{args.port}"
    kept = (f"state {state}, saved every {args.state_interval} s" if state is not None
            else "no state kept")
    if args.detach:
        (args.state_dir / "anvil.pid").write_text(f"{proc.pid}\n")
        (args.state_dir / "anvil.url").write_text(f"{url}\n")
        print(f"anvil running at {url} (pid {proc.pid}, log {log}, {kept}); stop: "
              "blockfl chain down")
        return 0
    print(f"anvil running at {url} ({kept}); Ctrl-C stops it")
    try:
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop_pid(proc.pid)
    return 0


def chain_down(args: argparse.Namespace) -> int:
    """Stop the detached anvil named in the pid file."""
    pid_file = args.state_dir / "anvil.pid"
    if not pid_file.exists():
        print(f"no pid file at {pid_file}: nothing to stop")
        return 1
    pid = int(pid_file.read_text())
    stopped = stop_pid(pid)
    pid_file.unlink()
    (args.state_dir / "anvil.url").unlink(missing_ok=True)
    print(f"anvil (pid {pid}) {'stopped' if stopped else 'was not running'}")
    return 0


def miner_addresses(spec: str) -> list[str]:
    """Addresses from a comma-separated list of addresses or key specs."""
    from eth_utils import is_address, to_checksum_address

    from blockfl.keys import parse_key
    from blockfl.signing import address_of

    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        out.append(to_checksum_address(item) if is_address(item) else address_of(parse_key(item)))
    return out


def chain_deploy(args: argparse.Namespace) -> int:
    """Deploy to a node and write deployment.json."""
    if args.rpc_url is None:
        running = detached_node(args.state_dir)
        args.rpc_url = (running[1] if running and running[1]
                        else f"http://127.0.0.1:{DEFAULT_PORT}")
    print(f"deploying to {args.rpc_url} ...", file=sys.stderr, flush=True)
    from blockfl.chain.deploy import deploy_to_node
    from blockfl.genesis import write_genesis
    from blockfl.keys import parse_key
    from blockfl.sim.setup import task_genesis

    config = config_from_args(args)
    genesis, state = task_genesis(config)
    deployment = deploy_to_node(config, args.rpc_url, miner_addresses(args.miners),
                                parse_key(args.deployer_key), genesis)
    deployment.write(args.out)
    print(f"wrote the genesis model of task {genesis.task} to {write_genesis(args.out, state)}",
          file=sys.stderr)
    summary = {k: getattr(deployment, k) for k in ("chain_id", "contract", "token", "miners")}
    print(json.dumps(summary | {"parameters": deployment.parameters}, indent=2))
    print(f"wrote {args.out}")
    return 0
