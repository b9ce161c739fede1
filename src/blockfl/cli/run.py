"""`blockfl demo` and `blockfl simulate`: BlockFL rounds in one process, with tables."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockfl.config import (
    Config,
    add_attack_flags,
    add_config_flags,
    add_task_flag,
    experiment_config,
)

if TYPE_CHECKING:
    from blockfl.sim.engine import RoundResult
    from blockfl.sim.runner import RunSummary

TOKEN = 10**18


def register(commands: argparse._SubParsersAction) -> None:
    """Add `demo` and `simulate`."""
    demo = commands.add_parser(
        "demo", help="10 devices, 3 miners, 10 rounds on the embedded chain (digits, MLP)"
    )
    simulate = commands.add_parser("simulate", help="run an experiment from a TOML config")
    for parser in (demo, simulate):
        parser.add_argument("--devices", type=int, help="number of devices (network.devices)")
        parser.add_argument("--miners", type=int, help="number of miners (network.miners)")
        parser.add_argument("--rounds", type=int, help="number of rounds (run.rounds)")
        parser.add_argument("--seed", type=int, help="seed of every random source (run.seed)")
        parser.add_argument("--ledger", choices=["evm", "local"], help="chain.ledger")
        parser.add_argument("--rpc-url", help="JSON-RPC node instead of the embedded chain")
        parser.add_argument("--engine", choices=["local", "ray"],
                            help="where devices train: this process or a Ray cluster (run.engine)")
        parser.add_argument("--ray-address", help="an existing Ray cluster (run.ray_address)")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        add_task_flag(parser)
        add_attack_flags(parser)
        add_config_flags(parser)
        parser.set_defaults(func=simulate_command)


def simulate_command(args: argparse.Namespace) -> int:
    """Run the experiment, print the round and reward tables, write the run directory."""
    config = experiment_config(
        args,
        **{
            "network.devices": args.devices,
            "network.miners": args.miners,
            "run.rounds": args.rounds,
            "run.seed": args.seed,
            "chain.ledger": args.ledger,
            "chain.rpc_url": args.rpc_url,
            "run.engine": args.engine,
            "run.ray_address": args.ray_address,
        },
    )
    # tables need about 130 columns; rich falls back to 80 when output is not a terminal
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 140)
    console.print(_banner(config))
    from blockfl.sim.runner import run_experiment  # torch and web3: after the first line

    with Progress(
        TextColumn("[bold]round"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, transient=True,
    ) as progress:
        task = progress.add_task("", total=config.run.rounds)

        def advance(result: RoundResult) -> None:
            progress.update(task, advance=1, description=_metric_text(result))

        summary = run_experiment(config, on_round=advance)
    if args.json:
        print((summary.run_dir / "report.json").read_text())
    else:
        console.print(round_table(summary))
        if (late := late_table(summary)) is not None:
            console.print(late)
        console.print(rewards_rich_table(summary))
        console.print(_footer(summary))
    return 0 if summary.hashes_agree and summary.rewards_match else 1


def _banner(config: Config) -> str:
    chain = config.chain.rpc_url or ("embedded EVM (eth-tester)" if config.chain.ledger == "evm"
                                     else "local SQLite ledger")
    return (f"[bold]BlockFL[/bold]: {config.network.devices} devices, {config.network.miners} "
            f"miners, {config.run.rounds} rounds, task {_task_name(config)}, "
            f"lambda={config.chain.block_rate}/s per miner, chain: {chain}")


def _task_name(config: Config) -> str:
    task = config.task
    if task.flower_client:
        return f"flower:{task.flower_client}"
    return task.module if task.module != "builtin" else (
        f"builtin ({config.data.dataset}/{config.model.name})")


def _metric_text(result: RoundResult) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())


def round_table(summary: RunSummary) -> Table:
    """Per-round table: winner, forks, accepted/rejected updates, metric, model hash."""
    table = Table(title="Rounds")
    metric_names = list(summary.rounds[0].metrics)
    for column in ["round", "winner", "forks", "accepted", "rejected", "late", *metric_names,
                   "global model hash", "gas"]:
        table.add_column(column, justify="right" if column not in ("winner",) else "left")
    for r in summary.rounds:
        table.add_row(
            str(r.round), _short(r.winner), str(r.forks), str(r.accepted), str(r.rejected),
            str(r.late), *(f"{r.metrics[m]:.4f}" for m in metric_names),
            r.global_model_hash[:18] + "…", f"{r.gas_used:,}",
        )
    return table


def late_table(summary: RunSummary) -> Table | None:
    """Each device whose update missed a block, with why: its training plus upload time against
    t_wait; None when no device was late."""
    late = [(r.round, device, times) for r in summary.rounds
            for device, times in r.late_devices.items()]
    if not late:
        return None
    config = summary.simulation.config
    t_wait, training = config.network.t_wait, config.training
    index = {d.address: j for j, d in enumerate(summary.simulation.devices)}
    table = Table(title=f"Late devices (training + upload > t_wait = {t_wait:g} s)")
    for column in ["round", "device", "training s", "upload s", "arrival s"]:
        table.add_column(column, justify="left" if column == "device" else "right")
    for round_, device, times in late:
        arrival = times["training_s"] + times["upload_s"]
        table.add_row(str(round_), f"{index[device]} {_short(device)}",
                      f"{times['training_s']:.3f}", f"{times['upload_s']:.3f}",
                      f"{arrival:.3f} > {t_wait:g}")
    how = (f"modelled: epochs ({training.epochs}) x samples x {training.ms_per_sample:g} ms"
           if training.compute_time == "modelled" else
           "measured: the wall clock, slow on a loaded machine (--training-compute-time "
           "modelled makes it reproducible)")
    table.caption = (f"a late update reaches no miner before the block closes, so it is not "
                     f"paid; training time {how}; a larger --network-t-wait lets it in")
    return table


def rewards_rich_table(summary: RunSummary) -> Table:
    """Final rewards read back from the chain."""
    table = Table(title="Rewards (read from the chain)")
    for column in ["role", "address", "accepted samples", "blocks", "reward events", "balance"]:
        table.add_column(column, justify="left" if column in ("role", "address") else "right")
    for r in summary.rewards:
        table.add_row(r.role, r.address, str(r.samples) if r.role == "device" else "",
                      str(r.blocks) if r.role == "miner" else "", _tokens(r.reward_events),
                      _tokens(r.balance))
    return table


def _footer(summary: RunSummary) -> str:
    agree = "[green]yes[/green]" if summary.hashes_agree else "[red]NO[/red]"
    match = "[green]yes[/green]" if summary.rewards_match else "[red]NO[/red]"
    final = _metric_text(summary.rounds[-1])
    notes = ""
    if summary.simulation.config.run.engine == "ray":
        notes += (f"Ray start-up (actors): {summary.report['setup_seconds']['trainer']:.1f} s, "
                  "before round 1 and not part of its training\n")
    if "privacy" in summary.report:
        devices = summary.report["privacy"]["devices"]
        spent = max(d["epsilon"] for d in devices)
        noise = sorted({d["noise_multiplier"] for d in devices})
        noise_text = f"{noise[0]:g}" + (f" to {noise[-1]:g}" if len(noise) > 1 else "")
        notes += (f"privacy: {summary.report['privacy']['mode']} mode, at most epsilon = "
                  f"{spent:.3g} per device (delta {summary.report['privacy']['delta']:g}, "
                  f"Opacus RDP accountant), noise multiplier {noise_text}\n")
    if "stopped_early" in summary.report:
        notes += f"[yellow]stopped early: {summary.report['stopped_early']}[/yellow]\n"
    return (f"final {final}\n{notes}same global model hash on chain, every miner and every device: "
            f"{agree} (0x{summary.chain_model_hash.hex()})\n"
            f"balances = reward events = samples x rewardPerSample: {match}\n"
            f"run directory: {summary.run_dir} ({', '.join(_run_files(summary))})")


def _run_files(summary: RunSummary) -> list[str]:
    files = ["config.toml", "metrics.jsonl", "report.json", summary.plot.name]
    return files + ["deployment.json"] * (summary.run_dir / "deployment.json").exists()


def _short(address: str) -> str:
    return address[:8] + "…" + address[-4:]


def _tokens(amount: int) -> str:
    return f"{amount / TOKEN:,.4f}"

