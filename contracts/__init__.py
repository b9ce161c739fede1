"""BlockFL Solidity contracts and their committed compiled artifacts (ABI and bytecode)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
CONTRACT_NAMES = ("BlockFL",)


def find_node_modules(start: Path = CONTRACTS_DIR) -> Path | None:
    """The nearest node_modules folder at or above `start` (or $BLOCKFL_NODE_MODULES)."""
    env = os.environ.get("BLOCKFL_NODE_MODULES")
    if env:
        return Path(env)
    for folder in [start, *start.parents, Path.cwd()]:
        if (folder / "node_modules").is_dir():
            return folder / "node_modules"
    return None


def find_node_modules_bin(name: str) -> Path | None:
    """An executable installed by npm (node_modules/.bin/NAME), if present."""
    node_modules = find_node_modules()
    if node_modules is None:
        return None
    path = node_modules / ".bin" / name
    return path if path.exists() else None


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The committed artifact of contract `name`: abi, bytecode, deployedBytecode, compiler."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no artifact for {name!r} at {path}; run `python -m blockfl.contracts.build`"
        )
    return json.loads(path.read_text())
