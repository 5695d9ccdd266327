"""`chaosgym render` writes an animated GIF of a run's policy, gradient-based or SB3."""

import imageio.v3 as iio
import jax
import numpy as np
import pytest

import chaosgym

from chaosgym.agents.cli import main
from chaosgym.agents.config import for_task
from chaosgym.agents.render import load_run_policy
from chaosgym.agents.run import Run
from chaosgym.agents.train import encode_checkpoint
from chaosgym.functional.policies import init_policy


def gradient_run(folder):
    """A run folder as `chaosgym train` leaves it, with an untrained policy (nothing to compile)."""
    config = for_task("ChaosCartPole-v0", "full", task_kwargs={"num_poles": 2}, hidden=(8,))
    env = chaosgym.make(config.task, **config.task_kwargs)
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, config.hidden)
    run, _ = Run.open(folder, config, False, decode=None)
    with run:
        run.start()
        run.save_checkpoint(encode_checkpoint(config, {"update": 0, "params": params, "env_steps": 0}))
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
    from chaosgym.agents.sb3 import train_sb3  # the sb3 extra is part of the test install

    config = for_task("ChaosCartPole-v0", "ppo", env_steps=32, eval_episodes=1,
                      sb3={"num_envs": 2, "n_steps": 16, "batch_size": 32, "n_epochs": 1})
    train_sb3(config, tmp_path / "ppo", progress=False)
    env_id, kwargs, policy = load_run_policy(tmp_path / "ppo")
    action = policy(np.zeros(4, np.float32))
    assert env_id == "ChaosCartPole-v0" and kwargs == {} and action.shape == (1,) and np.isfinite(action).all()


def test_render_rejects_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--run", str(tmp_path)])
    assert exit_info.value.code == 2 and "no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--run", str(tmp_path), "--width", "-5"])
    assert exit_info.value.code == 2 and "positive number of pixels" in capsys.readouterr().err
