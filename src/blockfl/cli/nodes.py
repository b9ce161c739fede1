"""`blockfl miner` and `blockfl device`: one network process each, against a deployment."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from blockfl.chain.node import port_in_use, serves_here
from blockfl.cli.args import miner_clients, port
from blockfl.config import (
    ROLE_SECTIONS,
    Config,
    add_config_flags,
    add_task_flag,
    config_from_args,
)

if TYPE_CHECKING:
    from blockfl.chain.deployment import Deployment
    from blockfl.chain.ledger import Ledger
    from blockfl.protocol import Genesis, ProtocolSpec
    from blockfl.tensors import StateDict


def register(commands: argparse._SubParsersAction) -> None:
    """Add `miner` and `device`."""
    miner = commands.add_parser("miner", help="run a miner service (HTTP API + mining loop)")
    miner.add_argument("--key", required=True, help="miner key: dev:N, 0x-hex, or a key file")
    miner.add_argument("--port", type=port, default=8600,
                       help="port of the miner's HTTP API (default %(default)s)")
    miner.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default %(default)s)")
    miner.add_argument("--peers", default="",
                       help="comma-separated URLs of the other miners (this miner's own URL, "
                            "if listed, is dropped)")
    miner.add_argument("--data-dir", type=Path,
                       help="journal and model store (default runs/miner-<address>/<contract>)")
    miner.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    miner.add_argument("--tls-key", type=Path, help="private key of --tls-cert (PEM)")
    device = commands.add_parser("device", help="run a device: train, upload, follow the chain")
    device.add_argument("--key", required=True, help="device key: dev:N, 0x-hex, or a key file")
    device.add_argument("--miners", required=True, help="comma-separated miner URLs")
    own = device.add_mutually_exclusive_group(required=True)
    own.add_argument("--data", type=Path, metavar="PATH",
                     help="this device's own data, read by its task: .npz (x, y), .csv (label "
                          "column data.label), .safetensors (x, y) or a folder of class folders "
                          "of images (`blockfl data split` writes such files)")
    own.add_argument("--shard", type=int,
                     help="simulate a device: shard SHARD (0 .. network.devices-1) of the "
                          "config's data set, split as `simulate` splits it")
    device.add_argument("--rounds", type=int, help="stop once the chain has this many blocks")
    device.add_argument("--give-up", type=float, default=300.0, metavar="SECONDS",
                        help="exit when no miner and no chain node answered for this long "
                             "(default %(default)s)")
    add_task_flag(device)
    device.add_argument("--behaviour",
                        help="attack instead of behaving (blockfl.devices.behaviours), e.g. "
                             "sign_flip; default: the config's [attack] when this shard is one "
                             "of its attackers, else honest")
    for role, parser in (("miner", miner), ("device", device)):
        parser.add_argument("--deployment", type=Path, default=Path("deployment.json"),
                            help="deployment file written by `chain deploy` "
                                 "(default %(default)s)")
        parser.add_argument("--rpc-url", help="JSON-RPC node (default: the deployment's)")
        parser.add_argument("--ca-cert", type=Path, help="CA certificate for HTTPS miners")
        parser.add_argument("--log", type=Path, help="event log file (default: stdout)")
        add_config_flags(parser, sections=ROLE_SECTIONS[role])
    miner.set_defaults(func=miner_command)
    device.set_defaults(func=device_command)


@dataclass(frozen=True)
class Deployed:
    """What a node starts from: the deployment, its ledger, its protocol spec, the genesis
    model."""

    deployment: Deployment
    ledger: Ledger
    spec: ProtocolSpec
    genesis: StateDict


def deployed(config: Config, args: argparse.Namespace, genesis: Genesis | None = None) -> Deployed:
    """The deployment of `--deployment` (through `--rpc-url`), its protocol spec, and the
    genesis model from the file beside the deployment file, checked against the chain.

    This config must give the same spec: with `genesis` (a device's task) the same task name
    and tensor spec too, while the genesis values are the file's, whatever this machine's
    initialisation gives; with None (a miner, which runs no task) the consensus fields alone."""
    from blockfl.chain.deploy import deployed_spec
    from blockfl.chain.deployment import Deployment
    from blockfl.genesis import read_genesis

    deployment = Deployment.read(args.deployment)
    ledger = deployment.ledger(args.rpc_url)
    on_chain = ledger.params().genesis_model_hash
    mine = replace(genesis, model_hash=on_chain) if genesis else None
    spec = deployed_spec(deployment, ledger, config, mine)
    return Deployed(deployment, ledger, spec, read_genesis(args.deployment, on_chain))


def miner_command(args: argparse.Namespace) -> int:
    """Serve the miner API and run the mining loop until interrupted."""
    from blockfl.aggregation import AggregationRule
    from blockfl.events import EventLog
    from blockfl.keys import parse_key
    from blockfl.miners.api import create_app
    from blockfl.miners.http_server import miner_server
    from blockfl.miners.service import MinerService, MiningSettings
    from blockfl.signing import address_of

    if port_in_use(args.port, args.host):
        raise ConnectionError(f"port {args.port} on {args.host} is already in use: choose "
                              "another --port")
    config = config_from_args(args)
    key = parse_key(args.key)
    address = address_of(key)
    node = deployed(config, args)  # a miner runs no task: it starts from the genesis file
    ledger, spec, deployment = node.ledger, node.spec, node.deployment
    policy = spec.verification
    settings = MiningSettings(
        t_wait=config.network.t_wait,
        block_size=min(config.network.devices, config.chain.max_updates_per_block),
        hash_rate=config.chain.hash_rate,
    )
    if not ledger.is_miner(address):
        raise ValueError(f"{address} is not a registered miner of contract {deployment.contract}")
    log = EventLog(f"miner {address}", args.log)
    peers = miner_clients(args.peers, args.ca_cert, config.network.answer_timeout)
    for own in [c for c in peers if serves_here(c.url, args.host, args.port)]:
        peers.remove(own)
        own.close()
        log("own_peer_dropped", peer=own.url, reason="--peers names this miner's own URL")
    service = MinerService(
        key, ledger, policy, settings,
        args.data_dir or Path(config.run.out_dir) / f"miner-{address}" / deployment.contract,
        peers, node.genesis, log,
        rule=AggregationRule(spec.aggregation), privacy=spec.privacy,
    )
    app = create_app(service, policy.max_payload_bytes, config.server)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server = miner_server(app, args.host, args.port, config.server, log, tls)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises it to the previous handler:
    # make that handler unwind through the `finally` below instead of killing the process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stop = threading.Event()
    loop = threading.Thread(target=service.run, args=(stop,), name="mining", daemon=True)
    loop.start()
    scheme = "https" if tls else "http"
    log("listening", url=f"{scheme}://{args.host}:{args.port}")
    try:
        server.run()
    finally:
        stop.set()
        loop.join(timeout=10)
        service.close()
        log("stopped")
        log.close()
    return 0


def device_command(args: argparse.Namespace) -> int:
    """Take part in the network as one device until the chain has `--rounds` blocks."""
    from blockfl.aggregation import AggregationRule
    from blockfl.devices.behaviours import attackers, behaviour
    from blockfl.devices.device import Device, device_seed
    from blockfl.devices.process import DeviceProcess
    from blockfl.events import EventLog
    from blockfl.keys import parse_key

    config = config_from_args(args, **{"run.rounds": args.rounds})
    miners = miner_clients(args.miners, args.ca_cert, config.network.answer_timeout)
    from blockfl.sim.setup import genesis_of, task_data
    from blockfl.task import load_device_data, load_task

    task = load_task(config)
    seed = config.run.seed
    node = deployed(config, args, genesis_of(task, seed)[0])  # refuses another task or spec
    if args.data is not None:
        data, index = load_device_data(task, args.data), _data_index(args.data)
    else:
        shards = task_data(config, task)[0]
        if not 0 <= args.shard < len(shards):
            raise ValueError(f"--shard must be in [0, {len(shards)}): network.devices is "
                             f"{config.network.devices}")
        data, index = shards[args.shard], args.shard
    key = parse_key(args.key)
    attack, n = config.attack, config.network.devices
    bad = attackers(n, attack.attackers, seed)
    name = args.behaviour or (attack.behaviour if index in bad else "honest")
    device = Device(key, data, task, config.training, node.genesis,
                    seed=device_seed(seed, index),
                    behaviour=behaviour(name, attack, n, seed=device_seed(seed, index)),
                    privacy=node.spec.privacy)
    log = EventLog(f"device {device.address}", args.log)
    log("data", source=str(args.data) if args.data is not None else f"shard {index}",
        samples=len(data))
    process = DeviceProcess(
        device, node.ledger, miners, log,
        seed=seed * 104729 + index, recompute=config.network.recompute_global,
        rule=AggregationRule(node.spec.aggregation), give_up=args.give_up,
        expect=n - len(bad) - (index not in bad), observe_wait=config.network.t_wait / 2,
    )
    try:
        process.run(config.run.rounds)
    finally:
        log.close()
    return 0


def _data_index(path: Path) -> int:
    """The device index in a `data split` file name (device-0007.npz: 7), else 0: it seeds
    the device's training and picks the config's attackers."""
    digits = "".join(c for c in path.stem.rsplit("-", 1)[-1] if c.isdigit())
    return int(digits) if digits else 0
