"""The committed contract artifacts are what the Solidity sources compile to."""

from __future__ import annotations

from blockfl.contracts import ARTIFACTS_DIR
from blockfl.contracts.build import compile_contracts, render


def test_committed_artifacts_match_a_fresh_compilation():
    for name, artifact in compile_contracts().items():
        assert (ARTIFACTS_DIR / f"{name}.json").read_text() == render(artifact), name
