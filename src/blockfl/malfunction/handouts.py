"""What each device trains from in a round of each system: the malfunction draws and the three
systems' rules (vanilla FL, BlockFL without and with verification against the chain)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from blockfl.malfunction.corruption import corrupt
from blockfl.tensors import StateDict, tensor_hash

SYSTEMS: tuple[str, ...] = ("vanilla", "blockfl-unverified", "blockfl")
"""The compared systems, in plotting order."""

ROUND_STREAM = 0
"""Random stream of the per-round malfunction and association draws."""


@dataclass(frozen=True)
class Setting:
    """What the handouts need to know of the experiment."""

    devices: int
    miners: int
    seed: int
    corruption: str


@dataclass(frozen=True)
class Draws:
    """The random draws of one round that every system and every ``p`` shares."""

    server: float
    miners: np.ndarray
    association: np.ndarray
    rng: np.random.Generator  # further draws: retry slots, re-download miners


def draws(setting: Setting, round_: int) -> Draws:
    """The round's draws, from ``(seed, round)`` only: runs at different ``p`` are coupled."""
    rng = np.random.default_rng([setting.seed, round_, ROUND_STREAM])
    return Draws(rng.random(), rng.random(setting.miners),
                 rng.integers(setting.miners, size=setting.devices), rng)


@dataclass(frozen=True)
class Handout:
    """What each device trains from in one round, and the round's malfunction statistics."""

    bases: list[StateDict]
    aggregate_onto: StateDict
    affected: int
    trained_on_corrupted: int
    malfunctions: int
    redownloads: int = 0
    stalled_slots: int = 0


def vanilla(state: StateDict, d: Draws, p: float, s: Setting, r: int) -> Handout:
    """One server: when it malfunctions every device gets (and the aggregate lands on) the
    corrupted model."""
    broken = d.server < p
    handed = corrupt(state, s.corruption, s.seed, r, s.miners) if broken else state
    n = s.devices if broken else 0
    return Handout([handed] * s.devices, handed, n, n, int(broken))


def _miner_models(state: StateDict, broken: np.ndarray, s: Setting, r: int) -> list[StateDict]:
    return [corrupt(state, s.corruption, s.seed, r, m) if bad else state
            for m, bad in enumerate(broken)]


def unverified(state: StateDict, d: Draws, p: float, s: Setting, r: int) -> Handout:
    """Each miner malfunctions on its own; only its devices train on its corrupted model, and
    the block's aggregate is applied to the true model."""
    broken = d.miners < p
    models = _miner_models(state, broken, s, r)
    n = int(broken[d.association].sum())
    return Handout([models[m] for m in d.association], state, n, n, int(broken.sum()))


def verified(state: StateDict, d: Draws, p: float, s: Setting, r: int) -> Handout:
    """As :func:`unverified`, but a device whose download does not match the on-chain hash
    downloads again from a healthy miner; when every miner malfunctions, the devices wait a
    round (a stalled slot) and try again."""
    on_chain = tensor_hash(state)
    broken = d.miners < p
    stalls = 0
    while broken.all():  # nobody can serve the model: wait a round, then try again
        stalls += 1
        broken = d.rng.random(s.miners) < p
    models = _miner_models(state, broken, s, r)
    healthy = np.flatnonzero(~broken)
    bases, redownloads = [], 0
    for m in d.association:
        received = models[m]
        if tensor_hash(received) != on_chain:
            redownloads += 1
            received = models[int(d.rng.choice(healthy))]
            if tensor_hash(received) != on_chain:
                raise AssertionError("a healthy miner served a model that fails verification")
        bases.append(received)
    return Handout(bases, state, redownloads, 0, int(broken.sum()), redownloads, stalls)


HANDOUTS: dict[str, Callable[[StateDict, Draws, float, Setting, int], Handout]] = {
    "vanilla": vanilla,
    "blockfl-unverified": unverified,
    "blockfl": verified,
}
