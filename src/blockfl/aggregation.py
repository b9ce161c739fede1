"""Aggregation of device updates into a new global model.

Strategies implement ``AggregationStrategy`` and are registered in ``STRATEGIES`` by name, so
robust rules (median, trimmed mean, ...) can be added beside ``FedAvg``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from blockfl.models import model_spec
from blockfl.tensors import StateDict, check_against_spec

# n * x is exact in float64 for any float32 x when n < 2**29 (24 + 29 significand bits <= 53).
MAX_SAMPLES = 2**29 - 1


@dataclass(frozen=True)
class WeightedUpdate:
    """One device's update: ``delta`` = local model - base model, trained on ``n_samples``."""

    device: str
    delta: StateDict
    n_samples: int


class AggregationStrategy(Protocol):
    """Combines the base model and device updates into the next global model."""

    name: ClassVar[str]

    def aggregate(self, base: StateDict, updates: Sequence[WeightedUpdate]) -> StateDict:
        """Return the new global state; must be deterministic in the set of updates."""
        ...


def ordered_updates(base: StateDict, updates: Sequence[WeightedUpdate]) -> list[WeightedUpdate]:
    """Validate updates against ``base`` and sort them by lowercase device address.

    Raises ``ValueError`` for no updates, duplicate devices or sample counts outside
    ``[1, MAX_SAMPLES]``, and ``TensorFormatError`` for deltas that do not match ``base``
    (finiteness is not checked here; miners verify it before aggregation).
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    ordered = sorted(updates, key=lambda u: u.device.lower())
    devices = [u.device.lower() for u in ordered]
    if len(set(devices)) != len(devices):
        raise ValueError("duplicate device address among updates")
    spec = model_spec(base)
    for u in ordered:
        if not (isinstance(u.n_samples, int) and 1 <= u.n_samples <= MAX_SAMPLES):
            raise ValueError(f"{u.device}: n_samples must be an int in [1, {MAX_SAMPLES}]")
        check_against_spec(u.delta, spec, require_finite=False)
    return ordered


class FedAvg:
    """FedAvg: ``global = base + sum_i(n_i * delta_i) / sum_i(n_i)``.

    Determinism: updates are sorted by lowercase device address (duplicates rejected), so the
    input order does not matter. Per element, the float64 accumulator starts at 0 and adds
    ``n_i * delta_i`` in that order; the product of an integer ``n_i < 2**29`` and a float32
    value is exact in float64, so each step is one correctly rounded IEEE-754 addition whether
    or not the CPU fuses multiply and add. Then ``acc / N`` and ``base + acc / N`` are
    correctly rounded float64 operations and the result is rounded once to the base dtype.
    All operations are element-wise (no reductions across elements), so the bits do not depend
    on the number of threads, the SIMD width, or the machine: every miner gets the same hash.
    """

    name: ClassVar[str] = "fedavg"

    def aggregate(self, base: StateDict, updates: Sequence[WeightedUpdate]) -> StateDict:
        """Weighted average of the deltas by sample count, applied to ``base``."""
        ordered = ordered_updates(base, updates)
        total = sum(u.n_samples for u in ordered)
        result: StateDict = {}
        for name, b in base.items():
            acc = torch.zeros(b.shape, dtype=torch.float64)
            for u in ordered:
                acc.add_(u.delta[name], alpha=u.n_samples)
            acc.div_(total).add_(b)
            result[name] = acc.to(b.dtype)
        return result


STRATEGIES: Mapping[str, type[AggregationStrategy]] = {FedAvg.name: FedAvg}


def apply_delta(base: StateDict, delta: StateDict) -> StateDict:
    """Return ``base + delta`` tensor by tensor (names and shapes must match)."""
    check_against_spec(delta, model_spec(base), require_finite=False)
    return {name: b + delta[name] for name, b in base.items()}
