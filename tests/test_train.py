"""The gradient-agent training loop: learning, exact resume, skipped non-finite updates, CLI."""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.policies import init_policy
from chaosgym.agents.train import TrainConfig, compiled_update, load_checkpoint, train
from chaosgym.cli import main

SMALL = TrainConfig(task="ChaosCartPole-v0", agent="full", horizon=100, updates=60, batch_size=16,
                    learning_rate=3e-3, hidden=(32, 32), eval_every=20, eval_episodes=16,
                    checkpoint_every=5)


def read_metrics(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_the_one_pole_cart_pole_lowers_the_held_out_loss(tmp_path):
    train(SMALL, tmp_path, progress_bar=False)
    rows = [r for r in read_metrics(tmp_path) if r["eval_objective"]]
    first, last = float(rows[0]["eval_objective"]), float(rows[-1]["eval_objective"])
    # the untrained policy leaves the pole far from upright; 60 updates must cut the loss 5-fold
    assert first > 0.5
    assert last < 0.2 * first, (first, last)
    assert [int(r["update"]) for r in read_metrics(tmp_path)] == list(range(0, 61))


def test_resumed_run_gives_the_parameters_of_an_uninterrupted_one(tmp_path):
    config = dataclasses.replace(SMALL, updates=12)
    train(config, tmp_path / "whole", progress_bar=False)
    train(dataclasses.replace(config, updates=7), tmp_path / "split", progress_bar=False)
    assert load_checkpoint(tmp_path / "split")["update"] == 7
    # a crash after the checkpoint: rows of updates 8 and 9 were written, their parameters lost
    with open(tmp_path / "split" / "metrics.csv", "a") as f:
        f.write("8,0,0,0,,,0,0,,\n9,0,0,0,,,0,0,,\n")
    train(config, tmp_path / "split", resume=True, progress_bar=False)
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    for a, b in zip(jax.tree.leaves(whole["params"]), jax.tree.leaves(split["params"])):
        np.testing.assert_array_equal(a, b)
    assert [r["update"] for r in read_metrics(tmp_path / "split")] == [str(i) for i in range(0, 13)]
    assert whole["env_steps"] == split["env_steps"]


def test_a_run_folder_is_not_overwritten_and_resume_checks_the_config(tmp_path):
    config = dataclasses.replace(SMALL, updates=2)
    train(config, tmp_path, progress_bar=False)
    with pytest.raises(FileExistsError):
        train(config, tmp_path, progress_bar=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train(dataclasses.replace(config, learning_rate=0.5), tmp_path, resume=True, progress_bar=False)


def test_a_non_finite_gradient_skips_the_update():
    env = chaosgym.make("ChaosCartPole-v0")
    # the same configuration as the learning test, so its compiled update is reused
    optimizer, update = compiled_update(env, SMALL.estimator(), SMALL.batch_size, SMALL.learning_rate)
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, SMALL.hidden)
    params[-1] = (params[-1][0], params[-1][1].at[0].set(jnp.nan))  # NaN action: NaN loss and gradient
    opt_state = optimizer.init(params)
    new_params, new_opt_state, diagnostics = update(params, opt_state, jax.random.key(0), 0)
    assert not bool(diagnostics["grad_finite"])
    for a, b in zip(jax.tree.leaves((params, opt_state)), jax.tree.leaves((new_params, new_opt_state))):
        np.testing.assert_array_equal(a, b)


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    cases = [
        (["--task-kwargs", "num_poles=7"], "num_poles must be an integer in 1..4"),
        (["--task-kwargs", "colour=red"], "valid options"),
        (["--task-kwargs", "num_poles"], "NAME=VALUE"),
        (["--agent", "truncated", "--truncation", "500"], "truncation"),
    ]
    for extra, message in cases:
        args = ["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", str(tmp_path), *extra]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--task", "ChaosCartPole-v0", "--agent", "magic", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
