"""A miner process killed while rounds commit, then restarted, serves every block it missed.

Real processes on loopback: anvil, two `blockfl miner` and three `blockfl device` processes.
"""

from __future__ import annotations

import time

import pytest

from blockfl.chain.node import find_anvil
from blockfl.client import MinerClient
from blockfl.events import read_events
from blockfl.launcher import LocalNetwork
from tests.conftest import small_config

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]


def test_a_restarted_miner_serves_the_blocks_it_missed(tmp_path):
    config = small_config(
        tmp_path,
        run={"rounds": 3, "out_dir": str(tmp_path)},
        network={"devices": 3, "miners": 2, "t_wait": 5.0},
        # quorum 1: miner 0 alone keeps committing while miner 1 is down (a majority of two
        # miners would wait for it)
        chain={"block_rate": 2.0, "hash_rate": 20_000.0, "quorum": 1},
        verification={"max_payload_bytes": 100_000},
    )
    network = LocalNetwork(config, tmp_path / "net").start()
    try:
        network.wait_for_round(1, timeout=180)
        miner1 = network.miners[1]
        network.stop_role(miner1, kill=True)
        down_at = network.ledger.head().round
        assert down_at < 3, "rounds committed faster than the miner was killed"
        network.wait_for_round(3, timeout=240)  # committed while miner 1 is down
        network.start_role(miner1)

        client = MinerClient(network.miner_url(1), timeout=10)
        missed = range(down_at + 1, 4)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(client.block(r) is None for r in missed):
            time.sleep(0.5)
        for round_ in missed:
            record = network.ledger.get_block(round_)
            block = client.block(round_)
            assert block is not None, f"miner 1 does not serve the block of round {round_}"
            assert block.header(network.ledger.domain).block_hash(block.nonce) == record.block_hash
            assert client.block(record.block_hash) == block
            assert client.model(record.global_model_hash) is not None  # checked against the hash
        caught = [e["round"] for e in read_events(miner1.log) if e["event"] == "caught_up"]
        assert set(missed) <= set(caught)
    finally:
        network.stop()
