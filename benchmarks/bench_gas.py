"""Gas per block in both modes at 1 to 10,000 updates, per extra attestation, and per claim.

`direct`: the commit checks and pays every update (round 1 pays devices that hold no tokens
yet, a fresh balance slot each; round 2 pays them again, the steady state); blocks that cannot
fit the block gas limit are refused before sending. `merkle`: the commit carries a Merkle root,
count and total samples, so its gas does not depend on the number of updates; each device then
claims with a proof (`claim`), or many at once (`claimMany`); a claim is checked against the
block's count, total samples, the sample cap and the allow-list as a direct commit is. A commit
with attestations reads the registered miners at once (one account access) and walks along
them. Runs on the embedded EVM (eth-tester); pass an RPC URL as the first argument to measure on
a node (e.g. anvil).

Usage: python benchmarks/bench_gas.py [RPC_URL]
"""

from __future__ import annotations

import sys
from dataclasses import replace

from blockfl.chain.attestation import attest
from blockfl.chain.blocks import MAX_TARGET, BlockProposal, ChainParams, solve_pow, sort_updates
from blockfl.chain.errors import BlockRejected
from blockfl.chain.evm import EvmLedger, embedded_web3, fund, rpc_web3
from blockfl.chain.merkle import block_claims
from blockfl.hashing import keccak
from blockfl.keys import derived_key
from blockfl.signing import SignedUpdate, UpdateRecord, address_of, sign_update

MINER_KEYS = [derived_key("bench-miner", i) for i in range(32)]
MINERS = 4  # registered miners of every deployment but the majority-quorum rows
SIZES = (1, 10, 100, 1_000, 10_000)


def ledger_for(url: str | None, mode: str, quorum: int = 1, miners: int = MINERS) -> EvmLedger:
    """A fresh deployment of `mode` with `miners` registered miners."""
    params = ChainParams(MAX_TARGET >> 2, 10**15, 10**18, 10_000, 20_000, False, keccak(b"g"),
                         mode=mode, quorum=quorum)
    w3 = rpc_web3(url) if url else embedded_web3()
    return EvmLedger.create(w3, params, [address_of(k) for k in MINER_KEYS[:miners]])


def proposal_for(ledger: EvmLedger, keys: list[bytes], round_: int) -> BlockProposal:
    """A mined block of round `round_` with one signed update per key."""
    head = ledger.head()
    updates = []
    for k in keys:
        record = UpdateRecord(address_of(k), round_, head.global_model_hash,
                              keccak(k + bytes([round_])), 100, 40)
        updates.append(SignedUpdate(record, sign_update(k, record, ledger.domain)))
    proposal = BlockProposal(head.block_hash, round_, keccak(b"model %d" % round_),
                             tuple(sort_updates(updates)), address_of(MINER_KEYS[0]))
    params = ledger.params()
    solution = solve_pow(proposal.header(ledger.domain, params.mode), params.target)
    assert solution is not None
    return replace(proposal, nonce=solution.nonce)


def commit(ledger: EvmLedger, proposal: BlockProposal, attesters: int = 0) -> int:
    """Commit with `attesters` attestations besides the committer; the gas used."""
    statement = ledger.attested_block(proposal)
    attestations = [attest(k, statement, ledger.domain) for k in MINER_KEYS[1:1 + attesters]]
    return ledger.commit_block(MINER_KEYS[0], proposal, attestations).gas_used


def direct_rows(url: str | None) -> None:
    """Direct mode: gas of a first and a repeat payment block at each size."""
    for n in SIZES:
        ledger = ledger_for(url, "direct")
        keys = [derived_key("bench-device", i) for i in range(n)]
        for round_, label in ((1, "first"), (2, "repeat")):
            try:
                gas = commit(ledger, proposal_for(ledger, keys, round_))
            except BlockRejected as exc:
                print(f"{'direct':>7} {n:>7} {label:>7} {'refused':>11}   {exc.error}: "
                      f"at most {exc.details['maxUpdates']} updates fit")
                break
            print(f"{'direct':>7} {n:>7} {label:>7} {gas:>11,} {gas / n:>11,.0f}")


def merkle_rows(url: str | None) -> None:
    """Merkle mode: gas per block at each size (round 1 and 2), then claims of the largest."""
    for n in SIZES:
        ledger = ledger_for(url, "merkle")
        keys = [derived_key("bench-device", i) for i in range(n)]
        committed = []
        for round_, label in ((1, "first"), (2, "repeat")):
            committed.append(proposal_for(ledger, keys, round_))
            gas = commit(ledger, committed[-1])
            print(f"{'merkle':>7} {n:>7} {label:>7} {gas:>11,} {gas / n:>11,.1f}")
    claim_rows(ledger, committed)


def claim_rows(ledger: EvmLedger, committed: list[BlockProposal]) -> None:
    """Gas of claims in the committed blocks of rounds 1 and 2 (the largest size)."""
    relayer = derived_key("bench-relayer", 0)
    fund(ledger.w3, [address_of(relayer)])
    first_block = committed[0]
    print(f"\nclaims in a block of {len(first_block.updates):,} updates (proof of "
          f"{len(block_claims(first_block.updates, 1)[0].proof)} hashes)")
    for proposal in committed:
        round_ = proposal.round
        claims = block_claims(proposal.updates, round_)
        label = "first payment" if round_ == 1 else "holder already paid"
        # the first claim of a round sets a fresh word of the claimed bitmap; the round's first
        # word holds its claimed samples and the bits of leaves 0-191, later words 256 leaves
        first = ledger.claim(relayer, round_, claims[:1])
        next_ = ledger.claim(relayer, round_, claims[1:2])
        many = ledger.claim(relayer, round_, claims[2:102])
        ledger.claim(relayer, round_, claims[300:301])
        far = ledger.claim(relayer, round_, claims[301:302])
        print(f"  {label:<20} claim: {first:>7,} gas (first in its bitmap word), "
              f"{next_:>7,} (next), {far:>7,} (next, leaf 192 or later)   "
              f"claimMany x100: {many / 100:>7,.0f} per claim")


def attested_gas(url: str | None, quorum: int, miners: int = MINERS) -> tuple[int, int]:
    """Gas of a merkle block after the first, of 10 updates, attested by as few miners as
    `quorum` requires; and the number of attestations besides the committer's."""
    keys = [derived_key("bench-device", i) for i in range(10)]
    ledger = ledger_for(url, "merkle", quorum=quorum, miners=miners)
    attesters = ledger.required_attesters() - 1
    commit(ledger, proposal_for(ledger, keys, 1), attesters)
    return commit(ledger, proposal_for(ledger, keys, 2), attesters), attesters


def attestation_rows(url: str | None) -> None:
    """Merkle mode, a block after the first: gas with 0 to 3 attestations besides the
    committer; then with a majority quorum as the registered miners grow, against the target
    of 150k gas plus 5k per attestation."""
    previous = None
    for quorum in range(1, MINERS + 1):
        gas, _ = attested_gas(url, quorum)
        extra = "" if previous is None else f"   +{gas - previous:,} for one more"
        print(f"  quorum {quorum}: {gas:>9,} gas{extra}")
        previous = gas
    print("\nmerkle block of 10 updates after the first, majority quorum, by registered miners")
    for miners in (MINERS, 8, 16, 32):
        gas, attesters = attested_gas(url, 0, miners)
        print(f"  {miners:>2} miners, {attesters:>2} attestations: {gas:>9,} gas "
              f"(target {150_000 + 5_000 * attesters:,})")


def main() -> None:
    """Print the gas tables."""
    url = sys.argv[1] if len(sys.argv) > 1 else None
    print(f"commit gas on {'node ' + url if url else 'the embedded EVM (eth-tester)'}, "
          "quorum 1 (the committer alone)")
    print(f"{'mode':>7} {'updates':>7} {'round':>7} {'gas':>11} {'gas/update':>11}")
    direct_rows(url)
    merkle_rows(url)
    print("\nmerkle block of 10 updates after the first, by number of attesting miners")
    attestation_rows(url)


if __name__ == "__main__":
    main()
