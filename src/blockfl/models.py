"""Models by name, built for a given input shape and number of outputs (all float32).

Every model ends in a linear layer named ``out``, so its state always holds ``out.weight`` and
``out.bias`` and the number of outputs can be read back from a state (see ``model_for_state``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from blockfl.tensors import StateDict, dtype_name

OUTPUT_BIAS = "out.bias"


class Net(nn.Module):
    """A feature extractor followed by the linear output layer ``out``."""

    def __init__(self, features: nn.Module, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.features = features
        self.out = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def _flat_dim(input_shape: Sequence[int]) -> int:
    return math.prod(input_shape)


def _logreg(input_shape: Sequence[int], n_outputs: int) -> Net:
    return Net(nn.Flatten(), _flat_dim(input_shape), n_outputs)


def _linreg(input_shape: Sequence[int], n_outputs: int) -> Net:
    if n_outputs != 1:
        raise ValueError(f"linreg has exactly one output, got n_outputs={n_outputs}")
    return Net(nn.Flatten(), _flat_dim(input_shape), 1)


def _mlp_with(hidden: Sequence[int]) -> Callable[[Sequence[int], int], Net]:
    def build(input_shape: Sequence[int], n_outputs: int) -> Net:
        layers: list[nn.Module] = [nn.Flatten()]
        width = _flat_dim(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return Net(nn.Sequential(*layers), width, n_outputs)

    return build


def _cnn(input_shape: Sequence[int], n_outputs: int) -> Net:
    """Two 3x3 conv layers (16, 32 channels); 2x2 max-pooling after each conv while the side
    is at least 16 (28x28 MNIST: 28 -> 14 -> 7), and always after the last (8x8 digits: 8 -> 4).
    """
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs a (C, H, W) or (H, W) input shape, got {input_shape}")
    channels, height, width = input_shape
    layers: list[nn.Module] = [nn.Flatten(), nn.Unflatten(1, (channels, height, width))]
    for i, (c_in, c_out) in enumerate([(channels, 16), (16, 32)]):
        layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]
        if (min(height, width) >= 16 or i == 1) and min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
    layers.append(nn.Flatten())
    return Net(nn.Sequential(*layers), 32 * height * width, n_outputs)


MODELS: dict[str, Callable[[Sequence[int], int], Net]] = {
    "logreg": _logreg,
    "linreg": _linreg,
    "mlp": _mlp_with((64,)),
    "mlp2": _mlp_with((128, 64)),
    "cnn": _cnn,
}


def build_model(name: str, input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape`` (per sample, no batch dim).

    ``cnn`` needs an image shape, (C, H, W) or (H, W); the other models flatten any shape.
    """
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
    return builder(tuple(input_shape), n_outputs).to(torch.float32)


def initial_state(name: str, input_shape: Sequence[int], n_outputs: int, seed: int) -> StateDict:
    """Deterministic initial weights for ``seed`` (the global torch RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, input_shape, n_outputs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def model_for_state(name: str, input_shape: Sequence[int], state: StateDict) -> nn.Module:
    """Build model ``name`` and load ``state`` into it (number of outputs taken from ``state``)."""
    model = build_model(name, input_shape, int(state[OUTPUT_BIAS].shape[0]))
    model.load_state_dict(state, strict=True)
    return model


def model_spec(state: StateDict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Map each tensor name to its (shape, dtype name), e.g. ``((10, 64), "float32")``."""
    return {k: (tuple(v.shape), dtype_name(v.dtype)) for k, v in state.items()}
