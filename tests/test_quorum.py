"""Quorum attestations, equivocation, merkle blocks and claims, and the review fixes: the same
outcomes on every ledger backend (embedded EVM, SQLite, anvil)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from blockfl.chain.attestation import Attestation, AttestedBlock, attest
from blockfl.chain.blocks import BlockHeader, BlockProposal, solve_pow
from blockfl.chain.errors import BlockRejected
from blockfl.chain.evm import DEV_DEPLOYER_KEY, EvmLedger, fund
from blockfl.chain.ledger import Ledger
from blockfl.chain.local import MAX_MINERS, LocalLedger
from blockfl.chain.merkle import (
    MerkleClaim,
    MerkleTree,
    block_claims,
    committed_root,
    leaf_hash,
    verify,
)
from blockfl.hashing import keccak
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of
from tests.conftest import GENESIS, MINER_KEYS, MINERS, default_params, key
from tests.test_ledger_conformance import (
    DEVICE_KEYS,
    SAMPLES,
    block,
    honest_updates,
    signed,
    snapshot,
)

OUTSIDER = key("outsider")


def rejected(call, *args) -> BlockRejected:
    with pytest.raises(BlockRejected) as info:
        call(*args)
    return info.value


def attestations(ledger: Ledger, proposal, signers: list[int]) -> list[Attestation]:
    statement = ledger.attested_block(proposal)
    return [attest(MINER_KEYS[i], statement, ledger.domain) for i in signers]


def test_majority_quorum_needs_another_miner(make_ledger):
    ledger = make_ledger(default_params(quorum=0), MINERS)
    assert ledger.required_attesters() == 2
    proposal = block(ledger, honest_updates(ledger))
    before = snapshot(ledger)
    error = rejected(ledger.commit_block, MINER_KEYS[0], proposal)
    assert (error.error, error.details) == ("QuorumNotReached", {"attesters": 1, "quorum": 2})
    assert snapshot(ledger) == before
    # the committer's own attestation does not count twice
    error = rejected(ledger.commit_block, MINER_KEYS[0], proposal,
                     attestations(ledger, proposal, [0]))
    assert error.error == "QuorumNotReached"
    ledger.commit_block(MINER_KEYS[0], proposal, attestations(ledger, proposal, [2, 0]))
    assert ledger.head().round == 1
    assert ledger.balance_of(address_of(DEVICE_KEYS[0])) == SAMPLES[0] * 10**15


def test_bad_attestations_are_named_and_change_nothing(make_ledger):
    ledger = make_ledger(default_params(quorum=2), MINERS)
    proposal = block(ledger, honest_updates(ledger))
    statement = ledger.attested_block(proposal)
    good = attest(MINER_KEYS[1], statement, ledger.domain)
    other_contract = Domain(ledger.domain.chain_id, address_of(key("elsewhere"))[:42])
    high_s = good.signature[:32] + (2**256 - 1).to_bytes(32, "big") + good.signature[64:]
    cases = {
        "forged (an outsider's key)": ([attest(OUTSIDER, statement, ledger.domain)],
                                       "AttesterNotMiner"),
        "duplicate": ([good, good], "DuplicateAttester"),
        "other round": ([attest(MINER_KEYS[1], replace(statement, round=2), ledger.domain)],
                        "AttesterNotMiner"),
        "other contract": ([attest(MINER_KEYS[1], statement, other_contract)],
                           "AttesterNotMiner"),
        "other candidate": ([attest(MINER_KEYS[1], replace(statement, global_model_hash=keccak(
            b"a model paying the committer")), ledger.domain)], "AttesterNotMiner"),
        "malformed": ([Attestation(statement, high_s)], "MalformedAttestation"),
    }
    before = snapshot(ledger)
    for name, (given, error) in cases.items():
        assert rejected(ledger.commit_block, MINER_KEYS[0], proposal, given).error == error, name
        assert snapshot(ledger) == before, name
    ledger.commit_block(MINER_KEYS[0], proposal, [good])
    assert ledger.head().round == 1


def test_equivocation_removes_the_miner(make_ledger):
    ledger = make_ledger(default_params(quorum=2), MINERS)
    proposal = block(ledger, honest_updates(ledger))
    statement = ledger.attested_block(proposal)
    a = attest(MINER_KEYS[2], statement, ledger.domain)
    b = attest(MINER_KEYS[2], replace(statement, global_model_hash=keccak(b"x")), ledger.domain)
    assert rejected(ledger.report_equivocation, DEV_DEPLOYER_KEY, a, a).error == "NotEquivocation"
    other = attest(MINER_KEYS[1], replace(statement, global_model_hash=keccak(b"x")),
                   ledger.domain)
    assert rejected(ledger.report_equivocation, DEV_DEPLOYER_KEY, a, other).error == \
        "NotEquivocation"
    # candidates of two committers are no equivocation: one block of a round lands, and a
    # committer that withholds its attested block must not stall the others
    for_another = attest(MINER_KEYS[2], replace(statement, committer=MINERS[1]), ledger.domain)
    assert rejected(ledger.report_equivocation, DEV_DEPLOYER_KEY, a, for_another).error == \
        "NotEquivocation"
    assert ledger.report_equivocation(DEV_DEPLOYER_KEY, a, b) == MINERS[2]
    assert not ledger.is_miner(MINERS[2])
    if isinstance(ledger, EvmLedger):
        (event,) = ledger.contract.events.Equivocation().get_logs(from_block=0)
        assert event["args"]["miner"] == MINERS[2] and event["args"]["round"] == 1
    # its attestation no longer counts, and it can neither commit nor be reported again
    assert rejected(ledger.commit_block, MINER_KEYS[0], proposal, [a]).error == \
        "AttesterNotMiner"
    assert rejected(ledger.commit_block, MINER_KEYS[2], block(ledger, honest_updates(ledger),
                                                              miner=2)).error == "NotMiner"
    assert rejected(ledger.report_equivocation, DEV_DEPLOYER_KEY, a, b).error == "NotMiner"
    assert ledger.balance_of(MINERS[2]) == 0


def ascending(addresses: list[str]) -> list[str]:
    return sorted(addresses, key=lambda a: int(a, 16))


def test_attesters_are_found_among_the_miners_registered_now(make_ledger):
    """A commit finds its attesters in the stored list of registered miners (on an EVM, a data
    contract's code, replaced on every change): added and removed miners count from then on."""
    ledger = make_ledger(default_params(quorum=2), [MINERS[1], MINERS[0], MINERS[1]])
    listed = (lambda: ledger.contract.functions.miners().call()) if isinstance(
        ledger, EvmLedger) else None
    if listed:
        assert listed() == ascending(MINERS[:2])  # distinct, ascending
    proposal = block(ledger, honest_updates(ledger))
    before = snapshot(ledger)
    error = rejected(ledger.commit_block, MINER_KEYS[0], proposal, attestations(ledger, proposal,
                                                                                 [1, 2]))
    assert (error.error, error.details["signer"]) == ("AttesterNotMiner", MINERS[2])
    assert snapshot(ledger) == before
    ledger.add_miner(MINERS[2])
    ledger.add_miner(MINERS[2])  # once registered, adding again changes nothing
    if listed:
        assert listed() == ascending(MINERS)
    ledger.commit_block(MINER_KEYS[0], proposal, attestations(ledger, proposal, [1, 2]))
    ledger.remove_miner(MINERS[1])
    if listed:
        assert listed() == ascending([MINERS[0], MINERS[2]])
    base = ledger.head().global_model_hash
    second = block(ledger, honest_updates(ledger, 2, base), 2)
    error = rejected(ledger.commit_block, MINER_KEYS[0], second, attestations(ledger, second,
                                                                               [1, 2]))
    assert (error.error, error.details["signer"]) == ("AttesterNotMiner", MINERS[1])
    # a committer that is no longer a miner is refused whether or not it brings attestations
    mined = block(ledger, honest_updates(ledger, 2, base), 2, miner=1)
    for given in ([], attestations(ledger, mined, [0, 2])):
        assert rejected(ledger.commit_block, MINER_KEYS[1], mined, given).error == "NotMiner"
    ledger.commit_block(MINER_KEYS[0], second, attestations(ledger, second, [2]))
    assert ledger.head().round == 2


def test_at_most_767_miners(make_ledger):
    """The contract keeps its miners as a contract's code (at most 24,576 bytes)."""
    if make_ledger.backend == "anvil":
        pytest.skip("the embedded EVM runs the same contract")
    many = [address_of(key(f"miner-{i}")) for i in range(MAX_MINERS + 1)]
    ledger = make_ledger(default_params(), many[:2])
    if isinstance(ledger, EvmLedger):
        assert ledger.contract.functions.MAX_MINERS().call() == MAX_MINERS
        return  # registering 767 miners takes minutes on the embedded EVM
    error = rejected(LocalLedger.create, ":memory:", default_params(), many, DEV_DEPLOYER_KEY)
    assert error.details == {"count": MAX_MINERS + 1, "max": MAX_MINERS}
    full = LocalLedger.create(":memory:", default_params(), many[:-1], DEV_DEPLOYER_KEY)
    assert rejected(full.add_miner, many[-1]).error == "TooManyMiners"
    full.add_miner(many[0])  # no change: already registered


def test_owner_adds_and_removes_miners_and_nobody_else_does(make_ledger, tmp_path):
    ledger = make_ledger(default_params(), MINERS[:2])
    ledger.add_miner(MINERS[2])
    assert ledger.is_miner(MINERS[2])
    ledger.remove_miner(MINERS[0])
    assert not ledger.is_miner(MINERS[0])
    assert rejected(ledger.remove_miner, MINERS[0]).error == "NotMiner"
    if isinstance(ledger, EvmLedger):
        fund(ledger.w3, [address_of(OUTSIDER)])
        stranger = EvmLedger(ledger.w3, ledger.contract.address, owner_key=OUTSIDER)
    else:
        assert isinstance(ledger, LocalLedger)
        stranger = LocalLedger(ledger._db, owner_key=OUTSIDER)
    for call, args in [(stranger.add_miner, (MINERS[0],)), (stranger.remove_miner, (MINERS[1],)),
                       (stranger.set_target, (1,)),
                       (stranger.set_device_allowed, (MINERS[0], True))]:
        error = rejected(call, *args)
        assert error.error == "OwnableUnauthorizedAccount"
        assert error.details["account"] == address_of(OUTSIDER)
    assert ledger.is_miner(MINERS[1]) and not ledger.is_miner(MINERS[0])


def test_round_zero_is_a_wrong_round(make_ledger):
    ledger = make_ledger(default_params(), MINERS)
    error = rejected(ledger.commit_block, MINER_KEYS[0], block(ledger, honest_updates(ledger), 0))
    assert (error.error, error.details) == ("WrongRound", {"expected": 1, "given": 0})


def test_total_samples_cannot_truncate(make_ledger):
    # a cap whose full block would not fit the stored uint64 is refused at deployment
    error = rejected(make_ledger, default_params(max_samples_per_update=2**64 - 1,
                                                 max_updates_per_block=2), MINERS)
    assert error.error == "InvalidParams"
    # the largest block the parameters allow is recorded exactly
    cap = (2**64 - 1) // 2
    ledger = make_ledger(default_params(max_samples_per_update=cap, max_updates_per_block=2,
                                        reward_per_sample=1), MINERS)
    updates = [signed(ledger, k, cap) for k in DEVICE_KEYS[:2]]
    ledger.commit_block(MINER_KEYS[0], block(ledger, updates))
    assert ledger.get_block(1).total_samples == 2 * cap
    assert [u.samples for u in ledger.accepted_updates(1)] == [cap, cap]
    if isinstance(ledger, EvmLedger):
        (event,) = ledger.contract.events.BlockCommitted().get_logs(from_block=0)
        assert event["args"]["totalSamples"] == 2 * cap


def test_merkle_block_and_claims(make_ledger):
    params = default_params(mode="merkle", quorum=2)
    ledger = make_ledger(params, MINERS)
    proposal = block(ledger, honest_updates(ledger))
    ledger.commit_block(MINER_KEYS[0], proposal, attestations(ledger, proposal, [1]))
    record = ledger.get_block(1)
    assert (record.num_updates, record.total_samples) == (4, sum(SAMPLES))
    assert ledger.accepted_updates(1) == []  # nothing is paid until claimed
    assert ledger.balance_of(MINERS[0]) == params.mining_reward

    claims = block_claims(proposal.updates, 1)
    assert record.updates_root == MerkleTree([c.leaf() for c in claims]).root
    if isinstance(ledger, EvmLedger):
        fund(ledger.w3, [address_of(OUTSIDER)] + [address_of(k) for k in DEVICE_KEYS])
    first = claims[0]
    before = snapshot(ledger)
    forged = replace(first, record=replace(first.record, samples=first.record.samples + 1))
    assert rejected(ledger.claim, OUTSIDER, 1, [forged]).error == "InvalidProof"
    assert rejected(ledger.claim, OUTSIDER, 2, [first]).error == "ClaimWrongRound"
    other_round = replace(first, record=replace(first.record, round=2))
    assert rejected(ledger.claim, OUTSIDER, 2, [other_round]).error == "NoMerkleBlock"
    assert snapshot(ledger) == before

    device = address_of(DEVICE_KEYS[0])
    own = block_claims(proposal.updates, 1, device)
    ledger.claim(DEVICE_KEYS[0], 1, own)
    assert ledger.balance_of(device) == SAMPLES[0] * params.reward_per_sample
    assert ledger.is_claimed(1, own[0].index)
    assert rejected(ledger.claim, DEVICE_KEYS[0], 1, own).error == "AlreadyClaimed"
    rest = [c for c in claims if c.index != own[0].index]
    ledger.claim(OUTSIDER, 1, rest)  # anyone may claim for the devices (claimMany)
    for k, n in zip(DEVICE_KEYS, SAMPLES, strict=True):
        assert ledger.balance_of(address_of(k)) == n * params.reward_per_sample
    assert sorted(u.device for u in ledger.accepted_updates(1)) == sorted(
        u.device for u in proposal.updates)
    assert ledger.balance_of(address_of(OUTSIDER)) == 0


def test_merkle_tree_proofs_verify_for_every_size():
    for n in (1, 2, 3, 7, 8, 33):
        leaves = [keccak(bytes([i])) for i in range(n)]
        tree = MerkleTree(leaves)
        assert all(verify(tree.proof(i), tree.root, leaves[i]) for i in range(n))
        assert not verify(tree.proof(0), tree.root, keccak(b"stranger"))


def test_contract_agrees_with_python_leaves_and_proofs(tmp_path):
    from blockfl.chain.evm import embedded_web3, leaf_tuple

    ledger = EvmLedger.create(embedded_web3(), default_params(mode="merkle"), MINERS)
    updates = honest_updates(ledger)
    claims = block_claims(block(ledger, updates).updates, 1)
    for c in claims:
        assert bytes(ledger.contract.functions.leafHash(leaf_tuple(c)).call()) == \
            leaf_hash(c.index, c.record)


def test_direct_mode_refuses_a_block_too_big_for_the_gas_limit():
    from blockfl.chain.evm import embedded_web3

    ledger = EvmLedger.create(embedded_web3(), default_params(max_updates_per_block=5000), MINERS)
    proposal = block(ledger, honest_updates(ledger))
    big = replace(proposal, updates=proposal.updates * 300)
    error = rejected(ledger.commit_block, MINER_KEYS[0], big)
    assert error.error == "BlockTooLarge" and "merkle mode" in str(error)
    assert ledger.head().round == 0


def test_a_device_claims_what_the_chain_committed(make_ledger):
    from blockfl.devices.claims import claim, claimable

    ledger = make_ledger(default_params(mode="merkle"), MINERS)
    proposal = block(ledger, honest_updates(ledger))
    ledger.commit_block(MINER_KEYS[0], proposal)
    device_key = DEVICE_KEYS[2]
    device = address_of(device_key)
    if isinstance(ledger, EvmLedger):
        fund(ledger.w3, [device])
    (row,) = claimable(ledger, proposal, device)
    assert (row.samples, row.claimed) == (SAMPLES[2], False)
    assert claim(ledger, device_key, proposal, device) == [row]
    assert claimable(ledger, proposal, device)[0].claimed
    assert claim(ledger, device_key, proposal, device) == []  # never sent twice
    assert ledger.balance_of(device) == SAMPLES[2] * 10**15
    # a miner serving other records than the chain committed is caught before sending
    tampered = replace(proposal, updates=proposal.updates[1:])
    with pytest.raises(ValueError, match="does not match the chain"):
        claimable(ledger, tampered, device)


def test_a_merkle_block_of_1000_updates_costs_what_one_update_costs(make_ledger):
    ledger = make_ledger(default_params(mode="merkle", max_updates_per_block=1000), MINERS)
    gas = []
    for round_, n in ((1, 1), (2, 1000)):
        base = ledger.head().global_model_hash
        keys = [key(f"many-{i}") for i in range(n)]
        proposal = block(ledger, [signed(ledger, k, 10, round_, base) for k in keys], round_)
        gas.append(ledger.commit_block(MINER_KEYS[0], proposal).gas_used)
        claims = block_claims(proposal.updates, round_)
        assert ledger.get_block(round_).num_updates == n
        assert verify(claims[-1].proof, ledger.get_block(round_).updates_root, claims[-1].leaf())
    if isinstance(ledger, EvmLedger):
        assert gas[1] - gas[0] < 1_000 and gas[1] < 200_000, gas  # independent of the size


def test_attestations_and_claims_stay_within_their_gas_targets():
    """Issue 10's targets on the embedded EVM: a merkle block after the first costs at most 150k
    gas plus 5k per attesting miner besides the committer, and a claim with a 14-hash proof
    (a block of 10,000) at most 60k for a device that already holds tokens (leaves 0-191 of a
    block; later ones 66k)."""
    from blockfl.chain.evm import embedded_web3, send

    for quorum in (1, 2, 3):
        ledger = EvmLedger.create(embedded_web3(), default_params(mode="merkle", quorum=quorum),
                                  MINERS)
        for round_ in (1, 2):
            base = ledger.head().global_model_hash
            proposal = block(ledger, honest_updates(ledger, round_, base), round_)
            given = attestations(ledger, proposal, list(range(1, quorum)))
            gas = ledger.commit_block(MINER_KEYS[0], proposal, given).gas_used
        assert gas <= 150_000 + 5_000 * (quorum - 1), (quorum, gas)

    params = default_params(mode="merkle", max_updates_per_block=10_000)
    ledger = EvmLedger.create(embedded_web3(), params, MINERS)
    records = [UpdateRecord(address_of(key(f"holder-{i}")), 1, GENESIS, keccak(b"%d" % i), 10, 5)
               for i in range(10_000)]
    proposal = block(ledger, [SignedUpdate(r, b"") for r in records])
    ledger.commit_block(MINER_KEYS[0], proposal)
    claims = block_claims(proposal.updates, 1)
    first, holder = claims[0], claims[1]
    assert len(holder.proof) == 14
    # the holder already has tokens (from the miner), and the first claim set the bitmap word
    send(ledger.w3, MINER_KEYS[0], ledger.contract.functions.transfer(holder.record.device, 1),
         {})
    fund(ledger.w3, [address_of(OUTSIDER)])
    ledger.claim(OUTSIDER, 1, [first])
    gas = ledger.claim(OUTSIDER, 1, [holder])
    assert gas <= 60_000, gas
    assert ledger.balance_of(holder.record.device) == 1 + 10 * params.reward_per_sample
    # past leaf 191 a claim also rewrites the round's first word (its claimed samples)
    far = claims[301]
    send(ledger.w3, MINER_KEYS[0], ledger.contract.functions.transfer(far.record.device, 1), {})
    ledger.claim(OUTSIDER, 1, [claims[300]])
    gas = ledger.claim(OUTSIDER, 1, [far])
    assert gas <= 66_000, gas
    assert ledger.claimed_samples(1) == 40


def test_an_attestation_counts_only_for_the_committer_it_names(make_ledger):
    """Issue 18 (5): another miner cannot re-mine an attested candidate and commit it."""
    ledger = make_ledger(default_params(quorum=2), MINERS)
    updates = honest_updates(ledger)
    proposal = block(ledger, updates, miner=1)
    given = attestations(ledger, proposal, [2])
    assert given[0].block.committer == MINERS[1]
    taken = block(ledger, updates, miner=0)  # the same candidate, its own nonce
    before = snapshot(ledger)
    error = rejected(ledger.commit_block, MINER_KEYS[0], taken, given)
    assert error.error == "AttesterNotMiner" and error.details["signer"] != MINERS[2]
    assert snapshot(ledger) == before
    ledger.commit_block(MINER_KEYS[1], proposal, given)
    assert ledger.get_block(1).miner == MINERS[1]
    assert ledger.balance_of(MINERS[1]) == ledger.params().mining_reward


def test_a_quorum_above_the_miners_is_refused_and_removals_keep_it_reachable(make_ledger):
    """Issue 18 (4): a fixed quorum of more miners than are registered is refused at deployment;
    after an equivocation removal it asks for every miner left, not for a quorum that no
    longer exists, and it is the quorum again once a miner is added."""
    for quorum, miners in ((4, MINERS), (3, [MINERS[0], MINERS[0], MINERS[1]])):
        error = rejected(make_ledger, default_params(quorum=quorum), miners)
        assert (error.error, error.details) == (
            "QuorumUnreachable", {"quorum": quorum, "miners": len(set(miners))})
    ledger = make_ledger(default_params(quorum=3), MINERS)
    assert ledger.required_attesters() == 3
    proposal = block(ledger, honest_updates(ledger))
    statement = ledger.attested_block(proposal)
    other = replace(statement, global_model_hash=keccak(b"another model"))
    ledger.report_equivocation(DEV_DEPLOYER_KEY, attest(MINER_KEYS[2], statement, ledger.domain),
                               attest(MINER_KEYS[2], other, ledger.domain))
    assert ledger.required_attesters() == 2  # before: QuorumNotReached(2, 3) for good
    ledger.commit_block(MINER_KEYS[0], proposal, attestations(ledger, proposal, [1]))
    assert ledger.head().round == 1
    ledger.add_miner(address_of(OUTSIDER))
    assert ledger.required_attesters() == 3


def merkle_commit(ledger: Ledger, leaves: list[tuple[int, UpdateRecord]], count: int,
                  total: int, attesters: list[int]) -> list[MerkleClaim]:
    """Miner 0 commits round 1 as a Merkle root over `leaves` (index, record) with the header's
    `count` and `total`, attested by `attesters`; the claims of every leaf."""
    tree = MerkleTree([leaf_hash(i, r) for i, r in leaves])
    summary = (tree.root, count, total)
    head, params = ledger.head(), ledger.params()
    header = BlockHeader(head.block_hash, 1, keccak(b"model 1"), committed_root(*summary),
                         MINERS[0])
    nonce = solve_pow(header, params.target).nonce
    proposal = BlockProposal(head.block_hash, 1, header.global_model_hash, (), MINERS[0], nonce)
    statement = AttestedBlock(1, head.block_hash, header.updates_root, header.global_model_hash,
                              params.protocol_spec_hash, MINERS[0])
    ledger.commit_root(MINER_KEYS[0], proposal, summary,
                       [attest(MINER_KEYS[i], statement, ledger.domain) for i in attesters])
    return [MerkleClaim(i, r, tuple(tree.proof(p))) for p, (i, r) in enumerate(leaves)]


def test_a_colluding_quorum_mints_no_more_in_merkle_mode_than_in_direct_mode(make_ledger):
    """Issue 18 (2): every miner signs a root whose records break direct mode's bounds, and
    whose header understates the count and total; each such claim is refused by name and
    changes nothing, and the round pays at most its committed total."""
    cap = 1000
    ledger = make_ledger(default_params(mode="merkle", quorum=3, device_allow_list=True,
                                        max_samples_per_update=cap), MINERS)
    devices = [address_of(k) for k in DEVICE_KEYS]
    for device in devices[:3]:
        ledger.set_device_allowed(device, True)

    def record(device: int, samples: int) -> UpdateRecord:
        return UpdateRecord(devices[device], 1, GENESIS, keccak(b"%d %d" % (device, samples)),
                            samples, 5)

    leaves = [(0, record(0, cap + 1)), (1, record(1, 0)), (2, record(3, 10)),
              (3, record(2, 100)), (4, record(1, 50)), (7, record(0, 10))]
    claims = merkle_commit(ledger, leaves, count=5, total=120, attesters=[1, 2])
    if isinstance(ledger, EvmLedger):
        fund(ledger.w3, [address_of(OUTSIDER)])
    over_cap, zero, unlisted, fair, over_total, out_of_range = claims
    cases = [
        (over_cap, "SampleCountOutOfRange", {"index": 0, "samples": cap + 1, "cap": cap}),
        (zero, "SampleCountOutOfRange", {"index": 1, "samples": 0, "cap": cap}),
        (unlisted, "DeviceNotAllowed", {"index": 2, "device": devices[3]}),
        (out_of_range, "ClaimIndexOutOfRange", {"round": 1, "index": 7, "numUpdates": 5}),
    ]

    def state() -> tuple:
        return snapshot(ledger), ledger.claimed_samples(1), [
            ledger.is_claimed(1, c.index) for c in claims]

    before = state()
    for claim, error, details in cases:
        for batch in ([claim], [fair, claim]):  # alone, and after a good claim of the batch
            got = rejected(ledger.claim, OUTSIDER, 1, batch)
            assert (got.error, got.details) == (error, details)
            assert state() == before
    ledger.claim(OUTSIDER, 1, [fair])
    assert ledger.claimed_samples(1) == 100
    assert ledger.is_claimed(1, 3) and not ledger.is_claimed(1, 2**256 - 1)
    assert ledger.balance_of(devices[2]) == 100 * 10**15
    paid = state()
    got = rejected(ledger.claim, OUTSIDER, 1, [over_total])
    assert (got.error, got.details) == (
        "ClaimExceedsTotal", {"round": 1, "claimedSamples": 150, "totalSamples": 120})
    assert state() == paid


def test_claim_on_a_direct_deployment_is_a_wrong_mode(make_ledger):
    """Issue 18 (6): not an `InvalidProof` that holds only because of hash lengths."""
    ledger = make_ledger(default_params(), MINERS)
    proposal = block(ledger, honest_updates(ledger))
    ledger.commit_block(MINER_KEYS[0], proposal)
    if isinstance(ledger, EvmLedger):
        fund(ledger.w3, [address_of(OUTSIDER)])
    before = snapshot(ledger)
    for claims in (block_claims(proposal.updates, 1)[:1], block_claims(proposal.updates, 1)):
        error = rejected(ledger.claim, OUTSIDER, 1, claims)
        assert (error.error, error.details) == ("WrongMode", {"mode": 0})
    assert snapshot(ledger) == before
