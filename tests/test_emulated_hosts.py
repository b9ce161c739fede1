"""Emulated hosts: namespaces, veth pairs to a bridge, tbf-shaped links (`blockfl.emulated_hosts`).

The checks of a plan run anywhere; making hosts needs root or CAP_NET_ADMIN and `ip`/`tc`, and
those tests skip, saying why, where that is missing (CI runs as root: they run there)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from blockfl.config import LinksConfig
from blockfl.emulated_hosts import TCP_GOODPUT, EmulatedHosts, EmulationError, Host, check
from blockfl.latency.model import link_rate

LINKS = LinksConfig(w_up=1e6, snr_up_db=10.0, w_dn=2e6, snr_dn_db=10.0, w_m=1e7, snr_m_db=10.0)


def _can_emulate() -> str:
    try:
        check()
    except EmulationError as exc:
        return str(exc)
    return ""


needs_namespaces = pytest.mark.skipif(bool(_can_emulate()), reason=_can_emulate() or "ok")


@pytest.mark.parametrize("field,value", [("w_up", 0.0), ("w_dn", -1.0), ("w_m", math.inf),
                                         ("w_up", math.nan), ("snr_m_db", math.inf),
                                         ("snr_dn_db", math.nan)])
def test_rates_that_are_not_positive_and_finite_are_refused_before_anything_is_made(field, value):
    links = LinksConfig(**{field: value})
    with pytest.raises(EmulationError, match=f"links.{field}"):
        EmulatedHosts([("miner0", "miner")], links)


def test_a_rate_below_what_tc_shapes_is_refused():
    with pytest.raises(EmulationError, match="uplink rate"):
        EmulatedHosts([("device0", "device")], LinksConfig(w_up=1.0, snr_up_db=-30.0))


def test_more_hosts_than_the_subnet_holds_are_refused():
    names = [(f"device{j}", "device") for j in range(14)]
    with pytest.raises(EmulationError, match=r"do not fit subnet 10\.9\.0\.0/28"):
        EmulatedHosts(names, LINKS, subnet="10.9.0.0/28")
    assert len(EmulatedHosts(names[:13], LINKS, subnet="10.9.0.0/28").hosts) == 13


def test_a_plan_gives_each_role_its_links_rates():
    plan = EmulatedHosts([("chain", "chain"), ("miner0", "miner"), ("device0", "device")],
                         LINKS)
    up, down = link_rate(1e6, 10.0), link_rate(2e6, 10.0)
    miner = link_rate(1e7, 10.0)
    assert (plan.hosts["device0"].egress_bps, plan.hosts["device0"].ingress_bps) == (up, down)
    assert (plan.hosts["miner0"].egress_bps, plan.hosts["miner0"].ingress_bps) == (miner, miner)
    assert plan.hosts["chain"].egress_bps is None
    assert [h.address for h in plan.hosts.values()] == ["10.231.0.2", "10.231.0.3",
                                                       "10.231.0.4"]
    assert len({h.veth for h in plan.hosts.values()} | {plan.bridge}) == 4
    assert all(len(h.veth) <= 15 for h in plan.hosts.values())  # Linux's IFNAMSIZ - 1


def test_duplicate_and_unknown_hosts_are_refused():
    with pytest.raises(EmulationError, match="named twice"):
        EmulatedHosts([("miner0", "miner"), ("miner0", "miner")], LINKS)
    with pytest.raises(EmulationError, match="unknown role"):
        EmulatedHosts([("x", "router")], LINKS)


RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(); print("listening", flush=True)
c, _ = s.accept(); n = 0; first = None
while (b := c.recv(65536)):
    first = first or time.monotonic(); n += len(b)
print(n, time.monotonic() - first, flush=True)
"""
SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], 9000), timeout=10)
s.sendall(b"x" * int(sys.argv[2])); s.close()
"""


def _transfer(plan: EmulatedHosts, sender: str, receiver: str, size: int) -> float:
    """Bits per second of payload from `sender` to `receiver`, measured."""
    rx = subprocess.Popen(plan.command(receiver, [sys.executable, "-c", RECEIVER]),
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "listening"
        subprocess.run(plan.command(sender, [sys.executable, "-c", SENDER,
                                             plan.hosts[receiver].address, str(size)]),
                       check=True, timeout=60)
        received, seconds = rx.communicate(timeout=60)[0].split()
    finally:
        rx.kill()
    assert int(received) == size
    return 8 * size / float(seconds)


@needs_namespaces
def test_links_carry_the_models_rates_and_tear_down_leaves_nothing():
    plan = EmulatedHosts([("miner0", "miner"), ("device0", "device")], LINKS)
    with plan:
        assert sorted(plan.leftovers()) == sorted(
            [plan.bridge, *(h.namespace for h in plan.hosts.values()),
             *(h.veth for h in plan.hosts.values())])
        up = _transfer(plan, "device0", "miner0", 1_000_000)
        down = _transfer(plan, "miner0", "device0", 2_000_000)
    assert plan.leftovers() == []
    assert up == pytest.approx(link_rate(1e6, 10.0) * TCP_GOODPUT, rel=0.03)
    assert down == pytest.approx(link_rate(2e6, 10.0) * TCP_GOODPUT, rel=0.03)


@needs_namespaces
def test_a_link_taken_down_partitions_its_host_and_comes_back():
    plan = EmulatedHosts([("miner0", "miner"), ("miner1", "miner")], LINKS)
    probe = [sys.executable, "-c", "import socket,sys; socket.create_connection("
             "(sys.argv[1], 9), timeout=1)"]
    with plan:
        target = plan.hosts["miner1"].address
        refused = subprocess.run(plan.command("miner0", [*probe, target]), capture_output=True,
                                 text=True)
        assert "ConnectionRefused" in refused.stderr  # reachable: nothing listens on port 9
        plan.set_link("miner1", up=False)
        cut = subprocess.run(plan.command("miner0", [*probe, target]), capture_output=True,
                             text=True)
        assert "timed out" in cut.stderr or "unreachable" in cut.stderr.lower()
        plan.set_link("miner1", up=True)
        time.sleep(0.2)
        back = subprocess.run(plan.command("miner0", [*probe, target]), capture_output=True,
                              text=True)
        assert "ConnectionRefused" in back.stderr
    assert plan.leftovers() == []


@needs_namespaces
def test_a_failed_set_up_removes_what_it_made():
    plan = EmulatedHosts([("miner0", "miner"), ("device0", "device")], LINKS)
    device = plan.hosts["device0"]
    plan.hosts["device0"] = Host(**{**device.__dict__, "address": "not-an-address"})
    with pytest.raises(EmulationError, match="failed"):
        plan.up()  # the bridge, miner0 and device0's namespace and veth were made first
    assert plan.leftovers() == []
