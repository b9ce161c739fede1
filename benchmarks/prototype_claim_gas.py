"""Gas of a Merkle-mode claim, today's design beside a Merkle-sum design (a prototype, not built).

`prototype_claim_gas.sol` holds two claims of one leaf of a 10,000-leaf block (a 14-hash proof),
compiled with the project's solc settings and run on the embedded EVM:

- `claimOld`, a copy of `BlockFL._claim`: a claimed bitmap per round whose first word also
  holds the round's claimed samples (checked against the block's total);
- `claimNew`: a Merkle-sum tree, each inner node ``keccak(h_a, s_a, h_b, s_b)`` of its children's
  hashes each beside its own sum (sorted by hash), the path's sums adding up to the block's
  total, so no counter is stored; a claimed bit per device per 256 rounds; one stored word
  ``keccak(root, count, total)`` per block, the count and total in calldata.

Printed: the gas of each, where the device already holds tokens, for a leaf in the first bitmap
word (5) and past it (300), with the round's or the device's bitmap word already set (the
figure to compare with the 60k target) and for the first claim that sets it. The contract's
own figures come from `benchmarks/bench_gas.py`; this prototype's differ from them by a constant
(its storage layout and other state), so read the difference between the two rows.

    python benchmarks/prototype_claim_gas.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import solcx
from eth_abi import encode
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3

from blockfl.contracts import find_node_modules
from blockfl.contracts.build import SETTINGS, collect_sources, solc_binary

LEVELS = 14  # a block of 10,000 leaves
LEAF = ["uint32", "address", "uint64", "bytes32", "bytes32", "uint64", "uint64"]


def compiled() -> dict:
    """The prototype's ABI and bytecode."""
    node_modules = find_node_modules()
    sources = collect_sources(node_modules, (Path(__file__).parent / "prototype_claim_gas.sol",))
    with tempfile.TemporaryDirectory() as tmp:
        out = solcx.compile_standard(
            {"language": "Solidity", "sources": sources, "settings": SETTINGS},
            solc_binary=solc_binary(node_modules, Path(tmp)))
    errors = [e["formattedMessage"] for e in out.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise RuntimeError("\n".join(errors))
    return out["contracts"]["prototype_claim_gas.sol"]["Proto"]


def main() -> None:
    artifact = compiled()
    w3 = Web3(EthereumTesterProvider())
    sender, device = w3.eth.accounts[:2]
    w3.eth.default_account = sender
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["evm"]["bytecode"]["object"])
    receipt = w3.eth.get_transaction_receipt(factory.constructor().transact())
    proto = w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])
    rng = random.Random(0)

    def gas(call) -> int:
        tx = call.transact({"gas": 2_000_000})
        return w3.eth.get_transaction_receipt(tx).gasUsed

    def leaf(round_: int, index: int) -> tuple:
        return (index, device, round_, b"\x11" * 32, rng.randbytes(32), 120, 1234)

    def root(leaf_: tuple, siblings: list[bytes]) -> bytes:
        node = keccak(keccak(encode(LEAF, list(leaf_))))
        for sibling in siblings:
            node = keccak(min(node, sibling) + max(node, sibling))
        return node

    def old(round_: int, index: int) -> int:
        """Today's claim of leaf `index`, after the claims that set its bitmap words."""
        siblings = [rng.randbytes(32) for _ in range(LEVELS)]
        for other in sorted({index + 1, 1} if index >= 192 else {index + 1}):
            earlier = leaf(round_, other)
            proto.functions.setOld(round_, root(earlier, siblings), 10_000, 10**6).transact()
            gas(proto.functions.claimOld(round_, earlier, siblings))
        mine = leaf(round_, index)
        proto.functions.setOld(round_, root(mine, siblings), 10_000, 10**6).transact()
        return gas(proto.functions.claimOld(round_, mine, siblings))

    def new(round_: int, index: int) -> int:
        """The Merkle-sum claim of leaf `index`."""
        mine = leaf(round_, index)
        siblings = [rng.randbytes(32) for _ in range(LEVELS)]
        sums = [rng.randrange(50, 200) << i for i in range(LEVELS)]
        node, total = keccak(keccak(encode(LEAF, list(mine)))), mine[5]
        for sibling, s in zip(siblings, sums, strict=True):
            pair = [node, total, sibling, s] if node < sibling else [sibling, s, node, total]
            node, total = keccak(encode(["bytes32", "uint256"] * 2, pair)), total + s
        proto.functions.setNew(round_, keccak(encode(["bytes32", "uint32", "uint64"],
                                                     [node, 10_000, total]))).transact()
        packed = b"".join(s.to_bytes(4, "big") for s in sums)
        return gas(proto.functions.claimNew(round_, mine, siblings, packed, 10_000, total))

    first_new = new(1, 5)  # the device's first claim: its token balance and its word are fresh
    print(f"claim of one leaf of a 10,000-leaf block ({LEVELS}-hash proof), the device holding "
          "tokens")
    print(f"{'design':<34} {'leaf 5':>8} {'leaf 300':>9}")
    print(f"{'today, round word set':<34} {old(20, 5):>8,} {old(21, 300):>9,}")
    print(f"{'Merkle-sum, device word set':<34} {new(2, 5):>8,} {new(3, 300):>9,}")
    print(f"{'Merkle-sum, device word fresh':<34} {new(300, 5):>8,} {new(600, 300):>9,}")
    print(f"(the device's very first claim, its balance fresh too: {first_new:,})")


if __name__ == "__main__":
    main()
