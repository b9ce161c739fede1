"""`simulate --engine ray`: the devices' local training on Ray actors, on one machine or many.

Each actor rebuilds the experiment from the config (data, shards and device seeds are
deterministic), so only the round's global model goes out and each device's update comes back,
both as safetensors bytes; the devices in the driver then hash and sign their own updates.
Training is `local_updates`, as on the local engine, and a device's update does not depend on
which devices it is stacked with: both engines give the same bits for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from blockfl.config import Config
from blockfl.devices.device import Device
from blockfl.devices.training import LocalUpdate
from blockfl.tensors import decode, encode


class DeviceWorker:
    """A Ray actor holding replicas of the devices (their shards), which it trains on request."""

    def __init__(self, config: Config) -> None:
        import torch

        from blockfl.sim.setup import build_devices, build_experiment

        torch.set_num_threads(1)  # one actor per CPU
        self.devices = build_devices(config, build_experiment(config))
        self.batched = config.run.batch_training

    def ready(self) -> int:
        """How many devices this worker holds: an answer means it is built."""
        return len(self.devices)

    def train(self, indices: list[int], round_: int, model: bytes) -> list[tuple]:
        """The updates of devices `indices` for `round_` from the global model `model`:
        (safetensors delta, samples, seconds, loss) each."""
        from blockfl.sim.training import local_updates
        from blockfl.tensors import tensor_hash

        state = decode(model, max_bytes=len(model))
        model_hash = tensor_hash(state)
        devices = [self.devices[i] for i in indices]
        for device in devices:
            device.accept(model_hash, state)
        return [(encode(u.delta), u.n_samples, u.compute_seconds, u.final_loss)
                for u in local_updates(devices, round_, self.batched)]


class RayTrainer:
    """Training spread over one actor per CPU of a Ray cluster (a local one by default)."""

    def __init__(self, config: Config, devices: Sequence[Device]) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("--engine ray needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
        self.devices = devices
        self.started = not ray.is_initialized()
        if self.started:
            connect(config.run.ray_address)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1)(DeviceWorker)
        self.workers = [actor.remote(config) for _ in range(min(cpus, len(devices)))]
        # the actors' start-up (imports, data, devices) is set-up, not round 1's training
        ray.get([w.ready.remote() for w in self.workers])
        share = -(-len(devices) // len(self.workers))
        self.shares = [list(range(i, min(i + share, len(devices))))
                       for i in range(0, len(devices), share)]

    def local_updates(self, round_: int) -> list[LocalUpdate]:
        """Every device's update for `round_`, trained on the actors."""
        states = {d.global_hash: d.global_state for d in self.devices}
        if len(states) != 1:
            raise RuntimeError("the devices of a simulation hold one global model")
        model = self.ray.put(encode(next(iter(states.values()))))
        pending = [w.train.remote(share, round_, model)
                   for w, share in zip(self.workers, self.shares, strict=False)]
        out = []
        for results in self.ray.get(pending):
            for payload, samples, seconds, loss in results:
                out.append(LocalUpdate(decode(payload, max_bytes=len(payload)), samples,
                                       seconds, loss))
        return out

    def close(self) -> None:
        """Stop the actors, and Ray itself if this trainer started it."""
        for worker in self.workers:
            self.ray.kill(worker)
        if self.started:
            self.ray.shutdown()


def connect(address: str) -> None:
    """Start a local Ray cluster (no `address`) or join the one at `address`.

    `ray start --head` turns token authentication on whenever this machine has a Ray token
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which any local Ray run creates),
    and Ray's driver then uses the token only when told to (RAY_AUTH_MODE=token) or for the
    address "auto". For an explicit address this does what Ray does for "auto": the token, if
    there is one, is sent (a cluster without authentication accepts it too)."""
    import ray

    if address and address != "auto":
        from ray._private.authentication.authentication_token_setup import (  # ray==2.60.0
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        raise ConnectionError(
            f"{exc}: is the cluster up, and if `ray start --head` enabled token authentication, "
            "is its token (`ray get-auth-token` on the head) in ~/.ray/auth_token or "
            "RAY_AUTH_TOKEN here?") from None
