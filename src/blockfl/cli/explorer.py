"""`blockfl explorer`: a block explorer web page over any deployment and RPC node."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from blockfl.cli.args import miner_clients, port

if TYPE_CHECKING:
    import uvicorn

    from blockfl.events import Log
    from blockfl.explorer.reader import Explorer

DEFAULT_PORT = 8700


def register(commands: argparse._SubParsersAction) -> None:
    """Add `explorer`."""
    explorer = commands.add_parser(
        "explorer", help="a web page of blocks, rewards, model checks and accuracy, live",
        description="Serve a block explorer for a deployment: the chain of blocks, each round's "
                    "rewards, balances against reward events, each miner's global models against "
                    "the on-chain hashes, the accuracy curve and latency phases. It binds to "
                    "127.0.0.1 unless --host says otherwise, and is served with the miners' "
                    "connection limits and timeouts (the config's [server] section).",
    )
    explorer.add_argument("--deployment", type=Path, default=Path("deployment.json"),
                          help="deployment file written by `chain deploy` (default %(default)s)")
    explorer.add_argument("--rpc-url", help="JSON-RPC node (default: the one in --deployment)")
    explorer.add_argument("--miners", default="",
                          help="comma-separated miner URLs to fetch and check global models from")
    explorer.add_argument("--config", type=Path,
                          help="experiment config whose test split evaluates the models (default: "
                               "config.toml beside --deployment, else the packaged `network`)")
    explorer.add_argument("--test-data", type=Path, metavar="PATH",
                          help="evaluate the models on this data file (read by the config's "
                               "task, e.g. the test file of `blockfl data split`)")
    explorer.add_argument("--logs", type=Path,
                          help="folder of the network's event logs (default: logs/ beside "
                               "--deployment when it exists)")
    explorer.add_argument("--ca-cert", type=Path, help="CA certificate of HTTPS miners")
    explorer.add_argument("--host", default="127.0.0.1",
                          help="address to bind (default %(default)s)")
    explorer.add_argument("--port", type=port, default=DEFAULT_PORT,
                          help="port to serve on (default %(default)s)")
    explorer.add_argument("--interval", type=float, default=2.0,
                          help="seconds between reads of the chain (default %(default)s)")
    explorer.add_argument("--recheck", type=float, default=30.0,
                          help="seconds before a model copy that matched is checked again "
                               "(default %(default)s)")
    explorer.set_defaults(func=explorer_command)


def build_explorer(args: argparse.Namespace) -> Explorer:
    """The `Explorer` for the command's arguments."""
    from blockfl.chain.deployment import Deployment
    from blockfl.config import load_config
    from blockfl.explorer.reader import Explorer
    from blockfl.protocol import ProtocolSpec

    deployment = Deployment.read(args.deployment)
    ledger = deployment.ledger(args.rpc_url)
    beside = args.deployment.parent
    notes = []
    config_file = args.config or (beside / "config.toml" if (beside / "config.toml").exists()
                                  else Path("network"))
    config = load_config(config_file)
    notes.append(f"models evaluated on {args.test_data}" if args.test_data
                 else f"models evaluated on the test split of task {config.task.module} in "
                      f"{config_file}")
    logs = args.logs or (beside / "logs" if (beside / "logs").is_dir() else None)
    miners = miner_clients(args.miners, args.ca_cert, timeout=10.0)
    privacy = ProtocolSpec.from_dict(deployment.protocol_spec).privacy
    return Explorer(ledger, miners, config, logs, notes, recheck=args.recheck,
                    test_data=args.test_data, privacy=privacy)


def explorer_server(explorer: Explorer, host: str, port: int, interval: float,
                    log: Log) -> uvicorn.Server:
    """The explorer's web app behind the miners' guarded HTTP server: connections capped per
    address and in all, request heads and bodies timed out (`[server]` of its config), refusals
    logged to `log`."""
    from blockfl.config import ServerConfig
    from blockfl.explorer.app import create_app
    from blockfl.miners.http_server import miner_server

    limits = explorer.config.server if explorer.config else ServerConfig()
    return miner_server(create_app(explorer, interval), host, port, limits, log)


def explorer_command(args: argparse.Namespace) -> int:
    """Serve the explorer until Ctrl-C."""
    from blockfl.events import EventLog

    explorer = build_explorer(args)
    print(f"explorer at http://{args.host}:{args.port}/ (JSON under /api/); Ctrl-C stops it",
          flush=True)
    explorer_server(explorer, args.host, args.port, args.interval, EventLog("explorer")).run()
    return 0
