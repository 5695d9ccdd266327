"""`chaosgym render` writes an animated GIF of a run's policy, gradient-based or SB3."""

import errno
import os

import imageio.v3 as iio
import jax
import numpy as np
import pytest

import chaosgym

from chaosgym.agents.cli import main
from chaosgym.agents.config import for_task
from chaosgym.agents.render import load_run_policy
from chaosgym.agents.loop import core_of, encode_checkpoint
from chaosgym.agents.run import Run


def gradient_run(folder):
    """A run folder as `chaosgym train` leaves it, with an untrained policy (nothing to compile)."""
    config = for_task("ChaosCartPole-v0", "full", task_kwargs={"num_poles": 2}, hidden=(8,))
    params, opt_state = core_of(config).init(jax.random.key(0))
    run, _ = Run.open(folder, config, False, decode=None)
    with run:
        run.start()
        run.save_checkpoint(encode_checkpoint(config, {"update": 0, "params": params, "opt_state": opt_state,
                                                       "env_steps": 0}))
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
    from chaosgym.agents.api import train_config  # the sb3 extra is part of the test install

    config = for_task("ChaosCartPole-v0", "ppo", env_steps=32, eval_episodes=1, num_envs=2, n_steps=16,
                      batch_size=32, n_epochs=1)
    train_config(config, tmp_path / "ppo", progress=False)
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


def test_render_refuses_a_link_in_place_of_its_gif_and_leaves_the_target_alone(tmp_path, capsys):
    run = gradient_run(tmp_path / "run")
    important = tmp_path / "important.txt"
    important.write_text("keep me")
    (run / "episode.gif").symlink_to(important)
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--run", str(run), "--max-steps", "2"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "symbolic link" in error and str(run / "episode.gif") in error
    assert important.read_text() == "keep me" and (run / "episode.gif").is_symlink()


def test_a_full_disk_keeps_the_previous_gif_and_names_it(tmp_path, capsys, monkeypatch):
    from chaosgym import files
    from chaosgym.functional import trace_cache

    run = gradient_run(tmp_path / "run")
    out = tmp_path / "episode.gif"
    out.write_bytes(b"the previous GIF")

    def full_disk(descriptor, mode):
        os.close(descriptor)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fdopen", full_disk)
    monkeypatch.setattr(trace_cache, "_warned", set())  # a trace-cache entry's failed write is the test's own
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--run", str(run), "--out", str(out), "--max-steps", "2", "--width", "32", "--height", "32"])
    error = capsys.readouterr().err.splitlines()[-1]
    assert exit_info.value.code == 2 and "No space left on device" in error and str(out) in error
    assert out.read_bytes() == b"the previous GIF" and sorted(p.name for p in tmp_path.iterdir()) == ["episode.gif", "run"]
