"""Committing on the embedded EVM: an analytic gas limit that holds, and no doomed fork sent."""

from __future__ import annotations

import torch

from blockfl.aggregation import FedAvg
from blockfl.chain.blocks import BlockProposal, sort_updates
from blockfl.chain.evm import COMMIT_GAS_BASE, COMMIT_GAS_PER_UPDATE, EvmLedger, embedded_web3
from blockfl.hashing import keccak
from blockfl.miners.node import MinerNode
from blockfl.miners.verification import VerificationPolicy, Verifier
from blockfl.signing import address_of
from blockfl.store import ModelStore
from blockfl.tensors import tensor_hash
from tests.conftest import MINER_KEYS, MINERS, default_params, key
from tests.test_ledger_conformance import mined, signed


def test_commit_of_new_holders_fits_the_analytic_gas_limit():
    # first payouts (a new token balance per device) are the most expensive updates
    ledger = EvmLedger.create(embedded_web3(), default_params(), MINERS)
    for round_, n in enumerate([1, 24], start=1):
        keys = [key(f"gas-{round_}-{i}") for i in range(n)]
        head = ledger.head()
        updates = [signed(ledger, k, 100, round_, head.global_model_hash) for k in keys]
        proposal = mined(ledger, BlockProposal(head.block_hash, round_, keccak(b"m%d" % round_),
                                               tuple(sort_updates(updates)), MINERS[0]))
        receipt = ledger.commit_block(MINER_KEYS[0], proposal)
        limit = COMMIT_GAS_BASE + COMMIT_GAS_PER_UPDATE * n
        assert 0.5 * limit < receipt.gas_used < limit
        assert all(ledger.balance_of(address_of(k)) > 0 for k in keys)


def test_miner_does_not_send_a_block_of_a_round_already_committed(tmp_path):
    base = {"w": torch.zeros(3)}
    ledger = EvmLedger.create(embedded_web3(), default_params(genesis_model_hash=tensor_hash(base)),
                              MINERS)
    nodes = [MinerNode(k, ledger, Verifier(VerificationPolicy()), ModelStore(tmp_path / str(i)),
                       FedAvg(), base) for i, k in enumerate(MINER_KEYS[:2])]
    updates = tuple(sort_updates([signed(ledger, key("d"), 10, 1, tensor_hash(base))]))
    head = ledger.head()
    first, second = (mined(ledger, BlockProposal(head.block_hash, 1, keccak(m), updates, MINERS[i]))
                     for i, m in enumerate([b"a", b"b"]))
    assert nodes[0].commit(first) is not None
    chain_height = ledger.w3.eth.block_number
    assert nodes[1].commit(second) is None  # lost: counted as a fork, never sent
    assert nodes[1].stats.forks == [1]
    assert ledger.w3.eth.block_number == chain_height
    assert ledger.w3.eth.get_transaction_count(MINERS[1]) == 0
