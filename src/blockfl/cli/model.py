"""`blockfl model export|evaluate|predict`: take a round's global model and use it."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from blockfl.cli.args import ROUND, miner_clients
from blockfl.config import Config, TaskConfig, add_task_flag, load_config


def register(commands: argparse._SubParsersAction) -> None:
    """Add `model` and its subcommands."""
    model = commands.add_parser("model", help="export a round's global model, evaluate it, "
                                              "predict with it")
    sub = model.add_subparsers(dest="model_command", required=True)

    export = sub.add_parser(
        "export", help="fetch a round's global model, check it against the chain, save it",
        description="Fetch the global model of ROUND from miners (--miners) or from the model "
                    "stores of a `network up` run directory (--run-dir), check its tensor hash "
                    "against the chain, and write it as safetensors.",
    )
    export.add_argument("round", type=ROUND, help="round (0: the genesis model)")
    export.add_argument("--out", type=Path, required=True, help="safetensors file to write")
    export.add_argument("--miners", default="", help="comma-separated miner URLs")
    export.add_argument("--run-dir", type=Path,
                        help="a `network up` run directory (its miner*/models stores)")
    export.add_argument("--deployment", type=Path,
                        help="deployment file (default: the run directory's, else "
                             "deployment.json)")
    export.add_argument("--rpc-url", help="JSON-RPC node (default: the one in the deployment)")
    export.add_argument("--ca-cert", type=Path, help="CA certificate of HTTPS miners")
    export.set_defaults(func=model_export)

    for name, text in (("evaluate", "accuracy and loss of a model file on the test split"),
                       ("predict", "run a model file on the samples of a .npy file")):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("file", type=Path, help="safetensors model file")
        parser.add_argument("--config", type=Path,
                            help="experiment config: its data set and model (default: the "
                                 "packaged `network`)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate, predict = sub.choices["evaluate"], sub.choices["predict"]
    evaluate.add_argument("--test-data", type=Path, metavar="PATH",
                          help="evaluate on this data file (read by the task; e.g. the test "
                               "file of `blockfl data split`) instead of the test split")
    add_task_flag(evaluate)
    evaluate.set_defaults(func=model_evaluate)
    predict.add_argument("--input", type=Path, required=True,
                         help=".npy array of samples, shaped like the data set's inputs (digits: "
                              "N x 8 x 8 or N x 64, pixels scaled to 0..1)")
    predict.add_argument("--out", type=Path, help="write the outputs as .npy")
    predict.set_defaults(func=model_predict)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config or Path("network"))
    task = getattr(args, "task", None)
    return replace(config, task=TaskConfig(module=task)) if task else config


def model_export(args: argparse.Namespace) -> int:
    """Write a round's global model, checked against the chain."""
    from blockfl.chain.deployment import Deployment
    from blockfl.global_model import fetch
    from blockfl.hashing import to_hex

    deployment = Deployment.read(args.deployment or (
        args.run_dir / "deployment.json" if args.run_dir else Path("deployment.json")))
    miners = miner_clients(args.miners, args.ca_cert)
    state = args.run_dir / "anvil-state.json" if args.run_dir else None
    with ExitStack() as node:
        try:
            ledger = deployment.ledger(args.rpc_url)
        except ConnectionError:  # only the node's: a miner that fails is fetch's to report
            if args.rpc_url or state is None or not state.is_file():
                raise
            # the run's node stopped with the run: its chain comes back from the saved state
            from blockfl.chain.node import node_from_state

            print(f"the run's chain node is gone: reading its chain from {state}",
                  file=sys.stderr)
            ledger = deployment.ledger(node.enter_context(node_from_state(state)))
        model = fetch(ledger, args.round, miners, args.run_dir)
    args.out.write_bytes(model.data)
    print(f"round {model.round} global model {to_hex(model.model_hash)} (the on-chain hash) "
          f"from {model.source} written to {args.out}")
    return 0


def model_evaluate(args: argparse.Namespace) -> int:
    """Accuracy and loss (or MSE) of a model file on the configured test split."""
    from blockfl.global_model import load
    from blockfl.sim.setup import test_data
    from blockfl.task import evaluate

    task, test = test_data(_config(args), args.test_data)
    metrics = evaluate(task, load(args.file), test)
    if args.json:
        print(json.dumps({"file": str(args.file), "samples": len(test)} | metrics))
    else:
        where = args.test_data or "test split"
        print(f"{args.file}: {where} of task {task.name} ({len(test)} samples): "
              + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def model_predict(args: argparse.Namespace) -> int:
    """The model's predictions for the samples of a .npy file."""
    import numpy as np

    from blockfl.global_model import as_inputs, build, load, predict
    from blockfl.task import load_task

    config = _config(args)
    data = load_task(config).dataset(config.run.seed)
    try:
        array = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {args.input} as a .npy array: {exc}") from None
    x = as_inputs(array, data.input_shape)
    outputs = predict(build(config, load(args.file), data.input_shape), x)
    if args.out:
        np.save(args.out, outputs.numpy())
    if data.task == "classification":
        probabilities = outputs.softmax(-1)
        rows = [{"sample": i, "class": int(p.argmax()), "probability": float(p.max())}
                for i, p in enumerate(probabilities)]
    else:
        rows = [{"sample": i, "value": float(v)} for i, v in enumerate(outputs.squeeze(-1))]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in row.items()))
    print(f"{len(rows)} samples" + (f"; outputs written to {args.out}" if args.out else ""),
          file=sys.stderr)
    return 0
