"""What an attestation flood costs a network's round rate, apart from what it costs the machine.

A local network of processes (3 miners, 3 devices, logreg, T_wait 1 s, lambda 2/s per miner)
commits rounds while one attacker process sends waves of 64 concurrent 8 MiB `/attestations`
requests from two addresses, one wave every 3 s (issue 18's attack). On a machine whose cores
the attacker shares, a flood slows every process even if the miner spends nothing on it, so
each flooded window is set beside a control window in which the same waves, from the same
kind of process, go to a sink instead of the miner: a server on another port of this machine
that reads each request's head, answers 413 as the miner does and closes. Windows (quiet,
flood at the miner, flood at the sink) alternate `--repeats` times, so the machine's drifting
load falls on all three alike. Printed: the round rate of each window and the CPU the flooded
miner's process used in it (cores: CPU seconds per second), and the rates of the flooded
windows over the control windows and over the quiet ones (median, worst, best).

    .venv/bin/python benchmarks/bench_attestation_flood.py [--repeats 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from blockfl import hostile
from blockfl.chain.node import free_port
from blockfl.config import Config
from blockfl.keys import derived_key
from blockfl.launcher import LocalNetwork
from blockfl.signing import address_of
from blockfl.wire import RECORD_HEADER

WAVE, EVERY = 64, 3.0  # requests per wave, seconds between wave starts


def flood_config(out_dir: Path) -> Config:
    """The network of the flood test (`tests/test_hostile_clients.py`)."""
    c = Config()
    return replace(
        c, run=replace(c.run, rounds=100_000, out_dir=str(out_dir), name="flood"),
        network=replace(c.network, devices=3, miners=3, t_wait=1.0),
        model=replace(c.model, name="logreg"),
        training=replace(c.training, epochs=1, lr=0.5, compute_time="modelled"),
        chain=replace(c.chain, block_rate=2.0, hash_rate=20_000.0))


def sink(port: int, stop: threading.Event) -> None:
    """Answer every request 413 once its head is read, then close: the miner's refusal of a
    body larger than a block, without a miner behind it."""
    server = socket.create_server(("127.0.0.1", port), backlog=512)
    server.settimeout(0.2)
    answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                conn.sendall(answer)
            except OSError:
                pass

    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    server.close()


def waves(port: int, body: bytes, seconds: float) -> None:
    """The attacker: a wave of WAVE requests every EVERY seconds for `seconds` (a process)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        asyncio.run(hostile.attestation_flood("127.0.0.1", port, body, count=WAVE, timeout=60))
        time.sleep(max(0.0, started + EVERY - time.monotonic()))


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    stop = threading.Event()
    sink_port = free_port()
    threading.Thread(target=sink, args=(sink_port, stop), daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        network = LocalNetwork(flood_config(Path(tmp)), Path(tmp) / "net").start()
        try:
            network.wait_for_round(3, timeout=240)
            ledger = network.ledger
            head = ledger.head()
            update = json.loads(hostile.upload_headers(
                derived_key("attacker", 0), ledger.domain, head.round + 1,
                head.global_model_hash)[RECORD_HEADER])
            body = hostile.padded_block(update, address_of(derived_key("attacker", 1)),
                                        head.round + 1)

            pid = network.miners[0].process.pid

            def window(target: int | None) -> tuple[float, float]:
                attacker = None
                if target is not None:
                    attacker = multiprocessing.Process(target=waves,
                                                       args=(target, body, args.seconds))
                    attacker.start()
                first, started, cpu = ledger.head().round, time.monotonic(), cpu_seconds(pid)
                time.sleep(args.seconds)
                elapsed = time.monotonic() - started
                rate = (ledger.head().round - first) / elapsed
                busy = (cpu_seconds(pid) - cpu) / elapsed
                if attacker is not None:
                    attacker.join(timeout=120)
                return rate, busy

            rows = []
            for i in range(args.repeats):
                measured = {"quiet": window(None), "miner": window(network.miners[0].port),
                            "sink": window(sink_port)}
                row = {k: rate for k, (rate, _) in measured.items()}
                rows.append(row)
                print(f"repeat {i + 1}: rounds/s quiet {row['quiet']:.2f}, flood at the miner "
                      f"{row['miner']:.2f}, the same flood at a sink {row['sink']:.2f}; the "
                      "flooded miner's CPU (cores): " + ", ".join(
                          f"{k} {busy:.2f}" for k, (_, busy) in measured.items()), flush=True)
        finally:
            network.stop()
            stop.set()
    for other in ("sink", "quiet"):
        ratios = sorted(r["miner"] / r[other] for r in rows if r[other] > 0)
        if ratios:
            print(f"flooded miner / {other}: median {statistics.median(ratios):.2f} "
                  f"(worst {ratios[0]:.2f}, best {ratios[-1]:.2f}) over {len(ratios)} repeats")


if __name__ == "__main__":
    main()
