"""A local BlockFL network of real processes: anvil, the deployment, miners, devices.

`LocalNetwork` starts anvil, deploys the contracts with the experiment's parameters, writes the
effective config and `deployment.json` into the run directory, and starts each miner and device
as its own `blockfl miner` / `blockfl device` process with its own log file. Keys are the
standard development accounts: the deployer is dev:0, miner i is dev:(1+i) (funded by anvil for
gas), device j is dev:(100+j). Processes can be stopped, killed and restarted one by one (the
fault tests do), and `stop()` ends everything it started, also on errors. Anvil, the miners and
the explorer bind to `host` (loopback by default) on free ports, or on `port`, `port + 1`, ...

With `emulate_links`, anvil and every miner and device run as their own host instead: a network
namespace with its own address on a bridge, its link shaped to the `[links]` rates
(`blockfl.emulated_hosts`); the launcher and the explorer stay in this namespace and reach them
over the bridge, and `stop()` removes the hosts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockfl.chain.deployment import Deployment
from blockfl.chain.evm import EvmLedger
from blockfl.chain.node import (
    ANVIL_MISSING,
    WILDCARDS,
    find_anvil,
    free_port,
    local_address,
    port_in_use,
    reach_host,
    start_anvil,
    wait_for_port,
)
from blockfl.config import Config
from blockfl.emulated_hosts import HOSTS_FILE, EmulatedHosts
from blockfl.keys import dev_key, parse_key
from blockfl.signing import address_of

DEPLOYER = "dev:0"
#: ports inside emulated hosts (each host has its own address, so they are always free)
EMULATED_CHAIN_PORT = 8545
EMULATED_MINER_PORT = 8601
#: the chain's state, saved in the run directory every `STATE_INTERVAL` seconds and when anvil
#: stops (`chain up --state` reloads it)
ANVIL_STATE = "anvil-state.json"
MINER_KEY_OFFSET = 1
DEVICE_KEY_OFFSET = 100
#: many processes share a few cores: one torch thread each avoids oversubscription, which made
#: local training (and the computation time devices sign) up to 40x slower (unless overridden)
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} | dict(os.environ)
def certificate_names(host: str) -> list[str]:
    """The names, beyond loopback, a TLS certificate for servers bound to `host` must cover:
    the host itself, or this machine's name for a wildcard."""
    return [socket.gethostname()] if host in WILDCARDS else [host]


@dataclass
class Role:
    """One process of the network."""

    name: str
    args: list[str]
    log: Path
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None


class LocalNetwork:
    """Anvil, a deployment, M miner processes and N device processes under `run_dir`."""

    def __init__(self, config: Config, run_dir: Path, tls: bool = False,
                 host: str = "127.0.0.1", port: int | None = None,
                 emulate_links: bool = False, give_up: float | None = None):
        """`tls`: miners serve HTTPS with certificates (for `host`) of a local CA made under
        `run_dir/tls` at start; `host`: the address anvil, the miners and the explorer bind to;
        `port`: anvil's, then miner i's is `port + 1 + i` (None: free ports); `emulate_links`:
        each process its own host with shaped links (the plan and its rates are checked
        here, before anything is made); `give_up`: each device's `--give-up` (None: the
        device's default)."""
        self.config = config
        self.run_dir = run_dir
        self.use_tls = tls
        self.tls: tuple[Path, Path, Path] | None = None  # CA certificate, server cert, key
        self.host = host
        self.first_port = port
        self.give_up = give_up
        self.anvil: subprocess.Popen | None = None
        self.chain_port = 0
        self.rpc_url = ""
        self.miners: list[Role] = []
        self.devices: list[Role] = []
        self.deployment_path = run_dir / "deployment.json"
        self.config_path = run_dir / "config.toml"
        self.explorer: Role | None = None
        self._ledger: EvmLedger | None = None
        self._metrics: dict[int, dict[str, float]] = {}
        self._test: Any = None
        self.hosts: EmulatedHosts | None = None
        if emulate_links:
            names = [("chain", "chain"), *((f"miner{i}", "miner")
                                           for i in range(config.network.miners)),
                     *((f"device{j}", "device") for j in range(config.network.devices))]
            self.hosts = EmulatedHosts(names, config.links)

    # ------------------------------------------------------------------ lifecycle

    def start(self, start_devices: bool = True) -> LocalNetwork:
        """Start the chain, deploy, start every miner (and device); clean up on failure."""
        if find_anvil() is None:  # as a taken --port: before anything is made
            raise FileNotFoundError(ANVIL_MISSING)
        chain_port, *ports = self._ports()  # a taken --port fails before anything is made
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "logs").mkdir(exist_ok=True)
            if self.hosts is not None:
                self.hosts.up()
                (self.run_dir / HOSTS_FILE).write_text(json.dumps(self.hosts.describe(),
                                                                  indent=2) + "\n")
            self.config_path.write_text(self.config.to_toml())
            if self.use_tls:
                from blockfl.tls import make_local_certificates

                names = (certificate_names(self.host) if self.hosts is None else
                         [h.address for h in self.hosts.hosts.values()])
                self.tls = make_local_certificates(self.run_dir / "tls", names)
            self._start_chain(chain_port)
            self.miners = [self._miner_role(i, ports) for i in range(len(ports))]
            for role in self.miners:
                self._spawn(role)
            for role in self.miners:
                self._wait_serving(role)
            self.devices = [self._device_role(j) for j in range(self.config.network.devices)]
            if start_devices:
                for role in self.devices:
                    self._spawn(role)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> LocalNetwork:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _ports(self) -> list[int]:
        """Anvil's port, then each miner's: free ones, or from `port` on if none is taken."""
        count = 1 + self.config.network.miners
        if self.hosts is not None:
            return [EMULATED_CHAIN_PORT, *(EMULATED_MINER_PORT + i for i in range(count - 1))]
        if self.first_port is None:
            return [free_port() for _ in range(count)]
        ports = list(range(self.first_port, self.first_port + count))
        if ports[-1] > 65535:
            raise ValueError(f"--port {self.first_port} leaves no room for anvil and "
                             f"{count - 1} miners: ports up to {ports[-1]}, 65535 at most")
        taken = [p for p in ports if port_in_use(p, local_address(self.host))]
        if taken:
            raise ConnectionError(f"port(s) {', '.join(map(str, taken))} on {self.host} already "
                                  f"in use: the network needs {ports[0]}-{ports[-1]} (anvil, "
                                  "then one per miner); choose another --port")
        return ports

    def address(self, name: str) -> str:
        """The address process `name` (chain, miner0, device3, ...) binds to and is reached
        at: its emulated host's, else the network's `host`."""
        if self.hosts is not None:
            return self.hosts.hosts[name].address
        return reach_host(self.host)

    def _wait_serving(self, role: Role) -> None:
        assert role.port is not None
        host = self.address(role.name) if self.hosts else local_address(self.host)
        wait_for_port(role.port, timeout=120, host=host)

    def _start_chain(self, port: int) -> None:
        from blockfl.chain.deploy import deploy_to_node
        from blockfl.genesis import write_genesis
        from blockfl.sim.setup import task_genesis

        self.chain_port = port
        self.start_node()
        self.rpc_url = f"http://{self.address('chain')}:{port}"
        miners = [address_of(self.miner_key(i)) for i in range(self.config.network.miners)]
        genesis, state = task_genesis(self.config)
        deployment = deploy_to_node(self.config, self.rpc_url, miners, parse_key(DEPLOYER),
                                    genesis)
        deployment.write(self.deployment_path)
        write_genesis(self.deployment_path, state)
        if self.config.chain.mode == "merkle":  # devices send their own claims: gas money
            from blockfl.chain.evm import fund, rpc_web3

            fund(rpc_web3(self.rpc_url),
                 [address_of(self.device_key(j)) for j in range(self.config.network.devices)])

    def start_node(self, keep_state: bool = True) -> None:
        """(Re)start anvil on the network's port: from the run directory's state file (saved
        every `STATE_INTERVAL` seconds and at a clean stop), or, `keep_state` False, empty (a
        node that lost its state: no contract)."""
        state = self.run_dir / ANVIL_STATE
        if not keep_state:
            state.unlink(missing_ok=True)
        self.anvil = start_anvil(
            self.chain_port, log_path=self.run_dir / "logs" / "anvil.log",
            host=self.address("chain") if self.hosts else self.host, state=state,
            prefix=self.hosts.command("chain", []) if self.hosts else ())

    def stop_node(self, kill: bool = False) -> None:
        """Stop anvil: SIGKILL if `kill` (a crash: what it saved last is what it keeps), else
        SIGTERM (it saves its state), then SIGKILL."""
        if self.anvil is not None and self.anvil.poll() is None:
            if kill:
                self.anvil.kill()
            else:
                self.anvil.terminate()
            try:
                self.anvil.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.anvil.kill()
                self.anvil.wait()
        self.anvil = None

    def stop(self) -> None:
        """Stop devices, then miners (SIGTERM, then SIGKILL), the explorer, then anvil (and
        the emulated hosts)."""
        for role in [*self.devices, *self.miners, *filter(None, [self.explorer])]:
            self.stop_role(role)
        self.stop_node()
        if self.hosts is not None:
            self.hosts.down()

    # ------------------------------------------------------------------ roles

    @staticmethod
    def miner_key(i: int) -> bytes:
        """Key of miner i."""
        return dev_key(MINER_KEY_OFFSET + i)

    @staticmethod
    def device_key(j: int) -> bytes:
        """Key of device j."""
        return dev_key(DEVICE_KEY_OFFSET + j)

    def _url(self, name: str, port: int | None) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address(name)}:{port}"

    def miner_url(self, i: int) -> str:
        """Base URL of miner i."""
        return self._url(f"miner{i}", self.miners[i].port)

    def _common(self, log: Path) -> list[str]:
        args = ["--deployment", str(self.deployment_path), "--config", str(self.config_path),
                "--log", str(log)]
        if self.tls:
            args += ["--ca-cert", str(self.tls[0])]
        return args

    def _miner_role(self, i: int, ports: list[int]) -> Role:
        log = self.run_dir / "logs" / f"miner{i}.jsonl"
        peers = ",".join(self._url(f"miner{k}", p) for k, p in enumerate(ports) if k != i)
        host = self.address(f"miner{i}") if self.hosts else self.host
        args = ["miner", "--key", f"dev:{MINER_KEY_OFFSET + i}", "--host", host,
                "--port", str(ports[i]),
                "--peers", peers, "--data-dir", str(self.run_dir / f"miner{i}"),
                *self._common(log)]
        if self.tls:
            args += ["--tls-cert", str(self.tls[1]), "--tls-key", str(self.tls[2])]
        return Role(f"miner{i}", args, log, port=ports[i])

    @property
    def attackers(self) -> list[int]:
        """Indices of the devices that attack (`[attack] attackers`; each device process finds
        out from the config it is given)."""
        from blockfl.devices.behaviours import attackers

        attack = self.config.attack
        return attackers(self.config.network.devices, attack.attackers, self.config.run.seed)

    def _device_role(self, j: int) -> Role:
        log = self.run_dir / "logs" / f"device{j}.jsonl"
        urls = ",".join(self.miner_url(i) for i in range(len(self.miners)))
        files = self.config.data.device_files  # each device its own file, or a shard
        own = ["--data", files.format(index=j)] if files else ["--shard", str(j)]
        args = ["device", "--key", f"dev:{DEVICE_KEY_OFFSET + j}", "--miners", urls, *own,
                *self._common(log)]
        if self.give_up is not None:
            args += ["--give-up", str(self.give_up)]
        return Role(f"device{j}", args, log)

    def _spawn(self, role: Role) -> None:
        out = open(self.run_dir / "logs" / f"{role.name}.out", "ab")  # noqa: SIM115
        argv = [sys.executable, "-m", "blockfl.cli", *role.args]
        role.process = subprocess.Popen(
            self.hosts.command(role.name, argv) if self.hosts else argv,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=CHILD_ENV,
        )
        out.close()

    def start_explorer(self, port: int) -> str:
        """Start `blockfl explorer` on this network (its miners and logs); its URL once it
        serves."""
        args = ["explorer", "--deployment", str(self.deployment_path), "--rpc-url",
                self.rpc_url, "--host", self.host, "--port", str(port),
                "--logs", str(self.run_dir / "logs"),
                "--config", str(self.config_path),
                "--miners", ",".join(self.miner_url(i) for i in range(len(self.miners)))]
        if self.tls:
            args += ["--ca-cert", str(self.tls[0])]
        self.explorer = Role("explorer", args, self.run_dir / "logs" / "explorer.out", port=port)
        self.start_role(self.explorer)
        return f"http://{reach_host(self.host)}:{port}/"

    def start_role(self, role: Role, wait: bool = True) -> None:
        """(Re)start a stopped process; for a miner, wait until it serves."""
        if role.running:
            return
        self._spawn(role)
        if wait and role.port is not None:
            self._wait_serving(role)

    def stop_role(self, role: Role, kill: bool = False) -> None:
        """Stop a process: SIGKILL if `kill` (a crash), else SIGTERM then SIGKILL."""
        process = role.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # ------------------------------------------------------------------ observing

    @property
    def ledger(self) -> EvmLedger:
        """The deployment's ledger, read through anvil."""
        if self._ledger is None:
            self._ledger = Deployment.read(self.deployment_path).ledger(self.rpc_url)
        return self._ledger

    def round_metrics(self, round_: int) -> dict[str, float]:
        """Test metrics of a round's global model, downloaded from a running miner (checked
        against the on-chain hash) and evaluated on the experiment's test split (cached)."""
        if round_ in self._metrics:
            return self._metrics[round_]
        from blockfl.client import MinerClient
        from blockfl.sim.setup import test_data
        from blockfl.task import evaluate

        if self._test is None:
            self._test = test_data(self.config)
        live = [i for i, role in enumerate(self.miners) if role.running]
        if not live:
            raise RuntimeError("no miner is running to serve the global models")
        block = self.ledger.get_block(round_)
        if block is None:
            raise LookupError(f"no block committed for round {round_}")
        state = None
        for i in live:  # the winner has it at once, the others once they adopted the block
            client = MinerClient(self.miner_url(i), ca_cert=self.tls[0] if self.tls else None)
            try:
                state = client.model(block.global_model_hash)
            finally:
                client.close()
            if state is not None:
                break
        if state is None:
            raise LookupError(f"no running miner serves the global model of round {round_}")
        task, test = self._test
        metrics = evaluate(task, state, test)
        self._metrics[round_] = metrics
        return metrics

    def model_metrics(self) -> list[dict[str, float]]:
        """Test metrics of every committed round's global model (see `round_metrics`)."""
        return [{"round": r, **self.round_metrics(r)}
                for r in range(1, self.ledger.head().round + 1)]

    def wait_for_claims(self, timeout: float = 120.0) -> None:
        """Block until every update in a committed merkle block was claimed (devices claim
        once they see their block)."""
        deadline = time.monotonic() + timeout
        ledger = self.ledger
        while True:
            included = sum(b.num_updates for b in ledger.blocks())
            claimed = len(ledger.accepted_updates())
            if claimed >= included:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{claimed} of {included} updates claimed after "
                                   f"{timeout:.0f}s; logs in {self.run_dir / 'logs'}")
            time.sleep(0.5)

    def wait_for_round(self, round_: int, timeout: float = 300.0,
                       tick: Callable[[], None] | None = None) -> None:
        """Block until the chain has `round_` blocks, calling `tick` at every look; fail fast
        if every miner, or every started device, exited."""
        deadline = time.monotonic() + timeout
        while self.ledger.head().round < round_:
            if tick is not None:
                tick()
            logs = self.run_dir / "logs"
            if self.miners and not any(r.running for r in self.miners):
                raise RuntimeError(f"every miner exited; see the logs in {logs}")
            started = [r for r in self.devices if r.process is not None]
            if started and not any(r.running for r in started) and \
                    self.ledger.head().round < round_:
                raise RuntimeError(f"every device exited before round {round_} was committed; "
                                   f"see the logs in {logs}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"round {round_} not committed after {timeout:.0f}s "
                    f"(head at {self.ledger.head().round}); logs in {self.run_dir / 'logs'}"
                )
            time.sleep(0.2)
