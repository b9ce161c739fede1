"""The proof-of-work race between miners, run in one process with a virtual clock.

Every miner searches nonces for its own header (its name is in the header) at the same hash
rate. Searching round-robin in chunks, the first miner to meet the target wins; its block
reaches the others after the propagation delay, so any miner that finds its own nonce before
that moment also commits a block for the round: a fork. Times are attempts / hash rate, so the
race is the same on any machine and for any seed, whatever the wall-clock speed of hashing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blockfl.chain.blocks import BlockHeader, PowSolution, solve_pow


@dataclass(frozen=True)
class Finish:
    """A miner that found a nonce, and when (seconds of virtual time)."""

    miner: int
    solution: PowSolution
    time: float


def race(
    headers: Sequence[BlockHeader | None],
    target: int,
    hash_rate: float,
    propagation: float,
    chunk: int = 256,
) -> list[Finish]:
    """Miners (indexes into `headers`; None = not mining) that finish before the winner's
    block reaches them, ordered by finish time; the first is the winner."""
    prefixes = {i: h for i, h in enumerate(headers) if h is not None}
    if not prefixes:
        return []
    found: dict[int, PowSolution] = {}
    searched = dict.fromkeys(prefixes, 0)
    limit: int | None = None  # attempts after which a miner has heard of the winner's block
    while True:
        active = [i for i in prefixes if i not in found and (limit is None or searched[i] < limit)]
        if not active:
            break
        for i in active:
            budget = chunk if limit is None else min(chunk, limit - searched[i])
            solution = solve_pow(prefixes[i], target, start_nonce=searched[i], max_attempts=budget)
            if solution is not None:
                found[i] = PowSolution(solution.nonce, solution.block_hash, solution.nonce + 1)
            searched[i] += budget
        if found and limit is None:
            first = min(s.attempts for s in found.values())
            limit = first + int(propagation * hash_rate)
    finishes = [Finish(i, s, s.attempts / hash_rate) for i, s in found.items()]
    if limit is not None:
        finishes = [f for f in finishes if f.solution.attempts <= limit]
    return sorted(finishes, key=lambda f: (f.solution.attempts, f.miner))
