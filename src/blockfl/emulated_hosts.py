"""Emulated hosts: each process in its own network namespace, links shaped to the model's rates.

An `EmulatedHosts` plan gives every host (anvil, each miner, each device) a network namespace
with one interface, `eth0`, at its own address in one /24 subnet, joined by a veth pair to a
bridge in the caller's namespace (which holds the subnet's first address, so the launcher
reaches every host). Links are shaped with `tc` token buckets (an `htb` class per link), the
latency model's rates `W log2(1 + SNR)`:

- a device's uplink (egress of its `eth0`) at `w_up/snr_up_db`, its downlink (egress of the
  bridge port towards it) at `w_dn/snr_dn_db`;
- a miner's link, both ways, at `w_m/snr_m_db`;
- anvil's link is not shaped, and neither is any host's traffic to or from anvil (a second,
  unlimited `htb` class, chosen by a `u32` filter on anvil's address): the chain's RPC is
  outside the latency model, and a device polling the chain must not drain its uplink's bucket.

A bucket holds `burst_bytes` and is full when a link has been idle: a transfer of S framed
bytes then takes `(S - burst_bytes) / R` (`transfer_seconds`).

This kernel has `tbf` and `htb` but no `netem`: there is no delay or loss, only rates, and a
partition is a link taken down (`set_link`). Nothing here is created before `check()` passed,
and `down()` removes every namespace, veth and the bridge, also after a partial `up()`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from blockfl.config import LinksConfig
from blockfl.latency.model import link_rate

#: the plan of a run's emulated hosts (`describe()`), in its run directory
HOSTS_FILE = "hosts.json"
#: the default subnet of the hosts (private, inside namespaces this process makes)
DEFAULT_SUBNET = "10.231.0.0/24"
#: CAP_NET_ADMIN's bit in /proc/self/status CapEff
CAP_NET_ADMIN = 12
#: a link's bucket: two full-size frames (htb needs at least one; more would let a larger
#: head of every transfer pass unshaped)
BURST_BYTES = 2 * 1514
#: the class of traffic to and from the chain: not shaped
UNSHAPED_RATE = "10gbit"
#: TCP payload per shaped byte: tc counts whole Ethernet frames (1,514 bytes at MTU 1,500),
#: which carry 1,448 payload bytes (IPv4 20 and TCP 32 bytes with timestamps). An emulated
#: link of rate R moves R x TCP_GOODPUT bit/s of what an application sends.
TCP_GOODPUT = 1448 / 1514


class EmulationError(ValueError):
    """The hosts cannot be set up here: a one-line reason (capability, tool, bad plan). A
    ValueError, so the CLI prints it as one line like every other refused input."""


@dataclass(frozen=True)
class Host:
    """One emulated host: its name, role, namespace, address and shaped rates (bit/s)."""

    name: str
    role: str  # chain | miner | device
    namespace: str
    address: str
    veth: str  # the bridge-side end of its veth pair
    egress_bps: float | None  # its eth0's rate (None: not shaped)
    ingress_bps: float | None  # the bridge port's rate towards it (None: not shaped)


def role_rates(links: LinksConfig) -> dict[str, tuple[float | None, float | None]]:
    """(egress, ingress) bit/s per role, from the `[links]` section; checks every rate."""
    for name in ("w_up", "w_dn", "w_m"):
        value = getattr(links, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise EmulationError(f"links.{name} = {value!r}: a bandwidth must be a finite "
                                 "number > 0")
    for name in ("snr_up_db", "snr_dn_db", "snr_m_db"):
        value = getattr(links, name)
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise EmulationError(f"links.{name} = {value!r}: an SNR must be a finite number "
                                 "of dB")
    up = float(link_rate(links.w_up, links.snr_up_db))
    down = float(link_rate(links.w_dn, links.snr_dn_db))
    miner = float(link_rate(links.w_m, links.snr_m_db))
    for name, rate in (("uplink", up), ("downlink", down), ("miner link", miner)):
        if not rate >= 8.0:  # tc's smallest rate is 1 byte/s
            raise EmulationError(f"the {name} rate {rate:.3g} bit/s is below what tc can "
                                 "shape (8 bit/s): raise its bandwidth or SNR")
    return {"chain": (None, None), "miner": (miner, miner), "device": (up, down)}


@dataclass
class EmulatedHosts:
    """A plan of hosts on one bridge; `up()` makes them, `down()` removes them."""

    names: Sequence[tuple[str, str]]  # (host name, role) in address order
    links: LinksConfig
    subnet: str = DEFAULT_SUBNET
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(init=False)

    def __post_init__(self) -> None:
        rates = role_rates(self.links)
        try:
            net = ipaddress.ip_network(self.subnet)
        except ValueError as exc:
            raise EmulationError(f"subnet {self.subnet!r}: {exc}") from None
        usable = net.num_addresses - 3  # network, broadcast, the bridge's address
        if len(self.names) > usable:
            raise EmulationError(f"{len(self.names)} hosts do not fit subnet {self.subnet} "
                                 f"({usable} addresses besides the bridge)")
        seen = set()
        self.hosts = {}
        first = net.network_address + 2
        for i, (name, role) in enumerate(self.names):
            if name in seen:
                raise EmulationError(f"host {name!r} is named twice")
            if role not in rates:
                raise EmulationError(f"host {name!r}: unknown role {role!r}")
            seen.add(name)
            egress, ingress = rates[role]
            self.hosts[name] = Host(name, role, f"bfl-{self.tag}-{name}", str(first + i),
                                    f"bf{self.tag}h{i}", egress, ingress)

    @property
    def bridge(self) -> str:
        """The bridge's interface name (in the caller's namespace)."""
        return f"bf{self.tag}br"

    @property
    def gateway(self) -> str:
        """The bridge's own address: where the hosts reach the caller."""
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside host `name`'s namespace."""
        return ["ip", "netns", "exec", self.hosts[name].namespace, *argv]

    def up(self) -> EmulatedHosts:
        """Check, then make the bridge, the namespaces, the veth pairs and the shaping; on any
        failure remove what was made and raise `EmulationError`."""
        check()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.prefix}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts.values():
                self._make(host)
        except BaseException:
            self.down()
            raise
        return self

    def _make(self, host: Host) -> None:
        ns = host.namespace
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", host.veth, "master", self.bridge)
        # one frame per packet: a GSO super-packet of 64 KB would pass an htb class whose
        # bucket holds a single token, and the head of every transfer would go unshaped
        _ip("link", "set", host.veth, "gso_max_segs", "1")
        _ip("-n", ns, "link", "set", "eth0", "gso_max_segs", "1")
        _ip("link", "set", host.veth, "up")
        _ip("-n", ns, "addr", "add", f"{host.address}/{self.prefix}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        chain = [h.address for h in self.hosts.values() if h.role == "chain"]
        if host.egress_bps is not None:
            _shape(host.egress_bps, ["ip", "netns", "exec", ns], "eth0", "dst", chain)
        if host.ingress_bps is not None:
            _shape(host.ingress_bps, [], host.veth, "src", chain)

    def set_link(self, name: str, up: bool) -> None:
        """Take host `name`'s link down (a partition) or bring it back."""
        _ip("link", "set", self.hosts[name].veth, "up" if up else "down")

    def down(self) -> None:
        """Remove every namespace, veth pair and the bridge of this plan (idempotent)."""
        for host in self.hosts.values():
            _ip("netns", "del", host.namespace, check=False)  # takes its veth pair along
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """What of this plan still exists: namespace names and interface names."""
        namespaces = set(_run(["ip", "netns", "list"]).split())
        links = _run(["ip", "-o", "link", "show"])
        found = [h.namespace for h in self.hosts.values() if h.namespace in namespaces]
        found += [dev for dev in [self.bridge, *(h.veth for h in self.hosts.values())]
                  if f" {dev}:" in links or f" {dev}@" in links]
        return found

    def describe(self) -> dict[str, object]:
        """The plan as JSON: subnet, bridge, TCP goodput and each host's address and rates
        (`latency compare` models an emulated run's transfers from it)."""
        return {"subnet": self.subnet, "bridge": self.bridge, "gateway": self.gateway,
                "tcp_goodput": TCP_GOODPUT, "burst_bytes": BURST_BYTES,
                "hosts": {h.name: {"role": h.role, "address": h.address,
                                   "egress_bps": h.egress_bps, "ingress_bps": h.ingress_bps}
                          for h in self.hosts.values()}}

    def __enter__(self) -> EmulatedHosts:
        return self.up()

    def __exit__(self, *_: object) -> None:
        self.down()


def has_net_admin() -> bool:
    """Whether this process may make namespaces and shape links (root or CAP_NET_ADMIN)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def check() -> None:
    """Raise `EmulationError` with a one-line reason when hosts cannot be emulated here."""
    if not os.uname().sysname == "Linux":
        raise EmulationError("emulated links need Linux network namespaces")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise EmulationError(f"emulated links need {' and '.join(missing)} on PATH "
                             "(Debian: apt-get install iproute2)")
    if not has_net_admin():
        raise EmulationError("emulated links need root or CAP_NET_ADMIN (network namespaces "
                             "and tc)")


def transfer_seconds(payload_bytes: float, rate_bps: float, goodput: float = TCP_GOODPUT,
                     burst_bytes: float = BURST_BYTES) -> float:
    """Seconds an idle emulated link of `rate_bps` takes to carry `payload_bytes` of TCP
    payload: its frames, less the full bucket's head, at the rate."""
    return max(payload_bytes / goodput - burst_bytes, 0.0) * 8 / rate_bps


def _shape(rate_bps: float, prefix: list[str], dev: str, chain_side: str,
           chain: list[str]) -> None:
    """`dev`'s egress at `rate_bps` (htb class 1:10, the default), but traffic whose
    `chain_side` (src or dst) address is the chain's, in class 1:20, unshaped."""
    tc = [*prefix, "tc"]
    rate = f"{max(8, round(rate_bps))}bit"
    burst = str(BURST_BYTES)
    _checked([*tc, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default",
              "10"])
    _checked([*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
              "rate", rate, "ceil", rate, "burst", burst, "cburst", burst])
    _checked([*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb",
              "rate", UNSHAPED_RATE, "quantum", "60000"])
    for address in chain:
        _checked([*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio",
                  "1", "u32", "match", "ip", chain_side, f"{address}/32", "flowid", "1:20"])


def _ip(*args: str, check: bool = True) -> None:
    if check:
        _checked(["ip", *args])
    else:
        subprocess.run(["ip", *args], capture_output=True, check=False)


def _checked(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise EmulationError(f"`{' '.join(argv)}` failed: {reason[-1] if reason else done}")


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
