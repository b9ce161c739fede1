"""Where the time of a round goes in a real local network, and how fast one miner takes uploads.

Part 1, the network. `LocalNetwork` runs the packaged `network` config (3 miners, 6 devices,
digits with the MLP; `--miners`, `--devices`, `--rounds` change it) as real processes on
loopback: anvil, `blockfl miner` and `blockfl device`. When every device has finished, the
benchmark reads the processes' JSON event logs and prints, per round, the phase times of
`blockfl.round_phases` (round, upload window, proof-of-work + commit, propagation, when devices
saw the block and checked its model, their training + upload, updates and forks),
and the mean of each column over rounds 2..R (round 1 carries first-time costs: the first
payouts' storage writes, first training calls). A line before the table says how long the
processes took to start (launch to `started`, and to the first upload); after it, the events
that mean something went wrong (errors, failed gossip, rejected updates, unchecked adoptions,
...) and the tracebacks in the processes' stdout are counted. The launcher gives every process
one torch thread (`OMP_NUM_THREADS=1`, unless this environment sets it).

Part 2, one miner's upload throughput. An in-process `MinerService` on the embedded eth-tester
ledger (block size and T_wait so large that it never mines; its mining loop is not even
started) serves its FastAPI app with uvicorn in a background thread. K distinct devices (`-k`,
default 200; logreg on digits, 1 epoch, keys `derived_key("bench-device", i)`) train and sign
their round-1 updates before any timing. The K uploads go through `MinerClient.upload` from 1
and from 4 client threads, and straight into `service.node.receive_upload` in process (the
same verification and journal, no HTTP), from 1 and 4 threads; K `GET /health` requests give
the cost of a request that does no work. Client and server share one Python process (and its
GIL). Each measurement gets a fresh service (fresh journal and replay memory) on the same
ledger, so the same signed updates are accepted every time; a few extra warm-up devices'
uploads go first and are not timed.

    .venv/bin/python benchmarks/bench_network.py [--rounds 5] [--miners 3] [--devices 6] [-k 200]
        [--emulate-links]

With `--emulate-links` (Linux, root or CAP_NET_ADMIN) part 1 runs every process on its own
emulated host, links shaped by `tc` to `[links]` (slowed to `EMULATED_LINKS`), and then
prints `blockfl latency compare`'s table of the run: each phase measured against the model.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from blockfl.config import Config, load_config
from blockfl.events import read_events
from blockfl.round_phases import mean_or_none, round_table

# events whose presence means something did not go as planned
TROUBLE = (
    "error", "internal_error", "invalid_block", "gossip_failed", "gossip_rejected",
    "announce_failed", "announce_rejected", "update_rejected", "miner_down", "model_mismatch",
    "no_miner",
)
WARMUP = 4


# ---------------------------------------------------------------------- part 1: the network


#: `--emulate-links`: a device's uplink at 0.35 Mbit/s and downlink at 0.7 Mbit/s, a miner's
#: link at 2.1 Mbit/s (`[links]` w_up 1e5, w_dn 2e5, w_m 6e5 Hz at the default SNR), so an
#: update takes about 0.4 s, a round's download about 1 s and one gossiped copy 80 ms: the
#: links, not the machine's scheduling, set the transfer times
EMULATED_LINKS = {"w_up": 1e5, "w_dn": 2e5, "w_m": 6e5}


def network_config(rounds: int, miners: int, devices: int, out_dir: Path,
                   emulate_links: bool = False) -> Config:
    """The packaged network config with this run's size (and slow links when emulated)."""
    c = load_config("network")
    return replace(
        c,
        run=replace(c.run, rounds=rounds, out_dir=str(out_dir)),
        network=replace(c.network, miners=miners, devices=devices),
        links=replace(c.links, **EMULATED_LINKS) if emulate_links else c.links,
    )


def run_network(config: Config, run_dir: Path,
                emulate_links: bool = False) -> tuple[float, float]:
    """Run the network until every device has finished: (wall seconds, launch time.time())."""
    from blockfl.launcher import LocalNetwork

    rounds = config.run.rounds
    launched = time.time()
    started = time.monotonic()
    network = LocalNetwork(config, run_dir, emulate_links=emulate_links).start()
    try:
        network.wait_for_round(rounds, timeout=240)
        deadline = time.monotonic() + 60
        while any(r.running for r in network.devices) and time.monotonic() < deadline:
            time.sleep(0.2)
        # give the other miners time to check and adopt the last block
        logs = [run_dir / "logs" / f"miner{i}.jsonl" for i in range(len(network.miners))]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = 0
            for path in logs:
                events = read_events(path) if path.exists() else []
                done += any(e["event"] in ("adopted", "committed") and e.get("round") == rounds
                            for e in events)
            if done == len(logs):
                break
            time.sleep(0.2)
    finally:
        network.stop()
    return time.monotonic() - started, launched


COLUMNS = [  # (key, header, width, format)
    ("round", "round", 5, "d"),
    ("round_s", "round s", 8, ".3f"),
    ("upload", "upload", 8, ".3f"),
    ("attest", "attest", 7, ".3f"),
    ("pow", "pow+commit", 10, ".3f"),
    ("propagate", "propagate", 9, ".3f"),
    ("adopted", "adopted", 7, "s"),
    ("seen", "seen", 7, ".3f"),
    ("dev_model", "dev model", 9, ".3f"),
    ("train", "train+upl", 9, ".3f"),
    ("upd", "upd", 4, "d"),
    ("forks", "forks", 5, "d"),
]


def _cell(value: Any, width: int, fmt: str) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}{fmt}}"


def print_rounds(rows: list[dict[str, Any]]) -> None:
    """The per-round table and the mean over rounds 2..R."""
    print(" ".join(f"{h:>{w}}" for _, h, w, _ in COLUMNS))
    for row in rows:
        print(" ".join(_cell(row.get(k), w, f) for k, _, w, f in COLUMNS))
    later = rows[1:]
    means: dict[str, Any] = {"round": None}
    for key, _, _, fmt in COLUMNS[1:]:
        if fmt == "s":
            continue
        values = [row[key] for row in later if row.get(key) is not None]
        means[key] = mean_or_none(values)
    cells = [f"{'mean':>5}"] + [
        _cell(means.get(k), w, ".1f" if f == "d" else f) for k, _, w, f in COLUMNS[1:]
    ]
    print(" ".join(cells) + "   (rounds 2.." + str(len(rows)) + ")")


def print_startup(run_dir: Path, launched: float, miners: int, devices: int) -> None:
    """How long the processes took to start: launch to the miners' and devices' `started`,
    and to the first upload."""
    logs = run_dir / "logs"

    def first(name: str, event: str) -> float | None:
        times = [e["ts"] for e in read_events(logs / f"{name}.jsonl") if e["event"] == event]
        return min(times) if times else None

    def span(values: list[float | None]) -> str:
        got = [v - launched for v in values if v is not None]
        return f"{min(got):.1f}..{max(got):.1f} s" if got else "-"

    print("start-up after launch: miners started "
          + span([first(f"miner{i}", "started") for i in range(miners)])
          + ", devices started " + span([first(f"device{j}", "started") for j in range(devices)])
          + ", first uploads " + span([first(f"device{j}", "uploaded") for j in range(devices)]))


def print_trouble(run_dir: Path) -> None:
    """Counts of events that mean trouble, unchecked adoptions and tracebacks, per process."""
    logs = run_dir / "logs"
    found = []
    for path in sorted(logs.glob("*.jsonl")):
        counts = Counter(e["event"] for e in read_events(path) if e["event"] in TROUBLE)
        unchecked = sum(e["event"] == "adopted" and not e.get("checked", True)
                        for e in read_events(path))
        if unchecked:
            counts["adopted unchecked"] = unchecked
        out = path.with_suffix(".out")
        if out.exists():
            tracebacks = len(re.findall(r"^Traceback", out.read_text(errors="replace"), re.M))
            if tracebacks:
                counts["traceback in .out"] = tracebacks
        if counts:
            found.append(f"  {path.stem}: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))
        if path.stem.startswith("device"):
            events = read_events(path)
            if not any(e["event"] == "finished" for e in events):
                found.append(f"  {path.stem}: never logged `finished`")
    print("events of note:" if found else "events of note: none")
    for line in found:
        print(line)


def bench_network(rounds: int, miners: int, devices: int, emulate_links: bool = False) -> None:
    """Part 1 (with `emulate_links`: on emulated hosts, then each phase against the model)."""
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmp:
        run_dir = Path(tmp) / "net"
        config = network_config(rounds, miners, devices, Path(tmp), emulate_links)
        wall, launched = run_network(config, run_dir, emulate_links)
        where = "emulated hosts and links" if emulate_links else "local network"
        print(f"{where}: {miners} miners, {devices} devices, {rounds} rounds, "
              f"{config.data.dataset}/{config.model.name}, T_wait {config.network.t_wait:g} s, "
              f"lambda {config.chain.block_rate:g}/s per miner; {wall:.1f} s in all "
              "(start to stop)")
        print_startup(run_dir, launched, miners, devices)
        print("seconds per phase, from the processes' event logs")
        print_rounds(round_table(run_dir / "logs", rounds))
        print_trouble(run_dir)
        if emulate_links:
            from blockfl.latency.compare import compare_network, print_comparison

            print("\neach phase measured against the model (`blockfl latency compare`)")
            print_comparison(*compare_network(run_dir))


# ---------------------------------------------------------------------- part 2: one miner


def upload_config(k: int, out_dir: Path) -> Config:
    """A tiny experiment: K devices on digits with logistic regression, 1 epoch."""
    c = Config()
    return replace(
        c,
        run=replace(c.run, rounds=1, out_dir=str(out_dir)),
        model=replace(c.model, name="logreg"),
        training=replace(c.training, epochs=1, compute_time="modelled"),
        network=replace(c.network, devices=k, miners=1),
        chain=replace(c.chain, max_updates_per_block=max(k, 1000)),
    )


class ServedMiner:
    """A MinerService's app served by uvicorn on a free loopback port in a thread."""

    def __init__(self, service: Any, max_payload_bytes: int) -> None:
        import uvicorn

        from blockfl.chain.node import free_port
        from blockfl.miners.api import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(
            create_app(service, max_payload_bytes), host="127.0.0.1", port=self.port,
            log_level="warning", timeout_keep_alive=30, limit_concurrency=256,
        ))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ServedMiner:
        from blockfl.chain.node import wait_for_port

        self.thread.start()
        wait_for_port(self.port, timeout=30)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def timed(submissions: Sequence[Any], threads: int,
          send: Callable[[int], Callable[[Any], bool]]) -> tuple[float, list[float], int]:
    """Send every submission from `threads` threads (thread t gets every t-th one, through the
    sender `send(t)`); (elapsed seconds, per-call latencies, failures)."""
    senders = [send(t) for t in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(t: int) -> tuple[list[float], int]:
        latencies, failures = [], 0
        barrier.wait()
        for submission in submissions[t::threads]:
            start = time.perf_counter()
            ok = senders[t](submission)
            latencies.append(time.perf_counter() - start)
            failures += not ok
        return latencies, failures

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work, t) for t in range(threads)]
        barrier.wait()
        start = time.perf_counter()
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - start
    return elapsed, [x for lat, _ in results for x in lat], sum(f for _, f in results)


def bench_uploads(k: int) -> None:
    """Part 2."""
    import httpx

    from blockfl.chain.deploy import chain_params
    from blockfl.chain.evm import EvmLedger, embedded_web3
    from blockfl.client import MinerClient, MinerRejected
    from blockfl.devices.device import Device
    from blockfl.events import EventLog
    from blockfl.keys import derived_key
    from blockfl.miners.service import MinerService, MiningSettings
    from blockfl.signing import address_of
    from blockfl.sim.setup import build_experiment

    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        tmp_path = Path(tmp)
        config = upload_config(k, tmp_path)
        experiment = build_experiment(config)
        miner_key = derived_key("bench-miner", 0)
        ledger = EvmLedger.create(embedded_web3(), chain_params(config, experiment.genesis),
                                  [address_of(miner_key)])
        domain = ledger.domain

        started = time.perf_counter()
        devices = [Device(derived_key("bench-device", i), shard, experiment.task, config.training,
                          experiment.initial, seed=i)
                   for i, shard in enumerate(experiment.shards)]
        submissions = [d.train(1, domain).submission for d in devices]
        # a warm-up device trains at another learning rate: on a measured device's shard with
        # the same settings it would make the same update hash, which the miner refuses as a
        # replay (whichever device sends it second)
        warm_training = replace(config.training, lr=config.training.lr * 0.9)
        warmups = [Device(derived_key("bench-warmup", i), experiment.shards[i], experiment.task,
                          warm_training, experiment.initial, seed=i).train(1, domain).submission
                   for i in range(WARMUP)]
        trained = time.perf_counter() - started
        size = statistics.fmean(len(s.payload) for s in submissions)

        policy = config.verification
        settings = MiningSettings(t_wait=1e9, block_size=10**9, hash_rate=0.0)
        services: list[MinerService] = []
        logs: list[EventLog] = []

        def fresh_service() -> MinerService:
            n = len(services)
            logs.append(EventLog("miner", tmp_path / f"miner{n}.jsonl"))
            service = MinerService(miner_key, ledger, policy, settings, tmp_path / f"miner{n}",
                                   [], experiment.initial, logs[-1])
            services.append(service)
            return service

        print(f"\nuploads to one miner: {k} devices' round-1 updates (logreg on digits, "
              f"{size:.0f} bytes of tensors each; trained and signed in {trained:.1f} s before "
              "timing)")
        print(f"{'path':<34} {'updates/s':>10} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'failed':>6}")

        def report(label: str, elapsed: float, latencies: list[float], failures: int,
                   service: MinerService | None) -> None:
            if service is not None:  # every update must be pending in the candidate block
                missing = k + WARMUP - len(service.node.pending_devices())
                failures = max(failures, missing)
            ordered = sorted(latencies)
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            print(f"{label:<34} {len(latencies) / elapsed:>10.1f} "
                  f"{1000 * statistics.fmean(latencies):>8.2f} "
                  f"{1000 * statistics.median(latencies):>7.2f} {1000 * p95:>7.2f} "
                  f"{failures:>6}")

        for threads in (1, 4):
            service = fresh_service()
            with ServedMiner(service, policy.max_payload_bytes) as served:
                clients = [MinerClient(served.url, timeout=60) for _ in range(threads)]

                def http_sender(t: int, clients: list[MinerClient] = clients):
                    def send(submission: Any) -> bool:
                        try:
                            return bool(clients[t].upload(submission)["accepted"])
                        except MinerRejected:
                            return False
                    return send

                for client, warm in zip(clients * WARMUP, warmups, strict=False):
                    client.upload(warm)  # open the connections, warm the code paths
                elapsed, latencies, failures = timed(submissions, threads, http_sender)
                for client in clients:
                    client.close()
                if threads == 1:  # the cost of a request that does no work, for comparison
                    with httpx.Client(base_url=served.url) as plain:
                        plain.get("/health")
                        health = timed(submissions, 1, lambda _: lambda _s: plain.get(
                            "/health").status_code == 200)
            report(f"HTTP MinerClient.upload, {threads} thread{'s' * (threads > 1)}",
                   elapsed, latencies, failures, service)
            if threads == 1:
                report("HTTP GET /health, 1 thread", *health, None)

        for threads in (1, 4):
            service = fresh_service()

            def direct_sender(t: int, service: MinerService = service):
                return lambda submission: service.node.receive_upload(submission).accepted

            for warm in warmups:
                service.node.receive_upload(warm)
            elapsed, latencies, failures = timed(submissions, threads, direct_sender)
            report(f"in process receive_upload, {threads} thread{'s' * (threads > 1)}",
                   elapsed, latencies, failures, service)

        for service in services:
            service.close()
        for log in logs:
            log._out.close()  # EventLog has no close()


def main() -> None:
    """Run both parts and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("-k", "--uploads", type=int, default=200,
                        help="devices uploading to one miner in part 2")
    parser.add_argument("--skip-network", action="store_true", help="run part 2 only")
    parser.add_argument("--skip-uploads", action="store_true", help="run part 1 only")
    parser.add_argument("--emulate-links", action="store_true",
                        help="part 1 on emulated hosts with shaped links (root or "
                             "CAP_NET_ADMIN), then each phase measured against the model")
    args = parser.parse_args()
    started = time.monotonic()
    if not args.skip_network:
        bench_network(args.rounds, args.miners, args.devices, args.emulate_links)
    if not args.skip_uploads:
        bench_uploads(args.uploads)
    print(f"\nbenchmark took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
