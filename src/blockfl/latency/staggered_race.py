"""The proof-of-work race of a real network, where miners do not start together.

The paper's miners all start hashing a round at once, so the winner's time is the minimum of
`N_M` exponentials and each rival is exposed to a fork for the same window after it. In a
`network up` run each miner starts when its own candidate closes (`T_wait` after the first
update *it* saw, a gossip hop apart), tens of milliseconds apart. At a high block rate the
race is over before the last miner starts, so fewer miners race, the winner's time is longer
than `1 / (N_M λ)`, and a rival that starts after the winner's nonce is exposed only from its
start. `race` evaluates that race on the starts and notice delays a network measured
(`NetworkRound.race_starts`, `NetworkRound.notice_delays`), by seeded Monte Carlo over them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Race:
    """One block rate's race: the chance a round forks, and the mean time from the first
    miner's start to the winning nonce."""

    p_fork: float
    seconds: float


def start_offsets(race_starts: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Per measured round, each miner's start after the round's first (inf: it did not race),
    from `NetworkRound.race_starts` (seconds before the winner's nonce)."""
    rows = []
    for starts in race_starts:
        first = max(s for s in starts if s is not None)
        rows.append([math.inf if s is None else first - s for s in starts])
    return np.array(rows, dtype=float)


def race(lam: float, offsets: np.ndarray, delays: Sequence[float], draws: int = 20_000,
         seed: int = 0) -> Race:
    """The race at `lam` blocks/s per miner: a round's miners start at one measured round's
    `offsets` (`start_offsets`) and hash exponentially; the first nonce wins, and each rival
    then hashes on for one of the measured notice `delays` (seconds from the winner's nonce,
    drawn independently), from its own start if that is later. The fork chance is the exact
    chance that some rival finds a nonce in its window, averaged over the draws."""
    rng = np.random.default_rng(seed)
    o = offsets[rng.integers(0, len(offsets), draws)]
    finish = o + rng.exponential(1 / lam, o.shape)
    winner, found = finish.argmin(axis=1), finish.min(axis=1)
    pooled = np.asarray(delays, dtype=float)
    unforked = np.ones(draws)
    for j in range(o.shape[1]):
        delay = pooled[rng.integers(0, len(pooled), draws)]
        window = np.maximum(0.0, found + delay - np.maximum(found, o[:, j]))
        unforked *= np.where(winner == j, 1.0, np.exp(-lam * window))
    return Race(float(1 - unforked.mean()), float(found.mean()))
