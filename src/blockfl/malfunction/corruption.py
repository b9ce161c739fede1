"""How a malfunctioning server or miner corrupts the global model it hands out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from blockfl.tensors import StateDict

CORRUPTION_STREAM = 2
"""Random stream of the corruption draws (see :func:`entropy`)."""


def entropy(*key: int) -> int:
    """A 32-bit seed derived from ``key`` (seed, round, stream, ...) by ``SeedSequence``."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _noise(state: StateDict, gen: torch.Generator) -> StateDict:
    """Every tensor replaced by N(0, rms(tensor)^2) noise (N(0, 1) for an all-zero tensor)."""
    out = {}
    for name, t in state.items():
        rms = float(t.double().square().mean().sqrt()) or 1.0
        out[name] = torch.randn(t.shape, generator=gen, dtype=t.dtype) * rms
    return out


def _sign(state: StateDict, gen: torch.Generator) -> StateDict:
    """Every tensor negated (deterministic; ``gen`` is unused)."""
    return {name: -t for name, t in state.items()}


CORRUPTIONS: dict[str, Callable[[StateDict, torch.Generator], StateDict]] = {
    "noise": _noise,
    "sign": _sign,
}


def corrupt(state: StateDict, kind: str, seed: int, round_: int, source: int) -> StateDict:
    """The model as handed out by a malfunctioning server/miner ``source`` in ``round_``."""
    gen = torch.Generator().manual_seed(entropy(seed, round_, CORRUPTION_STREAM, source))
    return CORRUPTIONS[kind](state, gen)
