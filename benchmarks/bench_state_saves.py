"""How often a dump of anvil's state is torn under a steady commit load, and the keeper's saves.

One thread commits direct-mode blocks of 4 updates to a local anvil back to back while the
main thread takes `--dumps` dumps through `anvil_dumpState` (what anvil's own `--state-interval`
save writes) and counts those that `chain.keeper.is_whole` rejects: accounts ahead of the
blocks, a committed round whose transaction and event are gone. Then as many keeper saves
(`chain.keeper.save`, which retries until a dump is whole) under the same load, each read back
and checked. Printed: torn dumps of each kind, out of how many.

    .venv/bin/python benchmarks/bench_state_saves.py [--dumps 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

from bench_gas import proposal_for  # a mined block of signed updates

from blockfl.chain.blocks import MAX_TARGET, ChainParams
from blockfl.chain.evm import EvmLedger, rpc_web3
from blockfl.chain.keeper import dump, is_whole, save
from blockfl.chain.node import free_port, start_anvil
from blockfl.hashing import keccak
from blockfl.keys import derived_key
from blockfl.signing import address_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dumps", type=int, default=300)
    args = parser.parse_args()
    port = free_port()
    node = start_anvil(port)
    url = f"http://127.0.0.1:{port}"
    miner = derived_key("bench-miner", 0)
    params = ChainParams(MAX_TARGET >> 2, 10**15, 10**18, 10_000, 20_000, False, keccak(b"g"))
    ledger = EvmLedger.create(rpc_web3(url), params, [address_of(miner)])
    keys = [derived_key("bench-device", i) for i in range(4)]
    stop = threading.Event()

    def commit_forever() -> None:
        while not stop.is_set():
            ledger.commit_block(miner, proposal_for(ledger, keys, ledger.head().round + 1))

    committer = threading.Thread(target=commit_forever, daemon=True)
    committer.start()
    try:
        raw = sum(not is_whole(json.loads(dump(url))) for _ in range(args.dumps))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.json"
            kept = 0
            for _ in range(args.dumps):
                assert save(url, path)
                kept += not is_whole(json.loads(path.read_text()))
        rounds = ledger.head().round
    finally:
        stop.set()
        committer.join(timeout=30)
        node.kill()
        node.wait()
    print(f"{rounds} rounds committed during the run")
    print(f"anvil_dumpState (anvil's own save): {raw} torn of {args.dumps}")
    print(f"keeper saves:                       {kept} torn of {args.dumps}")


if __name__ == "__main__":
    main()
