"""`blockfl data split`: one data file per device (and one for the test set) from a task's data
set, split as `simulate` splits it (IID or Dirichlet), for devices that read only their own
file (`blockfl device --data FILE`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blockfl.config import add_config_flags, add_task_flag, config_from_args

#: the file names `data split` writes: device i's, and the test set's
DEVICE_FILE = "device-{index:04d}.{format}"
TEST_FILE = "test.{format}"


def register(commands: argparse._SubParsersAction) -> None:
    """Add `data` and its subcommand `split`."""
    data = commands.add_parser("data", help="per-device data files from a data set")
    sub = data.add_subparsers(dest="data_command", required=True)
    split = sub.add_parser(
        "split", help="write one data file per device and a test file",
        description="Split the task's data set as `simulate` does ([data] test_fraction, "
                    "partition, alpha, size_skew; the run's seed) and write "
                    "OUT/device-0000.FORMAT ... and OUT/test.FORMAT.",
    )
    split.add_argument("--out", type=Path, required=True, help="folder to write the files to")
    split.add_argument("--devices", type=int, help="number of devices (network.devices)")
    split.add_argument("--partition", choices=["iid", "dirichlet"], help="data.partition")
    split.add_argument("--alpha", type=float, help="Dirichlet concentration (data.alpha)")
    split.add_argument("--format", choices=["npz", "csv", "safetensors"], default="npz",
                       help="file format (default %(default)s)")
    split.add_argument("--json", action="store_true", help="print the files as JSON")
    add_task_flag(split)
    add_config_flags(split)
    split.set_defaults(func=data_split)


def data_split(args: argparse.Namespace) -> int:
    """Write the per-device files and the test file; print what each holds."""
    from blockfl.data_files import write_data_file
    from blockfl.sim.setup import split_dataset
    from blockfl.task import load_task

    config = config_from_args(args, **{"network.devices": args.devices,
                                       "data.partition": args.partition,
                                       "data.alpha": args.alpha})
    if config.network.devices < 1:
        raise ValueError(f"network.devices (--devices) must be at least 1, got "
                         f"{config.network.devices}")
    task = load_task(config)
    if not hasattr(task, "dataset"):
        raise ValueError(f"task {task.name!r} has no dataset to split (its data is its own)")
    shards, test = split_dataset(config, task.dataset(config.run.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    label = config.data.label
    rows = [{"file": str(write_data_file(args.out / DEVICE_FILE.format(index=i, format=args.format),
                                         shard, label)), "samples": len(shard)}
            for i, shard in enumerate(shards)]
    rows.append({"file": str(write_data_file(args.out / TEST_FILE.format(format=args.format),
                                             test, label)), "samples": len(test)})
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['file']}: {row['samples']} samples")
        print(f"{len(shards)} device files and a test file of task {task.name} in {args.out}")
    return 0
