"""Device behaviours: an honest device, and the attacks a robust network must hold against.

A behaviour changes what a real device does, never how the network treats it: it may change
the device's data before training (label flipping), the update after training (sign flip,
boosting, noise, free-riding), the sample count it signs (inflation), or sign the same update
under several keys (Sybil copies). The update is then hashed, signed and uploaded as usual.

| name | what the device does |
| --- | --- |
| `honest` | trains and reports truthfully |
| `sign_flip` | sends the negated update |
| `scale_x10` | model replacement: trains on flipped labels, boosts the update x`scale` (10) |
| `scale_nd` | the same, boosted x N_D (the number of devices): the average becomes its model |
| `gaussian_noise` | sends Gaussian noise (std `noise_std` per value) instead of an update |
| `label_flip` | trains on flipped labels (class c becomes C-1-c; regression targets negated) |
| `free_rider` | trains nothing, sends the global model back unchanged (a zero update) |
| `free_rider_noise` | a zero update plus tiny noise, so copies are not refused as replays |
| `sample_inflation` | claims `inflation` x its samples with its real computation time |
| `sybil` | sends its update under `copies` keys (its own and derived ones) |
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from blockfl.config import AttackConfig
from blockfl.devices.data import Dataset
from blockfl.tensors import StateDict

DeltaFn = Callable[[StateDict, int], StateDict]  # (delta, round) -> what the device sends


def _same(delta: StateDict, round_: int) -> StateDict:
    return delta


def _scaled(factor: float) -> DeltaFn:
    return lambda delta, round_: {k: v * factor for k, v in delta.items()}


def _noise(std: float, seed: int, keep: float) -> DeltaFn:
    def send(delta: StateDict, round_: int) -> StateDict:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + round_)
        return {k: delta[k] * keep + torch.randn(delta[k].shape, generator=gen,
                                                 dtype=delta[k].dtype) * std
                for k in sorted(delta)}  # drawn in name order, whatever the dict's order
    return send


def flip_labels(data: Dataset) -> Dataset:
    """The data with flipped targets: class c becomes C-1-c; regression targets negated."""
    y = (data.n_outputs - 1 - data.y) if data.task == "classification" else -data.y
    return Dataset(data.x, y, data.input_shape, data.n_outputs, data.task)


@dataclass(frozen=True)
class Behaviour:
    """How a device departs from the protocol (the identity for `honest`)."""

    name: str = "honest"
    data: Callable[[Dataset], Dataset] = field(default=lambda d: d)
    delta: DeltaFn = _same
    sample_factor: int = 1  # the signed sample count is this times the real one
    copies: int = 1  # keys the same update is sent under
    trains: bool = True  # False: a free-rider, whose training costs no time

    @property
    def honest(self) -> bool:
        """Whether this is the honest behaviour."""
        return self.name == "honest"


def _builders(attack: AttackConfig, devices: int, seed: int) -> dict[str, Callable[[], Behaviour]]:
    boost = attack.scale
    return {
        "honest": lambda: Behaviour(),
        "sign_flip": lambda: Behaviour("sign_flip", delta=_scaled(-1.0)),
        "scale_x10": lambda: Behaviour("scale_x10", flip_labels, _scaled(boost)),
        "scale_nd": lambda: Behaviour("scale_nd", flip_labels, _scaled(float(devices))),
        "gaussian_noise": lambda: Behaviour("gaussian_noise",
                                            delta=_noise(attack.noise_std, seed, 0.0)),
        "label_flip": lambda: Behaviour("label_flip", flip_labels),
        "free_rider": lambda: Behaviour("free_rider", delta=_scaled(0.0), trains=False),
        "free_rider_noise": lambda: Behaviour("free_rider_noise", delta=_noise(1e-4, seed, 0.0),
                                              trains=False),
        "sample_inflation": lambda: Behaviour("sample_inflation",
                                              sample_factor=attack.inflation),
        "sybil": lambda: Behaviour("sybil", copies=attack.copies),
    }


BEHAVIOURS = tuple(_builders(AttackConfig(), 1, 0))


def behaviour(name: str, attack: AttackConfig, devices: int, seed: int = 0) -> Behaviour:
    """The named behaviour with the attack's parameters (`devices`: N_D, for `scale_nd`)."""
    builders = _builders(attack, devices, seed)
    if name not in builders:
        raise ValueError(f"unknown behaviour {name!r}: {', '.join(builders)}")
    return builders[name]()


def attackers(devices: int, fraction: float, seed: int) -> list[int]:
    """Which device indices attack: round(fraction x devices) of them, drawn with the seed."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"attacker fraction {fraction} not in [0, 1]")
    return sorted(random.Random(seed * 31 + 7).sample(range(devices), round(fraction * devices)))
