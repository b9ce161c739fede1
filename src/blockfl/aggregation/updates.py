"""Aggregation inputs: a device's weighted update, their canonical order, applying a delta."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def apply_delta(base: StateDict, delta: StateDict) -> StateDict:
    """Return ``base + delta`` tensor by tensor (names and shapes must match)."""
    check_against_spec(delta, model_spec(base), require_finite=False)
    return {name: b + delta[name] for name, b in base.items()}
