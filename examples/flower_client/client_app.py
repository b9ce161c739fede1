"""The same client as a `ClientApp` of Flower's message API, written the way Flower's PyTorch
quickstart writes `client_app.py` (`@app.train()`, `@app.evaluate()`, `ArrayRecord`,
`MetricRecord` with `num-examples`), over `client.py`'s `Net`, `load_data`, `train` and `test`.
It does not import BlockFL: `blockfl simulate --flower-client
examples.flower_client.client_app:app --task-flower-model examples.flower_client.client:Net`.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from examples.flower_client.client import Net, load_data
from examples.flower_client.client import test as test_fn
from examples.flower_client.client import train as train_fn

app = ClientApp()


def _model_and_data(msg: Message, context: Context):
    """The message's model, and this node's partition (train, test)."""
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model, load_data(context.node_config["partition-id"],
                            context.node_config["num-partitions"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    model, (trainset, _) = _model_and_data(msg, context)
    config = msg.content["config"]
    train_loss = train_fn(model, trainset, int(config.get("epochs", 2)),
                          float(config.get("lr", 0.3)), int(config.get("batch_size", 16)),
                          int(config.get("seed", 0)))
    metrics = MetricRecord({"train_loss": train_loss, "num-examples": len(trainset[1])})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model, (_, testset) = _model_and_data(msg, context)
    eval_loss, eval_acc = test_fn(model, testset)
    metrics = {"eval_loss": eval_loss, "eval_acc": eval_acc, "num-examples": len(testset[1])}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
