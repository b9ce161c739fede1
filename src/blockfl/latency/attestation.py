"""The attestation phase of a round with a quorum of miners: the term T_att.

Before it commits, the winning miner sends its candidate block to the other miners at once;
each checks it (at most re-verifying the N_D updates, ``delta_m N_D / f_c``, as in
cross-verification) and answers with a 65-byte signature. The block needs the answers of
``q - 1`` miners (the committer counts itself), so the phase lasts as long as the slowest of the
``q - 1`` fastest miner links:

    T_att = (h + delta_m N_D + 520) / R_m,(q-1) + delta_m N_D / f_c,    T_att = 0 for q <= 1

where ``R_m,(q-1)`` is the (q-1)-th largest rate ``W_m log2(1 + SNR_mj)`` over the other miners.
It adds to every attempt, like T_bp (this module gives the term; folding it into the expected
latency is the latency model's business).
"""

from __future__ import annotations

import numpy as np

from blockfl.latency.model import LatencyParams, block_bits, link_rate, t_global

SIGNATURE_BITS = 8 * 65


def t_att(p: LatencyParams, quorum: int) -> float:
    """Attestation time of miner ``p.miner``'s candidate with a quorum of ``quorum`` miners."""
    if quorum <= 1:
        return 0.0
    rates = np.atleast_1d(link_rate(p.w_m, p.miner_snr_db)).astype(float)
    others = np.sort(np.delete(rates, p.miner))[::-1]
    if quorum - 1 > len(others):
        raise ValueError(f"a quorum of {quorum} needs {quorum - 1} other miners, "
                         f"there are {len(others)}")
    return float((block_bits(p) + SIGNATURE_BITS) / others[quorum - 2] + t_global(p))
