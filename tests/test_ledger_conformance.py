"""One conformance suite for every ledger backend: embedded EVM, SQLite, and anvil."""

from __future__ import annotations

from dataclasses import replace

import pytest

from blockfl.chain.blocks import BlockProposal, solve_pow, sort_updates
from blockfl.chain.errors import BlockRejected, ForkRejected
from blockfl.chain.evm import EvmLedger, fund
from blockfl.chain.ledger import Ledger
from blockfl.hashing import ZERO_HASH, keccak
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of, sign_update
from tests.conftest import GENESIS, MINER_KEYS, MINERS, default_params, key

DEVICE_KEYS = [key(f"device-{i}") for i in range(4)]
SAMPLES = [120, 80, 200, 40]


def signed(
    ledger: Ledger,
    device_key: bytes,
    samples: int,
    round_: int = 1,
    base: bytes = GENESIS,
    domain: Domain | None = None,
) -> SignedUpdate:
    record = UpdateRecord(
        address_of(device_key), round_, base, keccak(device_key + bytes([round_])), samples, 25
    )
    return SignedUpdate(record, sign_update(device_key, record, domain or ledger.domain))


def mined(ledger: Ledger, proposal: BlockProposal) -> BlockProposal:
    """The proposal with a nonce meeting the ledger's target."""
    params = ledger.params()
    solution = solve_pow(proposal.header(ledger.domain, params.mode), params.target)
    assert solution is not None
    return replace(proposal, nonce=solution.nonce)


def mined_not_for(ledger: Ledger, proposal: BlockProposal, other: str) -> BlockProposal:
    """The proposal with a nonce that meets the target for its miner and not for `other`
    (with an easy target, one in 16 would for both)."""
    params = ledger.params()
    header = proposal.header(ledger.domain, params.mode)
    start = proposal.nonce
    while True:
        solution = solve_pow(header, params.target, start)
        assert solution is not None
        if solve_pow(replace(header, miner=other), params.target, solution.nonce, 1) is None:
            return replace(proposal, nonce=solution.nonce)
        start = solution.nonce + 1


def block(
    ledger: Ledger, updates: list[SignedUpdate], round_: int = 1, miner: int = 0, **kw
) -> BlockProposal:
    head = ledger.head()
    proposal = BlockProposal(
        kw.get("prev_hash", head.block_hash),
        round_,
        kw.get("model", keccak(b"model %d" % round_)),
        tuple(updates if kw.get("unsorted") else sort_updates(updates)),
        MINERS[miner],
    )
    return mined(ledger, proposal)


def honest_updates(ledger: Ledger, round_: int = 1, base: bytes = GENESIS) -> list[SignedUpdate]:
    return [signed(ledger, k, n, round_, base) for k, n in zip(DEVICE_KEYS, SAMPLES, strict=True)]


def snapshot(ledger: Ledger) -> tuple:
    addresses = [address_of(k) for k in DEVICE_KEYS] + MINERS
    return ledger.head(), [ledger.balance_of(a) for a in addresses], ledger.accepted_updates()


def test_deployment_reads_back(make_ledger):
    params = default_params()
    ledger = make_ledger(params, MINERS[:2])
    got = ledger.params()
    assert got.target == params.target
    assert got.reward_per_sample == params.reward_per_sample
    assert got.genesis_model_hash == GENESIS
    assert ledger.head().round == 0
    assert ledger.head().global_model_hash == GENESIS
    assert ledger.is_miner(MINERS[0]) and not ledger.is_miner(MINERS[2])
    assert got.token == ledger.domain.contract  # the contract is its own reward token


def test_protocol_spec_mode_and_quorum_read_back(make_ledger):
    spec = keccak(b"protocol spec")
    ledger = make_ledger(default_params(protocol_spec_hash=spec, mode="merkle", quorum=2), MINERS)
    got = ledger.params()
    assert (got.protocol_spec_hash, got.mode, got.quorum) == (spec, "merkle", 2)
    if isinstance(ledger, EvmLedger):
        assert bytes(ledger.contract.functions.protocolSpecHash().call()) == spec


def test_commit_pays_devices_and_miner(make_ledger):
    params = default_params()
    ledger = make_ledger(params, MINERS)
    proposal = block(ledger, honest_updates(ledger), miner=1)
    receipt = ledger.commit_block(MINER_KEYS[1], proposal)

    head = ledger.head()
    assert head.round == 1
    assert head.block_hash == receipt.block_hash
    assert int.from_bytes(receipt.block_hash, "big") <= params.target
    record = ledger.get_block(1)
    assert record is not None
    assert record.miner == MINERS[1]
    assert record.global_model_hash == keccak(b"model 1")
    assert record.num_updates == 4 and record.total_samples == sum(SAMPLES)
    assert record.nonce == proposal.nonce and record.prev_hash == ZERO_HASH

    events = ledger.accepted_updates(1)
    assert [e.device for e in events] == [u.device for u in proposal.updates]
    for k, n in zip(DEVICE_KEYS, SAMPLES, strict=True):
        assert ledger.balance_of(address_of(k)) == n * params.reward_per_sample
    assert ledger.balance_of(MINERS[1]) == params.mining_reward
    assert ledger.balance_of(MINERS[0]) == 0
    balances = {a: ledger.balance_of(a) for a in ledger.reward_totals()}
    assert balances == ledger.reward_totals()


def test_second_round_links_to_first(make_ledger):
    ledger = make_ledger(default_params(), MINERS)
    ledger.commit_block(MINER_KEYS[0], block(ledger, honest_updates(ledger)))
    model1 = keccak(b"model 1")
    ledger.commit_block(MINER_KEYS[2], block(ledger, honest_updates(ledger, 2, model1), 2, 2))
    assert ledger.head().round == 2
    assert ledger.get_block(2).prev_hash == ledger.get_block(1).block_hash
    assert len(ledger.accepted_updates()) == 8
    assert len(ledger.accepted_updates(2)) == 4


def test_second_block_for_a_round_is_a_fork(make_ledger):
    ledger = make_ledger(default_params(), MINERS)
    ledger.commit_block(MINER_KEYS[0], block(ledger, honest_updates(ledger)))
    # miner 1 built on the genesis too, and loses the race
    rival = mined(ledger, BlockProposal(ZERO_HASH, 1, keccak(b"other"),
                                        tuple(sort_updates(honest_updates(ledger))), MINERS[1]))
    before = snapshot(ledger)
    with pytest.raises(ForkRejected) as info:
        ledger.commit_block(MINER_KEYS[1], rival)
    assert info.value.error == "RoundAlreadyCommitted"
    assert info.value.details["committedHash"] == ledger.head().block_hash
    assert snapshot(ledger) == before


def _forged(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    # device 0's record signed by device 1's key
    bad = signed(ledger, DEVICE_KEYS[1], SAMPLES[0])
    updates[0] = SignedUpdate(updates[0].record, bad.signature)
    return updates


def _malformed(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    sig = updates[0].signature
    updates[0] = SignedUpdate(updates[0].record, sig[:64] + bytes([29]))
    return updates


def _high_s(ledger: Ledger) -> list[SignedUpdate]:
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    updates = honest_updates(ledger)
    sig = updates[0].signature
    s = n - int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + s.to_bytes(32, "big") + bytes([55 - sig[64]])
    updates[0] = SignedUpdate(updates[0].record, flipped)
    return updates


def _other_round(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    stale = signed(ledger, DEVICE_KEYS[0], SAMPLES[0], round_=7)
    updates[0] = SignedUpdate(replace(stale.record, round=1), stale.signature)
    return updates


def _other_contract(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    elsewhere = Domain(ledger.domain.chain_id, "0x" + "11" * 20)
    updates[0] = signed(ledger, DEVICE_KEYS[0], SAMPLES[0], domain=elsewhere)
    return updates


def _other_chain(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    elsewhere = Domain(ledger.domain.chain_id + 1, ledger.domain.contract)
    updates[0] = signed(ledger, DEVICE_KEYS[0], SAMPLES[0], domain=elsewhere)
    return updates


def _duplicate(ledger: Ledger) -> list[SignedUpdate]:
    updates = sort_updates(honest_updates(ledger))
    return [updates[0], updates[0], *updates[1:]]


def _over_cap(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    updates[2] = signed(ledger, DEVICE_KEYS[2], 1001)
    return updates


def _zero_samples(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    updates[2] = signed(ledger, DEVICE_KEYS[2], 0)
    return updates


def _stale_base(ledger: Ledger) -> list[SignedUpdate]:
    updates = honest_updates(ledger)
    updates[3] = signed(ledger, DEVICE_KEYS[3], SAMPLES[3], base=keccak(b"old model"))
    return updates


BAD_UPDATES = {
    "forged signature": (_forged, "InvalidSignature"),
    "malformed signature v": (_malformed, "MalformedSignature"),
    "malleable high-s signature": (_high_s, "MalformedSignature"),
    "signature for another round": (_other_round, "InvalidSignature"),
    "signature for another contract": (_other_contract, "InvalidSignature"),
    "signature for another chain": (_other_chain, "InvalidSignature"),
    "duplicate device": (_duplicate, "DuplicateDevice"),
    "sample count over the cap": (_over_cap, "SampleCountOutOfRange"),
    "zero samples": (_zero_samples, "SampleCountOutOfRange"),
    "stale base model": (_stale_base, "StaleBaseModel"),
}


@pytest.mark.parametrize("case", list(BAD_UPDATES))
def test_bad_update_rejects_whole_block(make_ledger, case):
    ledger = make_ledger(default_params(), MINERS)
    build, error = BAD_UPDATES[case]
    before = snapshot(ledger)
    with pytest.raises(BlockRejected) as info:
        ledger.commit_block(MINER_KEYS[0], block(ledger, build(ledger)))
    assert info.value.error == error
    assert not isinstance(info.value, ForkRejected)
    assert snapshot(ledger) == before


def test_unsorted_updates_rejected(make_ledger):
    ledger = make_ledger(default_params(), MINERS)
    updates = sort_updates(honest_updates(ledger))[::-1]
    with pytest.raises(BlockRejected) as info:
        ledger.commit_block(MINER_KEYS[0], block(ledger, updates, unsorted=True))
    assert info.value.error == "UpdatesNotSorted" and info.value.details["index"] == 1


def test_header_rejections(make_ledger):
    ledger = make_ledger(default_params(max_updates_per_block=3), MINERS[:2])
    if isinstance(ledger, EvmLedger):
        fund(ledger.w3, [MINERS[2]])  # an outsider with gas money, but not a miner
    updates = honest_updates(ledger)[:3]
    before = snapshot(ledger)
    cases = [
        (MINER_KEYS[2], block(ledger, updates, miner=2), "NotMiner"),
        (MINER_KEYS[0], block(ledger, updates, round_=2), "WrongRound"),
        (MINER_KEYS[0], block(ledger, updates, prev_hash=keccak(b"x")), "WrongPreviousHash"),
        (MINER_KEYS[0], block(ledger, []), "EmptyBlock"),
        (MINER_KEYS[0], block(ledger, honest_updates(ledger)), "TooManyUpdates"),
        # a valid proposal signed by another miner's key: the header names miner 0
        (MINER_KEYS[1], mined_not_for(ledger, block(ledger, updates), MINERS[1]),
         "InsufficientWork"),
    ]
    for miner_key, proposal, error in cases:
        with pytest.raises(BlockRejected) as info:
            ledger.commit_block(miner_key, proposal)
        assert info.value.error == error, error
    assert snapshot(ledger) == before


def test_bad_proof_of_work(make_ledger):
    ledger = make_ledger(default_params(), MINERS)
    proposal = block(ledger, honest_updates(ledger))
    header = proposal.header(ledger.domain)
    target = ledger.params().target
    nonce = next(n for n in range(1000) if int.from_bytes(header.block_hash(n), "big") > target)
    with pytest.raises(BlockRejected) as info:
        ledger.commit_block(MINER_KEYS[0], replace(proposal, nonce=nonce))
    assert info.value.error == "InsufficientWork"
    assert ledger.head().round == 0


def test_allow_list(make_ledger):
    ledger = make_ledger(default_params(device_allow_list=True), MINERS)
    for k in DEVICE_KEYS[:3]:
        ledger.set_device_allowed(address_of(k), True)
    with pytest.raises(BlockRejected) as info:
        ledger.commit_block(MINER_KEYS[0], block(ledger, honest_updates(ledger)))
    assert info.value.error == "DeviceNotAllowed"
    assert info.value.details["device"] == address_of(DEVICE_KEYS[3])
    ledger.commit_block(MINER_KEYS[0], block(ledger, honest_updates(ledger)[:3]))
    assert ledger.head().round == 1


def test_target_change(make_ledger):
    ledger = make_ledger(default_params(), MINERS)
    ledger.set_target(12345)
    assert ledger.params().target == 12345
