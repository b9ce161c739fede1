"""A miner as a long-running process: collect, mine on the wall clock, commit, follow the chain.

The loop of one round: the miner collects verified updates (uploads and gossip) until its
candidate block holds an update of every expected device or `T_wait` has passed since the
candidate got its first update (processes start at different times, so the window opens with
the first update rather than with the previous block). It then searches nonces for its own
header at (at most) the configured hash rate, so the proof-of-work time is exponential with the
block generation rate lambda set by the on-chain target. Between chunks of nonces it watches
the chain: when another miner's block lands first, it stops, checks that block (proof-of-work,
signatures, recomputed aggregate) and builds on it; a block it commits after that is a fork,
rejected by the contract and counted. New updates that arrive while mining restart the search
with the larger candidate (the race is memoryless).

Everything acknowledged is in the journal first, so a restarted miner resumes from the chain
head, its model store and its journal, and gossips its pending updates again. It then catches
up: every committed block it missed while down is fetched from its peers (or rebuilt from the
chain's record and the updates the peers serve), checked against the chain, and kept to serve.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from blockfl.aggregation import AggregationStrategy, FedAvg
from blockfl.chain.attestation import Attestation, signer_or_none
from blockfl.chain.blocks import BlockProposal, Head, solve_pow, sort_updates
from blockfl.chain.errors import ChainUnavailable, DeploymentMissing
from blockfl.chain.ledger import Ledger
from blockfl.chain.participation import Participation
from blockfl.client import MinerClient, MinerRejected, MinerUnavailable, healthy_first
from blockfl.config import NO_PRIVACY, PrivacyConfig
from blockfl.events import EventLog
from blockfl.hashing import to_hex
from blockfl.miners.attestation import AttestationRefused, Attester, gather
from blockfl.miners.journal import MinerJournal
from blockfl.miners.node import BlockAnnouncement, Candidate, InvalidBlock, MinerNode
from blockfl.miners.peers import HttpPeer
from blockfl.miners.verification import VerificationPolicy, Verifier
from blockfl.store import ModelStore
from blockfl.tensors import StateDict, tensor_hash
from blockfl.wire import UpdateSubmission

T = TypeVar("T")

CATCH_UP_POLL = 5.0  # seconds between looks for committed blocks this miner lacks


#: the least number of paced chunks a block's expected proof-of-work is cut into
CHUNKS_A_BLOCK = 50


@dataclass(frozen=True)
class MiningSettings:
    """When a miner closes its candidate block and how fast it hashes."""

    t_wait: float  # seconds after the candidate block's first update
    block_size: int  # updates that fill a block (the number of devices)
    hash_rate: float  # hashes per second, the rate the on-chain target was set for (0: no cap)
    chunk: int = 500  # nonces between checks of the chain and the candidate (at most)
    poll: float = 0.1  # seconds between chain polls while idle
    check_grace: float = 3.0  # seconds to wait for a new block's data before trusting the hash


class MinerService:
    """A `MinerNode` with its journal, model store, HTTP peers and mining loop."""

    def __init__(
        self,
        key: bytes,
        ledger: Ledger,
        policy: VerificationPolicy,
        settings: MiningSettings,
        data_dir: Path,
        peers: Sequence[MinerClient],
        genesis: StateDict | None,
        log: EventLog,
        rule: AggregationStrategy | None = None,
        privacy: PrivacyConfig = NO_PRIVACY,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.log = log
        domain = ledger.domain
        self.journal = MinerJournal(data_dir / "miner.db", f"{domain.chain_id}:{domain.contract}")
        self.store = ModelStore(data_dir / "models")
        self.clients = list(peers)
        params = ledger.params()
        self.target, self.mode = params.target, params.mode
        self._announced: dict[int, BlockProposal] = {}
        self._announce_logged = 0  # the last round whose first announcement was logged
        self._genesis = genesis
        self._unrecovered: set[int] = set()  # rounds whose catch-up failed (logged once)
        self._catching_up: threading.Thread | None = None
        self._wake = threading.Event()
        self._behind_since: float | None = None
        self.chain_problem: tuple[str, str] | None = None  # (condition, detail) while one lasts
        self._problem_since = 0.0  # monotonic time chain_problem was set
        self._problem_lock = threading.Lock()
        head = ledger.head()
        base = self._model(head.global_model_hash, genesis)
        verifier = Verifier(policy, max_samples=params.max_samples_per_update, privacy=privacy,
                            included_rounds=Participation(ledger).rounds)
        self.node = MinerNode(key, ledger, verifier, self.store, rule or FedAvg(), base,
                              journal=self.journal)
        self.node.peers = [HttpPeer(c, log) for c in self.clients]
        self.attester = Attester(self.node, self.journal)
        self._window_opened: float | None = None
        restored = self.node.restore(self.journal.updates_of(self.node.round))
        log("started", address=self.node.address, round=self.node.round,
            restored=sum(v.accepted for v in restored))
        for submission in self.node.pending_submissions():
            for peer in self.node.peers:
                peer.receive_gossip(submission)

    @property
    def address(self) -> str:
        """This miner's address."""
        return self.node.address

    # ------------------------------------------------------------------ chain and models

    def _model(self, model_hash: bytes, genesis: StateDict | None = None) -> StateDict:
        """A global model by hash: from the store, the genesis model, or a peer."""
        if self.store.has(model_hash):
            return self.store.get(model_hash)
        if genesis is not None and tensor_hash(genesis) == model_hash:
            self.store.put(genesis)
            return genesis
        state = self._ask_peers(lambda peer: peer.model(model_hash))
        if state is not None:
            self.store.put(state)
            return state
        raise LookupError(f"no peer serves the global model {to_hex(model_hash)}")

    def announced(self, proposal: BlockProposal) -> bool:
        """A peer announced a committed block: keep it for the loop to check, if it is the
        block this miner waits for (at most one is kept, so junk cannot pile up). False for a
        block of a future round; a block of a past round is already known: nothing to do."""
        received_at = time.time()  # the body's last byte: the announcement's end on the link
        if proposal.round > self.node.round:
            return False
        if proposal.round >= max(self.node.round - 1, self._announce_logged + 1):
            # the first of this block or the one just adopted: a line a round, whoever posts
            self._announce_logged = proposal.round
            self.log("block_announced", round=proposal.round, received_at=received_at)
        if proposal.round < self.node.round:
            return True
        self._announced = {proposal.round: proposal}
        self._wake.set()
        return True

    def block(self, ref: int | bytes) -> BlockProposal | None:
        """A committed block this miner knows, by round or by block hash (none above the head
        it builds on: after a rollback those are the abandoned chain's until it drops them)."""
        found = self.journal.block(ref)
        return found if found is not None and found.round <= self.node.head.round else None

    def sync(self) -> bool:
        """Follow the chain, checking and adopting new blocks; True when on the chain head.

        The next block is checked in full. When this miner is further behind (it was down), or
        the block's data cannot be had within `check_grace`, it takes the head's global model
        by hash from a peer: the chain vouches for the hash.
        """
        head = self.ledger.head()
        mine = self.node.head
        if head.round < mine.round or (head.round == mine.round and head != mine):
            self._roll_back(head)
            return True
        if head.round < self.node.round:
            return True
        if head.round == self.node.round:
            if self._adopt_checked(head.round):
                self._behind_since = None
                return True
            now = time.monotonic()
            self._behind_since = self._behind_since or now
            if now - self._behind_since < self.settings.check_grace:
                return False
        self._behind_since = None
        self.node.adopt(self._model(head.global_model_hash), head)
        self._round_began(head, checked=False)
        return True

    def _roll_back(self, head: Head) -> None:
        """The chain head moved back (a rollback), or to another block at this miner's height
        (a reorganisation): drop the journaled blocks the chain abandoned and what was signed
        and pending for the rounds after `head`, build on `head`, and take up again the
        acknowledged updates of its next round (their base model is still the chain's)."""
        old = self.node.head
        first = head.round + 1
        while first > 1 and not self._on_chain(first - 1):
            first -= 1
        abandoned = self.journal.forget_blocks_from(first)
        self.node.adopt(self._model(head.global_model_hash, self._genesis), head)
        self.node.verifier.forget_from(self.node.round)
        self.attester.forget_from(self.node.round)
        self._announced.clear()
        self._announce_logged = 0
        self._unrecovered.clear()
        self.log("rollback", from_round=old.round, to_round=head.round,
                 block_hash=to_hex(head.block_hash), abandoned_blocks=abandoned)
        # updates of the rounds after the head, and those of the head's next round trained on
        # another model (the abandoned block of this height, after a reorg), are dropped
        again: list[UpdateSubmission] = []
        for round_ in range(self.node.round, old.round + 2):
            for submission in self.journal.updates_of(round_):
                if (round_ == self.node.round
                        and submission.signed.record.base_model_hash == head.global_model_hash):
                    again.append(submission)
                    continue
                self.log("dropped", round=round_, device=submission.device,
                         update_hash=to_hex(submission.signed.record.update_hash),
                         reason="rolled_back")
                if round_ == self.node.round:
                    self.journal.forget_update(round_, submission.device)
        self.journal.forget_updates_from(self.node.round + 1)
        # every miner journals every update it accepted, so all of them take up the same ones
        # here, before the devices (which see the rollback too) upload that round again: those
        # uploads are then replays everywhere, and the miners' candidates agree
        restored = sum(v.accepted for v in self.node.restore(again))
        for submission in self.node.pending_submissions():
            for peer in self.node.peers:
                peer.receive_gossip(submission)
        self._round_began(head, checked=False, restored=restored)

    def _on_chain(self, round_: int) -> bool:
        """Whether the journaled block of `round_` (if any) is the chain's."""
        known = self.journal.block(round_)
        record = self.ledger.get_block(round_)
        return known is None or (record is not None and self._block_hash(known)
                                 == record.block_hash)

    def _block_hash(self, proposal: BlockProposal) -> bytes:
        return proposal.header(self.ledger.domain, self.mode).block_hash(proposal.nonce)

    def _adopt_checked(self, round_: int) -> bool:
        """Check the next block fully (cross-verification of a committed block) and adopt it.

        The block as its miner announces or a peer serves it names the updates the rule
        excluded; the chain does not. So it is rebuilt from the chain only when no peer has
        served it for half of `check_grace` (its miner died before announcing it), not in the
        moment between a commit and its miner's announcement."""
        proposal = self._announced.pop(round_, None) or self._peer_block(round_)
        if proposal is None and self._peers_had_their_time():
            proposal = self._block_from_chain(round_)
        if proposal is None:
            return False
        found = self._announcement(proposal)
        if found is None:
            return False
        announcement, submissions = found
        try:
            self.node.receive_block(announcement)
        except InvalidBlock as exc:
            self.log("invalid_block", round=round_, miner=proposal.miner, error=str(exc))
            return False
        self.journal.record_block(proposal, self.node.head.block_hash, submissions)
        self._round_began(self.node.head, checked=True)
        return True

    def _peers_had_their_time(self) -> bool:
        """Whether the peers had half of `check_grace` since this miner saw the head it cannot
        check yet (at once when it has no peers)."""
        waited = (time.monotonic() - self._behind_since if self._behind_since is not None
                  else 0.0)
        return not self.clients or waited >= self.settings.check_grace / 2

    def _known_block(self, round_: int) -> BlockProposal | None:
        """A committed block from a peer (it names the updates the rule excluded, for the
        selection check), else rebuilt from the chain."""
        return self._peer_block(round_) or self._block_from_chain(round_)

    def _peer_block(self, round_: int) -> BlockProposal | None:
        """The chain's block of `round_` from a peer (one that has not seen a rollback yet may
        serve a block the chain abandoned: it is passed over)."""
        record = self.ledger.get_block(round_)
        if record is None:
            return None

        def on_chain(peer: MinerClient) -> BlockProposal | None:
            block = peer.block(round_)
            return block if block is not None and self._block_hash(block) == record.block_hash \
                else None

        return self._ask_peers(on_chain)

    def _announcement(
        self, proposal: BlockProposal
    ) -> tuple[BlockAnnouncement, list[UpdateSubmission]] | None:
        """The block with every update's tensors, and those it excluded (journaled, or from
        peers); None when one cannot be had."""
        submissions = self._block_submissions(proposal)
        if submissions is None:
            return None
        excluded = []
        for h in proposal.excluded:
            found = self.journal.update(h) or self._ask_peers(lambda peer, h=h: peer.update(h))
            if found is None:
                return None
            excluded.append(found)
        payloads = {s.device: s.payload for s in submissions}
        return BlockAnnouncement(proposal, payloads, tuple(excluded)), submissions

    def _block_from_chain(self, round_: int) -> BlockProposal | None:
        """Rebuild a committed block from the chain's record and the signed updates it names
        (held in the journal, else fetched from peers): a block stays checkable and its model
        recoverable even if the miner that committed it died before announcing it."""
        record = self.ledger.get_block(round_)
        if record is None:
            return None
        signed = []
        for accepted in self.ledger.accepted_updates(round_):
            found = self.journal.update(accepted.update_hash) or self._ask_peers(
                lambda peer, h=accepted.update_hash: peer.update(h))
            if found is None or found.device != accepted.device:
                return None
            signed.append(found.signed)
        return BlockProposal(record.prev_hash, round_, record.global_model_hash,
                             tuple(sort_updates(signed)), record.miner, record.nonce)

    def catch_up(self) -> int:
        """Fetch every committed block this miner lacks (it was down, or took a head's model on
        trust), check each against the chain, and keep it to serve; returns how many it added.
        A block is checked in full: its aggregate is recomputed over the global model of the
        round before (held, or fetched by its on-chain hash)."""
        added = 0
        for round_ in self.journal.missing_blocks(self.node.head.round):
            try:
                self._recover(round_)
            except (InvalidBlock, LookupError) as exc:
                if round_ not in self._unrecovered:
                    self._unrecovered.add(round_)
                    self.log("catch_up_failed", round=round_, error=str(exc)[:300])
                continue
            self._unrecovered.discard(round_)
            added += 1
        return added

    def _recover(self, round_: int) -> None:
        proposal = self._known_block(round_)
        if proposal is None:
            raise LookupError(f"no peer serves the block of round {round_}")
        found = self._announcement(proposal)
        if found is None:
            raise LookupError(f"no peer serves every update of the block of round {round_}")
        announcement, submissions = found
        previous = self.ledger.get_block(round_ - 1) if round_ > 1 else None
        base_hash = (previous.global_model_hash if previous is not None
                     else self.ledger.params().genesis_model_hash)
        base = self._model(base_hash, self._genesis)
        global_state, record = self.node.check_block(announcement, base)
        self.store.put(global_state)
        self.journal.record_block(proposal, record.block_hash, submissions)
        self.log("caught_up", round=round_, block_hash=to_hex(record.block_hash))

    def _catch_up_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.catch_up()
            except (ChainUnavailable, DeploymentMissing):
                pass  # the mining loop reports it
            except Exception as exc:  # a miner keeps serving: log and try again
                self.log("error", error=f"catch-up: {type(exc).__name__}: {exc}")
            stop.wait(CATCH_UP_POLL)

    def _round_began(self, head: Head, checked: bool, **extra: Any) -> None:
        self._window_opened = None
        self.log("adopted", round=head.round, block_hash=to_hex(head.block_hash),
                 global_model_hash=to_hex(head.global_model_hash), checked=checked, **extra)

    def _ask_peers(self, ask: Callable[[MinerClient], T | None]) -> T | None:
        """The first answer a peer has (peers in random order, those that failed lately last);
        None if none has one."""
        for client in healthy_first(random.sample(self.clients, len(self.clients))):
            try:
                found = ask(client)
            except (MinerUnavailable, MinerRejected):
                continue
            if found is not None:
                return found
        return None

    def _block_submissions(self, proposal: BlockProposal) -> list[UpdateSubmission] | None:
        """Every update of a block with its tensors: journaled (every update this miner
        accepted is), or fetched from peers; None if one cannot be had."""
        out = []
        for update in proposal.updates:
            update_hash = update.record.update_hash
            known = self.journal.update(update_hash)
            if known is None or known.signed != update:
                known = self._ask_peers(lambda peer, h=update_hash: peer.update(h))
            if known is None:
                return None
            out.append(UpdateSubmission(update, known.payload))
        return out

    # ------------------------------------------------------------------ mining

    def ready(self) -> bool:
        """Whether the candidate block is closed: full, or `T_wait` passed since its first
        update arrived."""
        pending = len(self.node.pending_devices())
        if pending == 0:
            self._window_opened = None
            return False
        if pending >= self.settings.block_size:
            return True
        now = time.monotonic()
        self._window_opened = self._window_opened or now
        return now - self._window_opened >= self.settings.t_wait

    def mine(self, stop: threading.Event) -> None:
        """Race for the current round; commit if this miner finds a nonce first."""
        candidate = self.node.candidate()
        if candidate is None:
            return
        proposal = candidate.proposal
        header = proposal.header(self.ledger.domain, self.mode)
        self.log("mining", round=proposal.round, updates=len(proposal.updates))
        started = last_poll = time.monotonic()
        nonce, rate = 0, self.settings.hash_rate
        # a chunk is hashed at once, then the pace waits: at most a fiftieth of a block's
        # expected hashes, so the race stays exponential (a fork window sees the rate) at any λ
        chunk = min(self.settings.chunk, max(1, (1 << 256) // (self.target + 1) // CHUNKS_A_BLOCK))
        while not stop.is_set():
            solution = solve_pow(header, self.target, start_nonce=nonce, max_attempts=chunk)
            if solution is not None:
                self._commit(candidate, replace(proposal, nonce=solution.nonce),
                             solution.nonce + 1, stop, found_at=time.time())
                return
            nonce += chunk
            if rate > 0:  # hash at the rate the target was set for
                ahead = started + nonce / rate - time.monotonic()
                if ahead > 0:
                    self._wake.wait(ahead)
            now = time.monotonic()
            if self._wake.is_set() or now - last_poll >= self.settings.poll:
                self._wake.clear()
                last_poll = now
                if self.ledger.head() != self.node.head:
                    # another miner's block landed (or the chain moved back): sync(); until
                    # now a nonce of this miner's would have forked (latency compare)
                    self.log("head_moved", round=proposal.round, hashed=nonce)
                    return
            if len(self.node.pending_devices()) != len(proposal.updates) + len(proposal.excluded):
                return  # a larger candidate: start again with it

    def attest(self, proposal: BlockProposal, request_signature: bytes) -> Attestation:
        """Authorize another miner's request (before fetching anything), check its candidate
        in full (its updates from the journal or peers) and attest it; AttestationRefused names
        why not."""
        self.attester.authorize(proposal, request_signature)
        found = self._announcement(proposal)
        if found is None:
            raise AttestationRefused("missing_update", "an update of the candidate is not here")
        return self.attester.attest(found[0], request_signature)

    def _attestations(self, proposal: BlockProposal, stop: threading.Event
                      ) -> list[Attestation] | None:
        """Ask the peers (those that failed lately last) to attest the candidate until the
        quorum is reached, backing off and logging why while it is not; None when the round is
        decided meanwhile."""
        needed = self.ledger.required_attesters() - 1  # the committer counts itself
        signature = self.attester.request(proposal)
        started, delay = time.monotonic(), 0.5
        while not stop.is_set():
            reasons: list[str] = []
            got = gather([lambda c=c: self._attestation_of(c, proposal, signature)
                          for c in healthy_first(self.clients)], needed, reasons.append)
            if len(got) >= needed:
                self.log("attestations", round=proposal.round, attesters=len(got) + 1,
                         seconds=round(time.monotonic() - started, 4))
                return got
            self.log("quorum_wait", round=proposal.round, attesters=len(got) + 1,
                     quorum=needed + 1, retry_in=delay, reasons=reasons)
            if self.ledger.head() != self.node.head:  # read before the wait: a chain gone
                return None  # is noticed now, not after the back-off
            stop.wait(delay)
            delay = min(2 * delay, 8.0)
        return None

    def _attestation_of(self, client: MinerClient, proposal: BlockProposal,
                        signature: bytes) -> Attestation:
        """A peer's attestation of the candidate; a "peer" that signs with this miner's own key
        is this miner under another name: it is dropped, since the contract counts the
        committer once."""
        attestation = client.attest(proposal, signature)
        if signer_or_none(attestation, self.ledger.domain) == self.address:
            self._drop_peer(client, "its attestation is signed with this miner's own key")
            raise AttestationRefused("own_attestation", f"{client.url} is this miner")
        return attestation

    def _drop_peer(self, client: MinerClient, reason: str) -> None:
        self.clients = [c for c in self.clients if c is not client]
        for peer in [p for p in self.node.peers if isinstance(p, HttpPeer) and p.client is client]:
            self.node.peers = [p for p in self.node.peers if p is not peer]
            peer.close()
        self.log("own_peer_dropped", peer=client.url, reason=reason)

    def _commit(self, candidate: Candidate, proposal: BlockProposal, attempts: int,
                stop: threading.Event, found_at: float) -> None:
        # the model is served before the block lands: devices fetch it as soon as they see it
        self.store.put(candidate.global_state)
        attestations = self._attestations(proposal, stop)
        if attestations is None:
            self.log("fork", round=proposal.round, attempts=attempts, quorum=False)
            return
        receipt = self.node.commit(proposal, attestations)
        if receipt is None:
            self.log("fork", round=proposal.round, attempts=attempts)
            return
        self.log("committed", round=proposal.round, block_hash=to_hex(receipt.block_hash),
                 global_model_hash=to_hex(proposal.global_model_hash),
                 updates=len(proposal.updates), attempts=attempts, gas_used=receipt.gas_used,
                 found_at=found_at)
        announcement = self.node.announcement(proposal)
        self.journal.record_block(proposal, receipt.block_hash, [
            UpdateSubmission(u, announcement.payloads[u.device]) for u in proposal.updates
        ])
        for exclusion, submission in zip(candidate.excluded, announcement.excluded, strict=True):
            update_hash = submission.signed.record.update_hash
            self.journal.record_exclusion(proposal.round, submission.device, update_hash,
                                          exclusion.reason, exclusion.detail)
            self.log("excluded", round=proposal.round, device=submission.device,
                     update_hash=to_hex(update_hash), reason=exclusion.reason,
                     detail=exclusion.detail)
        head = Head(proposal.round, receipt.block_hash, proposal.global_model_hash)
        self.node.adopt(candidate.global_state, head)
        self._window_opened = None
        for peer in self.node.peers:
            peer.receive_block(announcement)

    def run(self, stop: threading.Event) -> None:
        """The miner's loop until `stop` is set; an error in one pass is logged, never fatal.
        Catching up on missed blocks runs beside it, in its own thread."""
        self._catching_up = threading.Thread(target=self._catch_up_loop, args=(stop,),
                                             name="catch-up", daemon=True)
        self._catching_up.start()
        while not stop.is_set():
            began = time.monotonic()
            try:
                if self.sync() and self.ready():
                    self.mine(stop)
                else:
                    self._wake.wait(self.settings.poll)
                    self._wake.clear()
                self._chain_answered(began)
            except (ChainUnavailable, DeploymentMissing) as exc:  # one line; /health says it
                self.chain_down(exc)
                stop.wait(1.0)
            except Exception as exc:  # a miner keeps serving: log and try again
                self.log("error", error=f"{type(exc).__name__}: {exc}")
                stop.wait(1.0)

    def chain_down(self, exc: ChainUnavailable | DeploymentMissing) -> None:
        """Note that the chain node does not answer or lost the deployment, wherever this miner
        found out (its loop, or a request it served): one log line per condition, and
        `GET /health` says it until a pass of the loop reads the chain again."""
        with self._problem_lock:
            if self.chain_problem is None or self.chain_problem[0] != exc.condition:
                self.log(exc.condition, error=str(exc)[:300])
            self.chain_problem = (exc.condition, str(exc))
            self._problem_since = time.monotonic()

    def _chain_answered(self, began: float) -> None:
        """A pass of the loop that began at `began` read the chain: a problem noted before
        it is over (one noted during it may be newer than the reads that succeeded)."""
        with self._problem_lock:
            if self.chain_problem is not None and self._problem_since < began:
                self.chain_problem = None
                self.log("chain_back", round=self.node.head.round)

    def health(self) -> dict[str, Any]:
        """What `GET /health` shows: ok, or the named condition that keeps this miner from
        mining (the chain node does not answer, or lost the deployment)."""
        if self.chain_problem is not None:
            condition, detail = self.chain_problem
            return {"ok": False, "error": condition, "detail": detail}
        return {"ok": True}

    def info(self) -> dict[str, Any]:
        """What `GET /info` shows."""
        node = self.node
        return {
            "address": node.address,
            "round": node.round,
            "head": {"round": node.head.round, "block_hash": to_hex(node.head.block_hash),
                     "global_model_hash": to_hex(node.head.global_model_hash)},
            "pending": node.pending_devices(),
            "accepted": node.stats.accepted,
            "rejected": node.stats.rejected,
            "blocks": node.stats.blocks,
            "forks": node.stats.forks,
            "peers": [c.url for c in self.clients],
        }

    def close(self) -> None:
        """Stop peers and close the journal (after the catch-up of a stopped `run`)."""
        if self._catching_up is not None:
            self._catching_up.join(timeout=10)
        for peer in self.node.peers:
            if isinstance(peer, HttpPeer):
                peer.close()
        self.journal.close()
