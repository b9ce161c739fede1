"""The latency model's parameters of an experiment configuration (`blockfl.config.Config`).

One place maps the experiment's sections onto :class:`LatencyParams`: devices and miners
(`[network]`), the block generation rate per miner (`chain.block_rate`), the quorum
(`chain.quorum`, 0 a majority as on chain), `T_wait`, the links and the header size
(`[links]`). What the configuration does not hold comes from the run: the size of one local
update in bits and the devices' sample counts. The local training time follows the
`modelled` compute time of `[training]` (epochs x samples x `ms_per_sample`).
"""

from __future__ import annotations

from blockfl.config import Config
from blockfl.latency.model import LatencyParams

CLOCK_HZ = 1e9
"""The clock speed f_c the mapping assumes; only delta_d / f_c (seconds per sample) matters for
local training, and delta_m / f_c makes aggregation and verification take 1 ns per bit."""


def params_from_config(
    config: Config, update_bits: float, samples: float | tuple[float, ...] = 200.0
) -> LatencyParams:
    """The latency model of ``config``, one local update of ``update_bits`` bits and
    ``samples`` local samples (one value, or one per device)."""
    links = config.links
    seconds_per_sample = config.training.epochs * config.training.ms_per_sample / 1000
    return LatencyParams(
        n_devices=config.network.devices,
        n_miners=config.network.miners,
        samples=samples,
        lambda_=config.chain.block_rate,
        t_wait=config.network.t_wait,
        w_up=links.w_up, w_dn=links.w_dn, w_m=links.w_m,
        snr_up_db=links.snr_up_db, snr_dn_db=links.snr_dn_db, snr_m_db=links.snr_m_db,
        delta_d=seconds_per_sample * CLOCK_HZ,
        delta_m=update_bits,
        f_c=CLOCK_HZ,
        h=links.header_bits,
        quorum=config.chain.quorum,
    )
