"""Analytic end-to-end latency model of one BlockFL round (Kim, Park, Bennis, Kim).

For a device ``o`` associated with miner ``i`` the round latency is::

    T = N_fork * (T_local + T_up + T_cross + T_bg + T_att + T_bp) + T_dn + T_global

with deterministic terms

    T_local  = delta_d * N_o / f_c
    T_up     = delta_m / R_up,                    R_x = W_x * log2(1 + SNR_x)
    T_cross  = max(T_wait - (T_local + T_up), sum_{j != i} delta_m * N_Mj / R_mj)
               + delta_m * N_D / f_c
    T_att    = sum_{k=1}^{q-1} (h + delta_m * N_D + 520) / R_mk + (q - 1) * 2 * delta_m * N_D / f_c
    T_bp     = max_j (h + delta_m * N_D) / R_mj
    T_dn     = (h + delta_m * N_D) / R_dn
    T_global = delta_m * N_D / f_c

and random ones: every miner's proof-of-work time is Exp(lambda), the first of the N_M miners
wins, so ``T_bg ~ Exp(N_M lambda)``; a fork happens when another miner finishes within ``T_bp``
of the winner, ``p_fork = 1 - exp(-lambda (N_M - 1) T_bp)``, and repeats the bracketed part, so
``N_fork`` is geometric on {1, 2, ...} with ``E[N_fork] = 1 / (1 - p_fork) = exp(lambda c)``,
``c = (N_M - 1) T_bp``.

``T_att`` is the attestation phase with a quorum of ``q`` miners (the committer counts itself):
the winner asks the other miners one at a time (the first ``q - 1`` in index order, all
honest), each receives the candidate block, re-verifies its N_D updates, recomputes the global
model and returns a 65-byte signature. For ``q = 1`` it is 0 and E[T] is the paper's.

Closed form. With ``A = T_local + T_up + T_cross + T_att + T_bp`` (no lambda dependence)::

    E[T] = (A + 1 / (N_M lambda)) * exp(lambda c) + T_dn + T_global.

This uses ``E[sum_{k <= N_fork} B_k] = E[N_fork] E[B]`` for the i.i.d. attempts ``B_k``. The
paper states it by treating ``N_fork`` as independent of ``T_bg``; that holds exactly here since,
by memorylessness, the other miners' residual times after the winner's finish are i.i.d.
Exp(lambda) and independent of the winner's time, so the fork event of an attempt is independent
of its ``T_bg``. (Wald's identity gives the same result without it, since ``{N_fork >= k}`` only
depends on attempts before ``k``.)

See :func:`optimal_lambda` for the convexity proof and the optimal block generation rate.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

TERMS: tuple[str, ...] = ("local", "up", "cross", "bg", "att", "bp", "dn", "global")
"""Latency terms, in the order of the round."""

BRACKET_TERMS: tuple[str, ...] = ("local", "up", "cross", "bg", "att", "bp")
"""Terms repeated on every fork."""


def default_config_path() -> Path:
    """Path of the packaged ``configs/latency.toml`` holding the default parameters."""
    return Path(str(resources.files("blockfl") / "configs" / "latency.toml"))


def db_to_linear(db: float | np.ndarray) -> float | np.ndarray:
    """Convert a power ratio in dB to linear scale."""
    return 10.0 ** (np.asarray(db, dtype=float) / 10.0)


def link_rate(bandwidth: float, snr_db: float | np.ndarray) -> float | np.ndarray:
    """Shannon rate ``W log2(1 + SNR)`` in bit/s for a bandwidth in Hz and an SNR in dB,
    through ``log1p``: ``1 + SNR`` rounds away a low SNR (10% off at -150 dB, all of it at
    -160 dB), ``log1p`` keeps full precision down to the smallest float SNR (about -3230 dB)."""
    return bandwidth * np.log1p(db_to_linear(snr_db)) / math.log(2.0)


def _vector(value: float | tuple[float, ...], n: int, name: str) -> np.ndarray:
    """Broadcast a scalar or a length-``n`` sequence to a float array of length ``n``."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != n):
        raise ValueError(f"{name} must be a scalar or a sequence of length {n}, got {value!r}")
    return np.broadcast_to(arr, (n,))


PARAMETERS: dict[str, str] = {
    "n_devices": "N_D, number of devices",
    "n_miners": "N_M, number of miners",
    "samples": "N_o, local samples (a number, or a list with one per device)",
    "device": "index of the modelled device o",
    "miner": "index of device o's miner i",
    "devices_per_miner": "N_Mj, list with one per miner (default N_D / N_M each)",
    "lambda_": "block generation rate of EACH miner, 1/s (alias: lambda)",
    "t_wait": "T_wait, a miner's maximum wait for updates, s",
    "w_up": "uplink bandwidth, Hz",
    "w_dn": "downlink bandwidth, Hz",
    "w_m": "miner-to-miner bandwidth, Hz",
    "snr_up_db": "uplink SNR, dB",
    "snr_dn_db": "downlink SNR, dB",
    "snr_m_db": "miner link SNR, dB (a number, or a list with one per miner)",
    "delta_d": "operations (CPU cycles) per local sample",
    "delta_m": "size of one local model update, bits",
    "f_c": "clock speed, Hz",
    "h": "block header size, bits",
    "quorum": "miners behind a block, the committer included (1: it alone, today's E[T]; "
              "0: a majority, N_M // 2 + 1, as [chain] quorum)",
}
"""The fields of :class:`LatencyParams` (the ``--set`` keys) with their meaning and unit."""

ALIASES: dict[str, str] = {"lambda": "lambda_"}
"""Accepted spellings of parameter names (``lambda`` is a Python keyword, hence ``lambda_``)."""

_SCALARS = ("lambda_", "t_wait", "w_up", "w_dn", "w_m", "snr_up_db", "snr_dn_db", "delta_d",
            "delta_m", "f_c", "h")


_DETERMINISTIC_TERMS = ("t_local", "t_up", "t_cross", "t_att", "t_bp", "t_dn", "t_global")


def _check_numbers(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number or a sequence of them."""
    items = value if isinstance(value, tuple) else () if value is None else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ValueError(f"{name} must be a finite number or a list of them, got {value!r}")


@dataclass(frozen=True)
class LatencyParams:
    """Parameters of the BlockFL latency model, SI units (s, bit, Hz); SNRs in dB.

    ``samples`` is the number of local samples, one value for all devices or one per device;
    ``device`` (o) and ``miner`` (i) select the device whose latency is modelled and its miner.
    ``devices_per_miner`` (N_Mj) defaults to the uniform-association expectation N_D / N_M.
    ``snr_m_db`` is one SNR for all miner links or one per miner.
    """

    n_devices: int = 10
    n_miners: int = 10
    samples: float | tuple[float, ...] = 200.0
    device: int = 0
    miner: int = 0
    devices_per_miner: tuple[float, ...] | None = None
    lambda_: float = 0.1
    t_wait: float = 2.5
    w_up: float = 10e6
    w_dn: float = 10e6
    w_m: float = 10e6
    snr_up_db: float = 10.0
    snr_dn_db: float = 10.0
    snr_m_db: float | tuple[float, ...] = 10.0
    delta_d: float = 1e7
    delta_m: float = 1e6
    f_c: float = 1e9
    h: float = 4000.0
    quorum: int = 1

    def __post_init__(self) -> None:
        for name in ("samples", "devices_per_miner", "snr_m_db"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        for name in ("n_devices", "n_miners"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():  # TOML reads 1e11 as a float
                object.__setattr__(self, name, value := int(value))
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("device", "miner", "quorum"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 0 <= self.device < self.n_devices:
            raise ValueError(f"device must be in [0, {self.n_devices}), got {self.device}")
        if not 0 <= self.miner < self.n_miners:
            raise ValueError(f"miner must be in [0, {self.n_miners}), got {self.miner}")
        if not 0 <= self.quorum <= self.n_miners:
            raise ValueError(f"quorum must be in [0, {self.n_miners}] (0: a majority), "
                             f"got {self.quorum}")
        for name in ("samples", "devices_per_miner", "snr_m_db", *_SCALARS):
            _check_numbers(name, getattr(self, name))
        for name in ("lambda_", "w_up", "w_dn", "w_m", "delta_d", "delta_m", "f_c"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("t_wait", "h"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        # the given values, not one per device: alike devices cost O(1) at any N_D
        if np.any(np.asarray(self.samples) <= 0) or np.any(self.association < 0):
            raise ValueError("samples must be positive and devices_per_miner non-negative")
        _ = self.samples_per_device, self.miner_snr_db  # raise on a sequence of the wrong length
        with np.errstate(over="ignore", divide="ignore"):
            terms = {name: globals()[name](self) for name in _DETERMINISTIC_TERMS}
        bad = [name for name, value in terms.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"{', '.join(bad)} overflow a float with these parameters")

    @classmethod
    def from_toml(cls, path: str | Path) -> LatencyParams:
        """Load parameters from a TOML file of top-level ``field = value`` pairs."""
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        return cls().with_overrides(data)

    @property
    def aggregate_rate(self) -> float:
        """The network's block generation rate ``N_M lambda`` (rate of the winner's block)."""
        return self.n_miners * self.lambda_

    def with_overrides(self, overrides: Mapping[str, Any]) -> LatencyParams:
        """Return a copy with the given fields replaced (``lambda`` names ``lambda_``); unknown
        names raise ``ValueError`` listing the valid ones."""
        renamed = {ALIASES.get(key, key): value for key, value in overrides.items()}
        unknown = sorted(set(renamed) - set(PARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown latency parameter(s): {', '.join(unknown)}; "
                f"valid: {', '.join(PARAMETERS)} (lambda = lambda_)"
            )
        return dataclasses.replace(self, **renamed)

    @property
    def attesters(self) -> int:
        """The quorum q in force: ``quorum``, or a majority ``N_M // 2 + 1`` for 0."""
        return self.quorum or self.n_miners // 2 + 1

    @property
    def samples_per_device(self) -> np.ndarray:
        """Local sample counts N_1..N_ND (a read-only view of one value when all are alike)."""
        return _vector(self.samples, self.n_devices, "samples")

    @property
    def association(self) -> np.ndarray:
        """Devices associated with each miner, N_M1..N_MNM."""
        if self.devices_per_miner is None:
            return np.full(self.n_miners, self.n_devices / self.n_miners)
        return _vector(self.devices_per_miner, self.n_miners, "devices_per_miner")

    @property
    def miner_snr_db(self) -> np.ndarray:
        """SNR of each miner's links in dB."""
        return _vector(self.snr_m_db, self.n_miners, "snr_m_db")


@dataclass(frozen=True)
class LatencyBreakdown:
    """Expected latency per term (one attempt for the bracket terms), fork statistics, total."""

    t_local: float
    t_up: float
    t_cross: float
    t_bg: float
    t_att: float
    t_bp: float
    t_dn: float
    t_global: float
    p_fork: float
    n_fork: float
    total: float

    def contributions(self) -> dict[str, float]:
        """Expected contribution of each term to the round latency (bracket terms times E[N])."""
        return {
            term: over_attempts(getattr(self, f"t_{term}"), self.n_fork)
            if term in BRACKET_TERMS else getattr(self, f"t_{term}")
            for term in TERMS
        }


def over_attempts(per_attempt: float, attempts: Any) -> Any:
    """Time in a bracket term over ``attempts`` attempts (a number or an array): ``attempts
    per_attempt``, and 0 for a term that takes no time however many (not 0 × ∞ = NaN)."""
    if per_attempt == 0.0:
        return np.zeros_like(attempts) if isinstance(attempts, np.ndarray) else 0.0
    return attempts * per_attempt


def t_local(p: LatencyParams) -> float:
    """Local training time of device o: ``delta_d N_o / f_c``."""
    return float(p.delta_d * p.samples_per_device[p.device] / p.f_c)


def t_up(p: LatencyParams) -> float:
    """Upload time of the local update: ``delta_m / (W_up log2(1 + SNR_up))``."""
    return float(p.delta_m / link_rate(p.w_up, p.snr_up_db))


def block_bits(p: LatencyParams) -> float:
    """Block size ``h + delta_m N_D`` in bits."""
    return p.h + p.delta_m * p.n_devices


def t_dn(p: LatencyParams) -> float:
    """Block download time: ``(h + delta_m N_D) / (W_dn log2(1 + SNR_dn))``."""
    return float(block_bits(p) / link_rate(p.w_dn, p.snr_dn_db))


def t_global(p: LatencyParams) -> float:
    """Global model computation at the device: ``delta_m N_D / f_c``."""
    return p.delta_m * p.n_devices / p.f_c


def t_exchange(p: LatencyParams) -> float:
    """Cross-verification exchange: ``sum_{j != i} delta_m N_Mj / (W_m log2(1 + SNR_mj))``."""
    per_miner = p.delta_m * p.association / link_rate(p.w_m, p.miner_snr_db)
    return float(per_miner.sum() - per_miner[p.miner])


def t_cross(p: LatencyParams) -> float:
    """Cross-verification: wait/exchange, then verify all N_D updates (``delta_m N_D / f_c``)."""
    wait = p.t_wait - (t_local(p) + t_up(p))
    return max(wait, t_exchange(p)) + t_global(p)  # verification: same delta_m N_D / f_c


SIGNATURE_BITS = 8 * 65
"""An attestation: one 65-byte ECDSA signature."""


def t_att_links(p: LatencyParams) -> float:
    """Transfers of the attestation phase: the candidate block to each of the ``q - 1`` miners
    asked (the first others in index order), one after another, and a signature back:
    ``sum_k (h + delta_m N_D + 520) / R_mk``."""
    rates = np.delete(np.atleast_1d(link_rate(p.w_m, p.miner_snr_db)), p.miner)
    return float(np.sum((block_bits(p) + SIGNATURE_BITS) / rates[: p.attesters - 1]))


def t_att_checks(p: LatencyParams) -> float:
    """The attesters' checks, one after another: each re-verifies the N_D updates and
    recomputes the global model, ``(q - 1) 2 delta_m N_D / f_c``."""
    return (p.attesters - 1) * 2 * t_global(p)


def t_att(p: LatencyParams) -> float:
    """Attestation phase ``T_att`` of the winner's candidate (0 for a quorum of 1)."""
    return t_att_links(p) + t_att_checks(p)


def t_bp(p: LatencyParams) -> float:
    """Block propagation time: slowest miner link, ``max_j (h + delta_m N_D) / R_mj``."""
    return float(np.max(block_bits(p) / link_rate(p.w_m, p.miner_snr_db)))


def t_bg(p: LatencyParams) -> float:
    """Expected block generation time ``E[min of N_M Exp(lambda)] = 1 / (N_M lambda)``."""
    return 1.0 / p.n_miners / p.lambda_  # N_M lambda may overflow where its inverse does not


def fork_exponent(p: LatencyParams) -> float:
    """The constant ``c = (N_M - 1) T_bp`` with ``E[N_fork] = exp(lambda c)``."""
    return (p.n_miners - 1) * t_bp(p)


def p_fork(p: LatencyParams) -> float:
    """Fork probability ``1 - exp(-lambda (N_M - 1) T_bp)``."""
    return -math.expm1(-p.lambda_ * fork_exponent(p))


def deterministic_bracket(p: LatencyParams) -> float:
    """``A = T_local + T_up + T_cross + T_att + T_bp``, the lambda-free part of one attempt."""
    return t_local(p) + t_up(p) + t_cross(p) + t_att(p) + t_bp(p)


def safe_exp(x: float) -> float:
    """``exp(x)``, ``inf`` where it overflows a float (instead of raising)."""
    return math.exp(x) if x < _LOG_FLOAT_MAX else math.inf


_LOG_FLOAT_MAX = math.log(np.finfo(float).max)


def log_expected_latency(p: LatencyParams) -> float:
    """Natural log of the closed-form ``E[T]``, finite wherever the parameters are:
    ``log E[T] = logaddexp(log(A + 1/(N_M lambda)) + lambda c, log(T_dn + T_global))``."""
    log_forked = math.log(deterministic_bracket(p) + t_bg(p)) + p.lambda_ * fork_exponent(p)
    return float(np.logaddexp(log_forked, math.log(t_dn(p) + t_global(p))))


def expected_latency(p: LatencyParams) -> LatencyBreakdown:
    """Closed-form ``E[T] = (A + 1/(N_M lambda)) exp(lambda (N_M-1) T_bp) + T_dn + T_global``;
    ``E[N_fork]`` and the total are ``inf`` past float range (see :func:`log_expected_latency`).
    """
    n_fork = safe_exp(p.lambda_ * fork_exponent(p))
    breakdown = {
        "t_local": t_local(p),
        "t_up": t_up(p),
        "t_cross": t_cross(p),
        "t_bg": t_bg(p),
        "t_att": t_att(p),
        "t_bp": t_bp(p),
        "t_dn": t_dn(p),
        "t_global": t_global(p),
    }
    total = safe_exp(log_expected_latency(p))
    return LatencyBreakdown(**breakdown, p_fork=p_fork(p), n_fork=n_fork, total=total)


def optimal_lambda(p: LatencyParams) -> float:
    """Latency-minimising block generation rate lambda* in closed form.

    Only ``f(l) = (A + 1/(N l)) e^{c l}`` depends on ``l = lambda`` (``N = N_M``,
    ``c = (N_M - 1) T_bp``; ``T_dn + T_global`` is constant). Writing ``g(l) = A + 1/(N l)``::

        f'(l)  = e^{cl} (g' + c g)           = e^{cl} (A c N l^2 + c l - 1) / (N l^2)
        f''(l) = e^{cl} (g'' + 2 c g' + c^2 g)
               = e^{cl} (c^2 A + ((1 - c l)^2 + 1) / (N l^3)) > 0   for l > 0,

    so ``f`` is strictly convex on ``l > 0``. For ``c > 0`` (then ``A >= T_bp > 0``) the
    first-order condition ``A c N l^2 + c l - 1 = 0`` has exactly one positive root::

        lambda* = (-c + sqrt(c^2 + 4 A c N)) / (2 A c N) = 2 / (c + sqrt(c^2 + 4 A c N)),

    the second form being the cancellation-free one; it is computed as
    ``(2 / c) / (1 + sqrt(1 + 4 A N / c))`` so that ``c^2`` cannot overflow. For ``c = 0``
    (a single miner, or no propagation delay) there are no forks, ``f = A + 1/(N l)``
    decreases monotonically and ``lambda* = inf``.
    """
    c = fork_exponent(p)
    if c == 0.0:
        return math.inf
    # the same, divided through by c so that c^2 cannot overflow
    return (2.0 / c) / (1.0 + math.sqrt(1.0 + 4.0 * deterministic_bracket(p) * p.n_miners / c))


def numeric_optimal_lambda(p: LatencyParams, bounds: tuple[float, float] | None = None) -> float:
    """Minimise the closed-form ``E[T]`` over lambda numerically (bounded, on log lambda).

    The default bounds are ``[1e-2, 1e2] / sqrt(A c N_M)``; lambda* lies in
    ``[0.61, 1] / sqrt(A c N_M)`` because ``c < A N_M``. With ``c = 0`` and no bounds the latency
    decreases monotonically and ``inf`` is returned.
    """
    if bounds is None:
        c = fork_exponent(p)
        if c == 0.0:
            return math.inf
        scale = 1.0 / (math.sqrt(deterministic_bracket(p)) * math.sqrt(c) * math.sqrt(p.n_miners))
        bounds = (1e-2 * scale, 1e2 * scale)

    def objective(log_lambda: float) -> float:
        return expected_latency(dataclasses.replace(p, lambda_=math.exp(log_lambda))).total

    from scipy.optimize import minimize_scalar  # here: `blockfl latency --help` stays fast

    result = minimize_scalar(
        objective,
        bounds=(math.log(bounds[0]), math.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(result.x)


def optimal_latency(p: LatencyParams) -> float:
    """``E[T]`` at ``lambda*``; for ``lambda* = inf`` the limit ``A + T_dn + T_global``."""
    star = optimal_lambda(p)
    if math.isinf(star):
        return deterministic_bracket(p) + t_dn(p) + t_global(p)
    return expected_latency(dataclasses.replace(p, lambda_=star)).total
