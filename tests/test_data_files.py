"""A device's own data files: `blockfl data split` writes one per device (the shards `simulate`
trains on), every format reads back to the same samples, and a bad file is one line naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from blockfl.cli import main
from blockfl.config import Config
from blockfl.data_files import DataFileError, write_data_file
from blockfl.sim.setup import build_experiment
from blockfl.task import TaskError, load_device_data, resolve
from tests.conftest import small_config


@pytest.mark.parametrize("fmt", ["npz", "csv", "safetensors"])
@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_split_writes_the_shards_simulate_trains_on(tmp_path, capsys, fmt, partition):
    code = main(["data", "split", "--out", str(tmp_path / "split"), "--devices", "4",
                 "--partition", partition, "--format", fmt, "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and len(rows) == 5 and rows[-1]["file"].endswith(f"test.{fmt}")
    config = small_config(tmp_path, network={"devices": 4}, model={"name": "mlp"},
                          data={"partition": partition})
    experiment = build_experiment(config)
    task = experiment.task
    for j, shard in enumerate(experiment.shards):
        path = tmp_path / "split" / f"device-{j:04d}.{fmt}"
        own = load_device_data(task, path)
        assert torch.equal(own.x, shard.x) and torch.equal(own.y, shard.y)
        assert rows[j] == {"file": str(path), "samples": len(shard)}
    test = load_device_data(task, tmp_path / "split" / f"test.{fmt}")
    assert torch.equal(test.y, experiment.test.y)


def test_a_folder_of_class_folders_of_images_reads_as_labelled_samples(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for label in ("0-zero", "1-one"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            array = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / "images" / label / f"{i}.png")
            pixels[(label, i)] = array
    task = resolve("builtin", Config())  # digits: 8x8 images, 10 classes
    data = load_device_data(task, tmp_path / "images")
    assert data.x.shape == (6, 1, 8, 8) and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(data.x[4, 0], torch.as_tensor(pixels[("1-one", 1)] / 255.0,
                                                          dtype=torch.float32))


def _write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(("name", "content", "message"), [
    ("none.npz", None, "no such data file"),
    ("empty.csv", "", "empty file"),
    ("nolabel.csv", "a,b\n1,2\n", "no label column 'label' (columns: a, b)"),
    ("words.csv", "a,label\nx,1\n", "not a table of numbers"),
    ("header.csv", "x0,label\n", "holds no samples"),
    ("corrupt.npz", b"PK\x03\x04junk", "cannot read it"),
    ("corrupt.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "cannot read it"),
    ("data.parquet", "x", "unknown data format '.parquet'"),
])
def test_a_bad_data_file_is_one_line_naming_it(tmp_path, name, content, message):
    path = tmp_path / name if content is None else _write(tmp_path / name, content)
    with pytest.raises(DataFileError) as info:
        load_device_data(resolve("builtin", Config()), path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("x", "y", "message"), [
    (np.zeros((3, 5)), np.zeros(3), "samples of shape (5,), the task's inputs are (1, 8, 8)"),
    (np.zeros((3, 64)), np.array([0, 3, 10]), "label 10 is out of range: the task has classes "
                                              "0..9"),
    (np.zeros((3, 64)), np.array([0, -1, 2]), "label -1 is out of range"),
    (np.zeros((3, 64)), np.array([0.5, 1, 2]), "labels must be whole numbers"),
    (np.full((3, 64), np.nan), np.zeros(3), "NaN or infinite"),
    (np.zeros((3, 64)), np.zeros(2), "x has shape (3, 64) and y (2,)"),
])
def test_a_wrongly_shaped_or_labelled_file_is_one_line_naming_it(tmp_path, x, y, message):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataFileError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        load_device_data(resolve("builtin", Config()), path)


def test_csv_rows_and_a_missing_load_data(tmp_path):
    experiment = build_experiment(small_config(tmp_path))
    path = write_data_file(tmp_path / "d.csv", experiment.shards[0])
    header = path.read_text().splitlines()[0].split(",")
    assert len(header) == 65 and header[-1] == "label"
    no_loader = type("NoLoader", (), {"name": "plain"})()
    with pytest.raises(TaskError, match="task 'plain' has no load_data"):
        load_device_data(no_loader, path)
