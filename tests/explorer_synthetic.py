"""A synthetic long chain for the explorer: the reader's input at 10,000 rounds in a moment.

`SyntheticExplorer` is an `Explorer` whose read returns seeded block rows and a noisy accuracy
curve (as the reader builds them: `inspection.block_json` rows, `blocks_view`) instead of
reading a node, so a page, the API and the browser can be driven at a chain length that a
test cannot commit on a real node in time.
"""

from __future__ import annotations

import random
import time

from blockfl.chain import inspection
from blockfl.chain.blocks import BlockRecord
from blockfl.explorer.reader import Explorer, Snapshot, blocks_view


def block_rows(rounds: int, seed: int = 0) -> list[dict]:
    """Block rows of rounds `rounds` .. 1 (newest first), as `Explorer._block_row` makes them."""
    rng = random.Random(seed)
    rows = []
    for r in range(rounds, 0, -1):
        record = BlockRecord(r, rng.randbytes(32), rng.randbytes(32), rng.randbytes(32),
                             rng.randbytes(32), f"0x{rng.getrandbits(160):040x}", 10,
                             1_700_000_000 + 5 * r, 400, rng.getrandbits(63))
        rows.append(inspection.block_json(record) | {"gas": 90_000, "forks": 0,
                                                      "models_match": True})
    return rows


def accuracy_curve(rounds: int, seed: int = 0) -> list[dict]:
    """A learning curve with noise (what blurs into a band when every round is drawn)."""
    rng = random.Random(seed)
    return [{"round": r, "accuracy": 0.95 - 0.8 / r ** 0.5 + rng.uniform(-0.03, 0.03),
             "loss": 0.1 + 2.0 / r ** 0.5 + rng.uniform(-0.05, 0.05)}
            for r in range(1, rounds + 1)]


class SyntheticExplorer(Explorer):
    """An explorer over a synthetic chain of `rounds` blocks (no node)."""

    def __init__(self, rounds: int) -> None:
        super().__init__(ledger=None)  # type: ignore[arg-type]
        self.rounds = rounds
        self._view = blocks_view(block_rows(rounds), accuracy_curve(rounds))

    def _read(self) -> Snapshot:
        chain = {"chain_id": 31337, "contract": "0x" + "ab" * 20, "head": self.rounds,
                 "updated": time.time(), "notes": []}
        return Snapshot(blocks=chain | self._view)
