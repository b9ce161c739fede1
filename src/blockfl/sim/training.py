"""The devices' local training in `simulate`: in this process, or on Ray workers.

A trainer returns every device's local update of a round, unsigned; each device then hashes,
signs and encodes its own (`Device.submission`). Both engines compute the updates with
`local_updates`, so they give the same bits for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from blockfl.devices.device import Device
from blockfl.devices.training import LocalUpdate
from blockfl.task import local_updates as task_updates


class Trainer(Protocol):
    """Runs the devices' local training of a round."""

    def local_updates(self, round_: int) -> list[LocalUpdate]:
        """Every device's update for `round_`, in the order of the simulation's devices."""
        ...

    def close(self) -> None:
        """Release what the trainer holds (workers)."""
        ...


def local_updates(devices: Sequence[Device], round_: int, batched: bool) -> list[LocalUpdate]:
    """The devices' updates for `round_`, in their order. Batched, devices that hold the same
    global model are trained together (`blockfl.task.local_updates`: the task's fast path when
    it has one, the same deltas as one by one); otherwise each trains alone
    (`Device.local_update`). A device's behaviour (an attack) applies to its update when it
    signs it (`Device.submission`)."""
    if not batched or not devices:
        return [d.local_update(round_) for d in devices]
    out: list[LocalUpdate | None] = [None] * len(devices)
    by_base: dict[bytes, list[int]] = {}
    for i, device in enumerate(devices):
        if device.behaviour.trains:
            by_base.setdefault(device.global_hash, []).append(i)
        else:  # a free-rider: nothing to train
            out[i] = device.local_update(round_)
    for members in by_base.values():
        first = devices[members[0]]
        jobs = [devices[i].training_job(round_) for i in members]
        updates = task_updates(first.task, first.global_state, jobs,
                               first.training.at_round(round_))
        for i, update in zip(members, updates, strict=True):
            out[i] = devices[i].keep(update)
    return out  # type: ignore[return-value]


class LocalTrainer:
    """Training in this process."""

    def __init__(self, devices: Sequence[Device], batched: bool) -> None:
        self.devices = devices
        self.batched = batched

    def local_updates(self, round_: int) -> list[LocalUpdate]:
        """Every device's update for `round_`."""
        return local_updates(self.devices, round_, self.batched)

    def close(self) -> None:
        """Nothing to release."""
