"""The attestation term T_att of a round with a quorum of miners."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from blockfl.latency.attestation import SIGNATURE_BITS, t_att
from blockfl.latency.model import LatencyParams, block_bits, link_rate, t_global


def test_attestation_time_grows_with_the_quorum_and_slower_links():
    p = LatencyParams()
    assert t_att(p, 1) == 0.0
    rate = np.delete(np.atleast_1d(link_rate(p.w_m, p.miner_snr_db)), p.miner).max()
    expected = (block_bits(p) + SIGNATURE_BITS) / rate + t_global(p)
    assert t_att(p, 2) == pytest.approx(expected)
    assert t_att(p, p.n_miners) >= t_att(p, 2)
    with pytest.raises(ValueError):
        t_att(p, p.n_miners + 1)
    slower = replace(p, w_m=p.w_m / 10)
    assert t_att(slower, 2) > t_att(p, 2)
