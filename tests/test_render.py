"""`chaosgym render` writes an animated GIF of a run's policy, gradient-based or SB3."""

import json

import imageio.v3 as iio
import jax
import numpy as np
import pytest

import chaosgym
from chaosgym.policies import init_policy
from chaosgym.agents.render import load_run_policy
from chaosgym.agents.train import TrainConfig, save_checkpoint
from chaosgym.cli import main


def gradient_run(folder):
    """A run folder as `chaosgym train` leaves it (config and checkpoint), with an untrained policy."""
    config = TrainConfig(task="ChaosCartPole-v0", task_kwargs={"num_poles": 2}, agent="full", hidden=(8,))
    env = chaosgym.make(config.task, **config.task_kwargs)
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, config.hidden)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config.to_json()))
    save_checkpoint(folder, {"update": 0, "params": params})
    return folder


def test_render_writes_a_gif_of_the_episode(tmp_path, capsys):
    run = gradient_run(tmp_path / "run")
    out = tmp_path / "episode.gif"
    assert main(["render", "--run", str(run), "--out", str(out), "--max-steps", "12", "--width", "64",
                 "--height", "48"]) == 0
    frames = iio.imread(out, index=None)
    # 100 control steps per second -> every 4th step at 25 fps; the first frame is the reset
    assert frames.shape[0] == 1 + 3 and frames.shape[1:3] == (48, 64)
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1])
    assert "25 fps" in capsys.readouterr().out


def test_render_loads_an_sb3_run(tmp_path):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from chaosgym.agents.sb3 import make_compiled_vec_env, save_checkpoint as save_sb3

    run = tmp_path / "ppo"
    run.mkdir()
    venv = make_compiled_vec_env("ChaosCartPole-v0", {}, 2, 0)
    save_sb3(run / "checkpoint.zip", PPO("MlpPolicy", venv, n_steps=8, batch_size=8, seed=0), {"env_steps": 0})
    (run / "config.json").write_text(json.dumps({"env_id": "ChaosCartPole-v0", "task_kwargs": {}, "agent": "ppo",
                                                 "seed": 0}))
    env_id, kwargs, policy = load_run_policy(run)
    action = policy(np.zeros(5, np.float32))
    assert env_id == "ChaosCartPole-v0" and kwargs == {} and action.shape == (1,)


def test_render_rejects_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--run", str(tmp_path)])
    assert exit_info.value.code == 2 and "no config.json" in capsys.readouterr().err
