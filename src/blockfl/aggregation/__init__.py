"""Aggregation of device updates into the next global model: the rules and their selection.

`AggregationRule` (configured by `[aggregation]`) selects a block's updates and aggregates
them: a miner selects while it builds its candidate block, and `selection_mismatch` is the one
check that peers, attesting miners and devices run on a block. The rules and their
determinism are described in `blockfl.aggregation.rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from blockfl.aggregation.rules import (
    ROBUST_FILTER,
    AggregationRule,
    Exclusion,
    FedAvg,
    Selection,
)
from blockfl.aggregation.updates import MAX_SAMPLES, WeightedUpdate, apply_delta, ordered_updates
from blockfl.tensors import StateDict

__all__ = [
    "MAX_SAMPLES",
    "ROBUST_FILTER",
    "AggregationRule",
    "AggregationStrategy",
    "Exclusion",
    "FedAvg",
    "Selection",
    "WeightedUpdate",
    "apply_delta",
    "ordered_updates",
    "selection_mismatch",
]


class AggregationStrategy(Protocol):
    """What miners and devices need of a rule (`AggregationRule` implements it)."""

    @property
    def name(self) -> str:
        """The rule's name."""
        ...

    def select(self, base: StateDict, updates: Sequence[WeightedUpdate]) -> Selection:
        """The updates a block keeps and those the rule excludes."""
        ...

    def aggregate(self, base: StateDict, updates: Sequence[WeightedUpdate]) -> StateDict:
        """The next global state from a block's updates; deterministic in the set of updates."""
        ...


def selection_mismatch(
    strategy: AggregationStrategy, base: StateDict, block_updates: Sequence[WeightedUpdate],
    excluded: Sequence[WeightedUpdate] = (),
) -> str | None:
    """Why a block does not keep exactly what the rule keeps of its updates and those its miner
    `excluded`, or None when it does (`ValueError` when the rule cannot select from them)."""
    kept, _ = strategy.select(base, [*block_updates, *excluded])
    if sorted(u.device.lower() for u in kept) != sorted(u.device.lower() for u in block_updates):
        return f"the block keeps other updates than rule {strategy.name!r} selects"
    return None
