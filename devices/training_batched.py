"""Local SGD of many devices at once, each device's result independent of the others'.

Each device trains on its own shard with its own seeded data order, from the same base model.
Devices with the same number of samples share a batch schedule (the sizes of their minibatches),
so their parameters are stacked and every SGD step runs for all of them in a few tensor calls.

The forward and backward passes of the linear/ReLU models (`logreg`, `linreg`, `mlp`, `mlp2`)
are written out with element-wise products summed over the contracted dimension, never with
matrix-multiply kernels (`mm`, `bmm` and `vmap` pick kernels, and so summation orders, by the
shapes of the whole stack) nor with fused multiply-adds: so a device's update has the same
bits whether it trains alone or stacked with any number of others, on the local engine or a
Ray worker, and `train_local` trains a device alone through this same code. Other models
(`cnn`) train device by device with `torch.optim` (`train_module`).

`blockfl.devices.builtin_task` trains the built-in models with SGD through these functions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from blockfl.config import TrainingConfig
from blockfl.dataset import Dataset, Kind
from blockfl.devices.training import LocalUpdate, train_module
from blockfl.task import TrainingJob
from blockfl.tensors import StateDict

#: models made of linear layers with ReLU between them (and a flattened input)
VECTORIZED_MODELS = frozenset({"logreg", "linreg", "mlp", "mlp2"})
#: the most devices stacked in one call (bounds the memory of the broadcast products)
MAX_STACK = 256
#: class scores are padded to a multiple of this many lanes before `exp`, so every device's
#: rows start and end on a vector boundary (the tail of a vectorized loop is computed by a
#: scalar `exp` that may differ in the last bit)
_LANES = 64


def train_local(model_name: str, base_state: StateDict, data: Dataset, training: TrainingConfig,
                seed: int) -> LocalUpdate:
    """Plain minibatch SGD for ``training.epochs`` passes over `data`, starting from
    ``base_state`` (``training``: its ``epochs``, ``lr`` and ``batch_size``).

    Linear/ReLU models train through `train_many` (the same bits as when many devices train
    together), others through `train_module`. ``final_loss`` is the sample-weighted mean
    minibatch loss of the last epoch.
    """
    return train_many(model_name, base_state, [TrainingJob(data, seed)], training,
                      task=data.task)[0]


def train_many(
    model_name: str,
    base_state: StateDict,
    jobs: Sequence[TrainingJob],
    training: TrainingConfig,
    *,
    task: Kind,
) -> list[LocalUpdate]:
    """Minibatch SGD (`training`'s epochs, lr and batch size) for every job from
    `base_state`; results in the order of `jobs`."""
    if model_name not in VECTORIZED_MODELS:
        return [train_module(model_name, base_state, j.data.x, j.data.y, training, seed=j.seed,
                             task=task) for j in jobs]
    by_size: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        by_size.setdefault(len(job.data), []).append(i)
    results: list[LocalUpdate | None] = [None] * len(jobs)
    for members in by_size.values():
        for start in range(0, len(members), MAX_STACK):
            chunk = members[start:start + MAX_STACK]
            updates = _train_stack(base_state, [jobs[i] for i in chunk], training, task)
            for i, update in zip(chunk, updates, strict=True):
                results[i] = update
    return results  # type: ignore[return-value]


def _train_stack(
    base_state: StateDict,
    jobs: Sequence[TrainingJob],
    training: TrainingConfig,
    task: Kind,
) -> list[LocalUpdate]:
    """Train devices with equal sample counts together: one step per minibatch for all."""
    epochs, lr, batch_size = training.epochs, training.lr, training.batch_size
    n, count = len(jobs[0].data), len(jobs)
    if n == 0 or epochs < 1 or batch_size < 1:
        raise ValueError("need at least one sample, one epoch and a batch size >= 1")
    xs = torch.stack([j.data.x.reshape(n, -1) for j in jobs])
    ys = torch.stack([j.data.y for j in jobs])
    names = _layers(base_state)
    params = {k: v.unsqueeze(0).expand(count, *v.shape).contiguous()
              for k, v in base_state.items()}
    generators = [torch.Generator().manual_seed(j.seed) for j in jobs]
    rows = torch.arange(count).unsqueeze(1)
    start = time.perf_counter()
    for _ in range(epochs):
        # the same draws as training alone: one permutation per device and epoch
        order = torch.stack([torch.randperm(n, generator=g) for g in generators])
        loss_sums = torch.zeros(count, dtype=torch.float64)
        for idx in order.split(batch_size, dim=1):
            grads, losses = _gradients(params, names, xs[rows, idx], ys[rows, idx], task)
            for key, grad in grads.items():
                params[key] = params[key] - grad * lr  # two correctly rounded operations
            loss_sums += losses.double() * idx.shape[1]
    seconds = (time.perf_counter() - start) / count  # each device's share of the wall time
    return [
        LocalUpdate({k: params[k][i] - base_state[k] for k in base_state}, n, seconds,
                    float(loss_sums[i]) / n)
        for i in range(count)
    ]


def _layers(state: StateDict) -> list[str]:
    """The linear layers in forward order (`features.1`, `features.3`, ..., `out`), whatever
    the order of the state's keys (a decoded model's is not the module's)."""
    names = [k.removesuffix(".weight") for k in state if k.endswith(".weight")]
    return sorted(names, key=lambda n: (n == "out", int(n.rsplit(".", 1)[-1]) if n != "out" else 0))


def _contract(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(G, M, K) and (G, N, K) -> (G, M, N), the sum over k of a[g, m, k] * b[g, n, k]: the
    products laid out with k first, summed over it element by element in order of k."""
    return (a.permute(2, 0, 1).unsqueeze(3) * b.permute(2, 0, 1).unsqueeze(2)).sum(0)


def _gradients(
    params: StateDict, names: list[str], x: torch.Tensor, y: torch.Tensor, task: Kind
) -> tuple[StateDict, torch.Tensor]:
    """Each device's gradient of its mean minibatch loss, and the loss, shape (G,)."""
    inputs, pre = [], []
    h = x
    for i, name in enumerate(names):
        inputs.append(h)
        z = _contract(h, params[f"{name}.weight"]) + params[f"{name}.bias"].unsqueeze(1)
        pre.append(z)
        h = z.clamp_min(0) if i < len(names) - 1 else z
    dz, loss = _loss_gradient(h, y, task)
    grads: StateDict = {}
    for i in reversed(range(len(names))):
        name = names[i]
        dz_t = dz.transpose(1, 2)  # (G, O, B)
        grads[f"{name}.weight"] = _contract(dz_t, inputs[i].transpose(1, 2))
        grads[f"{name}.bias"] = dz.sum(1)
        if i > 0:
            dz = _contract(dz, params[f"{name}.weight"].transpose(1, 2)) * (pre[i - 1] > 0)
    return grads, loss


def _loss_gradient(out: torch.Tensor, y: torch.Tensor, task: Kind) -> tuple[torch.Tensor, ...]:
    """d(mean loss)/d(out) per device, and the mean loss: cross-entropy or squared error."""
    batch = out.shape[1]
    if task == "regression":
        residual = out.squeeze(-1) - y
        return (residual * 2.0 / batch).unsqueeze(-1), (residual * residual).mean(-1)
    if task != "classification":
        raise ValueError(f"unknown task {task!r}")
    classes = out.shape[-1]
    lanes = -(-classes // _LANES) * _LANES
    padded = out.new_full((*out.shape[:2], lanes), float("-inf"))
    padded[..., :classes] = out
    top = padded.amax(-1, keepdim=True)
    exp = (padded - top).exp()
    total = exp.sum(-1, keepdim=True)
    grad = (exp / total)[..., :classes].contiguous()
    picked = out.gather(-1, y.unsqueeze(-1))
    loss = (total.log() + top - picked).squeeze(-1).mean(-1)
    grad.scatter_(-1, y.unsqueeze(-1), grad.gather(-1, y.unsqueeze(-1)) - 1.0)
    return grad / batch, loss
