"""`scripts/dp_update_signal.py`'s measure: an update's cosine with the geometric median of the
others separates honest from sign-flipped updates when the signal dominates, and not when
noise does."""

from __future__ import annotations

import torch

from tests.conftest import load_script


def _updates(noise: float, d: int = 4000) -> tuple[dict, list[dict]]:
    generator = torch.Generator().manual_seed(0)
    signal = torch.randn(d, generator=generator)
    base = {"w": torch.zeros(d)}
    updates = [{"w": (1 if i < 7 else -1) * signal + noise * torch.randn(d, generator=generator)}
               for i in range(10)]
    return base, updates


def test_the_others_median_separates_flipped_updates_only_above_the_noise():
    script = load_script("dp_update_signal")
    base, clear = _updates(noise=0.5)
    cosines = script.leave_one_out_cosines(base, clear)
    assert min(cosines[:7]) > 0.3 and max(cosines[7:]) < -0.3
    base, noisy = _updates(noise=50.0)  # the signal a fiftieth of each update's noise
    cosines = script.leave_one_out_cosines(base, noisy)
    assert max(abs(c) for c in cosines) < 4 * 4000 ** -0.5  # within the chance spread
