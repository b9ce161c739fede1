"""Differential privacy on the device, its accounting, and the rules every miner enforces.

`[privacy] mode = "client"`: a device clips its whole update to L2 norm `clip` and adds
Gaussian noise of standard deviation `noise_multiplier x clip` to every value before it signs
it (`privatize`), so what miners, peers and the public see is already private; this works for
any task, since it acts on the update and not on the training loop. The guarantee is for any
change of the device's whole data set (the update moves anywhere in the clip ball: L2
sensitivity `2 x clip`), accounted by Opacus's RDP accountant as a Gaussian mechanism of noise
multiplier `noise_multiplier / 2` per round the device takes part in (`epsilon`).

The noise is drawn from a Philox generator keyed by HMAC-SHA256 of the device's secret key and
the round: reproducible for the same key (the same seed gives the same blocks), and unknown to
anyone without the key, who could otherwise subtract it. (Floating-point Gaussian sampling
has known weaknesses against an attacker who sees the exact bits; this is a research tool.)

What the network enforces, in every miner's verification (`PrivacyRule`, from the protocol
spec): an update whose norm no clipped and noised update reaches (`max_plausible_norm`) is
refused as `dp_norm_implausible`, and, with `epsilon_budget`, an update that would take its
device past the budget is refused as `privacy_budget_exhausted`, counting the device's updates
in committed blocks, so every miner (a restarted one too) agrees. A device cannot be checked to
have added its noise: DP protects a device that runs it, and a device that does not only
exposes itself.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from blockfl.config import PrivacyConfig
from blockfl.tensors import StateDict

#: the tail of the noise's norm: a d-dimensional standard Gaussian's norm exceeds sqrt(d) + t
#: with probability at most exp(-t^2 / 2), 1.3e-14 at t = 8
NORM_TAIL = 8.0
NOISE_DOMAIN = b"blockfl/dp-noise/v1"


def require_accountant() -> None:
    """Raise ImportError with the install line when Opacus (the accountant) is missing."""
    try:
        import opacus  # noqa: F401
    except ImportError:
        raise ImportError("differential privacy needs Opacus: pip install 'blockfl[privacy]' "
                          "(opacus==1.6.0)") from None


@lru_cache(maxsize=4096)
def _rdp_epsilon(noise_multiplier: float, sample_rate: float, steps: int,
                 delta: float) -> float:
    require_accountant()
    from opacus.accountants import RDPAccountant

    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta))


def dp_sgd_steps(batch_size: int, epochs: int, samples: int) -> tuple[int, float]:
    """DP-SGD's (steps, sampling rate) for one round over `samples`: `epochs` passes of
    ceil(samples / batch_size) Poisson-sampled steps, each sample kept with probability one
    over that count (as Opacus's `DPDataLoader` samples a `DataLoader` of `batch_size`)."""
    per_epoch = max(1, math.ceil(samples / batch_size))
    return epochs * per_epoch, 1 / per_epoch


NOISE_GRID = 100  # calibrated noise multipliers are multiples of 1 / NOISE_GRID


def _dp_sgd_epsilon(cfg: PrivacyConfig, noise: float, rounds: int, samples: int) -> float:
    steps, rate = dp_sgd_steps(cfg.batch_size, cfg.epochs, samples)
    return _rdp_epsilon(noise, rate, steps * rounds, cfg.delta)


def noise_multiplier(cfg: PrivacyConfig, samples: int = 0) -> float:
    """The noise multiplier a device of `samples` samples trains with and is charged at:
    `cfg.noise_multiplier`, or with `budget_rounds` (dp_sgd) the least multiple of 0.01, at
    least that, with which `budget_rounds` rounds spend no more than `epsilon_budget`
    (found by bisection over whole grid steps, so every miner computes the same value)."""
    if cfg.mode != "dp_sgd" or not cfg.budget_rounds:
        return cfg.noise_multiplier
    # epsilon depends on the samples only through the steps a pass takes: one search for each
    return _calibrated(cfg, max(1, math.ceil(samples / cfg.batch_size)) * cfg.batch_size)


def _least(holds: Callable[[int], bool], start: int, limit: int | None = None) -> int | None:
    """The least integer n >= `start` (>= 1) with `holds(n)`, for a `holds` that turns true and
    stays true as n grows: doubling, then bisection. None if it is still false at `limit`."""
    if holds(start):
        return start
    low, high = start, 2 * start
    while not holds(high):
        if limit is not None and high >= limit:
            return None
        low, high = high, 2 * high
    while high - low > 1:  # holds(high), not holds(low)
        mid = (low + high) // 2
        low, high = (low, mid) if holds(mid) else (mid, high)
    return high


@lru_cache(maxsize=4096)
def _calibrated(cfg: PrivacyConfig, samples: int) -> float:
    def within(k: int) -> bool:  # epsilon falls as the noise grows
        spent = _dp_sgd_epsilon(cfg, k / NOISE_GRID, cfg.budget_rounds, samples)
        return spent <= cfg.epsilon_budget

    least = _least(within, max(1, math.ceil(cfg.noise_multiplier * NOISE_GRID - 1e-9)))
    assert least is not None  # without a limit the search ends: enough noise fits any budget
    return least / NOISE_GRID


def epsilon(cfg: PrivacyConfig, rounds: int, samples: int = 0) -> float:
    """The epsilon (at `cfg.delta`) a device has spent after taking part in `rounds` rounds;
    0 with privacy off or no round. Client mode: one Gaussian mechanism per round. dp_sgd:
    the steps of `rounds` rounds of DP-SGD over `samples` (`dp_sgd_steps`; a device's updates
    are charged at the sample count it signs, its shard's size) at its `noise_multiplier`."""
    if cfg.mode == "off" or rounds == 0:
        return 0.0
    if cfg.mode == "dp_sgd":
        return _dp_sgd_epsilon(cfg, noise_multiplier(cfg, samples), rounds, samples)
    return _rdp_epsilon(cfg.noise_multiplier / 2, 1.0, rounds, cfg.delta)


def check_budget(cfg: PrivacyConfig, shards: Sequence[int] = ()) -> None:
    """A budget below one round's epsilon admits no update: a config error naming the field.
    In dp_sgd mode one round's epsilon depends on a device's sample count: checked for each
    of `shards` (the devices' sample counts, where known)."""
    if cfg.mode == "off" or cfg.epsilon_budget <= 0:
        return
    for samples in (shards if cfg.mode == "dp_sgd" else (0,)):
        first = epsilon(cfg, 1, samples)
        if cfg.epsilon_budget < first:
            of = f" for a device of {samples} samples" if cfg.mode == "dp_sgd" else ""
            raise ValueError(f"privacy.epsilon_budget = {cfg.epsilon_budget:g} is below one "
                             f"round's epsilon{of} ({first:.4g} at noise_multiplier "
                             f"{noise_multiplier(cfg, samples):g}, delta {cfg.delta:g}): no update "
                             "could be sent")


def rounds_within_budget(cfg: PrivacyConfig, samples: int = 0) -> int | None:
    """How many rounds a device (of `samples` samples, for dp_sgd) may take part in (None:
    no budget)."""
    if cfg.mode == "off" or cfg.epsilon_budget <= 0:
        return None
    # epsilon grows with rounds: the first round past the budget, less one (None: the noise is
    # so large that the budget never runs out in practice)
    past = _least(lambda r: epsilon(cfg, r, samples) > cfg.epsilon_budget, 1, limit=1 << 20)
    return None if past is None else past - 1


def _floating(state: StateDict) -> list[str]:
    return sorted(name for name, t in state.items() if t.is_floating_point())


def privatize(delta: StateDict, cfg: PrivacyConfig, secret_key: bytes, round_: int) -> StateDict:
    """The update a device in client mode sends: `delta` clipped to L2 norm `clip` (over all
    its floating-point tensors together), plus Gaussian noise `noise_multiplier x clip` keyed
    by the device's secret key and the round. Unchanged unless in client mode (dp_sgd noises
    the training itself)."""
    if cfg.mode != "client":
        return delta
    names = _floating(delta)
    norm = math.sqrt(sum(float(delta[n].double().square().sum()) for n in names))
    scale = min(1.0, cfg.clip / norm) if norm > 0 else 1.0
    seed = hmac.new(secret_key, NOISE_DOMAIN + round_.to_bytes(8, "big"), hashlib.sha256)
    rng = np.random.Generator(np.random.Philox(key=int.from_bytes(seed.digest()[:16], "big")))
    std = cfg.noise_multiplier * cfg.clip
    out = dict(delta)
    for name in names:  # a fixed order: the same key and round give the same bits
        tensor = delta[name]
        noise = rng.standard_normal(tensor.numel()) * std
        noised = tensor.double().reshape(-1) * scale + torch.from_numpy(noise)
        out[name] = noised.reshape(tensor.shape).to(tensor.dtype)
    return out


def max_plausible_norm(cfg: PrivacyConfig, values: int) -> float:
    """The largest L2 norm a clipped update of `values` numbers reaches with its noise, but
    with probability below 1e-13: clip + noise_multiplier x clip x (sqrt(values) + 8)."""
    return cfg.clip * (1.0 + cfg.noise_multiplier * (math.sqrt(values) + NORM_TAIL))


def clip_of(cfg: PrivacyConfig) -> float:
    """The L2 bound the noise is scaled by: each sample's gradient's (dp_sgd) or the update's
    (client)."""
    return cfg.max_grad_norm if cfg.mode == "dp_sgd" else cfg.clip


def may_take_part(cfg: PrivacyConfig, included_rounds: int, samples: int = 0) -> bool:
    """Whether a device with updates in `included_rounds` committed blocks may release one
    more of `samples` samples (the same count every miner charges; a refused update would
    still have been seen)."""
    allowed = rounds_within_budget(cfg, samples)
    return allowed is None or included_rounds < allowed


def device_budgets(cfg: PrivacyConfig,
                   rounds: dict[str, tuple[int, int]]) -> list[dict[str, object]]:
    """Per device (address -> its updates in committed blocks and its sample count): rounds,
    epsilon spent at `cfg.delta` and the budget left (None without a budget); `report.json`,
    `blockfl inspect privacy` and the explorer show these rows."""
    rows = []
    for address, (taken, samples) in rounds.items():
        spent = epsilon(cfg, taken, samples)
        rows.append({"address": address, "rounds": taken, "epsilon": spent,
                     "noise_multiplier": noise_multiplier(cfg, samples),
                     "budget_left": cfg.epsilon_budget - spent if cfg.epsilon_budget else None})
    return rows


def summary(cfg: PrivacyConfig, rounds: dict[str, tuple[int, int]]) -> dict[str, object]:
    """The privacy parameters and every device's budget (`device_budgets`)."""
    clip = {"max_grad_norm": cfg.max_grad_norm, "batch_size": cfg.batch_size,
            "epochs": cfg.epochs} if cfg.mode == "dp_sgd" else {"clip": cfg.clip}
    return {"mode": cfg.mode, "noise_multiplier": cfg.noise_multiplier, **clip,
            "delta": cfg.delta, "epsilon_budget": cfg.epsilon_budget or None,
            "accountant": "opacus RDP", "devices": device_budgets(cfg, rounds)}


@dataclass(frozen=True)
class PrivacyRule:
    """The privacy checks of a miner's verification, from the protocol spec."""

    cfg: PrivacyConfig

    @property
    def active(self) -> bool:
        return self.cfg.mode != "off"

    def refusal(self, norm: float, values: int, included_rounds: int,
                samples: int) -> tuple[str, str] | None:
        """(reason, detail) if an update of L2 `norm` over `values` floating-point numbers
        and `samples` signed samples, from a device with updates in `included_rounds`
        committed blocks, must be refused (the norm is bounded in client mode only)."""
        if not self.active:
            return None
        bound = max_plausible_norm(self.cfg, values)
        if self.cfg.mode == "client" and norm > bound:
            return ("dp_norm_implausible",
                    f"L2 norm {norm:.4g} > {bound:.4g}, the most a clip of {self.cfg.clip:g} "
                    f"with noise multiplier {self.cfg.noise_multiplier:g} gives")
        if not may_take_part(self.cfg, included_rounds, samples):
            spent = epsilon(self.cfg, included_rounds, samples)
            return ("privacy_budget_exhausted",
                    f"{included_rounds} rounds spent epsilon {spent:.4g}; one more would pass "
                    f"the budget {self.cfg.epsilon_budget:g}")
        return None
