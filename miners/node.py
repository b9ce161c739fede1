"""A miner: verifies and gossips updates, builds its candidate, commits, checks others' blocks.

The node is transport-agnostic: peers are objects with `receive_gossip` and `receive_block`
(other nodes in one process, or HTTP clients of other miner services).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from blockfl.aggregation import AggregationStrategy, Exclusion, WeightedUpdate, selection_mismatch
from blockfl.chain.attestation import Attestation
from blockfl.chain.blocks import BlockProposal, BlockRecord, CommitReceipt, Head, sort_updates
from blockfl.chain.errors import ForkRejected
from blockfl.chain.ledger import Ledger
from blockfl.hashing import to_hex
from blockfl.miners.verification import RoundContext, UpdateRejected, VerifiedUpdate, Verifier
from blockfl.models import model_spec
from blockfl.signing import SignatureError, address_of
from blockfl.store import ModelStore
from blockfl.tensors import StateDict, decode, tensor_hash
from blockfl.wire import UpdateSubmission


class InvalidBlock(ValueError):
    """A committed block that fails a miner's own checks."""


@dataclass(frozen=True)
class Verdict:
    """A miner's answer to an upload or a gossiped update."""

    accepted: bool
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Candidate:
    """A miner's candidate block: the proposal (nonce 0), the aggregate and its inputs, and the
    verified updates the aggregation rule kept out of the block."""

    proposal: BlockProposal
    global_state: StateDict
    updates: tuple[WeightedUpdate, ...]
    excluded: tuple[Exclusion, ...] = ()


@dataclass(frozen=True)
class BlockAnnouncement:
    """A committed block as propagated between miners: the proposal and every update's tensors,
    plus the updates the rule excluded (`proposal.excluded`), for re-running the selection."""

    proposal: BlockProposal
    payloads: dict[str, bytes]
    excluded: tuple[UpdateSubmission, ...] = ()


class Journal(Protocol):
    """Durable storage of accepted updates (see `blockfl.miners.journal`)."""

    def record_update(self, submission: UpdateSubmission) -> None: ...


class Peer(Protocol):
    """Another miner, as this miner talks to it."""

    def receive_gossip(self, submission: UpdateSubmission) -> Verdict: ...

    def receive_block(self, announcement: BlockAnnouncement) -> None: ...


@dataclass
class MinerStats:
    """What a miner counted."""

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    forks: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)


class MinerNode:
    """One miner's state for the current round, on top of the chain head."""

    def __init__(
        self,
        key: bytes,
        ledger: Ledger,
        verifier: Verifier,
        store: ModelStore,
        strategy: AggregationStrategy,
        base_state: StateDict,
        journal: Journal | None = None,
    ) -> None:
        self.key = key
        self.address = address_of(key)
        self.ledger = ledger
        self.verifier = verifier
        self.store = store
        self.strategy = strategy
        self.journal = journal
        self.peers: list[Peer] = []
        self.stats = MinerStats()
        self.rejections: list[tuple[int, str, str]] = []  # (round, device, reason)
        self._lock = threading.RLock()
        self._pending: dict[str, VerifiedUpdate] = {}
        self._payloads: dict[str, bytes] = {}
        self.head: Head = ledger.head()
        if tensor_hash(base_state) != self.head.global_model_hash:
            raise ValueError("the base model does not match the chain head's global model hash")
        self.base_state = base_state
        self.spec = model_spec(base_state)
        store.put(base_state)

    # ------------------------------------------------------------------ updates

    @property
    def round(self) -> int:
        """The round this miner collects updates for."""
        return self.head.round + 1

    def context(self) -> RoundContext:
        """What verification checks an update against in the current round."""
        with self._lock:
            return RoundContext(self.round, self.head.global_model_hash, self.ledger.domain,
                                self.spec)

    def receive_upload(self, submission: UpdateSubmission) -> Verdict:
        """A device's upload: verify, keep, and gossip to the other miners."""
        verdict = self._accept(submission)
        if verdict.accepted:
            for peer in self.peers:
                peer.receive_gossip(submission)
        return verdict

    def receive_gossip(self, submission: UpdateSubmission) -> Verdict:
        """An update gossiped by another miner: cross-verify it before it enters the block."""
        with self._lock:
            known = self._pending.get(submission.device)
            if known is not None and known.signed == submission.signed:
                return Verdict(True, "known")
        return self._accept(submission)

    def check_candidate_update(self, submission: UpdateSubmission) -> Verdict:
        """An update of a peer's candidate block: as gossip (it enters this miner's block too)
        unless this miner holds another update of that device this round, which stays; the
        candidate's is then checked in full as an alternative (`Verifier.verify`), so two
        miners that each hold one of a device's two updates can attest each other's block."""
        with self._lock:
            known = self._pending.get(submission.device)
        if known is None or known.signed == submission.signed:
            return self.receive_gossip(submission)
        try:
            self.verifier.verify(submission, self.context(), alternative=True)
        except UpdateRejected as exc:
            return Verdict(False, exc.reason, exc.detail)
        return Verdict(True, "alternative")

    def _accept(self, submission: UpdateSubmission) -> Verdict:
        # verify outside the node lock (uploads are checked concurrently; the verifier guards
        # its own replay memory), then admit only if the round did not move meanwhile
        ctx = self.context()
        try:
            verified = self.verifier.verify(submission, ctx)
            with self._lock:
                if ctx.round != self.round:
                    raise UpdateRejected("wrong_round", f"round {ctx.round} closed meanwhile")
                if self.journal is not None:
                    self.journal.record_update(submission)  # durable before it is acknowledged
                self._pending[submission.device] = verified
                self._payloads[submission.device] = submission.payload
                self.stats.accepted += 1
                return Verdict(True)
        except UpdateRejected as exc:
            with self._lock:
                self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
                self.rejections.append((ctx.round, submission.device, exc.reason))
            return Verdict(False, exc.reason, exc.detail)

    def restore(self, submissions: Sequence[UpdateSubmission]) -> list[Verdict]:
        """Re-verify updates acknowledged before a restart (from the journal)."""
        return [self._accept(s) for s in submissions]

    def pending_submissions(self) -> list[UpdateSubmission]:
        """The verified updates of the current round, as they were received."""
        with self._lock:
            return [
                UpdateSubmission(v.signed, self._payloads[d]) for d, v in self._pending.items()
            ]

    def pending_devices(self) -> list[str]:
        """Devices whose verified update is in this miner's candidate block."""
        with self._lock:
            return sorted(self._pending)

    # ------------------------------------------------------------------ blocks

    def candidate(self) -> Candidate | None:
        """The candidate block over every verified update (None when there is none)."""
        with self._lock:
            verified = list(self._pending.values())
        if not verified:
            return None
        updates = tuple(
            WeightedUpdate(v.signed.device, v.delta, v.signed.record.samples) for v in verified
        )
        kept, excluded = self.strategy.select(self.base_state, updates)
        global_state = self.strategy.aggregate(self.base_state, kept)
        signed = {v.signed.device: v.signed for v in verified}
        proposal = BlockProposal(
            prev_hash=self.head.block_hash,
            round=self.round,
            global_model_hash=tensor_hash(global_state),
            updates=tuple(sort_updates([signed[u.device] for u in kept])),
            miner=self.address,
            excluded=tuple(signed[e.update.device].record.update_hash for e in excluded),
        )
        return Candidate(proposal, global_state, tuple(kept), tuple(excluded))

    def commit(
        self, proposal: BlockProposal, attestations: Sequence[Attestation] = ()
    ) -> CommitReceipt | None:
        """Commit a mined, attested block; None (and a fork recorded) if another block won."""
        if self.ledger.head().round >= proposal.round:  # it could only be rejected: a fork
            self.stats.forks.append(proposal.round)
            return None
        try:
            receipt = self.ledger.commit_block(self.key, proposal, attestations)
        except ForkRejected:
            self.stats.forks.append(proposal.round)
            return None
        self.stats.blocks.append(proposal.round)
        return receipt

    def announcement(self, proposal: BlockProposal) -> BlockAnnouncement:
        """The block with its updates' tensors (and the excluded ones), for the other miners and
        the devices."""
        with self._lock:
            payloads = {u.device: self._payloads[u.device] for u in proposal.updates}
            by_hash = {v.signed.record.update_hash: d for d, v in self._pending.items()}
            excluded = tuple(
                UpdateSubmission(self._pending[by_hash[h]].signed, self._payloads[by_hash[h]])
                for h in proposal.excluded
            )
        return BlockAnnouncement(proposal, payloads, excluded)

    def _verified_deltas(self, proposal: BlockProposal) -> dict[str, StateDict]:
        """The tensors of the block's updates that this miner verified itself (by device)."""
        with self._lock:
            return {u.device: self._pending[u.device].delta for u in proposal.updates
                    if u.device in self._pending and self._pending[u.device].signed == u}

    def block_updates(
        self, announcement: BlockAnnouncement, known: dict[str, StateDict] | None = None
    ) -> list[WeightedUpdate]:
        """The block's updates as aggregation inputs: the tensors this miner verified for the
        updates it holds (`known`, by default `_verified_deltas`), the announced tensors decoded
        for the others (whose signatures and hashes `check_block` checks)."""
        if known is None:
            known = self._verified_deltas(announcement.proposal)
        max_bytes = self.verifier.policy.max_payload_bytes
        return [
            WeightedUpdate(u.device, known[u.device] if u.device in known
                           else decode(announcement.payloads[u.device], max_bytes=max_bytes),
                           u.record.samples)
            for u in announcement.proposal.updates
        ]

    def receive_block(self, announcement: BlockAnnouncement) -> None:
        """Check a committed block (`check_block`) and move to the next round on top of it."""
        proposal = announcement.proposal
        with self._lock:
            if proposal.round < self.round:
                return  # already built on it
            if proposal.round > self.round:
                raise InvalidBlock(f"block of round {proposal.round}, but this miner is at "
                                   f"round {self.round}: it needs the blocks in between first")
            global_state, record = self.check_block(announcement, self.base_state)
            self.adopt(global_state, Head(record.round, record.block_hash,
                                          record.global_model_hash))

    def check_block(
        self, announcement: BlockAnnouncement, base_state: StateDict
    ) -> tuple[StateDict, BlockRecord]:
        """Check a committed block against the chain (its record, proof-of-work, signatures,
        update hashes, and the aggregate recomputed over `base_state`, the global model of the
        round before); its global model and chain record, or InvalidBlock."""
        proposal = announcement.proposal
        record = self.ledger.get_block(proposal.round)
        if record is None:
            raise InvalidBlock(f"round {proposal.round} has no block on chain")
        domain, params = self.ledger.domain, self.ledger.params()
        block_hash = proposal.header(domain, params.mode).block_hash(proposal.nonce)
        if block_hash != record.block_hash:
            raise InvalidBlock("announced block differs from the block on chain")
        if int.from_bytes(block_hash, "big") > params.target:
            raise InvalidBlock("block hash does not meet the proof-of-work target")
        # updates this miner verified itself (the same signed record: round, signature, update
        # hash) are not checked again; the others are checked in full. One read of the pending
        # updates serves both the checks and the aggregation inputs, so they cannot disagree.
        known = self._verified_deltas(proposal)
        try:
            for update in proposal.updates:
                if update.device not in known:
                    update.verify(domain)
        except SignatureError as exc:
            raise InvalidBlock(f"update signature: {exc}") from None
        updates = self.block_updates(announcement, known)
        for u, w in zip(proposal.updates, updates, strict=True):
            if u.device not in known and tensor_hash(w.delta) != u.record.update_hash:
                raise InvalidBlock(f"update of {u.device} does not match its signed hash")
        self.check_selection(announcement, updates, base_state)
        global_state = self.strategy.aggregate(base_state, updates)
        if tensor_hash(global_state) != record.global_model_hash:
            raise InvalidBlock(
                f"recomputed aggregate differs from {to_hex(record.global_model_hash)}"
            )
        return global_state, record

    def check_selection(
        self, announcement: BlockAnnouncement, updates: list[WeightedUpdate],
        base_state: StateDict,
    ) -> None:
        """Re-run the rule's selection over the block's updates and those its miner excluded:
        the block must keep exactly the updates the selection keeps."""
        proposal = announcement.proposal
        excluded = {s.signed.record.update_hash: s for s in announcement.excluded}
        if set(excluded) != set(proposal.excluded):
            raise InvalidBlock("the block's excluded updates were not all provided")
        others = []
        base_hash = tensor_hash(base_state) if excluded else b""
        for s in excluded.values():
            record = s.signed.record
            if record.round != proposal.round or record.base_model_hash != base_hash:
                raise InvalidBlock(f"excluded update of {s.device} is not of this round")
            try:
                s.signed.verify(self.ledger.domain)
            except SignatureError as exc:
                raise InvalidBlock(f"excluded update signature: {exc}") from None
            delta = decode(s.payload, max_bytes=self.verifier.policy.max_payload_bytes)
            if tensor_hash(delta) != record.update_hash:
                raise InvalidBlock(f"excluded update of {s.device} does not match its hash")
            others.append(WeightedUpdate(s.device, delta, record.samples))
        try:
            mismatch = selection_mismatch(self.strategy, base_state, updates, others)
        except ValueError as exc:
            raise InvalidBlock(f"the block's updates cannot be selected from: {exc}") from None
        if mismatch:
            raise InvalidBlock(mismatch)

    def adopt(self, global_state: StateDict, head: Head | None = None) -> None:
        """Build on `head` (default: the chain head), whose global model is `global_state`."""
        with self._lock:
            head = head or self.ledger.head()
            if tensor_hash(global_state) != head.global_model_hash:
                raise InvalidBlock("global model does not match the chain head")
            self.head = head
            self.store.put(global_state)
            self.base_state = global_state
            self._pending.clear()
            self._payloads.clear()
            self.verifier.forget_before(self.round)


def connect(miners: Sequence[MinerNode]) -> None:
    """Make every miner a peer of every other (in one process)."""
    for miner in miners:
        miner.peers = [m for m in miners if m is not miner]
