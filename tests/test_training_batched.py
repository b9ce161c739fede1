"""Training many devices at once gives each device exactly the update it trains alone, and the
same SGD as torch.optim."""

from __future__ import annotations

import pytest
import torch

from blockfl.config import TrainingConfig
from blockfl.devices.data import load_digits, partition_iid, synthetic_linear
from blockfl.devices.training import train_module
from blockfl.devices.training_batched import train_local, train_many
from blockfl.models import initial_state, model_for_state
from blockfl.task import TrainingJob
from blockfl.tensors import tensor_hash

CASES = {
    # model, data, devices, epochs, batch size: shards from 1 sample up, uneven last batches
    "mlp on digits": ("mlp", "digits", 60, 2, 16),
    "mlp2 on digits": ("mlp2", "digits", 12, 1, 7),
    "logreg on digits": ("logreg", "digits", 40, 3, 1),
    "linreg on regression data": ("linreg", "synthetic", 30, 2, 8),
    "cnn (trained one by one with torch.optim)": ("cnn", "digits", 4, 1, 16),
}


def _torch_sgd(model: str, base, job: TrainingJob, training: TrainingConfig, task: str):
    """One device trained alone with torch.optim.SGD, written out here (the reference for the
    models `train_many` does not stack: there, `train_local` is `train_many` itself): the delta
    and the mean minibatch loss of the last epoch."""
    net = model_for_state(model, tuple(job.data.x.shape[1:]), base)
    opt = torch.optim.SGD(net.parameters(), lr=training.lr)
    loss_fn = torch.nn.functional.cross_entropy
    assert task == "classification"
    generator = torch.Generator().manual_seed(job.seed)
    for _ in range(training.epochs):
        total = 0.0
        for idx in torch.randperm(len(job.data), generator=generator).split(training.batch_size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(job.data.x[idx]), job.data.y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
    state = net.state_dict()
    return {k: state[k] - base[k] for k in base}, total / len(job.data.x)


def _setup(case: str):
    model, data, n_devices, epochs, batch_size = CASES[case]
    dataset = load_digits() if data == "digits" else synthetic_linear(400, 5, 0.5, seed=1)
    dataset = dataset.subset(torch.arange(min(len(dataset), 600)))
    base = initial_state(model, dataset.input_shape, dataset.n_outputs, seed=2)
    parts = partition_iid(len(dataset), n_devices, seed=3, size_skew=1.0)
    jobs = [TrainingJob(dataset.subset(p), 1000 + i) for i, p in enumerate(parts)]
    training = TrainingConfig(epochs=epochs, lr=0.1, batch_size=batch_size)
    return model, base, jobs, training, dataset.task


@pytest.mark.parametrize("case", list(CASES))
def test_stacked_devices_get_the_bits_each_gets_alone(case):
    model, base, jobs, training, task = _setup(case)
    assert len({len(j.data.x) for j in jobs}) > 1  # several stacks
    stacked = train_many(model, base, jobs, training, task=task)
    for job, got in zip(jobs, stacked, strict=True):
        if case.startswith("cnn"):
            delta, loss = _torch_sgd(model, base, job, training, task)
        else:
            alone = train_local(model, base, job.data, training, job.seed)
            delta, loss = alone.delta, alone.final_loss
        assert tensor_hash(got.delta) == tensor_hash(delta)
        assert got.n_samples == len(job.data.x)
        assert got.final_loss == pytest.approx(loss, rel=1e-6)
    # each device trained on its own shard with its own seed
    assert len({tensor_hash(u.delta) for u in stacked}) == len(jobs)
    # and a different grouping (reversed order, so other stacks) changes no bit
    again = train_many(model, base, jobs[::-1], training, task=task)[::-1]
    assert [tensor_hash(u.delta) for u in again] == [tensor_hash(u.delta) for u in stacked]


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("cnn")])
def test_written_out_sgd_matches_torch_optim(case):
    model, base, jobs, training, task = _setup(case)
    for job in jobs[:8]:
        ours = train_local(model, base, job.data, training, job.seed)
        torchs = train_module(model, base, job.data.x, job.data.y, training, seed=job.seed,
                              task=task)
        for name, delta in torchs.delta.items():
            scale = float(delta.abs().max())
            assert float((ours.delta[name] - delta).abs().max()) <= 1e-4 * scale + 1e-9
        assert ours.final_loss == pytest.approx(torchs.final_loss, rel=1e-4)
