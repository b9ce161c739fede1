"""Sample-level DP-SGD on one device with Opacus (`[privacy] mode = "dp_sgd"`).

Each local step draws a Poisson sample of the shard (every sample kept with probability
`sample_rate = 1 / ceil(n / batch_size)`), clips every sample's gradient to `max_grad_norm`
and adds Gaussian noise `noise_multiplier x max_grad_norm` to their sum (the device's
`blockfl.privacy.noise_multiplier`; Opacus's
`PrivacyEngine.make_private`); a round is `epochs x ceil(n / batch_size)` such steps
(`blockfl.privacy.dp_sgd_steps`, by which every miner charges the budget). The sampling and
the noise come from two torch generators seeded by the round's seed (`secure_mode` off), so a
run is reproducible; anyone who knows that seed could subtract the noise, so a deployment
must keep its devices' seeds secret. Trained device by device with `torch.optim.SGD`, not
stacked (the batched fast path): Opacus wraps one module per device.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from blockfl.config import PrivacyConfig, TrainingConfig
from blockfl.dataset import Dataset
from blockfl.devices.training import LocalUpdate, loss_function
from blockfl.models import model_for_state
from blockfl.privacy import dp_sgd_steps, noise_multiplier, require_accountant
from blockfl.tensors import StateDict

#: the noise generator's seed is the round's seed plus this (the sampling's is the seed)
NOISE_SEED_OFFSET = 1 << 32


def make_private(model: torch.nn.Module, data: Dataset, training: TrainingConfig,
                 privacy: PrivacyConfig, seed: int) -> tuple[Any, Any, Any, DataLoader]:
    """Opacus's (engine, module, optimizer, Poisson data loader) for DP-SGD of `model` on
    `data` (SGD at `training.lr`, `training.batch_size`), seeded by `seed`: what a task of
    its own can train with to declare `dp_sgd = True`."""
    require_accountant()
    from opacus import PrivacyEngine

    noise = noise_multiplier(privacy.for_training(training), len(data))

    loader = DataLoader(TensorDataset(data.x, data.y), batch_size=training.batch_size,
                        generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():  # Opacus warns that secure_mode is off: it is, by design
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        module, optimizer, dp_loader = engine.make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=training.lr),
            data_loader=loader, noise_multiplier=noise,
            max_grad_norm=privacy.max_grad_norm, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(seed + NOISE_SEED_OFFSET))
    steps, sample_rate = dp_sgd_steps(training.batch_size, 1, len(data))
    assert len(dp_loader) == steps and dp_loader.sample_rate == sample_rate
    return engine, module, optimizer, dp_loader


def train_dp_sgd(model_name: str, base_state: StateDict, data: Dataset,
                 training: TrainingConfig, privacy: PrivacyConfig, seed: int) -> LocalUpdate:
    """`training.epochs` passes of DP-SGD (`make_private`) over `data` from `base_state`;
    `final_loss` is the mean minibatch loss of the last pass."""
    model = model_for_state(model_name, data.input_shape, base_state)
    _, module, optimizer, loader = make_private(model, data, training, privacy, seed)
    loss_fn = loss_function(data.task)
    module.train()
    start = time.perf_counter()
    losses: list[float] = []
    for _ in range(training.epochs):
        losses = []
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(xb), yb)
            with warnings.catch_warnings():  # torch's note on hooks with inputs without grad
                warnings.simplefilter("ignore")
                loss.backward()  # an empty sample still adds its noise (and is accounted)
            optimizer.step()
            if len(xb):
                losses.append(loss.item())
    seconds = time.perf_counter() - start
    local = model.state_dict()
    delta = {k: (local[k] - base_state[k]).detach().clone() for k in base_state}
    return LocalUpdate(delta, len(data), seconds, sum(losses) / max(len(losses), 1))
