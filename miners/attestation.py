"""A miner's attestations: check another miner's candidate block in full, then sign it.

A miner signs a `BlockAttestation` only after it checked the candidate itself: the round and
chain link, every update (the same verification as an upload: signature, sample count,
computation time, payload, norm, replay), the aggregation rule's selection (it keeps exactly the
block's updates of those offered), and the global model recomputed from those updates.
It signs at most one candidate per round, so an honest miner never equivocates; a refusal names
its reason. The committer gathers attestations from its peers until the quorum is reached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from blockfl.chain.attestation import Attestation, AttestedBlock, attest
from blockfl.chain.blocks import sort_updates
from blockfl.hashing import to_hex
from blockfl.miners.node import BlockAnnouncement, InvalidBlock, MinerNode
from blockfl.tensors import tensor_hash
from blockfl.wire import UpdateSubmission


class AttestationRefused(Exception):
    """A miner refuses to attest a candidate; `reason` names why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Attester:
    """The attesting side of one miner."""

    def __init__(self, node: MinerNode) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._signed: dict[int, AttestedBlock] = {}

    def check(self, announcement: BlockAnnouncement) -> AttestedBlock:
        """Check a candidate as if it were an upload of each of its updates plus the aggregate;
        what this miner would sign, or AttestationRefused."""
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
            verdict = node.receive_gossip(UpdateSubmission(update, payload))
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
        return node.ledger.attested_block(proposal)

    def attest(self, announcement: BlockAnnouncement) -> Attestation:
        """Check the candidate and sign it, unless this miner signed another one this round."""
        block = self.check(announcement)
        with self._lock:
            signed = self._signed.get(block.round)
            if signed is not None and signed != block:
                raise AttestationRefused(
                    "already_attested", f"this miner attested another candidate of round "
                                        f"{block.round}; signing a second would be equivocation")
            self._signed = {r: b for r, b in self._signed.items() if r >= block.round}
            self._signed[block.round] = block
        return attest(self.node.key, block, self.node.ledger.domain)


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
