"""`scripts/privacy_experiment.py` runs in both modes: a private run spends ε and the attack's
figures are probabilities; without privacy nothing is spent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import load_script, small_config

pytest.importorskip("opacus")
pytest.importorskip("sklearn")
@pytest.mark.parametrize("mode", ["client", "dp_sgd"])
def test_the_privacy_experiment_spends_epsilon_only_with_privacy(tmp_path, mode):
    script = load_script("privacy_experiment")
    base = small_config(tmp_path, model={"name": "mlp"}, run={"rounds": 2},
                        chain={"ledger": "local"})
    base = replace(base, verification=replace(base.verification, norm_bound=1e9))
    private = script.experiment(base, 3, 1.0, 0, tmp_path / "a", mode)
    plain = script.experiment(base, 3, None, 0, tmp_path / "b", mode)
    assert private["epsilon"] > 0 and plain["epsilon"] == 0
    for row in (private, plain):
        for key in ("global_auc", "update_auc", "global_tpr_at_1fpr", "update_tpr_at_1fpr",
                    "global_lira_auc", "global_lira_auc_low", "global_lira_tpr_at_1fpr"):
            assert 0.0 <= row[key] <= 1.0
    assert private["accuracy"] != plain["accuracy"]  # the noise changed the model


def test_lira_finds_the_members_of_a_model_that_memorised_them_and_not_of_one_that_did_not():
    """A model trained on 60 of 120 digits for many epochs knows its members (LiRA's AUC well
    above chance); the genesis model, trained on nothing, gives chance."""
    from blockfl.config import TrainingConfig
    from blockfl.devices.data import load_digits
    from blockfl.models import initial_state

    script = load_script("privacy_experiment")
    pool = load_digits().subset(range(120))
    member = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    initial = initial_state("mlp", pool.input_shape, 10, seed=0)
    training = TrainingConfig(epochs=20, lr=0.3, batch_size=16)
    target = script.federated_reference(initial, pool.subset(range(60)), 2, 2, training, 99)
    auc, low, tpr = script.lira(target, initial, pool, member, training, 2, 2, 16, seed=0)
    assert auc > 0.7 and low > 0.5 and 0.0 <= tpr <= 1.0
    chance, _, _ = script.lira(initial, initial, pool, member, training, 2, 2, 16, seed=0)
    assert abs(chance - 0.5) < 0.15


def test_the_flags_set_the_private_runs_and_the_run_without_privacy_trains_plainly(tmp_path):
    """`--training-*`/`--privacy-*` reach the private runs only: the run without privacy (and
    LiRA's references) train with the `plain` training, as a run configured with it does."""
    from blockfl.config import load_config

    script = load_script("privacy_experiment")
    args, base, plain = script.settings(
        ["--mode", "dp_sgd", "--rounds", "20", "--training-lr", "4.8", "--training-batch-size",
         "64", "--privacy-budget-rounds", "20", "--privacy-epsilon-budget", "8"])
    assert (args.mode, base.run.rounds, base.chain.ledger) == ("dp_sgd", 20, "local")
    assert (base.training.lr, base.training.batch_size) == (4.8, 64)
    assert (base.privacy.budget_rounds, base.privacy.epsilon_budget) == (20, 8.0)
    assert plain == load_config("demo").training != base.training

    small = small_config(tmp_path, model={"name": "mlp"}, run={"rounds": 2},
                         chain={"ledger": "local"})
    small = replace(small, verification=replace(small.verification, norm_bound=1e9))
    unstable = replace(small, training=replace(small.training, lr=40.0))
    given = script.experiment(unstable, 3, None, 0, tmp_path / "a", plain=small.training)
    assert given == script.experiment(small, 3, None, 0, tmp_path / "b")
