"""Each example's README block, run as written from a directory laid out as the repository root
(`examples/` and the venv's `blockfl` on PATH): its `simulate`, `data split`, `network up` (real
anvil and processes, ending with the run check) and `model` lines all succeed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from blockfl.chain.node import find_anvil

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.slow,
    pytest.mark.skipif(find_anvil() is None, reason="anvil binary not found (npm install)"),
]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/README.md"))


def block(example: str) -> str:
    """The first bash block of the example's README."""
    found = re.search(r"```bash\n(.*?)```", (ROOT / "examples" / example / "README.md").read_text(),
                      re.S)
    assert found is not None, example
    return found.group(1)


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_examples_readme_runs_as_written(tmp_path, example):
    if example == "flower_client" and importlib.util.find_spec("flwr") is None:
        pytest.skip("flwr not installed (pip install flwr==1.42.0)")
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # "from the repository root"
    env = os.environ | {"PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block(example)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert "valid: yes" in out, out[-4000:]  # `network up`'s run check
