"""`blockfl network up|certs`: a whole local network of processes, and TLS certificates for it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from blockfl.cli.args import at_least, port
from blockfl.config import add_attack_flags, add_config_flags, add_task_flag, experiment_config

if TYPE_CHECKING:
    from blockfl.launcher import LocalNetwork

#: seconds between redraws of the live table
REDRAW_SECONDS = 0.5


def register(commands: argparse._SubParsersAction) -> None:
    """Add `network` and its subcommands."""
    network = commands.add_parser("network", help="a local network of miner/device processes")
    sub = network.add_subparsers(dest="network_command", required=True)

    up = sub.add_parser(
        "up", help="start anvil, deploy, start miners and devices, wait for R rounds, stop all"
    )
    up.add_argument("--miners", type=int, help="number of miner processes (network.miners)")
    up.add_argument("--devices", type=int, help="number of device processes (network.devices)")
    up.add_argument("--rounds", type=int, help="rounds to commit (run.rounds)")
    up.add_argument("--mode", choices=["direct", "merkle"], help="block mode (chain.mode)")
    up.add_argument("--quorum", type=int, help="miners behind each block, 0 = majority "
                                               "(chain.quorum)")
    up.add_argument("--run-dir", type=Path, help="logs, journals, deployment (default runs/net-…)")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the rounds")
    up.add_argument("--host", default="127.0.0.1",
                    help="address anvil, the miners and the explorer bind to (default "
                         "%(default)s; 0.0.0.0: every interface); --tls certificates cover it")
    up.add_argument("--port", type=port,
                    help="first port: anvil on PORT, miner i on PORT+1+i (default: free ports)")
    up.add_argument("--tls", action="store_true", help="miners serve HTTPS (local CA generated)")
    up.add_argument("--emulate-links", action="store_true",
                    help="run anvil, each miner and each device as its own host (a network "
                         "namespace on a bridge) with links shaped by tc to the [links] rates; "
                         "Linux, root or CAP_NET_ADMIN")
    up.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_task_flag(up)
    add_attack_flags(up)
    faults = up.add_argument_group("faults (blockfl.faults), checked after the run "
                                   "(blockfl.checker)")
    faults.add_argument("--kill", action="append", default=[], metavar="NAME:ROUND",
                        help="kill -9 a process (miner0, device3, ...) once the chain has ROUND "
                             "blocks, and restart it --down seconds later (repeatable)")
    faults.add_argument("--down", type=float, default=5.0, metavar="SECONDS",
                        help="seconds a killed process stays down (default %(default)s)")
    faults.add_argument("--restart-node", action="append", default=[], type=at_least(1, "a round"),
                        metavar="ROUND",
                        help="kill -9 anvil at ROUND blocks and restart it from its state file "
                             "(repeatable)")
    faults.add_argument("--rollback", action="append", default=[], metavar="ROUND:DEPTH",
                        help="at ROUND blocks, revert the chain DEPTH rounds (evm_snapshot / "
                             "evm_revert) under the running network (repeatable)")
    faults.add_argument("--partition", action="append", default=[], metavar="NAME:FROM-TO",
                        help="with --emulate-links: take process NAME's link down from FROM "
                             "blocks to TO blocks, e.g. miner1:5-10 (repeatable: several "
                             "together partition half the miners)")
    up.add_argument("--explorer", action="store_true",
                    help="serve the block explorer beside the network; after the rounds, keep "
                         "everything running until Ctrl-C")
    up.add_argument("--explorer-port", type=port, default=8700,
                    help="port of the explorer (default %(default)s)")
    add_config_flags(up, default="network")
    up.set_defaults(func=network_up)

    certs = sub.add_parser("certs", help="a local CA and a server certificate (PEM)")
    certs.add_argument("--out", type=Path, default=Path(".blockfl/tls"),
                       help="folder of the PEM files (default %(default)s)")
    certs.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                       help="another name or address miners are reached at (repeatable; "
                            "localhost and 127.0.0.1 are always in)")
    certs.set_defaults(func=network_certs)


def network_up(args: argparse.Namespace) -> int:
    """Run the network until the rounds are committed, print blocks and rewards, stop it."""
    config = experiment_config(
        args,
        **{"network.miners": args.miners, "network.devices": args.devices,
           "run.rounds": args.rounds, "chain.mode": args.mode, "chain.quorum": args.quorum},
    )
    run_dir = args.run_dir or Path(config.run.out_dir) / time.strftime("net-%Y%m%d-%H%M%S")
    rounds = config.run.rounds
    status = sys.stderr if args.json else sys.stdout
    print(f"starting anvil, {config.network.miners} miners and {config.network.devices} devices; "
          f"logs in {run_dir / 'logs'}", file=status, flush=True)
    from blockfl import faults
    from blockfl.launcher import LocalNetwork

    if args.emulate_links and (args.host != "127.0.0.1" or args.port is not None):
        raise ValueError("--emulate-links gives every process its own address: drop --host "
                         "and --port")
    schedule = [*map(faults.parse_kill, args.kill), *map(faults.restart_node, args.restart_node),
                *map(faults.parse_rollback, args.rollback),
                *map(faults.parse_partition, args.partition)]
    faults.check_schedule(schedule, config.network.miners, config.network.devices, rounds,
                          args.emulate_links)
    network = LocalNetwork(config, run_dir, tls=args.tls, host=args.host, port=args.port,
                           emulate_links=args.emulate_links)
    # SIGTERM unwinds like Ctrl-C, so the processes this command started are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        network.start(start_devices=False)
        print(f"chain at {network.rpc_url}, deployment {network.deployment_path}", file=status)
        for i in range(len(network.miners)):
            print(f"miner {i}: {network.miner_url(i)}", file=status)
        if args.explorer:
            url = network.start_explorer(args.explorer_port)
            print(f"explorer: {url}", file=status, flush=True)
        injected = faults.FaultSchedule(network, schedule, args.down)
        for role in network.devices:
            network.start_role(role)
        started = time.monotonic()
        watch(network, rounds, args.timeout, status, injected.tick)
        injected.finish()
        if config.chain.mode == "merkle":  # devices claim their rewards once they see a block
            network.wait_for_claims(timeout=max(1.0, args.timeout - (time.monotonic() - started)))
        code = summarize(network, run_dir, args.json)
        code = check(network, status) or code
        if args.explorer:
            print(f"the network and the explorer ({url}) keep running; Ctrl-C stops them",
                  file=status, flush=True)
            while True:
                time.sleep(1)
        return code
    finally:
        network.stop()


def check(network: LocalNetwork, status: TextIO) -> int:
    """Check the run's logs and chain (`blockfl.checker`) once the devices are done; 1 when an
    invariant broke."""
    from blockfl.checker import check_run
    from blockfl.client import MinerClient

    deadline = time.monotonic() + 60
    while any(d.running for d in network.devices) and time.monotonic() < deadline:
        time.sleep(0.2)  # devices log their earnings as they finish
    ca = network.tls[0] if network.tls else None
    clients = [MinerClient(network.miner_url(i), ca_cert=ca)
               for i, role in enumerate(network.miners) if role.running]
    try:
        report = check_run(network.run_dir / "logs", network.ledger, clients)
    finally:
        for client in clients:
            client.close()
    print("run check (every log against the chain):", file=status)
    for line in report.lines():
        print("  " + line, file=status)
    return 0 if report.ok else 1


def watch(network: LocalNetwork, rounds: int, timeout: float, status: TextIO,
          faults: Callable[[], None] | None = None) -> None:
    """Wait for the rounds: a live table on a terminal, a line per round otherwise; `faults`
    is called at every look at the chain."""
    from rich.console import Console
    from rich.live import Live

    from blockfl.network_view import NetworkView

    started = time.monotonic()
    view = NetworkView(network, rounds)
    if not status.isatty():
        for r in range(1, rounds + 1):
            network.wait_for_round(r, timeout=max(1.0, timeout - (time.monotonic() - started)),
                                   tick=faults)
            print(f"round {r} committed after {time.monotonic() - started:.1f}s", file=status)
        return
    last = 0.0

    def tick() -> None:
        nonlocal last
        if faults is not None:
            faults()
        if time.monotonic() - last >= REDRAW_SECONDS:
            view.update()
            live.update(view.table(), refresh=True)
            last = time.monotonic()

    with Live(view.table(), console=Console(file=status), auto_refresh=False) as live:
        network.wait_for_round(rounds, timeout=timeout, tick=tick)
        last = 0.0
        tick()


def summarize(network: LocalNetwork, run_dir: Path, as_json: bool) -> int:
    """Print the blocks, each round's model metrics and the rewards; 1 if rewards disagree."""
    from blockfl.cli.inspect import inspect_blocks, inspect_rewards
    from blockfl.signing import address_of

    view = argparse.Namespace(deployment=network.deployment_path, rpc_url=network.rpc_url,
                              json=as_json, first=1, last=None)
    metrics = network.model_metrics()
    if as_json:
        from blockfl.chain import inspection

        summary = {
            "run_dir": str(run_dir),
            "blocks": [inspection.jsonable(b) for b in inspection.blocks(network.ledger)],
            "models": metrics,
            "rewards": [inspection.jsonable(r) for r in inspection.rewards(network.ledger)],
        }
        print(json.dumps(summary, indent=2))
        return 0 if all(r["agrees"] for r in summary["rewards"]) else 1
    inspect_blocks(view)
    if network.attackers:
        attack = network.config.attack
        print(f"attackers ({attack.behaviour}, devices "
              f"{', '.join(str(j) for j in network.attackers)}): "
              + ", ".join(address_of(network.device_key(j)) for j in network.attackers))
    print("global model of each round (downloaded from a miner, hash checked on chain):")
    for row in metrics:
        print("  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in row.items()))
    return inspect_rewards(view)


def network_certs(args: argparse.Namespace) -> int:
    """Write ca.pem, server.pem and server-key.pem for miners on loopback."""
    from blockfl.tls import make_local_certificates

    ca, cert, key = make_local_certificates(args.out, args.host)
    print(f"CA certificate:     {ca}  (give it to devices and miners: --ca-cert)")
    print(f"server certificate: {cert}  (--tls-cert)")
    print(f"server key:         {key}  (--tls-key)")
    return 0
