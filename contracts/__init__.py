"""BlockFL Solidity contracts and their committed compiled artifacts (ABI and bytecode)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
CONTRACT_NAMES = ("BlockFL", "RewardToken")


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The committed artifact of contract `name`: abi, bytecode, deployedBytecode, compiler."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no artifact for {name!r} at {path}; run `python -m blockfl.contracts.build`"
        )
    return json.loads(path.read_text())
