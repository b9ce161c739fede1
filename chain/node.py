"""Start and stop a local anvil node (installed from npm as @foundry-rs/anvil-linux-amd64)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from blockfl.contracts import find_node_modules_bin

DEFAULT_PORT = 8545
ANVIL_CHAIN_ID = 31337
#: seconds between saves of a node's state file: a crash loses at most this much of the chain
STATE_INTERVAL = 1


#: bind addresses meaning every interface: this machine's processes reach them on loopback
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def local_address(host: str) -> str:
    """The address that reaches a server bound to `host` from this machine."""
    return WILDCARDS.get(host, host)


def reach_host(host: str) -> str:
    """`local_address` as a URL writes it (an IPv6 address in brackets)."""
    address = local_address(host)
    return f"[{address}]" if ":" in address else address


#: what to do when `find_anvil` finds none (a wheel has no node_modules)
ANVIL_MISSING = ("anvil not found: put Foundry's anvil on PATH (`npm install "
                 "@foundry-rs/anvil-linux-amd64` gives node_modules/.bin/anvil; `npm ci` in a "
                 "checkout) or set BLOCKFL_ANVIL to its path")
LOOPBACK_NAMES = {"127.0.0.1", "::1", "localhost"}


def serves_here(url: str, host: str, port: int) -> bool:
    """Whether `url` names the server bound to `host:port` on this machine (the same port, and
    the bind address, or a loopback name or this machine's name for loopback or a wildcard)."""
    parsed = urlsplit(url)
    try:
        url_port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    except ValueError:
        return False
    if url_port != port or parsed.hostname is None:
        return False
    local = local_address(host)
    names = {host, local}
    if local in LOOPBACK_NAMES or local.startswith("127."):
        names |= LOOPBACK_NAMES
    if host in WILDCARDS:
        names |= {socket.gethostname(), socket.getfqdn()}
    return parsed.hostname.lower() in {n.lower() for n in names}


def find_anvil() -> Path | None:
    """The anvil binary: $BLOCKFL_ANVIL, node_modules/.bin/anvil, or anvil on PATH."""
    env = os.environ.get("BLOCKFL_ANVIL")
    if env and Path(env).exists():
        return Path(env)
    local = find_node_modules_bin("anvil")
    if local is not None:
        return local
    found = shutil.which("anvil")
    return Path(found) if found else None


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _still_in_use(port: int, host: str, grace: float = 2.0) -> bool:
    """`port_in_use` after `grace` seconds for a node that was just killed to let go of it."""
    deadline = time.monotonic() + grace
    while port_in_use(port, host):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)
    return False


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on `port`, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def start_anvil(
    port: int = DEFAULT_PORT, log_path: Path | None = None, block_time: float | None = None,
    host: str = "127.0.0.1", state: Path | None = None,
    state_interval: int | None = STATE_INTERVAL, prefix: Sequence[str] = (),
) -> subprocess.Popen:
    """Start anvil in a new process session and wait until it answers; `state`: a file the
    chain is loaded from (if it exists) and saved to every `state_interval` seconds (None: only
    when anvil stops), so a crash (`kill -9`) loses at most the last interval, and keeps
    whole blocks (`chain.keeper` runs anvil and saves; the process returned is the keeper's);
    `prefix`: a command anvil runs under (`ip netns exec NS`: in an emulated host).

    Raises ConnectionError when the port is taken or anvil exits at start (never reports
    another process's node as ours)."""
    binary = find_anvil()
    if binary is None:
        raise FileNotFoundError(ANVIL_MISSING)
    if _still_in_use(port, local_address(host)):
        raise ConnectionError(f"port {port} on {host} is already in use (another node?): "
                              "choose another --port")
    args = [str(binary), "--host", host, "--port", str(port), "--silent"]
    if block_time:
        args += ["--block-time", str(block_time)]
    if state is not None:  # anvil's own periodic save can tear: the keeper saves it whole
        url = f"http://{reach_host(host)}:{port}"
        args = [sys.executable, "-m", "blockfl.chain.keeper", str(state),
                str(state_interval or 0), url, "--", *args]
    args = [*prefix, *args]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, host=host)
    except TimeoutError:
        proc.kill()
        raise ConnectionError(f"anvil did not answer on {host}:{port} within 15 s"
                              + (f"; see {log_path}" if log_path else "")) from None
    if proc.poll() is not None:
        raise ConnectionError(f"anvil exited at start (code {proc.returncode})"
                              + (f"; see {log_path}" if log_path else ""))
    return proc


def stop_pid(pid: int, timeout: float = 5.0) -> bool:
    """Terminate a process (then kill it); True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _exited(pid: int) -> bool:
    """Whether `pid` is gone (reaping it if it is our own child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass  # not our child: fall back to probing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def node_from_state(state: Path) -> Iterator[str]:
    """A node of our own on a free loopback port holding the chain saved in `state` (a run's
    `anvil-state.json`, read from a copy so the run's file is left as it is); its URL, while
    the context lasts."""
    with tempfile.TemporaryDirectory(prefix="blockfl-state-") as tmp:
        copy = Path(tmp) / state.name
        shutil.copyfile(state, copy)
        port = free_port()
        node = start_anvil(port, state=copy, state_interval=None)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_pid(node.pid)
