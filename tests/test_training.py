import pytest
import torch

from blockfl.aggregation import FedAvg, WeightedUpdate
from blockfl.config import TrainingConfig
from blockfl.devices.data import load_digits, partition_iid, synthetic_linear, train_test_split
from blockfl.devices.training import evaluate, train_svrg_linear
from blockfl.devices.training_batched import train_local
from blockfl.models import MODELS, build_model, initial_state, model_spec
from blockfl.tensors import tensor_hash


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28)])
def test_models_build_and_initial_state_is_seeded(name, input_shape):
    n_out = 1 if name == "linreg" else 10
    state = initial_state(name, input_shape, n_out, seed=7)
    assert tensor_hash(state) == tensor_hash(initial_state(name, input_shape, n_out, seed=7))
    assert tensor_hash(state) != tensor_hash(initial_state(name, input_shape, n_out, seed=8))
    assert all(dtype == "float32" for _, dtype in model_spec(state).values())
    out = build_model(name, input_shape, n_out)(torch.zeros(3, *input_shape))
    assert out.shape == (3, n_out)


def test_initial_state_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    initial_state("mlp", (1, 8, 8), 10, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_train_local_is_deterministic_and_returns_delta():
    ds = load_digits().subset(range(200))
    base = initial_state("mlp", ds.input_shape, 10, seed=0)
    training = TrainingConfig(epochs=1, lr=0.1, batch_size=32)
    a = train_local("mlp", base, ds, training, 3)
    b = train_local("mlp", base, ds, training, 3)
    assert tensor_hash(a.delta) == tensor_hash(b.delta)
    assert model_spec(a.delta) == model_spec(base)
    assert a.n_samples == 200 and a.compute_seconds > 0 and a.final_loss > 0
    assert any(v.abs().sum() > 0 for v in a.delta.values())
    c = train_local("mlp", base, ds, training, 4)
    assert tensor_hash(c.delta) != tensor_hash(a.delta)


def test_fedavg_on_iid_digits_reaches_90_percent():
    train, test = train_test_split(load_digits(), 0.2, seed=0)
    parts = partition_iid(len(train), 10, seed=0, size_skew=0.5)
    state = initial_state("logreg", train.input_shape, 10, seed=0)
    accuracies = []
    for rnd in range(10):
        updates = []
        for i, part in enumerate(parts):
            local = train.subset(part)
            u = train_local("logreg", state, local, TrainingConfig(epochs=2, lr=0.5, batch_size=16),
                            100 * rnd + i)
            updates.append(WeightedUpdate(f"0x{i:040x}", u.delta, u.n_samples))
        state = FedAvg().aggregate(state, updates)
        accuracies.append(evaluate("logreg", state, test.x, test.y, "classification")["accuracy"])
    assert max(accuracies) > 0.9, accuracies
    assert accuracies[-1] > accuracies[0]


def test_svrg_linear_regression_approaches_noise_level():
    noise = 0.5
    train, test = train_test_split(synthetic_linear(2000, 20, noise, seed=0), 0.2, seed=0)
    parts = partition_iid(len(train), 10, seed=1)
    state = initial_state("linreg", (20,), 1, seed=0)
    initial_mse = evaluate("linreg", state, test.x, test.y, "regression")["mse"]
    for rnd in range(5):
        updates = []
        for i, part in enumerate(parts):
            local = train.subset(part)
            u = train_svrg_linear(
                state, local.x, local.y, TrainingConfig(epochs=1, lr=0.05, batch_size=8),
                seed=100 * rnd + i,
            )
            updates.append(WeightedUpdate(f"0x{i:040x}", u.delta, u.n_samples))
        state = FedAvg().aggregate(state, updates)
    mse = evaluate("linreg", state, test.x, test.y, "regression")["mse"]
    assert initial_mse > 10 * noise**2
    assert mse < 1.2 * noise**2


def test_svrg_with_anchor_gradient_and_zero_lr():
    ds = synthetic_linear(50, 4, 0.1, seed=2)
    base = initial_state("linreg", (4,), 1, seed=0)
    zero_grad = {k: torch.zeros_like(v) for k, v in base.items()}
    u = train_svrg_linear(
        base, ds.x, ds.y, TrainingConfig(epochs=1, lr=0.0, batch_size=5), seed=0,
        anchor_grad=zero_grad,
    )
    assert all(torch.equal(v, torch.zeros_like(v)) for v in u.delta.values())
    # with lr > 0 and the exact minimiser as base, the anchor correction keeps it in place
    x1 = torch.cat([ds.x, torch.ones(50, 1)], dim=1).double()
    sol = torch.linalg.lstsq(x1, ds.y.double().unsqueeze(1)).solution.squeeze(1).float()
    opt = {"out.weight": sol[:4].unsqueeze(0), "out.bias": sol[4:]}
    u = train_svrg_linear(opt, ds.x, ds.y, TrainingConfig(epochs=2, lr=0.05, batch_size=5), seed=0)
    assert all(v.abs().max() < 1e-4 for v in u.delta.values())


def test_evaluate_regression_and_classification_keys():
    ds = synthetic_linear(20, 3, 0.0, seed=0)
    state = initial_state("linreg", (3,), 1, seed=0)
    assert set(evaluate("linreg", state, ds.x, ds.y, "regression")) == {"mse"}
    digits = load_digits()
    state = initial_state("cnn", digits.input_shape, 10, seed=0)
    metrics = evaluate("cnn", state, digits.x[:50], digits.y[:50], "classification")
    assert set(metrics) == {"accuracy", "loss"} and 0.0 <= metrics["accuracy"] <= 1.0


def test_lr_decay_sets_each_rounds_rate_and_refuses_a_factor_out_of_range():
    training = TrainingConfig(lr=0.4, lr_decay=0.5)
    assert [training.at_round(r).lr for r in (1, 2, 3)] == [0.4, 0.2, 0.1]
    constant = TrainingConfig(lr=0.4)
    assert constant.at_round(7) is constant
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"training\.lr_decay"):
            TrainingConfig(lr_decay=bad)


def test_a_decayed_rounds_training_is_the_same_batched_and_one_by_one(tmp_path):
    """Round 3 trains at lr x decay^2 on both paths of `simulate` (the stacked fast path and
    the device's own), so their bits agree, and differ from the constant rate's."""
    from dataclasses import replace

    from blockfl.devices.device import Device
    from blockfl.sim.setup import build_experiment
    from blockfl.sim.training import local_updates
    from tests.conftest import key, small_config

    config = small_config(tmp_path)
    experiment = build_experiment(config)

    def deltas(training: TrainingConfig, batched: bool) -> list[bytes]:
        devices = [Device(key(f"d{i}"), shard, experiment.task, training, experiment.initial,
                          seed=i) for i, shard in enumerate(experiment.shards[:3])]
        return [tensor_hash(u.delta) for u in local_updates(devices, 3, batched)]

    decayed = replace(config.training, lr_decay=0.5)
    assert deltas(decayed, batched=True) == deltas(decayed, batched=False)
    at_quarter = replace(config.training, lr=config.training.lr / 4)
    assert deltas(decayed, batched=False) == deltas(at_quarter, batched=False)
    assert deltas(decayed, batched=True) != deltas(config.training, batched=True)
