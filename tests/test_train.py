"""The gradient-agent training loop: learning, exact resume, protected run folders, skipped
non-finite updates, failed evaluations, the config and its generated CLI flags."""

import argparse
import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.agents import config as config_module
from chaosgym.agents.cli import main
from chaosgym.agents.config import TrainConfig, for_task
from chaosgym.agents.run import CheckpointError, Run
from chaosgym.agents.train import (compiled_update, evaluate_params, load_checkpoint, make_optimizer,
                                   skipped_updates, train)
from chaosgym.functional.gradients import EstimatorConfig
from chaosgym.functional.policies import init_policy
from chaosgym.functional.sharding import replicated

# small enough to compile and run in seconds; every fast test shares its compiled update
SMALL = for_task("ChaosCartPole-v0", "full", updates=6, batch_size=4, hidden=(8,), eval_every=3,
                 checkpoint_every=3, eval_episodes=4, **{"estimator.horizon": 20})


def read_metrics(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_training_the_one_pole_cart_pole_raises_the_held_out_return(tmp_path):
    # APG through `train`: plain BPTT over the paper's chaotic 100-step cart pole gains only ~5 in
    # 60 updates (-3.6 -> 1.9 measured), short carried windows swing the pole up
    config = for_task("ChaosCartPole-v0", "apg", updates=30, batch_size=32, learning_rate=1e-3, eval_every=10)
    train(config, tmp_path, progress=False)
    rows = [r for r in read_metrics(tmp_path) if r["eval_score"]]
    first, last = float(rows[0]["eval_score"]), float(rows[-1]["eval_score"])
    assert last > first + 50, (first, last)  # returns lie in [-100, 100]: the pole's mean cosine
    assert [int(r["update"]) for r in read_metrics(tmp_path)] == list(range(0, 31))


def test_resumed_run_gives_the_parameters_of_an_uninterrupted_one(tmp_path):
    config = dataclasses.replace(SMALL, updates=9)
    train(config, tmp_path / "whole", progress=False)
    train(dataclasses.replace(config, updates=6), tmp_path / "split", progress=False)
    assert load_checkpoint(tmp_path / "split")["update"] == 6
    # a crash after the checkpoint: rows of updates 7 and 8 were written, their parameters lost
    with open(tmp_path / "split" / "metrics.csv", "a") as f:
        f.write("7,0,0,0,,,0,0,,\n8,0,0,0,,,0,0,,\n")
    train(config, tmp_path / "split", resume=True, progress=False)  # a larger budget extends it
    whole, split = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "split")
    for a, b in zip(jax.tree.leaves(whole["params"]), jax.tree.leaves(split["params"])):
        np.testing.assert_array_equal(a, b)
    assert [r["update"] for r in read_metrics(tmp_path / "split")] == [str(i) for i in range(0, 10)]
    assert whole["env_steps"] == split["env_steps"]
    assert Run(tmp_path / "split").config.updates == 9  # the saved config records the new budget


def test_run_folders_are_protected(tmp_path):
    run = tmp_path / "run"
    train(SMALL, run, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(SMALL, run, progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train(dataclasses.replace(SMALL, learning_rate=0.5), run, resume=True, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        train(SMALL, other, progress=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]  # nothing written there

    # two writers: the second is refused while the first holds the lock
    first, _ = Run.open(run, SMALL, True, lambda b: b)
    with pytest.raises(FileExistsError, match="another process"):
        Run.open(run, SMALL, True, lambda b: b)
    first.close()


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_or_fails_naming_it(tmp_path):
    run = tmp_path / "run"
    train(SMALL, run, progress=False)
    newest = run / "checkpoint.pkl"
    newest.write_bytes(newest.read_bytes()[:50])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="checkpoint.pkl"):
        assert load_checkpoint(run)["update"] == 3  # the previous checkpoint
    (run / "checkpoint.prev.pkl").write_bytes(b"garbage")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError, match="checkpoint.pkl.*checkpoint.prev.pkl"):
        train(dataclasses.replace(SMALL, updates=9), run, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing changed


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    run = tmp_path / "run"
    train(SMALL, run, progress=False)
    saved = (run / "checkpoint.pkl").read_bytes()
    other = tmp_path / "other"
    train(dataclasses.replace(SMALL, seed=1), other, progress=False)
    (other / "checkpoint.pkl").write_bytes(saved)
    (other / "checkpoint.prev.pkl").unlink()
    with pytest.raises(CheckpointError, match="another config.*seed"):
        load_checkpoint(other)


def test_non_finite_gradients_are_skipped_and_counted_by_the_optimiser():
    env = chaosgym.make("ChaosCartPole-v0")
    # the arguments train passes, so the compiled update of the other tests is reused
    optimizer, update = compiled_update(env, SMALL.estimator, SMALL.batch_size, SMALL.learning_rate, SMALL.policy)
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, SMALL.hidden)
    params[-1] = (params[-1][0], params[-1][1].at[0].set(jnp.nan))  # NaN action: NaN loss and gradient
    params, opt_state = replicated((params, optimizer.init(params)))  # placed as train places them
    new_params, new_opt_state, _ = update(params, opt_state, jax.random.key(0), 0)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
        np.testing.assert_array_equal(a, b)
    assert skipped_updates(new_opt_state) == 1
    # the diverged policy is a failed evaluation, never a score of 0
    assert evaluate_params(SMALL, params)["eval_score"] == -np.inf


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    cases = [
        (["--task-kwargs", "num_poles=7"], "num_poles must be an integer in 1..4"),
        (["--task-kwargs", "colour=red"], "valid options"),
        (["--task-kwargs", "num_poles"], "NAME=VALUE"),
        (["--agent", "truncated", "--truncation", "500"], "truncation"),
        (["--learning-rate", "nan"], "argument --learning-rate: expected a finite number"),
        (["--updates", "-5"], "argument --updates: must be a positive integer"),
        (["--horizon", "0"], "argument --horizon: must be a positive integer"),
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
        (["--eval-every", "0"], "argument --eval-every: must be a positive integer"),
        (["--eval-episodes", "0"], "argument --eval-episodes: must be a positive integer"),
        (["--hidden", "0"], "argument --hidden: must be one or more positive layer sizes"),
        (["--hidden", "a,b"], "comma-separated layer sizes"),
        (["--clip-norm", "-1"], "argument --clip-norm: must be a finite number > 0"),
        (["--objective", "speed"], "speed"),
        (["--agent", "ppo", "--env-steps", "0"], "argument --env-steps: must be a positive integer"),
        (["--agent", "ppo"], "ppo needs --env-steps"),
        (["--agent", "ppo", "--env-steps", "100", "--horizon", "5"], "--horizon: not read by --agent ppo"),
        (["--agent", "magic"], "invalid choice"),
    ]
    for extra, message in cases:
        args = ["train", "--task", "ChaosCartPole-v0", "--agent", "full", "--out", str(tmp_path / "x"), *extra]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "x").exists()


def test_every_setting_is_a_flag_with_help_and_presets_fill_what_is_not_given():
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    paths = {path for path, _, _ in config_module.fields(TrainConfig)} - {"estimator.name"}
    assert set(flags) == paths
    assert all(a.help for a in flags.values())
    args = parser.parse_args(["--learning-rate", "0.01", "--horizon", "30", "--hidden", "4,4", "--remat"])
    changes = config_module.given(args)
    assert changes == {"learning_rate": 0.01, "estimator.horizon": 30, "hidden": (4, 4), "estimator.remat": True}
    config = for_task("ChaosAnt-v0", "truncated", **changes)
    preset = chaosgym.presets.presets("ChaosAnt-v0")
    assert (config.learning_rate, config.estimator.horizon, config.estimator.truncation) == (0.01, 30, preset.truncation)
    assert config.estimator.name == "truncated" and config.estimator.objective == "return"
    assert TrainConfig.from_json(config.to_json()) == config
    # a budget in env steps sets the updates: 1 rollout x batch 16 x horizon 50 per update
    assert for_task("ChaosAnt-v0", "full", env_steps=8000).updates == 10


def test_a_run_stopped_before_its_first_checkpoint_starts_again_on_resume(tmp_path):
    run, checkpoint = Run.open(tmp_path, SMALL, False, lambda b: b)
    with run:
        run.start({"update": 0, "env_steps": 0})
    assert checkpoint is None
    with pytest.raises(FileExistsError, match="already holds a run"):
        Run.open(tmp_path, SMALL, False, lambda b: b)
    run, checkpoint = Run.open(tmp_path, SMALL, True, lambda b: b)
    run.close()
    assert checkpoint is None and Run(tmp_path).config == SMALL


def test_a_wall_clock_budget_evaluates_every_tenth_of_itself(tmp_path, monkeypatch):
    """Under a time budget the run stops long before `updates`; it still leaves ~10 evaluations."""
    config = dataclasses.replace(SMALL, updates=100_000, eval_every=100_000, checkpoint_every=100_000)
    saved = []
    real_save = Run.save_checkpoint
    monkeypatch.setattr(Run, "save_checkpoint", lambda self, payload: (saved.append(1), real_save(self, payload)))
    progress = train(config, tmp_path / "run", progress=False, time_budget=1.5)
    evaluated = Run(tmp_path / "run").evaluated_metrics()
    assert 1.5 <= progress["wall_time"] < 10 and progress["update"] < config.updates
    # before: the start and the last update only; now the start, each tenth, the end
    assert 6 <= len(evaluated) <= 12, [r["wall_time"] for r in evaluated]
    # each of those evaluations is a checkpoint too, and a finished run opened again trains no more
    assert len(saved) == len(evaluated) - 1  # all but the start's
    assert load_checkpoint(tmp_path / "run")["update"] == progress["update"]
    again = train(config, tmp_path / "run", resume=True, progress=False, time_budget=1.5)
    assert again["update"] == progress["update"] and len(Run(tmp_path / "run").metrics()) == progress["update"] + 1


@pytest.mark.parametrize("clip", [{"clip_norm": 1.0}, {"clip_value": 1.0}])
def test_the_optimiser_clips_the_estimators_gradient_before_adam(clip):
    """g1 = (100, 0) is clipped to (1, 0) and g2 = (1, 0) passes: Adam's second step is then exactly
    -lr per component (it would be -0.68 lr unclipped), the rule applied after combination."""
    optimizer = make_optimizer(EstimatorConfig(**clip), learning_rate=0.1)
    params = {"w": jnp.zeros(2)}
    state = optimizer.init(params)
    for g in ([100.0, 0.0], [1.0, 0.0]):
        step, state = optimizer.update({"w": jnp.array(g)}, state, params)
    np.testing.assert_allclose(step["w"], [-0.1, 0.0], rtol=1e-4)  # Adam's eps: 1e-5 relative
