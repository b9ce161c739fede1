"""Gas of `commitBlock` for blocks of 1, 10 and 100 updates, and gas per accepted update.

Round 1 pays devices that hold no tokens yet (a fresh balance slot each); round 2 pays the same
devices again, the steady state. Runs on the embedded EVM (eth-tester); pass an RPC URL as
the first argument to measure on a node (e.g. anvil).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from blockfl.chain.blocks import MAX_TARGET, BlockProposal, ChainParams, solve_pow, sort_updates
from blockfl.chain.evm import EvmLedger, embedded_web3, rpc_web3
from blockfl.hashing import keccak
from blockfl.keys import derived_key
from blockfl.signing import SignedUpdate, UpdateRecord, address_of, sign_update

MINER_KEY = derived_key("bench-miner", 0)


def commit_round(ledger: EvmLedger, keys: list[bytes], round_: int) -> int:
    """Commit one block with an update from each key; return the gas used."""
    head = ledger.head()
    updates = []
    for k in keys:
        record = UpdateRecord(address_of(k), round_, head.global_model_hash,
                              keccak(k + bytes([round_])), 100, 40)
        updates.append(SignedUpdate(record, sign_update(k, record, ledger.domain)))
    proposal = BlockProposal(head.block_hash, round_, keccak(b"model %d" % round_),
                             tuple(sort_updates(updates)), address_of(MINER_KEY))
    solution = solve_pow(proposal.header(ledger.domain), ledger.params().target)
    assert solution is not None
    return ledger.commit_block(MINER_KEY, replace(proposal, nonce=solution.nonce)).gas_used


def main() -> None:
    """Print the gas table."""
    url = sys.argv[1] if len(sys.argv) > 1 else None
    print(f"commitBlock gas on {'node ' + url if url else 'the embedded EVM (eth-tester)'}")
    print(f"{'updates':>8} {'round':>6} {'gas':>12} {'gas/update':>11}")
    for n in (1, 10, 100):
        params = ChainParams(MAX_TARGET >> 2, 10**15, 10**18, 10_000, 200, False, keccak(b"g"))
        w3 = rpc_web3(url) if url else embedded_web3()
        ledger = EvmLedger.create(w3, params, [address_of(MINER_KEY)])
        keys = [derived_key("bench-device", i) for i in range(n)]
        for round_, label in ((1, "first"), (2, "repeat")):
            gas = commit_round(ledger, keys, round_)
            print(f"{n:>8} {label:>6} {gas:>12,} {gas / n:>11,.0f}")


if __name__ == "__main__":
    main()
