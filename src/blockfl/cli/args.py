"""Argument types that refuse bad numbers with a one-line usage error, before any work, and
the miner clients of a `--miners`/`--peers` list."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blockfl.client import MinerClient


def at_least(minimum: int, what: str = "a number") -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{what} is at least {minimum}, got {number}")
        return number

    return parse


def port(value: str) -> int:
    """An argparse type: a TCP port number, 1..65535."""
    number = at_least(1, "a port")(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {number}")
    return number


#: a round of the chain: 0 is the genesis model
ROUND = at_least(0, "a round")
#: a round that has a block
BLOCK_ROUND = at_least(1, "a round with a block")


def miner_clients(urls: str, ca_cert: Path | None = None,
                  timeout: float = 30.0) -> list[MinerClient]:
    """Clients of comma-separated miner URLs; ValueError for one that is not http(s)."""
    from blockfl.client import MinerClient

    found = [u for u in (s.strip() for s in urls.split(",")) if u]
    for url in found:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"a miner URL starts with http:// or https://, got {url!r}")
    return [MinerClient(u, timeout=timeout, ca_cert=ca_cert) for u in found]
