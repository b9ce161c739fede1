"""A device: trains the global model on its own shard, signs the update, checks the global model.

The device never shares its data. Each round it trains from the current global model, hashes
its update (the delta), signs the EIP-712 record (round, base model hash, update hash, sample
count, computation time) and uploads to a miner chosen uniformly at random. After the block is
committed it accepts the new global model only if its hash equals the on-chain hash, and
(optionally, as in the paper) if recomputing the aggregate from the block's updates gives it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import torch

from blockfl.aggregation import AggregationStrategy, WeightedUpdate, selection_mismatch
from blockfl.config import NO_PRIVACY, PrivacyConfig, TrainingConfig
from blockfl.devices.behaviours import Behaviour
from blockfl.devices.data import Dataset
from blockfl.devices.observing_attacks import Observed
from blockfl.devices.training import LocalUpdate
from blockfl.hashing import to_hex
from blockfl.keys import derived_key
from blockfl.privacy import privatize
from blockfl.signing import Domain, SignedUpdate, UpdateRecord, address_of, sign_update
from blockfl.task import Task, TaskError, TrainingJob, initial_kept, local_update
from blockfl.tensors import StateDict, encode, tensor_hash
from blockfl.wire import UpdateSubmission

M = TypeVar("M")  # how a miner is named: an address, a client


def device_seed(run_seed: int, index: int) -> int:
    """The training seed of device `index` in a run seeded with `run_seed`."""
    return run_seed * 7919 + index


class GlobalModelMismatch(ValueError):
    """A downloaded global model that does not match the block committed on chain."""


@dataclass(frozen=True)
class TrainedUpdate:
    """A signed submission plus what the device measured while making it, and the same update
    signed under other keys (a Sybil behaviour's copies)."""

    submission: UpdateSubmission
    local: LocalUpdate
    copies: tuple[UpdateSubmission, ...] = ()


class Device:
    """One device: its key, its shard, its task, the global model it holds and the tensors it
    keeps to itself (`Task.kept_on_device`, from the task's `initial_state` for its seed)."""

    def __init__(
        self,
        key: bytes,
        shard: Dataset,
        task: Task,
        training: TrainingConfig,
        global_state: StateDict,
        seed: int = 0,
        behaviour: Behaviour | None = None,
        privacy: PrivacyConfig = NO_PRIVACY,
    ) -> None:
        """`privacy`: the spec's `[privacy]`; in client mode every update is clipped and
        noised (`blockfl.privacy.privatize`) before the behaviour and the signature; in dp_sgd
        mode the task trains with DP-SGD (a task says it does with `dp_sgd = True`)."""
        if privacy.mode == "dp_sgd" and not getattr(task, "dp_sgd", False):
            raise TaskError(f"task {task.name!r} does not train with DP-SGD (it has no "
                            "`dp_sgd = True`): use [privacy] mode = \"client\", which works "
                            "with any task")
        self.key = key
        self.privacy = privacy
        self.address = address_of(key)
        self.behaviour = behaviour or Behaviour()
        self.shard = self.behaviour.data(shard)
        self.task = task
        self.training = training
        self.global_state = global_state
        self.global_hash = tensor_hash(global_state)
        self.seed = seed
        self.kept = initial_kept(task, seed)

    def train(self, round_: int, domain: Domain, observed: Observed | None = None) -> TrainedUpdate:
        """Train on the local shard from the global model and sign the update for `round_`
        (`observed`: the round's other updates, for a behaviour that reads them)."""
        return self.submission(round_, domain, self.local_update(round_), observed)

    def training_job(self, round_: int) -> TrainingJob:
        """This round's training, to run batched with other devices' (`Task.train_many`)."""
        return TrainingJob(self.shard, self._round_seed(round_), self.kept)

    def local_update(self, round_: int) -> LocalUpdate:
        """Train on the local shard from the global model through the task (not yet signed)."""
        if not self.behaviour.trains:  # a free-rider claims the time training would have taken
            n = len(self.shard)
            zero = {k: torch.zeros_like(v) for k, v in self.global_state.items()}
            return LocalUpdate(zero, n, self._modelled_seconds(n), float("nan"))
        return self.keep(local_update(self.task, self.global_state, self.shard,
                                      self.training.at_round(round_), self._round_seed(round_),
                                      self.kept))

    def keep(self, local: LocalUpdate) -> LocalUpdate:
        """Hold the kept tensors this device's training `local` left (its update is sent
        without them)."""
        self.kept = local.kept
        return local

    def submission(self, round_: int, domain: Domain, local: LocalUpdate,
                   observed: Observed | None = None) -> TrainedUpdate:
        """Privatize this device's update `local` (with `[privacy]` on), apply its behaviour
        (given what it `observed` of the round's other updates), then hash, sign and encode it
        for `round_` (with the copies a Sybil behaviour signs under other keys, each as its
        behaviour perturbs it)."""
        behaviour = self.behaviour
        delta = behaviour.delta(privatize(local.delta, self.privacy, self.key, round_), round_,
                                observed)
        record = UpdateRecord(
            device=self.address,
            round=round_,
            base_model_hash=self.global_hash,
            update_hash=tensor_hash(delta),
            samples=local.n_samples * behaviour.sample_factor,
            compute_time_ms=self._compute_time_ms(local),
        )
        payload = encode(delta)
        submissions = []
        for index, key in enumerate(self.signing_keys()):
            sent = behaviour.copy(delta, round_, index) if index else delta
            signed_record = replace(record, device=address_of(key))
            if sent is not delta:
                signed_record = replace(signed_record, update_hash=tensor_hash(sent))
            signed = SignedUpdate(signed_record, sign_update(key, signed_record, domain))
            submissions.append(UpdateSubmission(signed, payload if sent is delta else encode(sent)))
        return TrainedUpdate(submissions[0], local, tuple(submissions[1:]))

    def signing_keys(self) -> list[bytes]:
        """The keys each update is signed under: this device's, then a Sybil's copies'."""
        return [self.key, *(derived_key(f"sybil-{self.address}", i)
                            for i in range(1, self.behaviour.copies))]

    def _round_seed(self, round_: int) -> int:
        return self.seed * 1_000_003 + round_

    def _compute_time_ms(self, local: LocalUpdate) -> int:
        """The computation time to sign: measured, or modelled from the sample count."""
        t = self.training
        if t.compute_time == "measured":
            seconds = local.compute_seconds
        elif t.compute_time == "modelled":
            seconds = self._modelled_seconds(local.n_samples)
        else:
            raise ValueError(f"unknown compute_time {t.compute_time!r}: measured or modelled")
        return max(1, math.ceil(seconds * 1000))

    def _modelled_seconds(self, n_samples: int) -> float:
        """The latency model's computation time: epochs x samples x `ms_per_sample`."""
        t = self.training
        return t.epochs * n_samples * t.ms_per_sample / 1000

    @staticmethod
    def choose_miner(miners: Sequence[M], rng: random.Random) -> M:
        """A miner chosen uniformly at random (BlockFL's association, redrawn every round)."""
        return rng.choice(list(miners))

    def adopt(
        self,
        on_chain_hash: bytes,
        model: StateDict,
        block_updates: Sequence[WeightedUpdate] | None = None,
        strategy: AggregationStrategy | None = None,
        excluded: Sequence[WeightedUpdate] = (),
    ) -> None:
        """Take the new global model after checking it against the on-chain hash (and, with
        `block_updates` and `strategy`, the rule's selection over the block's updates and those
        its miner `excluded`, and the aggregate recomputed from the block's updates and this
        device's copy of the previous global model)."""
        check_downloaded_model(on_chain_hash, model)
        if block_updates is not None and strategy is not None:
            check_recomputed_model(on_chain_hash, self.global_state, block_updates, strategy,
                                   excluded)
        self.accept(on_chain_hash, model)

    def accept(self, on_chain_hash: bytes, model: StateDict) -> None:
        """Take a global model that passed the checks of `adopt` (done once for devices that
        would repeat the same check on the same inputs, as in one-process simulation)."""
        self.global_state = model
        self.global_hash = on_chain_hash


def check_downloaded_model(on_chain_hash: bytes, model: StateDict) -> None:
    """Raise `GlobalModelMismatch` unless `model` hashes to the on-chain global model hash."""
    got = tensor_hash(model)
    if got != on_chain_hash:
        raise GlobalModelMismatch(
            f"downloaded model hashes to {to_hex(got)}, chain says {to_hex(on_chain_hash)}"
        )


def check_recomputed_model(
    on_chain_hash: bytes,
    previous: StateDict,
    block_updates: Sequence[WeightedUpdate],
    strategy: AggregationStrategy,
    excluded: Sequence[WeightedUpdate] = (),
) -> None:
    """Raise `GlobalModelMismatch` unless the rule keeps exactly the block's updates out of them
    and those the block's miner `excluded`, and aggregating the block's updates onto the
    previous global model gives the on-chain global model hash (the paper's device-side check)."""
    mismatch = selection_mismatch(strategy, previous, block_updates, excluded)
    if mismatch:
        raise GlobalModelMismatch(mismatch)
    recomputed = tensor_hash(strategy.aggregate(previous, block_updates))
    if recomputed != on_chain_hash:
        raise GlobalModelMismatch(
            f"recomputed aggregate {to_hex(recomputed)} differs from the chain's"
        )
