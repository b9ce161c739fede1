"""One process, N devices, M miners, R rounds of BlockFL on a real ledger.

A round: every device trains from the global model and uploads its signed update to a miner
chosen uniformly at random; the miner verifies it and gossips it to the other miners, which
verify it again (cross-verification); updates that arrive after `T_wait` miss the block. Each
miner then aggregates its candidate block and joins the proof-of-work race; the winner commits
through the ledger, miners finishing within the propagation delay commit too and are rejected
as forks; every miner checks the committed block before building on it; every device checks
the global model against the on-chain hash (and recomputes it) before the next round.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blockfl.aggregation import AggregationRule, WeightedUpdate
from blockfl.chain.blocks import CommitReceipt
from blockfl.chain.deploy import open_ledger
from blockfl.chain.ledger import Ledger
from blockfl.chain.participation import Participation
from blockfl.config import Config, LinksConfig
from blockfl.devices.device import (
    Device,
    TrainedUpdate,
    check_downloaded_model,
    check_recomputed_model,
)
from blockfl.devices.observing_attacks import Observed
from blockfl.hashing import to_hex
from blockfl.keys import derived_key
from blockfl.latency.model import SIGNATURE_BITS, link_rate
from blockfl.miners.attestation import Attester, gather
from blockfl.miners.mining import Finish, race
from blockfl.miners.node import BlockAnnouncement, Candidate, MinerNode, Verdict, connect
from blockfl.miners.verification import Verifier
from blockfl.privacy import check_budget, may_take_part
from blockfl.protocol import ProtocolSpec, SpecMismatch
from blockfl.signing import address_of
from blockfl.sim.setup import Experiment, build_devices, build_experiment
from blockfl.sim.training import LocalTrainer, Trainer
from blockfl.store import ModelStore
from blockfl.task import evaluate
from blockfl.tensors import StateDict, decode
from blockfl.wire import UpdateSubmission

Injector = Callable[[int, list[MinerNode]], None]


@dataclass
class RoundResult:
    """What happened in one round."""

    round: int
    winner: str
    forks: int
    accepted: int
    rejected: int
    late: int
    samples: int
    global_model_hash: str
    block_hash: str
    metrics: dict[str, float]
    phases: dict[str, float]
    latency: dict[str, float]
    gas_used: int
    pow_attempts: int
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # device -> why the rule excluded it
    local_times: list[float] = field(default_factory=list)  # per device that sent, s
    # device -> its training and upload seconds, for each device whose update missed T_wait
    late_devices: dict[str, dict[str, float]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """JSON-ready record for metrics.jsonl."""
        out = {k: v for k, v in vars(self).items() if k != "verdicts"}
        out["rejections"] = {d: v.reason for d, v in self.verdicts.items() if not v.accepted}
        return out


def observed_updates(miner: MinerNode) -> tuple[WeightedUpdate, ...]:
    """The verified updates a miner holds for its round, decoded from the bytes it received."""
    limit = miner.verifier.policy.max_payload_bytes
    return tuple(WeightedUpdate(s.device, decode(s.payload, max_bytes=limit),
                                s.signed.record.samples) for s in miner.pending_submissions())


def make_trainer(config: Config, devices: Sequence[Device]) -> Trainer:
    """The trainer of `config.run.engine`: local, or ray (`blockfl[ray]`)."""
    engine = config.run.engine
    if engine == "local":
        return LocalTrainer(devices, config.run.batch_training)
    if engine == "ray":
        from blockfl.sim.ray_engine import RayTrainer

        return RayTrainer(config, devices)
    raise ValueError(f"unknown engine {engine!r}: local or ray")


class Simulation:
    """Devices, miners and a ledger wired together; `run_round` plays one BlockFL round."""

    def __init__(self, config: Config, run_dir: Path, ledger: Ledger | None = None,
                 experiment: Experiment | None = None) -> None:
        """`experiment`: the config's, when the caller has built it already."""
        self.config = config
        self.run_dir = run_dir
        seed = config.run.seed
        self.experiment: Experiment = experiment or build_experiment(config)
        genesis = self.experiment.initial
        self.spec = ProtocolSpec.from_config(config, self.experiment.genesis)
        miner_keys = [derived_key("miner", i, seed) for i in range(config.network.miners)]
        self.ledger = ledger or open_ledger(
            config, [address_of(k) for k in miner_keys], self.spec.genesis, run_dir
        )
        if self.ledger.params().protocol_spec_hash != self.spec.hash():
            raise SpecMismatch("the ledger was deployed with another protocol spec than this "
                               "config's (deploy it with `chain_params` of the same config)")
        strategy = AggregationRule(self.spec.aggregation)
        max_samples = self.spec.chain.max_samples_per_update
        self.miners = [
            MinerNode(k, self.ledger,
                      Verifier(self.spec.verification, max_samples=max_samples,
                               privacy=self.spec.privacy,
                               included_rounds=Participation(self.ledger).rounds),
                      ModelStore(run_dir / f"miner{i}" / "models"), strategy, genesis)
            for i, k in enumerate(miner_keys)
        ]
        connect(self.miners)
        self.attesters = [Attester(m) for m in self.miners]
        self.strategy = strategy
        self.devices = build_devices(config, self.experiment)
        check_budget(self.spec.privacy, [len(d.shard) for d in self.devices])
        start = time.perf_counter()
        self.trainer: Trainer = make_trainer(config, self.devices)
        #: seconds before round 1 that no round is charged: the trainer's start (Ray's actors)
        self.setup_seconds = {"trainer": time.perf_counter() - start}
        self.rng = random.Random(seed)
        self.participation = Participation(self.ledger)  # what the devices' budgets spent

    def within_budget(self) -> list[bool]:
        """Per device, whether its privacy budget admits one more update (all True without
        a budget); a device past it trains no more and releases nothing."""
        cfg = self.spec.privacy
        return [may_take_part(cfg, self.participation.rounds(d.address), len(d.shard))
                for d in self.devices]

    def close(self) -> None:
        """Release the trainer's workers (Ray actors)."""
        self.trainer.close()

    def run_round(self, inject: Injector | None = None) -> RoundResult:
        """Play one round; `inject(round, miners)` may submit extra (e.g. malicious) updates."""
        cfg = self.config
        round_ = self.miners[0].round
        domain = self.ledger.domain
        clock = LinkClock(cfg.links)
        phases: dict[str, float] = {}

        start = time.perf_counter()
        local = self.trainer.local_updates(round_)
        # an attacker that reads the round's other updates signs after the others' uploads
        signed = {d.address: d.submission(round_, domain, u)
                  for d, u in zip(self.devices, local, strict=True) if not d.behaviour.observes}
        phases["local_training"] = time.perf_counter() - start

        # upload: a device's update reaches its miner after training plus the uplink transfer;
        # what arrives after T_wait misses the candidate blocks
        start = time.perf_counter()
        by_address = {m.address: m for m in self.miners}
        miner_of: dict[str, MinerNode] = {}
        verdicts: dict[str, Verdict] = {}
        local_s: dict[str, float] = {}
        arrival: dict[str, float] = {}
        collected = dict.fromkeys(by_address, 0.0)  # bits of updates each miner received
        sending = self.within_budget()
        for device, sends in zip(self.devices, sending, strict=True):
            if sends:
                miner_of[device.address] = by_address[device.choose_miner(list(by_address),
                                                                          self.rng)]

        def deliver(device: Device, update: TrainedUpdate) -> None:
            miner = miner_of[device.address]
            local_s[device.address] = update.submission.signed.record.compute_time_ms / 1000
            arrival[device.address] = local_s[device.address] + clock.up(update.submission)
            if arrival[device.address] <= cfg.network.t_wait:
                for submission in (update.submission, *update.copies):
                    verdict = miner.receive_upload(submission)
                    verdicts[submission.device] = verdict
                    if verdict.accepted:
                        collected[miner.address] += 8 * len(submission.payload)

        for device in self.devices:
            if device.address in signed and device.address in miner_of:
                deliver(device, signed[device.address])
        observers = [(d, u) for d, u in zip(self.devices, local, strict=True)
                     if d.behaviour.observes]
        held = {m.address: observed_updates(m) for m in
                {miner_of[d.address] for d, _ in observers if d.address in miner_of}}
        for device, update in observers:  # what its miner holds once the others uploaded
            miner = miner_of.get(device.address)
            signed[device.address] = device.submission(round_, domain, update, miner and Observed(
                miner.base_state, held[miner.address], self.strategy, device.address,
                update.n_samples))
            if miner is not None:
                deliver(device, signed[device.address])
        trained = [signed[d.address] for d in self.devices]
        if inject is not None:
            inject(round_, self.miners)
        phases["upload_and_cross_verification"] = time.perf_counter() - start

        start = time.perf_counter()
        candidates = [m.candidate() for m in self.miners]
        phases["aggregation"] = time.perf_counter() - start
        if not any(candidates):
            why = ("; every device has spent its privacy budget "
                   f"(privacy.epsilon_budget = {cfg.privacy.epsilon_budget:g})"
                   if not any(sending) else "")
            raise RuntimeError(f"round {round_}: no miner holds a verified update{why}")
        block_bits = max(clock.block_bits(self.miners[i].announcement(c.proposal))
                         for i, c in enumerate(candidates) if c)
        t_bp = clock.miners(block_bits)

        start = time.perf_counter()
        mode = self.ledger.params().mode
        headers = [c.proposal.header(domain, mode) if c else None for c in candidates]
        finishes = race(headers, self.ledger.params().target, cfg.chain.hash_rate, t_bp)
        phases["proof_of_work"] = time.perf_counter() - start

        start = time.perf_counter()
        winner, receipt, forks, phases["attestation"], checks_s = self._commit(candidates,
                                                                              finishes)
        phases["block_commit"] = time.perf_counter() - start - phases["attestation"]

        start = time.perf_counter()
        winning = candidates[winner]
        assert winning is not None
        announcement = self.miners[winner].announcement(replace(
            winning.proposal, nonce=next(f for f in finishes if f.miner == winner).solution.nonce))
        self.miners[winner].adopt(winning.global_state)
        for miner in self.miners:
            if miner is not self.miners[winner]:
                miner.receive_block(announcement)
        phases["block_propagation_and_check"] = time.perf_counter() - start

        start = time.perf_counter()
        record = self.ledger.get_block(round_)
        assert record is not None
        # the block's updates as the winner decoded and verified them from the announced bytes
        # a device past its privacy budget sent nothing: it takes the model from the winner
        source = {d.address: miner_of.get(d.address, self.miners[winner]) for d in self.devices}
        global_s = self._adopt_global_model(record.global_model_hash, list(winning.updates),
                                            source, [e.update for e in winning.excluded])
        phases["global_model_download_and_check"] = time.perf_counter() - start

        late = {d.address: {"training_s": local_s[d.address],
                            "upload_s": arrival[d.address] - local_s[d.address]}
                for d in self.devices if arrival.get(d.address, 0) > cfg.network.t_wait}
        # the emulated round latency of each device, term by term (the latency model's terms)
        verify_s = phases["upload_and_cross_verification"] / len(self.miners)
        exchange = clock.exchange(collected)
        t_dn = clock.down(block_bits)
        t_bg = next(f for f in finishes if f.miner == winner).time
        # attestation: the winner asks q - 1 miners one after another; each gets the candidate
        # block, checks it (the measured seconds) and sends a signature back
        asked = self.ledger.required_attesters() - 1
        t_att = asked * clock.miners(clock.block_bits(announcement) + SIGNATURE_BITS) + checks_s
        per_device = [
            {
                "t_local": local_s[d.address],
                "t_up": arrival[d.address] - local_s[d.address],
                "t_cross": max(cfg.network.t_wait - arrival[d.address],
                               exchange[miner_of[d.address].address]) + verify_s,
                "t_bg": t_bg,
                "t_att": t_att,
                "t_bp": t_bp,
                "t_dn": t_dn,
                "t_global": global_s[d.address],
            }
            for d in self.devices if d.address in arrival  # the devices that sent
        ]
        latency = {k: sum(p[k] for p in per_device) / len(per_device) for k in per_device[0]}
        latency["total"] = sum(latency.values())
        latency["attestation_checks"] = checks_s
        latency["verification"] = verify_s
        latency["update_bits"] = sum(8 * len(t.submission.payload) for t in trained) / len(trained)
        latency["block_bits"] = block_bits

        global_state = self.devices[0].global_state
        test = self.experiment.test
        return RoundResult(
            round=round_,
            winner=self.miners[winner].address,
            forks=forks,
            accepted=record.num_updates,
            rejected=sum(not v.accepted for v in verdicts.values()),
            late=len(late),
            samples=record.total_samples,
            global_model_hash=to_hex(record.global_model_hash),
            block_hash=to_hex(record.block_hash),
            metrics=evaluate(self.experiment.task, global_state, test),
            phases=phases,
            latency=latency,
            gas_used=receipt.gas_used,
            pow_attempts=next(f for f in finishes if f.miner == winner).solution.attempts,
            local_times=[local_s[d.address] for d in self.devices if d.address in local_s],
            late_devices=late,
            verdicts=verdicts,
            excluded={e.update.device: f"{e.reason}: {e.detail}" for e in winning.excluded},
        )

    def _adopt_global_model(
        self, model_hash: bytes, updates: list[WeightedUpdate], miner_of: dict[str, MinerNode],
        excluded: list[WeightedUpdate],
    ) -> dict[str, float]:
        """Every device checks and takes the block's global model; returns each device's
        seconds of checking. Devices that would run the same check on the same inputs (the
        same miner's copy; the same previous model and block) share one run of it, and each
        is charged its full time: the result is the one each device would compute."""
        downloads: dict[str, tuple[StateDict, float]] = {}  # miner -> (checked model, seconds)
        recomputes: dict[bytes, float] = {}  # previous global model hash -> seconds
        seconds: dict[str, float] = {}
        for device in self.devices:
            source = miner_of[device.address]
            if source.address not in downloads:
                begin = time.perf_counter()
                model = source.store.get(model_hash)
                check_downloaded_model(model_hash, model)
                downloads[source.address] = (model, time.perf_counter() - begin)
            model, spent = downloads[source.address]
            if self.config.network.recompute_global:
                if device.global_hash not in recomputes:
                    begin = time.perf_counter()
                    check_recomputed_model(model_hash, device.global_state, updates,
                                           self.strategy, excluded)
                    recomputes[device.global_hash] = time.perf_counter() - begin
                spent += recomputes[device.global_hash]
            device.accept(model_hash, model)
            seconds[device.address] = spent
        return seconds

    def _commit(
        self, candidates: list[Candidate | None], finishes: list[Finish]
    ) -> tuple[int, CommitReceipt, int, float, float]:
        """Every miner that finished before hearing of the winner gathers attestations from the
        others and commits; later ones fork (on chain, or short of a quorum because honest
        miners attest one candidate per round). Returns the winner, its receipt, the forks,
        the seconds spent gathering attestations and those of the winner's gathering."""
        winner: tuple[int, CommitReceipt, float] | None = None
        forks, attesting = 0, 0.0
        needed = self.ledger.required_attesters() - 1  # the committer counts itself
        for finish in finishes:
            candidate = candidates[finish.miner]
            assert candidate is not None
            proposal = replace(candidate.proposal, nonce=finish.solution.nonce)
            announcement = self.miners[finish.miner].announcement(proposal)
            start = time.perf_counter()
            signature = self.attesters[finish.miner].request(proposal)
            asks = [lambda a=a, b=announcement, s=signature: a.attest(b, s)
                    for i, a in enumerate(self.attesters) if i != finish.miner]
            attestations = gather(asks, needed, lambda _: None)
            spent = time.perf_counter() - start
            attesting += spent
            receipt = None
            if len(attestations) >= needed:
                receipt = self.miners[finish.miner].commit(proposal, attestations)
            if receipt is None:
                forks += 1
            elif winner is None:
                winner = (finish.miner, receipt, spent)
        if winner is None:
            raise RuntimeError("no block was committed: no candidate reached the quorum")
        return winner[0], winner[1], forks, attesting, winner[2]


class LinkClock:
    """Transfer times over the emulated links: S bits take S / (W log2(1 + SNR)) seconds."""

    def __init__(self, links: LinksConfig) -> None:
        self.links = links
        self.rate_up = link_rate(links.w_up, links.snr_up_db)
        self.rate_dn = link_rate(links.w_dn, links.snr_dn_db)
        self.rate_m = link_rate(links.w_m, links.snr_m_db)

    def up(self, submission: UpdateSubmission) -> float:
        """Upload time of one update (its safetensors payload)."""
        return 8 * len(submission.payload) / self.rate_up

    def block_bits(self, announcement: BlockAnnouncement) -> float:
        """Size of a block: the header plus every update's payload."""
        return self.links.header_bits + sum(8 * len(p) for p in announcement.payloads.values())

    def miners(self, bits: float) -> float:
        """Transfer time between miners (block propagation)."""
        return bits / self.rate_m

    def down(self, bits: float) -> float:
        """Download time of a block by a device."""
        return bits / self.rate_dn

    def exchange(self, collected: dict[str, float]) -> dict[str, float]:
        """Per miner: time to receive the update bits the other miners collected (gossip)."""
        total = sum(collected.values())
        return {miner: (total - own) / self.rate_m for miner, own in collected.items()}
