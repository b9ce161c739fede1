"""Bounded JSON parsing for bytes that come from the network or from files others wrote.

Python's JSON decoder recurses once per nesting level in C. web3 (through py-evm) raises the
recursion limit to 100,000, so a body of 100,000 `[` overflows the C stack and kills the process
(SIGSEGV) instead of raising `RecursionError`. `loads` therefore checks the size and the nesting
depth first, with a linear scan that never recurses (brackets outside JSON strings), and only
then hands the text to the decoder. Every failure is a `JsonRejected` with a machine-readable
`reason`: `too_large`, `too_deep` or `malformed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

#: deeper than anything BlockFL sends (a block is 3 levels, a deployment's ABI about 8)
MAX_DEPTH = 16

# a JSON string, or the rest of the text after an unterminated one (linear: no backtracking)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class JsonRejected(ValueError):
    """JSON refused before or while decoding; `reason` names why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in JSON `data`, counted without recursion.

    Brackets inside strings do not count; an unbalanced text counts its deepest prefix, which is
    at least as deep as any decoder gets before it fails.
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    opens = ((codes == ord("[")) | (codes == ord("{"))).view(np.int8)
    return max(0, int(np.cumsum(2 * opens - 1, dtype=np.int32).max()))


def check(data: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise `JsonRejected` if `data` is larger than `max_bytes` or nests deeper than
    `max_depth`."""
    if len(data) > max_bytes:
        raise JsonRejected("too_large", f"{len(data)} bytes of JSON, more than {max_bytes}")
    # a depth of d needs d opening brackets: most texts are decided by counting them
    if data.count(b"[") + data.count(b"{") > max_depth and nesting_depth(data) > max_depth:
        raise JsonRejected("too_deep", f"JSON nested deeper than {max_depth} levels")


def loads(
    data: bytes | memoryview | str,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """Decode JSON `data` (UTF-8 only: the scan reads bytes as UTF-8) after `check`;
    `JsonRejected` on anything else."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    check(raw, max_bytes, max_depth)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=object_pairs_hook)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, hooks
        raise JsonRejected("malformed", str(exc)[:300]) from None
