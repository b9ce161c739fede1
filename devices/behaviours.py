"""Device behaviours: an honest device, and the attacks a robust network must hold against.

A behaviour changes what a real device does, never how the network treats it: it may change
the device's data before training (label flipping), the update after training (sign flip,
boosting, noise, free-riding), the sample count it signs (inflation), or sign the same update
under several keys (Sybil copies). The update is then hashed, signed and uploaded as usual.

The attacks from the literature (`alie`, `ipm`, `min_max`, `adaptive`, `collude`) *observe*:
they are built from the round's other updates as a miner holds them (verified and gossiped;
`Observed`), read before the attacker signs. An attacker that observes nothing (no update yet
at its miner) takes its own honestly trained update as the estimate of the honest ones.

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
| `sybil_noise` | the same, each copy plus noise of std `copy_noise`: no copy is a replay |
| `alie` | "a little is enough" (Baruch et al.): mean + z x std of the honest updates |
| `ipm` | inner-product manipulation (Xie et al.): -`ipm_epsilon` x the honest mean |
| `min_max` | min-max (Shejwalkar, Houmansadr): as far from the mean as honest spread allows |
| `adaptive` | -s x its update, s the largest up to `adaptive_max_scale` the rule keeps |
| `collude` | the negated honest mean under `copies` keys, each copy perturbed (`copy_noise`) |

`alie`, `ipm`, `min_max` and `collude` add their own noise of std `copy_noise` to what they
send, so that colluders sending the same attack are not refused as replays of each other.

The definitions, exactly, are in `blockfl.devices.observing_attacks`. ALIE's z is `alie_z`, or
(0) the paper's z_max for N_D devices and the attacker count.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from blockfl.config import AttackConfig
from blockfl.devices import observing_attacks as seen
from blockfl.devices.data import Dataset
from blockfl.devices.observing_attacks import Observed
from blockfl.tensors import StateDict

# (delta, round, what the device observed) -> what the device sends
DeltaFn = Callable[[StateDict, int, Observed | None], StateDict]
CopyFn = Callable[[StateDict, int, int], StateDict]  # (delta, round, copy index) -> the copy


def _same(delta: StateDict, round_: int, observed: Observed | None) -> StateDict:
    return delta


def _scaled(factor: float) -> DeltaFn:
    return lambda delta, round_, observed: {k: v * factor for k, v in delta.items()}


def _gaussian(like: StateDict, std: float, seed: int) -> StateDict:
    """Gaussian noise shaped like `like`, drawn in name order (whatever the dict's order)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(like[k].shape, generator=gen, dtype=like[k].dtype) * std
            for k in sorted(like)}


def _noise(std: float, seed: int, keep: float) -> DeltaFn:
    def send(delta: StateDict, round_: int, observed: Observed | None) -> StateDict:
        noise = _gaussian(delta, std, seed * 1_000_003 + round_)
        return {k: delta[k] * keep + noise[k] for k in noise}
    return send


def _observing(attack: Callable[[StateDict, Observed], StateDict], std: float = 0.0,
               seed: int = 0) -> DeltaFn:
    """A `DeltaFn` of an attack on what the device observed (none: its own update alone), plus
    its own Gaussian noise of std `std`, so that colluders sending the same attack are not
    refused as replays of each other."""
    def send(delta: StateDict, round_: int, observed: Observed | None) -> StateDict:
        sent = attack(delta, observed or Observed(delta, (), None, "", 1))
        return _noise(std, seed, 1.0)(sent, round_, None) if std else sent
    return send


def _perturbed_copy(std: float, seed: int) -> CopyFn:
    def copy(delta: StateDict, round_: int, index: int) -> StateDict:
        noise = _gaussian(delta, std, (seed * 1_000_003 + round_) * 1_009 + index)
        return {k: delta[k] + noise[k] for k in noise}
    return copy


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
    copy: CopyFn = field(default=lambda delta, round_, index: delta)  # what copy `index` sends
    trains: bool = True  # False: a free-rider, whose training costs no time
    observes: bool = False  # True: built from the round's other updates (`Observed`)
    own_update_honest: bool = False  # True: only the copies' keys are unearned (a Sybil)

    @property
    def honest(self) -> bool:
        """Whether this is the honest behaviour."""
        return self.name == "honest"


def _builders(attack: AttackConfig, devices: int, seed: int) -> dict[str, Callable[[], Behaviour]]:
    boost = attack.scale
    bad = max(1, round(attack.attackers * devices))
    z = attack.alie_z or seen.alie_z(devices, bad)
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
        "sybil": lambda: Behaviour("sybil", copies=attack.copies, own_update_honest=True),
        "sybil_noise": lambda: Behaviour("sybil_noise", copies=attack.copies,
                                         own_update_honest=True,
                                         copy=_perturbed_copy(attack.copy_noise, seed)),
        "alie": lambda: Behaviour("alie", observes=True, delta=_observing(
            lambda d, o: seen.alie(o.others(d), z), attack.copy_noise, seed)),
        "ipm": lambda: Behaviour("ipm", observes=True, delta=_observing(
            lambda d, o: seen.ipm(o.others(d), attack.ipm_epsilon), attack.copy_noise, seed)),
        "min_max": lambda: Behaviour("min_max", observes=True, delta=_observing(
            lambda d, o: seen.min_max(o.others(d)), attack.copy_noise, seed)),
        "adaptive": lambda: Behaviour("adaptive", observes=True, delta=_observing(
            lambda d, o: seen.adaptive(d, o, attack.adaptive_max_scale))),
        "collude": lambda: Behaviour("collude", observes=True, copies=attack.copies,
                                     copy=_perturbed_copy(attack.copy_noise, seed),
                                     delta=_observing(lambda d, o: seen.ipm(o.others(d), 1.0),
                                                      attack.copy_noise, seed)),
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
