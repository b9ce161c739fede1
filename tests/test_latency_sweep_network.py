"""`scripts/latency_sweep_network.py`'s accounting of the paper's fork cost on measured rounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import load_script


def test_a_forked_round_is_charged_as_run_again():
    script = load_script("latency_sweep_network")
    durations = np.array([1.0, 2.0, 3.0, 2.0])
    # one round in four forked: a committed round takes 4/3 attempts of 2 s on average
    assert script.expected_latency(durations, np.array([0, 1, 0, 0.0])) == pytest.approx(8 / 3)
    assert script.expected_latency(durations, np.zeros(4)) == pytest.approx(2.0)
    assert script.expected_latency(durations, np.ones(4)) == math.inf
