"""Run anvil with its state file saved whole: `python -m blockfl.chain.keeper STATE INTERVAL
URL -- ANVIL ARGS...`.

anvil's own `--state-interval` save reads the chain's blocks and then waits for the accounts;
a block mined in between lands in the accounts but not in the blocks, and a node restarted
from that file holds a committed round whose transaction and `BlockCommitted` event are gone
(a miner then reads a head it cannot find). The keeper starts anvil (loading STATE if it
exists), saves through `anvil_dumpState` every INTERVAL seconds (0: only when it stops; on a
chain so long that a save takes more than INTERVAL / 4, every 4 x a save's duration) and
writes a dump only once its blocks, transactions and senders' nonces agree (`is_whole`), by
an atomic rename (a state file that does not agree when the keeper starts, torn before it, is
saved unchecked). On SIGTERM or SIGINT it saves once more and stops anvil; if the keeper is
killed, anvil dies with it (Linux), and the last whole save is what the chain keeps."""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

#: tries of one save before it writes a dump that does not check (a tear lasts one block's
#: mining, milliseconds)
TRIES = 40
PR_SET_PDEATHSIG = 1
#: a long chain's dump takes long to make and check: the next save waits at least this many
#: times the last one's duration, so saving takes at most a fifth of the keeper's time
BACKOFF = 4


def is_whole(state: dict) -> bool:
    """Whether a dump's accounts, blocks and transactions are of one moment: the transactions
    are those the blocks list, and every account without code sent exactly its nonce of them."""
    blocks, mined = state.get("blocks", []), state.get("transactions", [])
    if sum(len(block.get("transactions", [])) for block in blocks) != len(mined):
        return False
    sent = Counter(tx["info"]["from"].lower() for tx in mined)
    return all(int(account.get("nonce", 0)) == sent[address.lower()]
               for address, account in state.get("accounts", {}).items()
               if account.get("code") in (None, "", "0x"))


def dump(url: str) -> bytes:
    """The node's state as anvil's JSON state file holds it."""
    request = urllib.request.Request(url, data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "anvil_dumpState", "params": []}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise OSError(f"anvil_dumpState: {reply['error']}")
    return gzip.decompress(bytes.fromhex(reply["result"].removeprefix("0x")))


def save(url: str, path: Path, stopping: threading.Event | None = None,
         check: bool = True) -> bool:
    """Write the node's state to `path` (atomically) once a dump is whole (at once without
    `check`); False if the node did not answer (nothing is written)."""
    for attempt in range(TRIES):
        try:
            raw = dump(url)
        except OSError:
            return False
        if not check or is_whole(json.loads(raw)) or attempt == TRIES - 1:
            break
        (stopping or threading.Event()).wait(0.05)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(raw)
    tmp.replace(path)
    return True


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: anvil outlives a kill
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Run anvil, saving its state; anvil's exit code."""
    if len(argv) < 5:
        print("usage: python -m blockfl.chain.keeper STATE INTERVAL URL -- ANVIL [ARGS...]",
              file=sys.stderr)
        return 2
    state, interval, url, rest = Path(argv[0]), float(argv[1]), argv[2], argv[3:]
    anvil = rest[1:] if rest[:1] == ["--"] else rest
    # a file saved before the keeper may already hold a tear: its dumps can never check
    check = not state.exists() or is_whole(json.loads(state.read_bytes()))
    if state.exists():
        anvil += ["--load-state", str(state)]
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    child = subprocess.Popen(anvil, preexec_fn=_die_with_parent)
    wait = interval or 0.2
    while child.poll() is None and not stopping.is_set():
        if stopping.wait(wait) or child.poll() is not None:
            break
        if interval:
            started = time.monotonic()
            save(url, state, stopping, check)
            wait = max(interval, BACKOFF * (time.monotonic() - started))
    if child.poll() is None:
        save(url, state, check=check)
        child.terminate()
        try:
            return child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
