"""A miner's attestations: check another miner's candidate block in full, then sign it.

Only a registered miner holding a solved candidate can ask: before any other work a request
must name a registered miner as committer, carry a nonce meeting the on-chain target for that
miner's header, and be signed by that miner (`AttestationRequest`); an outsider, an unsolved
candidate or a request in another miner's name is refused (`committer_not_miner`,
`insufficient_work`, `bad_request_signature`) and costs the asker a proof-of-work or a miner's
key, so nobody else can spend an honest miner's one signature of a round.

A miner signs a `BlockAttestation` only after it checked the candidate itself: the round and
chain link, every update (the same verification as an upload: signature, sample count,
computation time, payload, norm, replay; a device's other update of the round than the one
this miner holds is no replay here, so miners that each got one of a restarted device's two
updates attest each other's block), the aggregation rule's selection (it keeps exactly the
block's updates of those offered), and the global model recomputed from those updates.
It signs at most one candidate per round and committer, so an honest miner never equivocates:
the candidate is journaled (durably, `MinerJournal.record_attested`) before the signature
leaves the miner, so a restarted miner still refuses a second one; a refusal names its reason.
(One per committer, not one per round: a miner that gathered attestations and withholds its
commit would otherwise stall the round for good.) The committer gathers attestations from its
peers until the quorum is reached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from blockfl.chain.attestation import Attestation, AttestedBlock, attest, sign_request
from blockfl.chain.blocks import BlockHeader, BlockProposal, sort_updates
from blockfl.hashing import to_hex
from blockfl.miners.node import BlockAnnouncement, InvalidBlock, MinerNode
from blockfl.signing import SignatureError, recover_signer
from blockfl.tensors import tensor_hash
from blockfl.wire import UpdateSubmission

# refusals of who asks (403), before the candidate is looked at
UNAUTHORIZED = frozenset({"committer_not_miner", "insufficient_work", "bad_request_signature"})


class AttestationRefused(Exception):
    """A miner refuses to attest a candidate; `reason` names why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AttestedRounds(Protocol):
    """Where a miner keeps the candidate it attested per round and committer (`MinerJournal`)."""

    def record_attested(self, round_: int, committer: str, digest: bytes) -> bytes:
        """Keep `digest` as the candidate of `committer` attested in `round_` unless one is
        kept already (durable when this returns); the digest kept."""

    def forget_from(self, round_: int) -> None:
        """Drop what was kept for rounds from `round_` on (after a rollback)."""


class MemoryRounds:
    """`AttestedRounds` in memory, for a miner without a journal (the in-process simulator)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[int, str], bytes] = {}

    def record_attested(self, round_: int, committer: str, digest: bytes) -> bytes:
        with self._lock:
            return self._kept.setdefault((round_, committer), digest)

    def forget_from(self, round_: int) -> None:
        with self._lock:
            self._kept = {k: d for k, d in self._kept.items() if k[0] < round_}


class Attester:
    """The attesting side of one miner; `rounds` remembers what it signed (in memory if None)."""

    def __init__(self, node: MinerNode, rounds: AttestedRounds | None = None) -> None:
        self.node = node
        self.rounds = rounds or MemoryRounds()

    def request(self, proposal: BlockProposal) -> bytes:
        """This miner's signed request that others attest its solved `proposal`."""
        ledger = self.node.ledger
        return sign_request(self.node.key, ledger.attested_block(proposal), proposal.nonce,
                            ledger.domain)

    def authorize(self, proposal: BlockProposal, request_signature: bytes) -> AttestedBlock:
        """The cheap checks of a request, before any other work: its committer is a registered
        miner, the nonce meets the target for that miner's header, and the committer signed the
        request. What this miner would sign, or AttestationRefused."""
        ledger = self.node.ledger
        if not ledger.is_miner(proposal.miner):
            raise AttestationRefused("committer_not_miner",
                                     f"{proposal.miner} is not a registered miner")
        block = ledger.attested_block(proposal)
        header = BlockHeader(proposal.prev_hash, proposal.round, proposal.global_model_hash,
                             block.updates_root, block.committer)
        if int.from_bytes(header.block_hash(proposal.nonce), "big") > ledger.params().target:
            raise AttestationRefused("insufficient_work",
                                     "the nonce does not meet the proof-of-work target")
        try:
            signer = recover_signer(block.request_digest(proposal.nonce, ledger.domain),
                                    request_signature)
        except SignatureError as exc:
            raise AttestationRefused("bad_request_signature", str(exc)) from None
        if signer != block.committer:
            raise AttestationRefused("bad_request_signature",
                                     f"signed by {signer}, not by the committer")
        return block

    def check(self, announcement: BlockAnnouncement) -> None:
        """Check a candidate as if it were an upload of each of its updates plus the aggregate;
        AttestationRefused if this miner would not sign it."""
        node, proposal = self.node, announcement.proposal
        if proposal.round != node.round:
            raise AttestationRefused("wrong_round",
                                     f"candidate of round {proposal.round}, now {node.round}")
        if proposal.prev_hash != node.head.block_hash:
            raise AttestationRefused("wrong_previous_hash", "the candidate is not on this head")
        updates = list(proposal.updates)
        if not updates:
            raise AttestationRefused("empty_block")
        devices = [int(u.device, 16) for u in updates]
        if sort_updates(updates) != updates or len(set(devices)) != len(devices):
            raise AttestationRefused("unsorted_updates", "updates not in ascending device order")
        for update in updates:
            payload = announcement.payloads.get(update.device)
            if payload is None:
                raise AttestationRefused("missing_update", f"no tensors for {update.device}")
            verdict = node.check_candidate_update(UpdateSubmission(update, payload))
            if not verdict.accepted:
                raise AttestationRefused(
                    "invalid_update", f"{update.device}: {verdict.reason} {verdict.detail}")
        decoded = node.block_updates(announcement)
        try:  # the aggregation rule keeps exactly these updates of those offered
            node.check_selection(announcement, decoded, node.base_state)
        except InvalidBlock as exc:
            raise AttestationRefused("selection_mismatch", str(exc)) from None
        state = node.strategy.aggregate(node.base_state, decoded)
        if tensor_hash(state) != proposal.global_model_hash:
            raise AttestationRefused(
                "model_mismatch", f"recomputed aggregate {to_hex(tensor_hash(state))} differs "
                                  f"from {to_hex(proposal.global_model_hash)}")

    def forget_from(self, round_: int) -> None:
        """Forget what was attested for rounds from `round_` on: the chain rolled back under
        them, and those rounds are decided again on the new head."""
        self.rounds.forget_from(round_)

    def attest(self, announcement: BlockAnnouncement, request_signature: bytes) -> Attestation:
        """Authorize the request, check the candidate and sign it, unless this miner signed
        another one of this committer this round (kept before the signature is made)."""
        block = self.authorize(announcement.proposal, request_signature)
        self.check(announcement)
        domain = self.node.ledger.domain
        digest = block.digest(domain)
        if self.rounds.record_attested(block.round, block.committer, digest) != digest:
            raise AttestationRefused(
                "already_attested", f"this miner attested another candidate of {block.committer}"
                                    f" in round {block.round}; a second would be equivocation")
        return attest(self.node.key, block, domain)


def gather(
    ask: Sequence[Callable[[], Attestation]], needed: int, refused: Callable[[str], None]
) -> list[Attestation]:
    """Ask peers one by one until `needed` attestations are in (or none is left to ask);
    `refused` hears each refusal or failure, named."""
    got: list[Attestation] = []
    for request in ask:
        if len(got) >= needed:
            break
        try:
            got.append(request())
        except AttestationRefused as exc:
            refused(str(exc))
        except (ConnectionError, ValueError) as exc:
            refused(f"{type(exc).__name__}: {exc}")
    return got
