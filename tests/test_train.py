"""The gradient-agent training loop: learning, exact resume, protected run folders, skipped
non-finite updates, failed evaluations, weights-only checkpoints, the config and its generated
CLI flags, and the Python API."""

import argparse
import csv
import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym import flags
from chaosgym.agents import checkpoints, commands
from chaosgym.agents import train as train_api
from chaosgym.agents.api import train_config
from chaosgym.agents.cli import main
from chaosgym.agents.config import RunSettings, TrainConfig, for_task, settings_read, with_changes
from chaosgym.agents.estimators import make_optimizer
from chaosgym.agents.loop import core_of, evaluate_params, load_checkpoint, skipped_updates
from chaosgym.agents.run import CheckpointError, Run
from chaosgym.agents.settings import EstimatorSettings
from chaosgym.functional.gradients import EstimatorConfig
from chaosgym.functional.sharding import replicated
from chaosgym.validation import UserError

# small enough to compile and run in seconds; every fast test shares its compiled update
SMALL = for_task("ChaosCartPole-v0", "full", updates=6, batch_size=4, hidden=(8,), eval_every=3,
                 checkpoint_every=3, eval_episodes=4, **{"estimator.horizon": 20})


def train(config, out, **run) -> dict:
    """The final progress of a run trained (or resumed) through the Python API."""
    return train_config(config, out, **run).final


def read_metrics(folder):
    with open(folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_training_the_one_pole_cart_pole_raises_the_held_out_return(tmp_path):
    # APG through the loop: plain BPTT over the paper's chaotic 100-step cart pole gains only ~5 in
    # 60 updates (-3.6 -> 1.9 measured), short carried windows swing the pole up
    config = for_task("ChaosCartPole-v0", "apg", updates=30, num_envs=32, learning_rate=1e-3, eval_every=10)
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
    header = (tmp_path / "split" / "metrics.csv").read_text().splitlines()[0].split(",")
    with open(tmp_path / "split" / "metrics.csv", "a") as f:
        for update in (7, 8):
            f.write(",".join([str(update), *["0"] * (len(header) - 1)]) + "\n")
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
    # an agent setting is not a budget: a resumed run may not change it
    with pytest.raises(ValueError, match=r"cannot resume .*differs in learning_rate \(saved 0.003, now 0.5\)"):
        train(with_changes(SMALL, {"learning_rate": 0.5}), run, resume=True, progress=False)
    # a budget below what the run has done, and a metrics.csv edited by hand, are refused untouched
    with pytest.raises(UserError, match="has run 6 updates; a budget of 3 cannot undo them"):
        train(dataclasses.replace(SMALL, updates=3), run, resume=True, progress=False)
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:3] + lines[4:]))  # the row of update 2 deleted
    edited = (run / "metrics.csv").read_bytes()
    with pytest.raises(UserError, match="row 3 has '3': a row was deleted, repeated or edited"):
        train(SMALL, run, resume=True, progress=False)
    assert (run / "metrics.csv").read_bytes() == edited and Run(run).config == SMALL
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
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoint.npz", "checkpoint.prev.npz", "config.json",
                                                     "metrics.csv"]
    newest = run / "checkpoint.npz"
    newest.write_bytes(newest.read_bytes()[:50])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="checkpoint.npz"):
        assert load_checkpoint(run)["update"] == 3  # the previous checkpoint
    (run / "checkpoint.prev.npz").write_bytes(b"garbage")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError, match="checkpoint.npz.*checkpoint.prev.npz"):
        train(dataclasses.replace(SMALL, updates=9), run, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing changed


def test_a_pickled_checkpoint_is_refused_unread_naming_the_conversion(tmp_path):
    """A pickle could run code when read: chaosgym never unpickles one, it says how to convert it."""
    run = tmp_path / "run"
    train(SMALL, run, progress=False)
    ran = tmp_path / "ran"
    exploit = pickle.dumps(Exploit(str(ran)))
    for name in ("checkpoint.npz", "checkpoint.prev.npz"):
        (run / name).write_bytes(exploit)
    with pytest.raises(CheckpointError, match="pickle.*chaosgym convert-checkpoint"):
        load_checkpoint(run)
    assert not ran.exists()


class Exploit:
    """Unpickling it creates a file: what a hostile pickle would do worse."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_policy_is_read_from_its_parameters_alone():
    """A run whose carried state has since gained fields (e.g. new info keys of its env) cannot be
    resumed, but its policy can still be rendered and diagnosed: acting reads only the parameters."""
    saved = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
             "opt_state": {"env_info": {"old": np.zeros(2, np.float32)}}}
    payload = checkpoints.encode(saved, {"update": 7})
    now = {"params": {"w": np.zeros((2, 3), np.float32)},
           "opt_state": {"env_info": {"old": np.zeros(2, np.float32), "new": np.zeros(2, np.float32)}}}
    with pytest.raises(CheckpointError, match="missing"):
        checkpoints.decode(payload, jax.eval_shape(lambda: now))
    params, meta = checkpoints.decode(payload, jax.eval_shape(lambda: now["params"]), only="params")
    assert np.array_equal(params["w"], saved["params"]["w"]) and meta == {"update": 7}
    with pytest.raises(CheckpointError, match="float64"):  # shapes and dtypes are still checked
        checkpoints.decode(payload, {"w": jax.ShapeDtypeStruct((2, 3), np.float64)}, only="params")


def test_a_checkpoints_arrays_must_fill_the_template_exactly():
    tree = {"w": np.ones((2, 3), np.float32), "b": [np.zeros(3, np.float32)]}
    payload = checkpoints.encode(tree, {"update": 4})
    assert checkpoints.read_meta(payload) == {"update": 4}
    restored, meta = checkpoints.decode(payload, jax.eval_shape(lambda: tree))
    jax.tree.map(np.testing.assert_array_equal, restored, tree)
    assert meta == {"update": 4}
    with pytest.raises(CheckpointError, match=r"\['w'\] is float32\[2, 3\], this config needs float32\[3, 3\]"):
        checkpoints.decode(payload, {**tree, "w": jax.ShapeDtypeStruct((3, 3), jnp.float32)})
    with pytest.raises(CheckpointError, match="float64.*JAX_ENABLE_X64"):
        checkpoints.decode(payload, {**tree, "w": jax.ShapeDtypeStruct((2, 3), np.float64)})
    with pytest.raises(CheckpointError, match="not this config's"):
        checkpoints.decode(payload, {"w": tree["w"]})


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    run = tmp_path / "run"
    train(SMALL, run, progress=False)
    saved = (run / "checkpoint.npz").read_bytes()
    other = tmp_path / "other"
    train(dataclasses.replace(SMALL, seed=1), other, progress=False)
    (other / "checkpoint.npz").write_bytes(saved)
    (other / "checkpoint.prev.npz").unlink()
    with pytest.raises(CheckpointError, match="another config.*seed"):
        load_checkpoint(other)


def test_non_finite_gradients_are_skipped_and_counted_by_the_optimiser():
    # the core the loop trains SMALL with, so the compiled update of the other tests is reused
    core = core_of(SMALL)
    params, opt_state = core.init(jax.random.key(0))
    params[-1] = (params[-1][0], params[-1][1].at[0].set(jnp.nan))  # NaN action: NaN loss and gradient
    params, opt_state = replicated((params, opt_state))  # placed as the loop places them
    new_params, new_opt_state, _ = core.update(params, opt_state, jax.random.key(0), 0)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
        np.testing.assert_array_equal(a, b)
    assert skipped_updates(new_opt_state) == 1
    # the diverged policy is a failed evaluation, never a score of 0
    assert evaluate_params(SMALL, params)["eval_score"] == -np.inf


# Each case names its own agent: an agent's flags are its settings' (train --agent X --help)
@pytest.mark.parametrize("extra, message", [
    (["--agent", "full", "--task-kwargs", "num_poles=7"], "num_poles must be an integer in 1..4"),
    (["--agent", "full", "--task-kwargs", "colour=red"], "valid options"),
    (["--agent", "full", "--task-kwargs", "num_poles"], "NAME=VALUE"),
    (["--agent", "truncated", "--truncation", "500"], "truncation"),
    (["--agent", "full", "--learning-rate", "nan"], "argument --learning-rate: expected a finite number"),
    (["--agent", "full", "--updates", "-5"], "argument --updates: must be a positive integer"),
    (["--agent", "full", "--horizon", "0"], "argument --horizon: must be a positive integer"),
    (["--agent", "full", "--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    (["--agent", "full", "--eval-every", "0"], "argument --eval-every: must be a positive integer"),
    (["--agent", "full", "--eval-episodes", "0"], "argument --eval-episodes: must be a positive integer"),
    (["--agent", "full", "--hidden", "0"], "argument --hidden: must be one or more of a positive integer"),
    (["--agent", "full", "--hidden", "a,b"], "comma-separated layer sizes"),
    (["--agent", "full", "--clip-norm", "-1"], "argument --clip-norm: must be a finite number > 0"),
    (["--agent", "full", "--objective", "speed"], "speed"),
    (["--agent", "apg", "--num-envs", "0"], "argument --num-envs: must be a positive integer"),
    (["--agent", "apg", "--max-grad-norm", "-1"], "argument --max-grad-norm: must be a finite number > 0, or None"),
    (["--agent", "apg", "--batch-size", "4"], "unrecognized arguments: --batch-size"),
    (["--agent", "apg", "--horizon", "4"], "unrecognized arguments: --horizon"),
    (["--agent", "ppo", "--env-steps", "0"], "argument --env-steps: must be a positive integer"),
    (["--agent", "ppo"], "ppo needs --env-steps"),
    (["--agent", "ppo", "--env-steps", "100", "--updates", "5"], "--updates: not read by --agent ppo"),
    (["--agent", "ppo", "--env-steps", "100", "--horizon", "5"], "unrecognized arguments: --horizon"),
    (["--agent", "magic"], "invalid choice"),
])
def test_cli_reports_bad_input_clearly(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--task", "ChaosCartPole-v0", "--out", str(tmp_path / "x"), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _train_parser(agent: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    commands.train_arguments(parser, ["--agent", agent])
    return parser


@pytest.mark.parametrize("agent", ["truncated", "apg", "ahac", "ppo"])
def test_every_setting_of_the_run_and_of_the_agent_is_a_flag_with_help(agent):
    flags_ = {a.dest: a for a in _train_parser(agent)._actions if a.dest != "help"}
    settings = {path for path, _, _ in flags.fields(RunSettings)} | settings_read(agent)  # those the agent reads
    assert set(flags_) == settings - {"estimator.name"} | {"out", "resume", "no_progress"}
    assert all(a.help for a in flags_.values())


def test_given_flags_change_the_presets_and_presets_fill_what_is_not_given():
    args = _train_parser("truncated").parse_args([
        "--task", "ChaosCartPole-v0", "--agent", "truncated", "--out", "x", "--learning-rate", "0.01",
        "--horizon", "30", "--hidden", "4,4", "--remat"])
    changes = commands.given_settings(args)
    assert changes == {"task": "ChaosCartPole-v0", "agent": "truncated", "learning_rate": 0.01,
                       "estimator.horizon": 30, "hidden": (4, 4), "estimator.remat": True}
    commands.train_check(args)
    config = args.config  # built once, by the check
    assert config == for_task(**changes)
    preset = chaosgym.presets.presets("ChaosCartPole-v0").of("truncated").settings
    assert (config.settings.learning_rate, config.settings.estimator.horizon, config.settings.estimator.truncation) == (
        0.01, 30, preset["estimator.truncation"])
    assert config.settings.estimator.name == "truncated" and config.settings.estimator.objective == "return"
    assert TrainConfig.from_json(config.to_json()) == config
    # a budget in env steps sets the updates: 1 rollout x batch 16 x horizon 100 per update
    assert for_task("ChaosCartPole-v0", "full", env_steps=8000).updates == 5
    # booleans are switches both ways, and an optional number takes none
    args = _train_parser("apg").parse_args(["--task", "ChaosCartPole-v0", "--agent", "apg", "--out", "x",
                                            "--no-normalize-observations", "--layer-norm", "--max-grad-norm", "none"])
    assert commands.given_settings(args) == {"task": "ChaosCartPole-v0", "agent": "apg",
                                             "normalize_observations": False, "layer_norm": True,
                                             "max_grad_norm": None}


def test_config_json_records_the_settings_the_run_reads():
    saved = SMALL.to_json()
    assert set(saved) == {"task", "agent", "task_kwargs", "dtype", "seed", "updates", "env_steps", "eval_every",
                          "eval_episodes", "eval_seed", "checkpoint_every", "settings"}
    assert saved["dtype"] == "float32"  # a resume in the other precision is refused
    assert set(saved["settings"]) == {f.name for f in dataclasses.fields(EstimatorSettings)}
    # of the estimator's settings, only those `full` reads
    assert set(saved["settings"]["estimator"]) == {"name", "horizon", "objective", "clip_norm", "clip_value", "remat"}
    ppo = for_task("ChaosCartPole-v0", "ppo", env_steps=1000).to_json()
    assert not {"updates", "eval_every", "checkpoint_every"} & set(ppo)  # not read by an env-step budget
    with pytest.raises(UserError, match="a run of chaosgym 0.1 converts with `chaosgym convert-checkpoint"):
        TrainConfig.from_json({k: v for k, v in saved.items() if k != "settings"})


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


def test_the_python_api_trains_with_the_command_lines_settings_and_reports_progress(tmp_path):
    reported = []
    result = train_api("ChaosCartPole-v0", "full", tmp_path / "run", updates=6, batch_size=4, hidden=(8,),
                       eval_every=3, checkpoint_every=3, eval_episodes=4, horizon=20, progress=False,
                       progress_fn=lambda steps, metrics: reported.append((steps, metrics["eval_score"])))
    assert result.config == SMALL and result.run == tmp_path / "run"  # `horizon` is the estimator's
    rows = Run(result.run).evaluated_metrics()
    # after every evaluation but the untrained policy's, at its env steps
    assert reported == [(int(r["env_steps"]), pytest.approx(float(r["eval_score"]))) for r in rows[1:]]
    assert [steps for steps, _ in reported] == [3 * 4 * 20, 6 * 4 * 20]
    assert result.final["update"] == 6 and result.final["eval_score"] == pytest.approx(float(rows[-1]["eval_score"]))
    env = chaosgym.make("ChaosCartPole-v0")
    action = result.policy(np.zeros(env.observation_size, np.float32))
    assert action.shape == (env.action_size,) and np.all(np.abs(action) <= 1)
    with pytest.raises(UserError, match="apg has no setting.*batch_size.*its settings: .*num_envs"):
        train_api("ChaosCartPole-v0", "apg", tmp_path / "apg", batch_size=4)
    assert not (tmp_path / "apg").exists()


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
