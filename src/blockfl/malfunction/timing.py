"""Round latencies of the three systems, from the latency model with the experiment's config.

Vanilla FL takes ``T_local + T_up + T_dn,model + T_agg`` every round (:func:`vanilla_latency`).
A BlockFL round takes a Monte Carlo draw of the model's round latency (forks included); the
verified system adds one ``T_dn`` in a round where some device re-downloads, and ``T_dn`` plus a
fresh round-latency draw per stalled slot.
"""

from __future__ import annotations

import numpy as np

from blockfl.config import Config
from blockfl.latency import model
from blockfl.latency.from_config import params_from_config
from blockfl.latency.model import LatencyParams
from blockfl.latency.montecarlo import simulate
from blockfl.malfunction.corruption import entropy
from blockfl.malfunction.handouts import Handout
from blockfl.sim.setup import Experiment

STALL_STREAM = 3
"""Random stream of the stalled slots' round-latency draws."""


def latency_params(config: Config, experiment: Experiment) -> LatencyParams:
    """The latency model of the experiment: its config, the size of the model in bits (what
    a local update weighs) and each device's shard size."""
    bits = 8.0 * sum(t.numel() * t.element_size() for t in experiment.initial.values())
    samples = tuple(float(len(shard.y)) for shard in experiment.shards)
    return params_from_config(config, bits, samples)


def vanilla_latency(p: LatencyParams) -> float:
    """Vanilla FL round: ``T_local + T_up + T_dn,model + T_agg``, no mining or verification.

    The server sends back only the aggregated model, so the download is ``delta_m / R_dn``
    (not a block); the server's aggregation of ``N_D`` updates, ``delta_m N_D / f_c``, has the
    formula of ``T_global``.
    """
    download = p.delta_m / float(model.link_rate(p.w_dn, p.snr_dn_db))
    return model.t_local(p) + model.t_up(p) + download + model.t_global(p)


def blockfl_latencies(p: LatencyParams, rounds: int, seed: int) -> np.ndarray:
    """One Monte Carlo draw of the BlockFL round latency per round."""
    return simulate(p, rounds, seed).samples["total"]


def verified_extra(p: LatencyParams, handout: Handout, seed: int, round_: int) -> float:
    """The verified system's extra latency in a round: one ``T_dn`` if any device downloads
    again (in parallel), and ``T_dn`` plus a round latency per stalled slot."""
    extra = model.t_dn(p) if handout.redownloads else 0.0
    if handout.stalled_slots:
        waits = simulate(p, handout.stalled_slots, entropy(seed, round_, STALL_STREAM))
        extra += float(waits.samples["total"].sum()) + handout.stalled_slots * model.t_dn(p)
    return extra
