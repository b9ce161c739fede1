"""Local training on a device: FedAvg-style SGD and the FSVRG update for linear regression.

Runs are reproducible: the data order comes from a local ``torch.Generator`` seeded with
``seed`` and all ops used are deterministic on CPU for a fixed thread count (this module does
not change torch's global thread or RNG settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from blockfl.config import TrainingConfig
from blockfl.dataset import Kind
from blockfl.models import model_for_state
from blockfl.tensors import StateDict

EVAL_BATCH = 4096


@dataclass(frozen=True)
class LocalUpdate:
    """Result of local training: ``delta`` = local model - base model, over the federated
    tensors; ``kept``: the tensors the device keeps (`Task.kept_on_device`) after training,
    never sent."""

    delta: StateDict
    n_samples: int
    compute_seconds: float
    final_loss: float
    kept: StateDict = field(default_factory=dict)


def loss_function(task: Kind) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of a task: cross-entropy (classification) or MSE (regression)."""
    if task == "classification":
        return F.cross_entropy
    if task == "regression":
        return lambda out, y: F.mse_loss(out.squeeze(-1), y)
    raise ValueError(f"unknown task {task!r}")


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    perm = torch.randperm(n, generator=generator)
    yield from perm.split(batch_size)


def _delta(model: nn.Module, base_state: StateDict) -> StateDict:
    local = model.state_dict()
    return {k: (local[k] - base_state[k]).detach().clone() for k in base_state}


def train_module(
    model_name: str,
    base_state: StateDict,
    x: torch.Tensor,
    y: torch.Tensor,
    training: TrainingConfig,
    *,
    seed: int,
    task: Kind,
) -> LocalUpdate:
    """Plain minibatch SGD for ``training.epochs`` passes over (x, y) from ``base_state``, with
    the torch module and `torch.optim.SGD` (any model); ``final_loss`` is the sample-weighted
    mean minibatch loss of the last epoch."""
    epochs, lr, batch_size = training.epochs, training.lr, training.batch_size
    if len(x) == 0 or epochs < 1:
        raise ValueError("need at least one sample and one epoch")
    model = model_for_state(model_name, tuple(x.shape[1:]), base_state)
    loss_fn = loss_function(task)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        loss_sum = 0.0
        for idx in _batches(len(x), batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
    seconds = time.perf_counter() - start
    return LocalUpdate(_delta(model, base_state), len(x), seconds, loss_sum / len(x))


def _linreg_grad(
    w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of mean((x @ w.T + b - y)**2) w.r.t. (w, b); w: (1, d), b: (1,)."""
    residual = (x @ w.T).squeeze(-1) + b - y
    return (2.0 / len(x)) * (residual @ x).unsqueeze(0), (2.0 / len(x)) * residual.sum(0, True)


def train_svrg_linear(
    base_state: StateDict,
    x: torch.Tensor,
    y: torch.Tensor,
    training: TrainingConfig,
    *,
    seed: int,
    anchor_grad: StateDict | None = None,
) -> LocalUpdate:
    """FSVRG local update for the ``linreg`` model (BlockFL paper; Konečný et al., 2016).

    With ``w0`` the base model, each minibatch B of a seeded permutation does::

        w <- w - lr * (grad_B(w) - grad_B(w0) + g0)

    where grad is that of the MSE loss and ``g0`` is ``anchor_grad`` if given (the global
    gradient at ``w0`` that devices obtain by exchanging local gradients, as in the paper),
    else the full gradient of this device's local data at ``w0``. The diagonal scaling
    matrices of FSVRG for sparse features are omitted (identity): the data here is dense.
    ``final_loss`` is the local MSE of the final model; ``training`` gives the ``epochs``, ``lr``
    and ``batch_size``.
    """
    epochs, lr, batch_size = training.epochs, training.lr, training.batch_size
    x2 = x.reshape(len(x), -1)
    if len(x2) == 0 or epochs < 1:
        raise ValueError("need at least one sample and one epoch")
    w0, b0 = base_state["out.weight"], base_state["out.bias"]
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    if anchor_grad is None:
        g0_w, g0_b = _linreg_grad(w0, b0, x2, y)
    else:
        g0_w, g0_b = anchor_grad["out.weight"], anchor_grad["out.bias"]
    w, b = w0.clone(), b0.clone()
    for _ in range(epochs):
        for idx in _batches(len(x2), batch_size, gen):
            xb, yb = x2[idx], y[idx]
            gw, gb = _linreg_grad(w, b, xb, yb)
            aw, ab = _linreg_grad(w0, b0, xb, yb)
            w -= lr * (gw - aw + g0_w)
            b -= lr * (gb - ab + g0_b)
    seconds = time.perf_counter() - start
    final_loss = float(F.mse_loss((x2 @ w.T).squeeze(-1) + b, y))
    delta = {"out.weight": w - w0, "out.bias": b - b0}
    return LocalUpdate(delta, len(x2), seconds, final_loss)


@torch.no_grad()
def evaluate(
    model_name: str, state: StateDict, x: torch.Tensor, y: torch.Tensor, task: Kind
) -> dict[str, float]:
    """Classification: ``{"accuracy", "loss"}`` (mean cross-entropy); regression: ``{"mse"}``."""
    model = model_for_state(model_name, tuple(x.shape[1:]), state)
    model.eval()
    loss_fn = loss_function(task)
    loss_sum, correct = 0.0, 0
    for xb, yb in zip(x.split(EVAL_BATCH), y.split(EVAL_BATCH), strict=True):
        out = model(xb)
        loss_sum += float(loss_fn(out, yb)) * len(xb)
        if task == "classification":
            correct += int((out.argmax(-1) == yb).sum())
    n = max(len(x), 1)
    if task == "classification":
        return {"accuracy": correct / n, "loss": loss_sum / n}
    return {"mse": loss_sum / n}
