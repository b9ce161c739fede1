"""`scripts/privacy_experiment.py` runs in both modes: a private run spends ε and the attack's
figures are probabilities; without privacy nothing is spent."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import small_config

pytest.importorskip("opacus")
pytest.importorskip("sklearn")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "privacy_experiment.py"


def load_script():
    spec = importlib.util.spec_from_file_location("privacy_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["client", "dp_sgd"])
def test_the_privacy_experiment_spends_epsilon_only_with_privacy(tmp_path, mode):
    script = load_script()
    base = small_config(tmp_path, model={"name": "mlp"}, run={"rounds": 2},
                        chain={"ledger": "local"})
    base = replace(base, verification=replace(base.verification, norm_bound=1e9))
    private = script.experiment(base, 3, 1.0, 0, tmp_path / "a", mode)
    plain = script.experiment(base, 3, None, 0, tmp_path / "b", mode)
    assert private["epsilon"] > 0 and plain["epsilon"] == 0
    for row in (private, plain):
        for key in ("global_auc", "update_auc", "global_tpr_at_1fpr", "update_tpr_at_1fpr"):
            assert 0.0 <= row[key] <= 1.0
    assert private["accuracy"] != plain["accuracy"]  # the noise changed the model
