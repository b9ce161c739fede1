"""Experiment configuration: one TOML file, every field overridable by a command-line flag.

Sections and fields are dataclasses; `add_config_flags` generates `--section-field VALUE`
flags from them (e.g. `--network-devices 20`, `--chain-ledger local`), so a new field is a new
flag without further code.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "demo.toml"


@dataclass(frozen=True)
class RunConfig:
    """Rounds, seed and where the run directory goes."""

    rounds: int = 10
    seed: int = 0
    out_dir: str = "runs"
    name: str = ""
    engine: str = "local"  # local (this process) | ray (device training on a Ray cluster)
    ray_address: str = ""  # an existing Ray cluster (e.g. "auto", "10.0.0.1:6379"); "" = local
    batch_training: bool = True  # train devices stacked: the same updates as one by one


@dataclass(frozen=True)
class TaskConfig:
    """What the network learns (`blockfl.task`): a task named by `module`."""

    # "builtin" (the [data] set and [model] below), another registered name (entry point group
    # `blockfl.tasks`), "pkg.module:ATTR" or "path/to/task.py:ATTR"
    module: str = "builtin"
    # task "flower": a Flower NumPyClient's client_fn, "my_app.client:client_fn", or a ClientApp
    # of the message API, "my_app.client_app:app"
    flower_client: str = ""
    # a ClientApp's model (a ServerApp's, in Flower): "my_app.task:Net", an nn.Module class or a
    # function returning one or its state dict; its state is the genesis model
    flower_model: str = ""


@dataclass(frozen=True)
class DataConfig:
    """Which data set and how it is split across devices."""

    dataset: str = "digits"  # digits | synthetic (regression) | blobs (classification) | mnist
    mnist_path: str = ""
    partition: str = "iid"  # iid | dirichlet
    alpha: float = 0.5
    size_skew: float = 0.5
    test_fraction: float = 0.2
    synthetic_samples: int = 4000
    synthetic_dim: int = 20
    synthetic_noise: float = 0.5
    label: str = "label"  # the label column of a device's CSV data file (device --data)
    # `network up`: device j reads only its own file, this pattern with j as {index}, e.g.
    # "split/device-{index:04d}.npz" (`blockfl data split` names files so); "": --shard j
    device_files: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """The model trained by every device."""

    name: str = "mlp"  # logreg | mlp | mlp2 | cnn | linreg


@dataclass(frozen=True)
class TrainingConfig:
    """Local training on each device."""

    algorithm: str = "sgd"  # sgd (FedAvg) | svrg (the paper's federated SVRG, linear regression)
    epochs: int = 2
    lr: float = 0.3
    # the learning rate of round r is lr x lr_decay^(r - 1): 1 keeps it constant; below 1 it
    # decays round by round (what DP-SGD needs, where the last round's noise sets the model)
    lr_decay: float = 1.0
    batch_size: int = 16
    # The computation time a device signs: "modelled" (epochs x samples x ms_per_sample, as in
    # the latency model) or "measured" (wall clock of its training). Modelled times make block
    # hashes, the proof-of-work race and which devices are late reproducible to the bit, also
    # on a loaded machine; measured ones make `simulate` late whenever training is slow.
    compute_time: str = "modelled"
    ms_per_sample: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"training.lr_decay = {self.lr_decay} out of range: the learning "
                             "rate's factor per round, 0 < lr_decay <= 1")

    def at_round(self, round_: int) -> TrainingConfig:
        """This training for round `round_` (from 1): its learning rate decayed
        `round_ - 1` times by `lr_decay`; itself when the rate is constant."""
        if self.lr_decay == 1.0:
            return self
        return replace(self, lr=self.lr * self.lr_decay ** max(round_ - 1, 0))


@dataclass(frozen=True)
class NetworkConfig:
    """Devices, miners and the round's timing."""

    devices: int = 10
    miners: int = 3
    t_wait: float = 5.0  # seconds a miner waits for updates before closing its candidate block
    recompute_global: bool = True  # devices recompute the aggregate from the block's updates
    answer_timeout: float = 30.0  # seconds for a whole answer of a miner or peer, connect to end


@dataclass(frozen=True)
class LinksConfig:
    """Emulated links, as in the latency model: S bits take S / (W log2(1 + SNR)) seconds.

    Uplink (device to miner), downlink (block to device) and miner-to-miner links (gossip of
    updates, block propagation). The block propagation time is also the window in which a
    rival miner's block makes a fork.
    """

    w_up: float = 1e6
    snr_up_db: float = 10.0
    w_dn: float = 1e6
    snr_dn_db: float = 10.0
    w_m: float = 1e7
    snr_m_db: float = 10.0
    header_bits: float = 1536.0  # the ABI-encoded header with its nonce: 6 x 32 bytes


@dataclass(frozen=True)
class ChainConfig:
    """The ledger and the contract's parameters."""

    ledger: str = "evm"  # evm (embedded, or a node with rpc_url) | local (SQLite)
    rpc_url: str = ""
    block_rate: float = 2.0  # lambda: blocks per second per miner
    hash_rate: float = 50_000.0  # hashes per second per miner, for the target
    reward_per_sample: int = 10**15
    mining_reward: int = 10**18
    max_samples_per_update: int = 100_000
    max_updates_per_block: int = 1000
    allow_list: bool = False
    mode: str = "direct"  # direct (every update checked and paid in the commit) | merkle
    quorum: int = 0  # distinct miners attesting a block; 0 = a majority of registered miners


@dataclass(frozen=True)
class VerificationPolicy:
    """What a miner accepts (`[verification]`); the sample cap is the chain's
    `max_samples_per_update`."""

    max_payload_bytes: int = 64 * 2**20
    norm_bound: float = 1_000.0  # L2 norm of an update
    min_ms_per_sample: float = 0.0  # BlockFL's computation-time check: at least this per sample


AGGREGATION_RULES = ("fedavg", "median", "trimmed_mean", "krum", "multi_krum", "clipped_fedavg",
                     "geomed", "centered_clip", "trust")


@dataclass(frozen=True)
class AggregationConfig:
    """The aggregation rule, a consensus parameter: every miner and device runs the same one
    (see `blockfl.aggregation.rules`)."""

    rule: str = "fedavg"  # one of AGGREGATION_RULES
    beta: float = 0.1  # trimmed_mean: the fraction of values dropped at each end, in [0, 0.5)
    f: int = 1  # krum, multi_krum: attackers tolerated; must be below half the devices
    m: int = 0  # multi_krum: updates kept (0: n - f)
    clip: float = 0.0  # clipped_fedavg: the L2 bound (0: the median norm of the block)
    min_norm_ratio: float = 0.1  # krum, multi_krum, trust: below this x the median norm: a
    # free-rider
    iterations: int = 8  # geomed, trust: Weiszfeld steps; centered_clip: clipping steps
    bucket: int = 2  # centered_clip: updates averaged per bucket before clipping
    duplicate_cosine: float = 0.99  # trust: updates at least this similar are Sybils, unpaid
    min_cosine: float = 0.05  # trust: an update less aligned with the geometric median: unpaid
    clip_factor: float = 0.0  # trust: updates clipped to this x the median norm (0: no clip)
    max_norm_ratio: float = 6.0  # trust: above this x the median norm: boosted, unpaid (0: none)

    def __post_init__(self) -> None:
        if self.rule not in AGGREGATION_RULES:
            raise ValueError(f"aggregation.rule {self.rule!r} unknown: "
                             f"{', '.join(AGGREGATION_RULES)}")
        if not 0.0 <= self.beta < 0.5:
            raise ValueError(f"aggregation.beta = {self.beta} out of range: trimmed_mean drops "
                             "a fraction beta at each end, 0 <= beta < 0.5")
        if self.f < 0 or self.m < 0 or self.clip < 0:
            raise ValueError("aggregation.f, aggregation.m and aggregation.clip must be >= 0")
        if not 0.0 <= self.min_norm_ratio < 1.0:
            raise ValueError(f"aggregation.min_norm_ratio = {self.min_norm_ratio} out of "
                             "range: 0 <= min_norm_ratio < 1")
        if self.clip_factor < 0 or (0 < self.max_norm_ratio <= 1):
            raise ValueError("aggregation.clip_factor must be >= 0 (0: no clipping) and "
                             "max_norm_ratio 0 (none) or above 1")
        if self.iterations < 1 or self.bucket < 1:
            raise ValueError("aggregation.iterations and aggregation.bucket must be >= 1")
        if not 0.0 < self.duplicate_cosine <= 1.0 or not -1.0 <= self.min_cosine < 1.0:
            raise ValueError(f"aggregation.duplicate_cosine = {self.duplicate_cosine} or "
                             f"min_cosine = {self.min_cosine} out of range: cosines, "
                             "0 < duplicate_cosine <= 1 and -1 <= min_cosine < 1")

    def check_devices(self, devices: int) -> None:
        """Krum's f must stay below half the devices (its guarantee needs n > 2f + 2)."""
        if self.rule in ("krum", "multi_krum") and 2 * self.f >= devices:
            raise ValueError(f"aggregation.f = {self.f} out of range for {devices} devices: "
                             f"{self.rule} tolerates f < n/2 attackers (f <= {(devices - 1) // 2})")


@dataclass(frozen=True)
class MalfunctionConfig:
    """The malfunction experiment (`blockfl malfunction`): vanilla FL vs BlockFL when the
    server or miners hand out a corrupted global model with probability `p` per round."""

    p: float = 0.3  # the malfunction probability of the per-round trajectories
    sweep_p: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5)  # also run at these probabilities
    corruption: str = "noise"  # noise (re-initialisation at the model's scale) | sign
    seeds: int = 1  # seeds run.seed, run.seed + 1, ...: the spread of time to accuracy
    target_accuracy: float = 0.9  # time to accuracy: first round whose test accuracy reaches it


@dataclass(frozen=True)
class ServerConfig:
    """How much of a miner's HTTP service one client address may take, and for how long
    (see `blockfl.miners.admission`)."""

    max_connections: int = 512  # open connections, all clients together
    connections_per_client: int = 32  # open connections of one client address
    reserved_for_new_clients: int = 64  # of max_connections, only for an address holding none
    header_timeout: float = 10.0  # seconds for a request head, from connect or the last answer
    body_timeout: float = 30.0  # seconds to receive a request body once it is read
    max_head_bytes: int = 16 * 1024  # request line and headers
    uploads: int = 8  # uploads read and verified at a time
    uploads_per_client: int = 2  # of those, for one client address
    upload_wait: float = 5.0  # seconds an upload may wait for its turn before `busy`


PRIVACY_MODES = ("off", "client", "dp_sgd")
#: the fields of `[privacy]` that DP-SGD does not use (left out of the spec in that mode), and
#: those only DP-SGD uses (left out in client mode, so client-mode specs keep their hash)
CLIENT_ONLY = ("clip",)
DP_SGD_ONLY = ("max_grad_norm", "batch_size", "epochs", "budget_rounds")


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy on the devices (`[privacy]`, see `blockfl.privacy`), a protocol
    parameter: every miner enforces the same bounds and budget."""

    # off | client (clip the whole update to `clip`, add noise x clip) | dp_sgd (Opacus: clip
    # each sample's gradient to `max_grad_norm`, add noise x max_grad_norm to every step)
    mode: str = "off"
    noise_multiplier: float = 1.0  # the noise's standard deviation over the clip
    clip: float = 1.0  # client: the L2 bound of a whole update
    delta: float = 1e-5  # the delta of the (epsilon, delta) guarantee
    epsilon_budget: float = 0.0  # a device's epsilon over the whole run (0: no budget)
    max_grad_norm: float = 1.0  # dp_sgd: the L2 bound of each sample's gradient
    # dp_sgd: [training]'s batch size and epochs, which fix the steps and sampling rate every
    # miner charges the budget by; 0 (leave unset): the spec copies them from [training]
    batch_size: int = 0
    epochs: int = 0
    # dp_sgd with a budget: each device's noise multiplier is the least, on a 0.01 grid and at
    # least noise_multiplier, with which it may take part in this many rounds (so a small
    # shard, sampled at a higher rate, gets more noise and a large one less); 0: every device
    # uses noise_multiplier and stops when its budget is spent
    budget_rounds: int = 0

    def __post_init__(self) -> None:
        if self.mode not in PRIVACY_MODES:
            raise ValueError(f"privacy.mode {self.mode!r} unknown: {', '.join(PRIVACY_MODES)}")
        checks = (("noise_multiplier", self.noise_multiplier >= 0, ">= 0"),
                  ("clip", self.clip > 0, "> 0"),
                  ("delta", 0 < self.delta < 1, "in (0, 1)"),
                  ("epsilon_budget", self.epsilon_budget >= 0, ">= 0 (0: no budget)"),
                  ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
                  ("batch_size", self.batch_size >= 0, ">= 1 (0: [training]'s)"),
                  ("epochs", self.epochs >= 0, ">= 1 (0: [training]'s)"),
                  ("budget_rounds", self.budget_rounds >= 0, ">= 0 (0: one noise multiplier)"))
        for name, ok, wanted in checks:
            value = getattr(self, name)
            if not (ok and math.isfinite(value)):
                raise ValueError(f"privacy.{name} = {value!r} out of range: {wanted}")
        if self.budget_rounds and self.mode == "dp_sgd" and not self.epsilon_budget:
            raise ValueError(f"privacy.budget_rounds = {self.budget_rounds} needs an "
                             "epsilon_budget to spread over those rounds")


    def for_training(self, training: TrainingConfig) -> PrivacyConfig:
        """This section as the protocol spec holds it: in dp_sgd mode with [training]'s batch
        size and epochs (a different value set here is an error naming the field)."""
        if self.mode != "dp_sgd":
            return self
        filled = {}
        for name in ("batch_size", "epochs"):
            mine, theirs = getattr(self, name), getattr(training, name)
            if mine not in (0, theirs):
                raise ValueError(f"privacy.{name} = {mine} differs from training.{name} = "
                                 f"{theirs}: DP-SGD is accounted for the steps it trains")
            filled[name] = theirs
        return replace(self, **filled)

    def spec_fields(self) -> tuple[str, ...]:
        """The fields of the protocol spec's privacy section in this mode."""
        unused = CLIENT_ONLY if self.mode == "dp_sgd" else DP_SGD_ONLY
        if not self.budget_rounds:  # unset: dp_sgd specs from before it keep their hash
            unused += ("budget_rounds",)
        return tuple(f.name for f in fields(self) if f.name not in unused)


NO_PRIVACY = PrivacyConfig()


@dataclass(frozen=True)
class AttackConfig:
    """Attacking devices in an experiment (`simulate`, `network up`, `attack`); not protocol:
    the behaviours are in `blockfl.devices.behaviours`."""

    attackers: float = 0.0  # the share of devices that attack
    behaviour: str = "sign_flip"  # what they do
    scale: float = 10.0  # scale_x10: the boost of the update
    noise_std: float = 1.0  # gaussian_noise: standard deviation per value
    inflation: int = 10  # sample_inflation: claimed samples per real one
    copies: int = 3  # sybil, sybil_noise: keys each update is sent under
    copy_noise: float = 1e-7  # sybil_noise, collude: std of the noise that tells copies apart
    alie_z: float = 0.0  # alie: mean + z x std (0: the paper's z_max for the devices/attackers)
    ipm_epsilon: float = 0.5  # ipm: sends -epsilon x the honest mean
    adaptive_max_scale: float = 10.0  # adaptive: the largest flip scale it tries


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    malfunction: MalfunctionConfig = field(default_factory=MalfunctionConfig)
    verification: VerificationPolicy = field(default_factory=VerificationPolicy)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (for JSON and TOML)."""
        return asdict(self)

    def to_toml(self) -> str:
        """The configuration as a TOML document."""
        lines = []
        for section, values in self.as_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def config_path(name: str | Path) -> Path:
    """A config file path; a bare name such as `network` means the packaged `network.toml`."""
    path = Path(name)
    packaged = DEFAULT_CONFIG.parent / f"{name}.toml"
    if not path.exists() and path.suffix == "" and packaged.exists():
        return packaged
    if not path.exists():
        raise FileNotFoundError(f"no config file {path}")
    return path


def load_config(path: str | Path | None = None) -> Config:
    """Read a TOML file over the defaults; unknown sections or fields are errors."""
    config = Config()
    if path is None:
        return config
    path = config_path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    sections = {f.name: f for f in fields(Config)}
    for name, values in data.items():
        if name not in sections:
            raise ValueError(f"{path}: unknown section [{name}]")
        updated = update_section(getattr(config, name), values, f"{path}:[{name}]")
        config = replace(config, **{name: updated})
    return config


def update_section(current: Any, values: dict[str, Any], where: str) -> Any:
    """`current` (a config section) with `values` converted to its fields' types; ValueError
    naming `where` for an unknown field or a value that does not convert."""
    known = {f.name: f for f in fields(current)}
    for key in values:
        if key not in known:
            raise ValueError(f"{where}: unknown field {key!r}")
    converted = {
        k: _convert(v, type(getattr(current, k)), f"{where}.{k}") for k, v in values.items()
    }
    return replace(current, **converted)


def _convert(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if kind is tuple:  # a list of numbers: TOML array, or comma-separated on the command line
        items = value.split(",") if isinstance(value, str) else value
        try:
            return tuple(float(item) for item in items if str(item).strip())
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a list of numbers, got {value!r}") from None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}") from None


#: a field flag's action, its section and its field
FieldFlag = tuple[argparse.Action, str, str]
CONFIG_HELP = "experiment TOML, or a packaged one by name: demo, network, attack"


#: the sections whose `--section-field` flags each node command takes (`--config` and `--set`
#: reach every field): a miner runs no task and reads no data, a device serves nothing and
#: emulates no links; both keep the consensus sections (chain, verification, aggregation,
#: privacy, and training and network, which the spec reads), since each derives the protocol
#: spec from its config and refuses to start if it differs from the chain's
ROLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "miner": ("run", "training", "network", "chain", "verification", "aggregation", "server",
              "privacy"),
    "device": ("run", "task", "data", "model", "training", "network", "chain", "verification",
               "aggregation", "attack", "privacy"),
}


def add_config_flags(parser: argparse.ArgumentParser, default: str | None = None,
                     sections: tuple[str, ...] | None = None) -> None:
    """Add `--config PATH`, `--set`, and one `--section-field` flag per configuration field of
    `sections` (None: every section). `default` names the packaged config the command reads
    without `--config` (else the built-in values).

    `--help` shows as each field's default the value the command would use: that of a
    `--config` given before `--help`, else of `default`, else the built-in one."""
    flags: list[FieldFlag] = []
    config_action = parser.add_argument(
        "--config", type=Path, default=Path(default) if default else None,
        action=_ConfigFile, flags=flags, help=CONFIG_HELP,
    )
    parser.add_argument(
        "--set", dest="cfg_set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="set any field, e.g. --set network.miners=5 (repeatable; as --section-field)",
    )
    for section in fields(Config):
        if sections is not None and section.name not in sections:
            continue
        group = parser.add_argument_group(f"[{section.name}]")
        defaults = section.default_factory()  # type: ignore[misc]
        for item in fields(defaults):
            flag = f"--{section.name}-{item.name}".replace("_", "-")
            action = group.add_argument(
                flag, dest=f"cfg__{section.name}__{item.name}",
                metavar=type(getattr(defaults, item.name)).__name__.upper())
            flags.append((action, section.name, item.name))
    _show_defaults(config_action, flags, config_action.default)


class _ConfigFile(argparse.Action):
    """`--config PATH`: stores the path; a `--help` after it shows that file's values."""

    def __init__(self, *args: Any, flags: list[FieldFlag], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flags = flags

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        _show_defaults(self, self.flags, values)


def _show_defaults(config_action: argparse.Action, flags: list[FieldFlag],
                   source: Path | None) -> None:
    """Set the help of the field flags to the values of the config file `source` (None: the
    built-in values); a file that does not load leaves them, for the command to report."""
    try:
        config = load_config(source)
    except (FileNotFoundError, ValueError) as exc:
        config_action.help = f"{CONFIG_HELP} ({exc})".replace("%", "%%")
        return
    for action, section, name in flags:  # argparse %-formats help: a value's % is doubled
        action.help = f"default {getattr(getattr(config, section), name)!r}".replace("%", "%%")
    origin = f"{config_path(source)}'s" if source else "the built-in ones"
    config_action.help = (f"{CONFIG_HELP} (the field defaults shown are {origin}; a --config "
                          "given before --help shows its own)").replace("%", "%%")


def add_task_flag(parser: argparse.ArgumentParser) -> None:
    """`--task NAME` and `--flower-client SPEC` (shortcuts of `[task] module` and
    `flower_client`, read by `config_from_args`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--task", help="what the network learns (task.module): builtin, a "
                                      "registered name, pkg.module:TASK or path/to/task.py:TASK")
    group.add_argument("--flower-client", metavar="MODULE:CLIENT_FN",
                       help="a Flower NumPyClient's client_fn, or a ClientApp (with "
                            "--task-flower-model MODULE:NET), as the task (task flower; needs "
                            "flwr: pip install flwr==1.42.0)")


def add_attack_flags(parser: argparse.ArgumentParser) -> None:
    """`--attackers FRACTION --attack BEHAVIOUR --rule RULE` (shortcuts of `[attack]` and
    `[aggregation] rule`, read by `experiment_config`)."""
    parser.add_argument("--attackers", type=float,
                        help="share of devices that attack (attack.attackers), e.g. 0.3")
    parser.add_argument("--attack", help="their behaviour (attack.behaviour), e.g. sign_flip")
    parser.add_argument("--rule", choices=AGGREGATION_RULES,
                        help="aggregation rule (aggregation.rule)")


def config_from_args(args: argparse.Namespace, **shortcuts: Any) -> Config:
    """The configuration: defaults, then `--config`, then shortcuts (`--miners`), then explicit
    `--section-field`/`--set` flags (`--task` of `add_task_flag` is a shortcut). A shortcut
    and an explicit flag that set one field to different values are an error, never a silent
    override."""
    config = load_config(getattr(args, "config", None))
    flower = getattr(args, "flower_client", None)
    shortcuts.setdefault("task.module", "flower" if flower else getattr(args, "task", None))
    shortcuts.setdefault("task.flower_client", flower)
    explicit: dict[str, Any] = {}
    for item in getattr(args, "cfg_set", []):
        dotted, sep, value = item.partition("=")
        if not sep or dotted.count(".") != 1:
            raise ValueError(f"--set expects SECTION.FIELD=VALUE, got {item!r}")
        explicit[dotted.strip()] = value.strip()
    for name, value in vars(args).items():
        if name.startswith("cfg__") and value is not None:
            _, section, key = name.split("__")
            explicit[f"{section}.{key}"] = value
    overrides: dict[str, dict[str, Any]] = {}
    for dotted, value in shortcuts.items():
        if value is not None:
            section, key = dotted.split(".")
            overrides.setdefault(section, {})[key] = value
    for dotted, value in explicit.items():
        section, key = dotted.split(".")
        if section not in {f.name for f in fields(Config)}:
            raise ValueError(f"unknown section [{section}] in {dotted!r}")
        if key in overrides.get(section, {}):
            shortcut = update_section(getattr(config, section), {key: overrides[section][key]}, "")
            flag = update_section(getattr(config, section), {key: value}, f"flags: {dotted}")
            if getattr(shortcut, key) != getattr(flag, key):
                raise ValueError(f"{dotted} is set twice, to {overrides[section][key]!r} by a "
                                 f"shortcut flag and to {value!r}: give one")
        overrides.setdefault(section, {})[key] = value
    for section, values in overrides.items():
        updated = update_section(getattr(config, section), values, "flags")
        config = replace(config, **{section: updated})
    return config


#: the counts an experiment needs at least one of: (section, field, shortcut flag)
AT_LEAST_ONE = (("run", "rounds", "--rounds"), ("network", "devices", "--devices"),
                ("network", "miners", "--miners"))


def check_counts(config: Config) -> Config:
    """The config, or ValueError naming a count below 1 (rounds, devices, miners)."""
    for section, name, flag in AT_LEAST_ONE:
        value = getattr(getattr(config, section), name)
        if value < 1:
            raise ValueError(f"{section}.{name} ({flag}) must be at least 1, got {value}")
    return config


def experiment_config(args: argparse.Namespace, **shortcuts: Any) -> Config:
    """`config_from_args` for `simulate` and `network up`: with the shortcuts of
    `add_attack_flags` too, its counts checked."""
    return check_counts(config_from_args(args, **shortcuts, **{
        "attack.attackers": args.attackers, "attack.behaviour": args.attack,
        "aggregation.rule": args.rule}))
