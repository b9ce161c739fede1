"""A device as a process of a network: train, upload, wait for the block, check, repeat.

Each round the device reads the chain head, makes sure it holds the head's global model
(downloaded from a miner and checked against the on-chain hash; optionally recomputed from the
block's updates, as in the paper), trains and signs its update for the next round, and uploads
it to a miner chosen uniformly at random, trying the others if that miner is down (one that
failed to answer lately is tried last; no answer takes longer than its client's timeout). It
then waits for the block of that round on chain and reads whether its update was paid.
Everything it needs is on chain or at the miners, so a restarted device simply resumes from the
chain head.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

from blockfl.aggregation import AggregationStrategy, FedAvg, WeightedUpdate
from blockfl.chain.blocks import Head
from blockfl.chain.errors import BlockRejected, DeploymentMissing
from blockfl.chain.ledger import Ledger
from blockfl.chain.participation import Participation
from blockfl.client import MinerClient, MinerRejected, MinerUnavailable, healthy_first
from blockfl.devices.claims import claim
from blockfl.devices.device import Device, GlobalModelMismatch
from blockfl.devices.observing_attacks import Observed
from blockfl.events import EventLog
from blockfl.hashing import to_hex
from blockfl.privacy import epsilon, may_take_part
from blockfl.signing import UpdateRecord
from blockfl.tensors import decode
from blockfl.wire import UpdateSubmission, record_header

MAX_BACKOFF = 5.0  # seconds between retries when no miner answers
BLOCK_DEADLINE = 120.0  # seconds a device waits for the block of its round before starting over
WAIT_LOG = 30.0  # seconds between the log lines of a device that waits for a block


class NoMinerAvailable(ConnectionError):
    """Every miner is down or refused to serve."""


class GaveUp(ConnectionError):
    """No miner or no chain node (or no contract on it) for the device's `give_up` seconds."""


def failure(exc: OSError) -> tuple[str, str]:
    """The event a device logs for a failure it retries, and what it means."""
    if isinstance(exc, NoMinerAvailable):
        return "no_miner", "no miner answered"
    if isinstance(exc, DeploymentMissing):
        return "deployment_missing", "the chain node lost the deployment"
    return "chain_unavailable", "the chain node did not answer"


class DeviceProcess:
    """One device's loop against a ledger and a set of miners."""

    def __init__(
        self,
        device: Device,
        ledger: Ledger,
        miners: Sequence[MinerClient],
        log: EventLog,
        seed: int = 0,
        recompute: bool = False,
        poll: float = 0.2,
        rule: AggregationStrategy | None = None,
        give_up: float | None = None,
        block_deadline: float = BLOCK_DEADLINE,
        expect: int = 0,
        observe_wait: float = 10.0,
    ) -> None:
        """`give_up`: seconds of failures in a row (no miner, no chain node) after which `run`
        raises `GaveUp` (None: retry forever); `block_deadline`: seconds a device waits for the
        block of its round before it starts the round again from the chain head. An attacker
        that reads the round's updates waits for `expect` of them at a miner, at most
        `observe_wait` seconds."""
        self.device = device
        self.give_up = give_up
        self.block_deadline = block_deadline
        self.ledger = ledger
        self.miners = list(miners)
        self.log = log
        self.rng = random.Random(seed)
        self.recompute = recompute
        self.poll = poll
        self.rule = rule or FedAvg()
        self.participation = Participation(ledger)
        self.expect = expect
        self.observe_wait = observe_wait

    def run(self, rounds: int, stop: threading.Event | None = None) -> None:
        """Take part until the chain has `rounds` blocks (or `stop` is set). When no miner or
        the chain node answers, it logs why and retries with exponential backoff, for at most
        `give_up` seconds in a row."""
        stop = stop or threading.Event()
        self.log("started", address=self.device.address, samples=len(self.device.shard.y),
                 behaviour=self.device.behaviour.name)
        backoff = self.poll
        head: Head | None = None
        failing_since: float | None = None
        while not stop.is_set():
            try:
                head = self.ledger.head()
                if head.round >= rounds:
                    break
                self.follow(head)
                round_ = head.round + 1
                if not self._within_budget():
                    break
                local = self.device.local_update(round_)
                observed = (self.observe(round_, local.n_samples, stop)
                            if self.device.behaviour.observes else None)
                trained = self.device.submission(round_, self.ledger.domain, local, observed)
                for submission in (trained.submission, *trained.copies):
                    self.upload(submission)
                self.wait_for_block(round_, head, stop)
            except OSError as exc:  # no miner, the chain node unreachable or without contract
                event, what = failure(exc)
                failing_since = failing_since or time.monotonic()
                if self.give_up is not None and time.monotonic() - failing_since >= self.give_up:
                    self.log("gave_up", reason=event, error=str(exc)[:300], after=self.give_up)
                    raise GaveUp(f"gave up after {self.give_up:g} s: {what} "
                                 f"(last error: {str(exc)[:300]})") from None
                self.log(event, error=str(exc)[:300], retry_in=backoff)
                stop.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF)
                continue
            backoff, failing_since = self.poll, None
        if head is not None and head.round >= rounds:  # earnings as the final chain has them
            self.log("finished", round=head.round, earned=str(self.earned()))
        else:
            self.log("finished", round=head.round if head else None)

    def earned(self) -> int:
        """This device's rewards on the chain as it is now (a rolled-back round's reward is
        not counted: it is gone from the chain)."""
        return sum(u.reward for u in self.ledger.accepted_updates()
                   if u.device == self.device.address)

    def _within_budget(self) -> bool:
        """With `[privacy]` on: log the epsilon spent so far (charged by this device's updates
        in committed blocks, as every miner charges it); False, with a log line, once one more
        update would pass the budget: the device stops before it releases it."""
        cfg = self.device.privacy
        if cfg.mode == "off":
            return True
        rounds, samples = self.participation.rounds(self.device.address), len(self.device.shard)
        spent = epsilon(cfg, rounds, samples)
        if not may_take_part(cfg, rounds, samples):
            self.log("privacy_budget_exhausted", rounds=rounds, epsilon=spent,
                     budget=cfg.epsilon_budget, delta=cfg.delta)
            return False
        self.log("privacy", rounds=rounds, epsilon=spent, delta=cfg.delta,
                 budget=cfg.epsilon_budget or None)
        return True

    def observe(self, round_: int, samples: int, stop: threading.Event) -> Observed:
        """What an attacker that reads the round's updates sees: the verified updates one miner
        holds for `round_` (they are gossiped), once `expect` of them are there or after
        `observe_wait` seconds; nothing from a miner that does not answer."""
        deadline = time.monotonic() + self.observe_wait
        held: list[WeightedUpdate] = []
        for miner in self._miners_in_random_order():
            try:
                while True:
                    at, hashes = miner.pending()
                    hashes = hashes if at == round_ else []
                    if len(hashes) >= self.expect or time.monotonic() >= deadline:
                        break
                    stop.wait(self.poll)
                for found in filter(None, map(miner.update, hashes)):
                    held.append(WeightedUpdate(found.device, decode(
                        found.payload, max_bytes=miner.max_bytes), found.signed.record.samples))
            except MinerUnavailable as exc:
                self.log("observe_failed", miner=miner.url, error=str(exc)[:300])
                continue
            break
        self.log("observed", round=round_, updates=len(held))
        return Observed(self.device.global_state, tuple(held), self.rule, self.device.address,
                        samples)

    def _miners_in_random_order(self) -> list[MinerClient]:
        first = self.device.choose_miner(self.miners, self.rng)
        return healthy_first([first] + [m for m in self.miners if m is not first])

    def upload(self, submission: UpdateSubmission, catch_up_tries: int = 25) -> None:
        """Upload to a random miner; on a dead miner, try the next one. A miner that has not yet
        adopted the block the device saw on chain refuses the update as `wrong_round`: it is
        asked again (every `poll` seconds, `catch_up_tries` times) until it has caught up."""
        record = submission.signed.record
        for miner in self._miners_in_random_order():
            try:
                for _ in range(catch_up_tries):
                    try:
                        sent_at = time.time()  # the upload's first byte (latency compare)
                        miner.upload(submission)
                        break
                    except MinerRejected as exc:
                        if exc.reason != "wrong_round" or self.ledger.head().round >= record.round:
                            raise
                        time.sleep(self.poll)
                else:
                    sent_at = time.time()
                    miner.upload(submission)
            except MinerUnavailable as exc:
                self.log("miner_down", miner=miner.url, error=str(exc))
                continue
            except MinerRejected as exc:
                self.log("update_rejected", round=record.round, miner=miner.url,
                         reason=exc.reason, detail=exc.detail)
                return
            self.log("uploaded", round=record.round, miner=miner.url, samples=record.samples,
                     compute_time_ms=record.compute_time_ms, sent_at=sent_at,
                     upload_bytes=len(submission.payload) + len(record_header(submission.signed)),
                     update_hash=to_hex(record.update_hash),
                     base_model_hash=to_hex(record.base_model_hash))
            return
        raise NoMinerAvailable("no miner accepted the upload connection")

    def wait_for_block(self, round_: int, base: Head, stop: threading.Event) -> bool:
        """Poll the chain until round `round_` is committed on top of `base` (the head this
        device trained on); log whether this device was paid. False, and the device starts
        again from the chain head, when the chain moved back under `base` (a rollback or a
        reorganisation), or after `block_deadline` seconds without the block; meanwhile it logs
        why it waits every `WAIT_LOG` seconds."""
        started = logged = time.monotonic()
        while not stop.is_set():
            head = self.ledger.head()
            record = self.ledger.get_block(round_) if head.round >= round_ else None
            if record is not None and record.prev_hash == base.block_hash:
                break
            if head.round < base.round or (head.round == base.round and head != base) or (
                    record is not None):  # moved back, or round_ built on another block
                self.log("rollback", round=round_, head=head.round, base=base.round,
                         void_rounds=list(range(head.round + 1, base.round + 1)),
                         detail="the chain moved back under the model this device trained on: "
                                "the block events of the void rounds no longer hold")
                return False
            now = time.monotonic()
            if now - started >= self.block_deadline:
                self.log("block_timeout", round=round_, head=head.round,
                         waited=round(now - started, 1))
                return False
            if now - logged >= WAIT_LOG:
                logged = now
                self.log("waiting", round=round_, head=head.round, waited=round(now - started, 1),
                         reason=f"no block of round {round_} on chain yet (head at round "
                                f"{head.round}); the miners collect, verify and mine it")
            stop.wait(self.poll)
        if stop.is_set():
            return False
        if self.ledger.params().mode == "merkle":
            self.claim(round_, stop)
        mine = [u for u in self.ledger.accepted_updates(round_) if u.device == self.device.address]
        self.log("block", round=round_, included=bool(mine),
                 reward=str(mine[0].reward) if mine else "0")
        return True

    def claim(self, round_: int, stop: threading.Event) -> None:
        """Claim this device's reward in the merkle block of `round_`, with the block's records
        from the first miner that serves them (checked against the chain's root). The block is
        on chain before its miner serves it, so the device asks again until one does (for
        `give_up` seconds, two minutes when unset)."""
        deadline = time.monotonic() + (self.give_up or 120.0)
        while not stop.is_set() and time.monotonic() < deadline:
            for miner in self._miners_in_random_order():
                try:
                    block = miner.block(round_)
                    if block is None:
                        continue
                    done = claim(self.ledger, self.device.key, block, self.device.address)
                except (MinerUnavailable, ValueError, LookupError, BlockRejected) as exc:
                    self.log("claim_failed", round=round_, miner=miner.url, error=str(exc)[:300])
                    continue
                self.log("claimed", round=round_, reward=str(sum(c.reward for c in done)),
                         updates=len(done))
                return
            stop.wait(self.poll)
        self.log("claim_failed", round=round_, error="no miner served the block in time")

    def follow(self, head: Head) -> None:
        """Hold the head's global model, checked against the on-chain hash (and recomputed
        from the block's updates when asked and some miner serves them)."""
        if self.device.global_hash == head.global_model_hash:
            return
        unrecomputed = None  # a model that matches the chain, for when no miner serves the block
        for miner in self._miners_in_random_order():
            try:
                fetch_started, before = time.time(), miner.received_bytes
                model = miner.model(head.global_model_hash)
                if model is None:
                    continue
                if unrecomputed is None:  # MinerClient.model checked its hash
                    unrecomputed = model
                block = self._block_updates(miner, head) if self.recompute else None
                # the download alone, first request to last byte (latency compare)
                link = {"fetch_started": fetch_started, "fetched_at": time.time(),
                        "download_bytes": miner.received_bytes - before, "miner": miner.url}
                kept, excluded = block or (None, ())
                self.device.adopt(head.global_model_hash, model, kept, self.rule, excluded)
            except MinerUnavailable as exc:
                self.log("download_failed", miner=miner.url, error=str(exc))
                continue
            except GlobalModelMismatch as exc:
                self.log("model_mismatch", miner=miner.url, error=str(exc))
                continue
            self.log("model", round=head.round, global_model_hash=to_hex(head.global_model_hash),
                     recomputed=block is not None, **link)
            return
        if unrecomputed is None:
            raise NoMinerAvailable(f"no miner serves the global model of round {head.round}")
        self.device.adopt(head.global_model_hash, unrecomputed)
        self.log("model", round=head.round, global_model_hash=to_hex(head.global_model_hash),
                 recomputed=False)

    def _block_updates(
        self, miner: MinerClient, head: Head
    ) -> tuple[list[WeightedUpdate], list[WeightedUpdate]] | None:
        """The block's updates and those its rule excluded, for re-running the selection and
        recomputing the aggregate; None when this device does not hold the block's base model
        (it missed rounds), so there is nothing to recompute from. Raises MinerUnavailable when
        the miner cannot serve the block (yet)."""
        if head.round == 0:
            return None
        block = miner.block(head.round)
        if block is None:
            raise MinerUnavailable(f"{miner.url} does not serve the block of round {head.round}")
        if any(u.record.base_model_hash != self.device.global_hash for u in block.updates):
            return None

        def fetched(update_hash: bytes) -> UpdateSubmission:
            submission = miner.update(update_hash)
            if submission is None:
                raise MinerUnavailable(f"{miner.url} lacks update {to_hex(update_hash)}")
            return submission

        def weighted(record: UpdateRecord, submission: UpdateSubmission) -> WeightedUpdate:
            delta = decode(submission.payload, max_bytes=miner.max_bytes)
            return WeightedUpdate(record.device, delta, record.samples)

        kept = [weighted(u.record, fetched(u.record.update_hash)) for u in block.updates]
        # the excluded updates' records come with their tensors
        excluded = [weighted(s.signed.record, s) for s in map(fetched, block.excluded)]
        return kept, excluded
